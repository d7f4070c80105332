"""Finding and ending the processes an example left behind (by PID, never by name)."""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

import psutil  # type: ignore[import-untyped]


def _environ_has(pid: int, needle: bytes) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as fh:
            return needle in b"\0" + fh.read()
    except OSError:
        return False


def _inside(proc: psutil.Process, root: str) -> bool:
    try:
        cwd = str(proc.cwd())
    except psutil.Error:
        return False
    return cwd == root or cwd.startswith(root + os.sep)


def tagged_processes(tag_env: str, tag: str, root: Path) -> list[psutil.Process]:
    """Live processes with ``tag_env=tag`` in their environment, or working inside ``root``.

    Both survive re-parenting: an orphan adopted by init keeps its environment and directory.
    """
    needle = b"\0" + f"{tag_env}={tag}".encode() + b"\0"
    resolved = str(root.resolve())
    found = []
    for proc in psutil.process_iter(["pid"]):
        if proc.pid == os.getpid():
            continue
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                continue
        except psutil.Error:
            continue
        if _environ_has(proc.pid, needle) or _inside(proc, resolved):
            found.append(proc)
    return found


def describe(procs: list[psutil.Process]) -> list[str]:
    out = []
    for proc in procs:
        try:
            out.append(f"{proc.pid} {' '.join(proc.cmdline())[:160]}")
        except psutil.Error:
            out.append(str(proc.pid))
    return out


def kill_all(procs: list[psutil.Process]) -> None:
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(procs, timeout=10)


def kill_group(pgid: int) -> None:
    """SIGKILL a process group we created (``start_new_session=True``)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
