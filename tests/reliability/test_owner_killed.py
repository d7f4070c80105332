"""Our own process killed with SIGKILL while it owns runs and servers: the leftovers end themselves.

What happens (and what this test shows): every opencode process we start runs under the
supervisor ``_proc/reaper.py``, which holds the read end of a pipe whose write end only the owning
Python process has. When the owner dies, even by SIGKILL, the kernel closes the write end; the
supervisor sees EOF at once, ends opencode and everything it started (its bash tool's
``sleep 60`` in its own session included: the supervisor is a child subreaper), removes the temp
dirs it was given, and exits. Nothing has to "find" leftovers at the next start, so nothing can
mistake another program's processes for ours.

The owner here (``_owner.py``) holds a run-mode run, an ``OpenCodeServer`` with a running session
turn and a ``ServerPool`` run, each inside ``sleep 60.NNNN``. Counted afterwards: processes of
ours (by environment tag and marker, orphans included) and our temp dirs (``ocw_*`` in the
owner's ``TMPDIR``; opencode's own Bun library cache files there are not ours).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from reliability._support import poll, scaled, summary, tagged_processes
from reliability.conftest import Reliability

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(scaled(240, 900))]

OWNER = Path(__file__).with_name("_owner.py")
BUDGET_S = 5.0


def _ours(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.name.startswith("ocw_"))


def test_owner_sigkilled_while_owning_runs_and_servers(
    opencode_binary: str, workspace: Path, rel: Reliability
) -> None:
    rounds = scaled(1, 3)
    detect: list[float] = []
    left_procs = 0
    left_dirs: list[str] = []
    for round_ in range(rounds):
        markers = [rel.marker(10 * round_ + i) for i in range(3)]
        src = str(Path(__file__).resolve().parents[2] / "src")
        env = dict(os.environ, TMPDIR=str(rel.temp_root), PYTHONPATH=src)
        owner = subprocess.Popen(
            [sys.executable, str(OWNER), opencode_binary, str(workspace), *markers],
            cwd=workspace,
            env=env,
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        try:
            assert owner.stdout is not None
            assert owner.stdout.readline().strip() == "OWNING"
            # (The owner's own command line names the markers: it does not count.)
            running = poll(
                lambda m=markers, o=owner.pid: all(tagged_processes(None, [x], exclude=[o]) for x in m),
                timeout_s=180,
                interval_s=0.05,
            )
            assert running, "the three sleeps never ran"
            owned = tagged_processes(rel.tag, markers, exclude=[owner.pid])
            assert len(owned) >= 9, owned  # 3 x (supervisor, opencode, bash?, sleep)
            assert _ours(rel.temp_root), "the owner's temp dirs exist while it lives"
            killed_at = time.monotonic()
            owner.send_signal(signal.SIGKILL)
            owner.wait(10)
            gone = poll(lambda m=markers: not tagged_processes(rel.tag, m), timeout_s=30, interval_s=0.02)
            detect.append(time.monotonic() - killed_at)
            left_procs += len(tagged_processes(rel.tag, markers))
            assert gone, tagged_processes(rel.tag, markers)
            left_dirs += _ours(rel.temp_root)
        finally:
            if owner.poll() is None:
                owner.kill()
                owner.wait()
    rel.figures.update(
        fault="owner process SIGKILLed",
        mode="run + server session + pool run",
        injected=rounds,
        left_behind={"processes": left_procs, "temp_dirs": len(left_dirs)},
        left_total=left_procs + len(left_dirs),
        detect_s=summary(detect),
        how="the supervisor sees its owner's pipe close and ends the tree itself",
        temp_dirs_left=left_dirs,
    )
    assert max(detect) < BUDGET_S, detect
    assert left_dirs == [], f"temp dirs left after the owner died: {left_dirs}"


OWNER_OF_A_SLEEP = """
import asyncio, os, sys
from opencode_wrapper._proc.process import OwnedProcess
async def main():
    p = await OwnedProcess.start(["sh", "-c", "setsid %s & echo up; sleep 100"], cwd=os.getcwd(),
                                 env=dict(os.environ), stdin_data=None, cleanup_dirs=[sys.argv[1]])
    print((await p.stdout.readline()).decode().strip(), flush=True)
    await asyncio.sleep(100)
asyncio.run(main())
"""


def test_the_supervisor_removes_the_dirs_only_when_its_owner_died(tmp_path: Path, rel: Reliability) -> None:
    """The reaper's own contract, without opencode: fast enough for every `make test`."""
    import asyncio

    from opencode_wrapper._proc.process import OwnedProcess

    kept = tmp_path / "kept"
    kept.mkdir()

    async def owner_alive() -> None:
        proc = await OwnedProcess.start(
            ["sh", "-c", "echo up"],
            cwd=str(tmp_path),
            env=dict(os.environ),
            stdin_data=None,
            cleanup_dirs=[kept],
        )
        assert await proc.wait() == 0

    asyncio.run(owner_alive())
    assert kept.is_dir(), "a living owner removes its dirs itself; the supervisor must not"

    doomed = tmp_path / "doomed"
    doomed.mkdir()
    (doomed / "opencode.db").write_text("x")
    marker = rel.marker(900)
    child = subprocess.Popen(
        [sys.executable, "-c", OWNER_OF_A_SLEEP % marker, str(doomed)],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "up"
        assert tagged_processes(None, [marker])
        child.send_signal(signal.SIGKILL)
        child.wait(10)
        assert poll(lambda: not tagged_processes(None, [marker]) and not doomed.exists(), timeout_s=5)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
