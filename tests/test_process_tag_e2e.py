"""The process tag with the real opencode: a bash-tool command outlives its killed supervisor
(``pkill -9 -f opencode`` kills both supervisor and opencode), and ending the run sweeps it."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
from pathlib import Path

import pytest

from _worktree_support import apoll
from opencode_wrapper._proc.environment import prepare_environment
from opencode_wrapper._proc.process import OwnedProcess
from opencode_wrapper._proc.reaper import tagged_pids
from opencode_wrapper.testing import OfflineModelServer

pytestmark = pytest.mark.e2e

FAST = {"snapshot": False, "agent": {"title": {"disable": True}}}


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children", encoding="ascii") as fh:
            return [int(p) for p in fh.read().split()]
    except OSError:
        return []


async def test_a_bash_tool_sleep_outliving_both_supervisor_and_opencode_is_swept(
    opencode_binary: str, workspace: Path, offline_model: OfflineModelServer
) -> None:
    marker = f"sleep 60.{random.randrange(10**6):06d}"
    cfg = offline_model.run_config(permission={"bash": "allow"}, config_overrides=FAST)
    assert cfg.model is not None
    prepared = prepare_environment(cfg, cwd=str(workspace))
    prompt = f"[[bash: {marker}]]"
    proc = await OwnedProcess.start(
        [opencode_binary, "run", "--format", "json", "-m", cfg.model],
        cwd=str(workspace),
        env=prepared.env,
        stdin_data=prompt.encode(),
        cleanup_dirs=prepared.temp_dirs,
    )
    try:
        sleeping = await apoll(
            lambda: [p for p in tagged_pids(proc.tag) if _cmdline(p) == marker], timeout_s=120
        )
        assert sleeping, "the bash tool's sleep never started"
        children = _children(proc.pid)  # opencode, and any orphan the supervisor adopted
        assert [p for p in children if " run --format json" in _cmdline(p)], [_cmdline(p) for p in children]
        # What `pkill -9 -f opencode` does: supervisor and opencode die at once.
        os.kill(proc.pid, signal.SIGKILL)
        for pid in children:
            if pid not in sleeping:  # the sleep is for the sweep to find
                os.kill(pid, signal.SIGKILL)
        # The sleep is orphaned now (re-parented to init): no supervisor is left to end it...
        assert all(_cmdline(p) == marker for p in sleeping)
        started = time.monotonic()
        # ...but the supervisor's exit starts the tag sweep, so reading to EOF and end() finish fast.
        await asyncio.wait_for(proc.stdout.read(), 30)
        eof_s = time.monotonic() - started
        assert await proc.end() == -signal.SIGKILL
        took = time.monotonic() - started
        assert tagged_pids(proc.tag) == [], [_cmdline(p) for p in tagged_pids(proc.tag)]
        assert all(_cmdline(p) != marker for p in sleeping)
        assert proc.swept is not None and set(sleeping) <= set(proc.swept)
        print(
            f"swept {len(proc.swept)} orphan(s): stdout EOF after {eof_s * 1000:.0f} ms, "
            f"end() {took * 1000:.0f} ms"
        )
    finally:
        await proc.end()
        prepared.cleanup()
