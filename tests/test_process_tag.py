"""The process tag: every process of an owned tree carries it, and ending the tree sweeps what
outlived a killed supervisor (no opencode needed; see test_process_tag_e2e.py for opencode)."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from _worktree_support import poll
from opencode_wrapper._proc import reaper
from opencode_wrapper._proc.process import OwnedProcess
from opencode_wrapper._proc.reaper import TAGS_ENV, kill_tagged, tagged_pids


def _marker() -> str:
    return f"sleep 61.{random.randrange(10**6):06d}"


def _pids_running(marker: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                cmdline = fh.read().replace(b"\0", b" ").decode(errors="replace").strip()
            with open(f"/proc/{entry}/stat", "rb") as fh:
                state = fh.read().rsplit(b")", 1)[1].split()[0]
        except OSError:
            continue
        if cmdline == marker and state != b"Z":
            found.append(int(entry))
    return found


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children", encoding="ascii") as fh:
            return [int(p) for p in fh.read().split()]
    except OSError:
        return []


async def _start(script: str, tmp_path: Path, env: dict[str, str] | None = None) -> OwnedProcess:
    return await OwnedProcess.start(
        ["sh", "-c", script], cwd=str(tmp_path), env=env or dict(os.environ), stdin_data=None
    )


async def test_every_process_of_the_tree_carries_the_tag(tmp_path: Path) -> None:
    proc = await _start(f'echo "${TAGS_ENV}"', tmp_path, dict(os.environ, **{TAGS_ENV: "outer"}))
    out = (await proc.stdout.read()).decode().strip()
    assert await proc.wait() == 0
    assert len(proc.tag) == 32 and out == f"outer:{proc.tag}", "an outer owner's tag is kept"
    other = await _start(
        f'echo "${TAGS_ENV}"', tmp_path, {k: v for k, v in os.environ.items() if k != TAGS_ENV}
    )
    assert (await other.stdout.read()).decode().strip() == other.tag != proc.tag
    await other.wait()
    assert proc.swept == [] and other.swept == [], "after a normal end the sweep finds nothing"


@pytest.mark.parametrize("how", ["end", "wait"])
async def test_orphans_of_a_killed_supervisor_are_swept(tmp_path: Path, how: str) -> None:
    marker = _marker()
    # `setsid` as opencode's bash tool does; `exec` so that the supervisor's child is the sh itself.
    proc = await _start(f"setsid {marker} & echo up; exec sleep 100", tmp_path)
    assert await proc.stdout.readline() == b"up\n"
    assert poll(lambda: _pids_running(marker), timeout_s=10)
    sleeper = _pids_running(marker)[0]
    assert sleeper in tagged_pids(proc.tag)
    # What `pkill -9 -f opencode` does: the supervisor and its child die at once; the setsid
    # grandchild is orphaned to init, out of the supervisor's reach.
    opencode_like = _children(proc.pid)
    os.kill(proc.pid, signal.SIGKILL)
    for pid in opencode_like:
        os.kill(pid, signal.SIGKILL)
    # The orphan holds our stdout: EOF (and asyncio's wait) come once the exit's sweep ended it.
    await asyncio.wait_for(proc.stdout.read(), 10)
    code = await asyncio.wait_for(proc.end() if how == "end" else proc.wait(), 10)
    assert code == -signal.SIGKILL
    assert _pids_running(marker) == [] and tagged_pids(proc.tag) == []
    assert proc.swept is not None and sleeper in proc.swept


async def test_the_sweep_leaves_untagged_and_foreign_processes_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = _marker()
    tagged_env = dict(os.environ, **{TAGS_ENV: "someone-else:abc"})
    bystanders = [
        subprocess.Popen(marker.split(), cwd=tmp_path),  # no tag at all
        subprocess.Popen(marker.split(), cwd=tmp_path, env=tagged_env),  # other tags, one a prefix of ours
    ]
    try:
        assert kill_tagged("ab") == [] and kill_tagged("someone") == []
        assert all(p.poll() is None for p in bystanders)
        assert tagged_pids("abc") == [bystanders[1].pid]
        # Another user's processes are never looked at (simulated: we pretend to be another uid).
        monkeypatch.setattr(reaper.os, "getuid", lambda: os.geteuid() + 1)
        assert kill_tagged("abc") == [] and bystanders[1].poll() is None
        monkeypatch.undo()
        assert kill_tagged("abc") == [bystanders[1].pid]
        assert bystanders[1].wait(5) == -signal.SIGKILL and bystanders[0].poll() is None
    finally:
        for p in bystanders:
            if p.poll() is None:
                p.kill()
            p.wait()


async def test_kill_tagged_follows_processes_that_fork_while_being_killed(tmp_path: Path) -> None:
    tag = f"forker{random.randrange(10**9)}"
    script = "while :; do sleep 30 & sleep 0.005; done"  # keeps forking; every child carries the tag
    forker = subprocess.Popen(["sh", "-c", script], cwd=tmp_path, env=dict(os.environ, **{TAGS_ENV: tag}))
    try:
        assert poll(lambda: len(tagged_pids(tag)) > 3, timeout_s=10)
        killed = await asyncio.to_thread(kill_tagged, tag)
        assert forker.pid in killed and tagged_pids(tag) == []
    finally:
        if forker.poll() is None:
            forker.kill()
        forker.wait()


def test_the_reaper_script_keeps_its_seed_command_line(tmp_path: Path) -> None:
    """``reaper.py FD --rm PATH CMD...`` (no ``--``), as the seed called it, still runs CMD."""
    read_end, write_end = os.pipe()
    try:
        done = subprocess.run(
            [
                sys.executable,
                "-I",
                "-S",
                reaper.__file__,
                str(read_end),
                "--rm",
                str(tmp_path / "x"),
                "echo",
                "hi",
            ],
            pass_fds=(read_end,),
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    finally:
        os.close(read_end)
        os.close(write_end)
    assert (done.returncode, done.stdout) == (0, "hi\n")
