"""Ending the processes still working inside an isolated tree, before it is measured or removed.

A run's tool processes can outlive the run by seconds: on a warm server, opencode completes an
aborted ``bash`` call as soon as it signalled the shell, and ends the shell's children only
after a grace period (measured with 1.18.33: ~3 s). The isolated tree is private to one run, so
any process of this user whose working directory is inside it is a leftover of that run.

Read from ``/proc`` (Linux); elsewhere nothing is found.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time

#: How long to wait for the killed processes to be gone.
END_TIMEOUT_S = 5.0


def processes_in(folder: str) -> list[int]:
    """The pids of this user's live processes whose working directory is inside ``folder``."""
    root = os.path.realpath(folder)
    me = os.getpid()
    found = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    for entry in entries:
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            cwd = os.readlink(f"/proc/{entry}/cwd").removesuffix(" (deleted)")
        except OSError:  # gone, or not ours
            continue
        if (cwd == root or cwd.startswith(root + os.sep)) and _alive(int(entry)):
            found.append(int(entry))
    return found


def end_processes_in(folder: str, timeout_s: float = END_TIMEOUT_S) -> list[int]:
    """SIGKILL every process of this user working inside ``folder`` and wait until they are gone
    (a zombie counts as gone); return their pids. Blocking: call it in a thread."""
    found = processes_in(folder)
    for pid in found:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout_s
    alive = found
    while alive and time.monotonic() < deadline:
        alive = [pid for pid in alive if _alive(pid)]
        if alive:
            time.sleep(0.01)
    return found


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read()
    except OSError:
        return False
    return fields[fields.rfind(b")") + 2 :][:1] != b"Z"
