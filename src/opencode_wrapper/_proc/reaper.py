"""A tiny supervisor that owns one opencode process and everything it starts.

Run as a script (``python -I -S reaper.py WATCH_FD [--rm PATH]... -- argv...``), never imported
by user code.

Why it exists: opencode starts its bash-tool commands in their own session, so killing
opencode, or even its process group, leaves them running. This supervisor makes itself a
*child subreaper* (Linux ``PR_SET_CHILD_SUBREAPER``): every process orphaned below it is
re-parented to it instead of to init, so it can find and end all of them. It ends the whole
tree when opencode exits, when it gets SIGTERM/SIGINT/SIGHUP, and when its owner dies
(the owner holds the write end of the pipe ``WATCH_FD``; EOF means the owner is gone).

If the owner died, the supervisor also removes the ``--rm`` paths (the run's private temp dirs),
which the owner can no longer do; a living owner removes them itself.

It exits with opencode's exit status, or dies by the same signal that ended opencode, so the
owner sees what opencode itself did. Standard library only: it must start in milliseconds.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import select
import shutil
import signal
import subprocess
import sys

_PR_SET_CHILD_SUBREAPER = 36
_END_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def _become_subreaper() -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    except (OSError, AttributeError):
        pass  # not Linux: the process-group kill below is the best we can do


def _descendants(root: int) -> list[int]:
    """All live descendants of ``root``, read from /proc (empty where /proc is missing)."""
    children: dict[int, list[int]] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue
        # Fields after the command name (which may contain spaces and parentheses).
        after = stat[stat.rfind(b")") + 2 :].split()
        if len(after) > 1 and after[0] != b"Z":
            children.setdefault(int(after[1]), []).append(int(entry))
    found: list[int] = []
    stack = [root]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def _kill(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def _end_tree(child: subprocess.Popen[bytes]) -> None:
    """SIGKILL the child and every descendant; return once none is left.

    As a subreaper, every descendant whose parent dies becomes our child. So once we have no
    child at all (``waitpid`` says so), no descendant is left: an exact end, without polling.
    Each round kills what is alive (a parent may have forked just before it died) and then
    blocks until a child is gone.
    """
    me = os.getpid()
    _kill([*_descendants(me), child.pid] if child.poll() is None else _descendants(me))
    child.wait()  # opencode first, through Popen, which keeps its exit status
    while True:
        _kill(_descendants(me))
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            return


def _owner_gone(watch_fd: int) -> bool:
    """Whether the owner closed its end of the watch pipe (it died, or ended without waiting)."""
    try:
        readable, _, _ = select.select([watch_fd], [], [], 0)
        return bool(readable) and not os.read(watch_fd, 512)
    except OSError:
        return True


def main(argv: list[str]) -> int:
    watch_fd = int(argv[0])
    rest = argv[1:]
    remove: list[str] = []
    while len(rest) >= 2 and rest[0] == "--rm":
        remove.append(rest[1])
        rest = rest[2:]
    command = rest[1:] if rest[:1] == ["--"] else rest
    _become_subreaper()
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    received: list[int] = []
    for sig in _END_SIGNALS:
        signal.signal(sig, lambda signum, _frame: received.append(signum))
    signal.signal(signal.SIGCHLD, lambda *_: None)  # wakes select via the wakeup fd
    child = subprocess.Popen(command, close_fds=True)
    watching = [watch_fd, wake_r]
    while not received and child.poll() is None:
        readable, _, _ = select.select(watching, [], [], 1.0)
        if wake_r in readable:
            os.read(wake_r, 512)
        if watch_fd in readable and not os.read(watch_fd, 512):
            received.append(signal.SIGTERM)  # the owner is gone
        _reap_zombies_except(child)
    _end_tree(child)
    code = child.wait()
    if remove and _owner_gone(watch_fd):
        for path in remove:
            shutil.rmtree(path, ignore_errors=True)
    if received:
        return _die_by(received[0])
    return code if code >= 0 else _die_by(-code)


def _reap_zombies_except(child: subprocess.Popen[bytes]) -> None:
    """Reap orphans re-parented to us while opencode still runs, leaving opencode to Popen."""
    for pid in _descendants_zombies():
        if pid != child.pid:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)


def _descendants_zombies() -> list[int]:
    me = str(os.getpid()).encode()
    zombies: list[int] = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return zombies
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue
        after = stat[stat.rfind(b")") + 2 :].split()
        if len(after) > 1 and after[0] == b"Z" and after[1] == me:
            zombies.append(int(entry))
    return zombies


def _die_by(signum: int) -> int:
    if signum not in (signal.SIGKILL, signal.SIGSTOP):  # those two cannot have handlers
        signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)
    return 128 + signum


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
