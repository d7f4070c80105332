"""The process-tree owner: whatever opencode starts, ending it ends everything (no opencode needed)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from opencode_wrapper._proc.process import OwnedProcess, iter_lines


def _alive_with(marker: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if marker in cmdline and proc.info["status"] != psutil.STATUS_ZOMBIE:
            found.append(proc)
    return found


def _gone(marker: str, within_s: float = 5.0) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if not _alive_with(marker):
            return True
        time.sleep(0.05)
    return False


async def _start(script: str, tmp_path: Path, stdin: bytes | None = None) -> OwnedProcess:
    return await OwnedProcess.start(
        ["sh", "-c", script], cwd=str(tmp_path), env=dict(os.environ), stdin_data=stdin
    )


async def test_end_kills_children_that_left_the_session(tmp_path: Path) -> None:
    # `setsid` is what opencode's bash tool does: the child is out of our process group.
    proc = await _start("setsid sh -c 'sleep 61.301' & echo started; sleep 100", tmp_path)
    first = await proc.stdout.readline()
    assert first == b"started\n"
    assert _alive_with("sleep 61.301"), "the setsid child should be running before end()"
    code = await proc.end()
    assert code == -signal.SIGTERM
    assert _gone("sleep 61.301")


async def test_natural_exit_ends_orphaned_descendants(tmp_path: Path) -> None:
    proc = await _start("setsid sleep 61.302 & echo started", tmp_path)
    assert await proc.stdout.readline() == b"started\n"
    assert await proc.wait() == 0
    assert _gone("sleep 61.302")


async def test_exit_status_and_signal_are_passed_through(tmp_path: Path) -> None:
    assert await (await _start("exit 3", tmp_path)).wait() == 3
    assert await (await _start("kill -INT $$", tmp_path)).wait() == -signal.SIGINT


async def test_stdin_is_written_and_closed(tmp_path: Path) -> None:
    payload = 'line one\n"quoted"\n-dash ünïcode'.encode()
    proc = await _start("cat", tmp_path, stdin=payload)
    out = await proc.stdout.read()
    assert await proc.wait() == 0
    assert out == payload


async def test_without_stdin_data_the_child_sees_eof(tmp_path: Path) -> None:
    proc = await _start("cat; echo done", tmp_path)
    assert await asyncio.wait_for(proc.stdout.read(), 10) == b"done\n"
    await proc.wait()


async def test_iter_lines_has_no_length_limit(tmp_path: Path) -> None:
    big = 5 * 1024 * 1024
    script = f"head -c {big} /dev/zero | tr '\\0' 'x'; echo; echo tail"
    proc = await _start(script, tmp_path)
    lines = [line async for line in iter_lines(proc.stdout)]
    await proc.wait()
    assert [len(line) for line in lines] == [big, 4]


def test_owner_killed_with_sigkill_takes_the_tree_down(tmp_path: Path) -> None:
    owner = textwrap.dedent(
        """
        import asyncio, os, sys
        from opencode_wrapper._proc.process import OwnedProcess
        async def main():
            p = await OwnedProcess.start(["sh", "-c", "setsid sleep 61.303 & echo up; sleep 100"],
                                         cwd=os.getcwd(), env=dict(os.environ), stdin_data=None)
            print((await p.stdout.readline()).decode().strip(), flush=True)
            await asyncio.sleep(100)
        asyncio.run(main())
        """
    )
    child = subprocess.Popen([sys.executable, "-c", owner], cwd=tmp_path, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "up"
        assert _alive_with("sleep 61.303")
        child.send_signal(signal.SIGKILL)
        child.wait(10)
        assert _gone("sleep 61.303"), "the supervisor must end the tree when its owner dies"
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


async def test_a_start_cancelled_during_the_spawn_ends_what_it_started(tmp_path: Path) -> None:
    # Cancelled inside the spawn, asyncio's own clean-up SIGKILLs the supervisor alone: had it
    # started its child already, the child was orphaned (the cancellation storm found one).
    # Whatever the moment, nothing of a cancelled start may be left.
    for attempt in range(5):
        marker = f"sleep 61.40{attempt}"
        start = asyncio.ensure_future(_start(f"setsid {marker} & sleep 100", tmp_path))
        for _ in range(attempt):
            await asyncio.sleep(0)  # a different moment of the spawn each time
        start.cancel()
        outcome = (await asyncio.gather(start, return_exceptions=True))[0]
        assert isinstance(outcome, asyncio.CancelledError), outcome
        assert _gone(marker), f"attempt {attempt}: {marker} outlived a cancelled start"


async def test_cleanup_actions_are_left_to_a_living_owner(tmp_path: Path) -> None:
    from opencode_wrapper._proc.cleanup import RemoveTree

    kept = tmp_path / "kept"
    kept.mkdir()
    proc = await OwnedProcess.start(
        ["sh", "-c", "echo up"], cwd=str(tmp_path), env=dict(os.environ), stdin_data=None,
        cleanup=[RemoveTree(str(kept))],
    )  # fmt: skip
    assert await proc.wait() == 0
    assert kept.is_dir(), "the owner lives: the supervisor must not do its clean-up"


async def test_a_bad_cleanup_action_fails_before_anything_is_spawned(tmp_path: Path) -> None:
    from opencode_wrapper.errors import OpenCodeConfigError

    with pytest.raises(OpenCodeConfigError, match="RemoveTree or RemoveGitWorktree, got str"):
        await OwnedProcess.start(
            ["sh", "-c", "touch spawned"], cwd=str(tmp_path), env=dict(os.environ), stdin_data=None,
            cleanup=["/tmp/x"],  # type: ignore[list-item]
        )  # fmt: skip
    assert not (tmp_path / "spawned").exists()
