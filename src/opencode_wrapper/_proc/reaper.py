"""A tiny supervisor that owns one opencode process and everything it starts.

Run as a script, never imported by user code::

    python -I -S reaper.py WATCH_FD [--rm PATH]... [--git-worktree REPO PATH BRANCH]...
                                    [--kill-tag TAG] -- [argv...]

Why it exists: opencode starts its bash-tool commands in their own session, so killing
opencode, or even its process group, leaves them running. This supervisor makes itself a
*child subreaper* (Linux ``PR_SET_CHILD_SUBREAPER``): every process orphaned below it is
re-parented to it instead of to init, so it can find and end all of them. It ends the whole
tree when opencode exits, when it gets SIGTERM/SIGINT/SIGHUP, and when its owner dies
(the owner holds the write end of the pipe ``WATCH_FD``; EOF means the owner is gone).

If the owner died, the supervisor also carries out the clean-up actions, which the owner can no
longer do (a living owner does them itself), in the order given, after the tree is gone:

* ``--kill-tag TAG``: first SIGKILL every process of our uid that carries ``TAG`` in
  ``$OPENCODE_WRAPPER_TAGS`` (e.g. the owner's git commands, which are not our descendants) and
  wait until they are gone, so that none of them recreates what the actions below remove;
* ``--rm PATH``: remove the directory tree ``PATH`` (the run's private temp dirs);
* ``--git-worktree REPO PATH BRANCH``: remove the linked git worktree ``PATH`` of the repository
  whose work tree is ``REPO``: its directory, its registration (``git worktree list`` no longer
  shows it) and, unless ``BRANCH`` is empty, the branch ``refs/heads/BRANCH``.

With no ``argv`` after ``--`` it is a *guard*: it starts nothing, waits for its owner's death (or
SIGTERM) and then does the same clean-up. It lets an owner protect state that outlives any one
process (an isolated run's worktree between its git commands and its opencode run).

It exits with opencode's exit status, or dies by the same signal that ended opencode, so the
owner sees what opencode itself did. Standard library only: it must start in milliseconds. The
package imports the helpers below (tags, worktree removal) so that the owner's normal path and
the owner-death path run the same code.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

_PR_SET_CHILD_SUBREAPER = 36
_END_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
TAGS_ENV = "OPENCODE_WRAPPER_TAGS"
"""Environment variable listing (``:``-separated) the tags of every owned tree a process belongs to."""
WORKTREE_LOCK_NAME = "opencode-wrapper-worktree.flock"
"""Lock file in a repository's common git dir; held while a worktree is registered or removed.

git itself is not safe against concurrent ``git worktree add``/``remove`` in one repository: they
read each other's half-written ``.git/worktrees/<id>`` entries (measured, 16 at once, git 2.39:
"failed to read .../commondir", "is not a working tree"). Everyone who registers or removes a
worktree for this package takes this lock first, across processes (``flock``)."""
# git variables that would point a git command at another repository than its -C directory
# (`git rev-parse --local-env-vars`).
_GIT_LOCATION_ENV = (
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_CONFIG",
    "GIT_CONFIG_PARAMETERS",
    "GIT_CONFIG_COUNT",
    "GIT_OBJECT_DIRECTORY",
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_IMPLICIT_WORK_TREE",
    "GIT_GRAFT_FILE",
    "GIT_INDEX_FILE",
    "GIT_NO_REPLACE_OBJECTS",
    "GIT_REPLACE_REF_BASE",
    "GIT_PREFIX",
    "GIT_INTERNAL_SUPER_PREFIX",
    "GIT_SHALLOW_FILE",
    "GIT_COMMON_DIR",
)


def _become_subreaper() -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    except (OSError, AttributeError):
        pass  # not Linux: the process-group kill below is the best we can do


def _proc_stats() -> Iterator[tuple[int, bytes]]:
    """``(pid, state and fields after the command name)`` of every process in /proc."""
    try:
        entries = os.listdir("/proc")
    except OSError:
        return
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue
        # Fields after the command name (which may contain spaces and parentheses).
        yield int(entry), stat[stat.rfind(b")") + 2 :]


def _descendants(root: int) -> list[int]:
    """All live descendants of ``root``, read from /proc (empty where /proc is missing)."""
    children: dict[int, list[int]] = {}
    for pid, fields in _proc_stats():
        after = fields.split()
        if len(after) > 1 and after[0] != b"Z":
            children.setdefault(int(after[1]), []).append(pid)
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


# ----------------------------------------------------------------------------- tags


def add_tag(tags: str | None, tag: str) -> str:
    """The value of ``$OPENCODE_WRAPPER_TAGS`` with ``tag`` added (an outer owner's tags are kept)."""
    return f"{tags}:{tag}" if tags else tag


def _carries(pid: int, uid: int, needle: bytes, tag: bytes) -> bool:
    """Whether process ``pid`` runs as ``uid`` and carries ``tag`` in its tags variable."""
    try:
        if os.stat(f"/proc/{pid}").st_uid != uid:
            return False
        with open(f"/proc/{pid}/environ", "rb") as fh:
            environ = fh.read()
    except OSError:
        return False  # gone, or not readable; a zombie's environ reads empty, so it never matches
    if tag not in environ:
        return False  # the cheap test first: almost every process fails it
    for entry in environ.split(b"\0"):
        if entry.startswith(needle):
            return tag in entry[len(needle) :].split(b":")
    return False


def tagged_pids(tag: str, exclude: tuple[int, ...] = ()) -> list[int]:
    """PIDs of our uid's live processes carrying ``tag`` (re-parented orphans included)."""
    if not tag:
        return []
    uid, needle, wanted = os.getuid(), f"{TAGS_ENV}=".encode(), tag.encode()
    skip = {os.getpid(), *exclude}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    # Not through _proc_stats: reading /proc/<pid>/stat costs the kernel more than environ does.
    pids = (int(entry) for entry in entries if entry.isdigit())
    return [pid for pid in pids if pid not in skip and _carries(pid, uid, needle, wanted)]


def _signal_if_tagged(pid: int, tag: str) -> None:
    """SIGKILL ``pid`` if it still carries ``tag``, immune to PID reuse where pidfds exist."""
    uid, needle, wanted = os.getuid(), f"{TAGS_ENV}=".encode(), tag.encode()
    pidfd_open = getattr(os, "pidfd_open", None)
    send = getattr(signal, "pidfd_send_signal", None)
    if pidfd_open is None or send is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
        return
    try:
        fd = pidfd_open(pid)
    except OSError:
        return  # already gone
    try:
        # Checked again through the pidfd's process: the PID cannot be reused while we hold it.
        if _carries(pid, uid, needle, wanted):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                send(fd, signal.SIGKILL)
    finally:
        os.close(fd)


def kill_tagged(tag: str, timeout_s: float = 5.0, exclude: tuple[int, ...] = ()) -> list[int]:
    """SIGKILL every live process of our uid carrying ``tag``; return their PIDs once all are gone.

    Rounds of find-and-kill until a scan finds none (a process may fork just before it is
    killed), or until ``timeout_s``. Our own process and ``exclude`` are never touched.
    """
    killed: list[int] = []
    deadline = time.monotonic() + timeout_s
    while True:
        pids = tagged_pids(tag, exclude)
        if not pids or time.monotonic() > deadline:
            return killed
        for pid in pids:
            _signal_if_tagged(pid, tag)
        killed.extend(p for p in pids if p not in killed)
        # Not our children (orphans of init): wait for these to be gone, with a deadline, then
        # scan again for what they forked meanwhile (waiting for those too would wait them out).
        signalled = set(pids)
        while signalled.intersection(tagged_pids(tag, exclude)) and time.monotonic() < deadline:
            time.sleep(0.005)


# ----------------------------------------------------------------------------- git worktrees


def git_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """``base`` (default: our environment) without the variables that redirect git elsewhere."""
    env = dict(os.environ if base is None else base)
    for name in _GIT_LOCATION_ENV:
        env.pop(name, None)
    env["GIT_TERMINAL_PROMPT"] = "0"
    return env


def _git(repo: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["git", "-C", repo, *args],
        env=git_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
    )


def common_git_dir(repo: str) -> str:
    """The absolute common git dir of the repository at ``repo`` ("" if there is none)."""
    found = _git(repo, "rev-parse", "--git-common-dir")
    if found.returncode != 0 or not found.stdout.strip():
        return ""
    return os.path.realpath(os.path.join(repo, found.stdout.strip()))


@contextlib.contextmanager
def worktree_lock(common_dir: str) -> Iterator[None]:
    """Hold the package's worktree lock of the repository whose common git dir is ``common_dir``."""
    fd = os.open(os.path.join(common_dir, WORKTREE_LOCK_NAME), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _unregister(common_dir: str, path: str) -> None:
    """Remove the registration entries (``.git/worktrees/<id>``) that point at ``path``.

    What ``git worktree prune`` does, for our entry only: prune would also drop any other stale
    (unlocked) entry of the user's, e.g. a worktree on an unmounted disk.
    """
    admin_root = os.path.join(common_dir, "worktrees")
    target = os.path.realpath(path)
    try:
        entries = os.listdir(admin_root)
    except OSError:
        return
    for entry in entries:
        try:
            with open(os.path.join(admin_root, entry, "gitdir"), encoding="utf-8") as fh:
                gitdir = fh.read().strip()
        except OSError:
            continue
        if os.path.realpath(os.path.dirname(gitdir)) == target:
            shutil.rmtree(os.path.join(admin_root, entry), ignore_errors=True)
    with contextlib.suppress(OSError):
        os.rmdir(admin_root)  # as git does when the last linked worktree goes


def remove_git_worktree(repo: str, path: str, branch: str) -> None:
    """Remove the linked worktree ``path`` of ``repo``: files, registration, and branch (unless empty).

    Idempotent and best effort: works on a half-created worktree (its creation killed), a
    worktree whose ``.git`` file the agent deleted, or one that is already gone.
    """
    common_dir = common_git_dir(repo)
    # The files first, outside the lock (the slow part for a big checkout); the .git file stays
    # so that git still recognises the worktree below.
    with contextlib.suppress(OSError):
        for entry in os.listdir(path):
            if entry != ".git":
                target = os.path.join(path, entry)
                if os.path.isdir(target) and not os.path.islink(target):
                    shutil.rmtree(target, ignore_errors=True)
                else:
                    with contextlib.suppress(OSError):
                        os.unlink(target)
    lock = worktree_lock(common_dir) if common_dir else contextlib.nullcontext()
    with lock:
        _git(repo, "worktree", "remove", "--force", "--force", path)
        shutil.rmtree(path, ignore_errors=True)
        if common_dir:
            _unregister(common_dir, path)
    if branch:
        _git(repo, "update-ref", "-d", f"refs/heads/{branch}")


# ----------------------------------------------------------------------------- supervising


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


Action = tuple[str, tuple[str, ...]]


def _parse(rest: list[str]) -> tuple[list[Action], str, list[str]]:
    """``(clean-up actions in order, kill tag, command)`` from the arguments after ``WATCH_FD``."""
    actions: list[Action] = []
    kill_tag = ""
    while rest and rest[0] != "--":
        option = rest[0]
        if option == "--rm" and len(rest) >= 2:
            actions.append(("rm", (rest[1],)))
            rest = rest[2:]
        elif option == "--git-worktree" and len(rest) >= 4:
            actions.append(("git-worktree", (rest[1], rest[2], rest[3])))
            rest = rest[4:]
        elif option == "--kill-tag" and len(rest) >= 2:
            kill_tag = rest[1]
            rest = rest[2:]
        else:
            break  # not an option of ours: the command itself (seed callers pass no `--`)
    return actions, kill_tag, rest[1:] if rest[:1] == ["--"] else rest


def _clean_up(actions: list[Action], kill_tag: str) -> None:
    if kill_tag:
        kill_tagged(kill_tag)
    for kind, args in actions:
        try:
            if kind == "rm":
                shutil.rmtree(args[0], ignore_errors=True)
            else:
                remove_git_worktree(*args)
        except Exception:  # one failed action must not stop the others
            continue


def main(argv: list[str]) -> int:
    watch_fd = int(argv[0])
    actions, kill_tag, command = _parse(argv[1:])
    _become_subreaper()
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    received: list[int] = []
    for sig in _END_SIGNALS:
        signal.signal(sig, lambda signum, _frame: received.append(signum))
    signal.signal(signal.SIGCHLD, lambda *_: None)  # wakes select via the wakeup fd
    if not command:
        return _guard(watch_fd, wake_r, received, actions, kill_tag)
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
    if (actions or kill_tag) and _owner_gone(watch_fd):
        _clean_up(actions, kill_tag)
    if received:
        return _die_by(received[0])
    return code if code >= 0 else _die_by(-code)


def _guard(watch_fd: int, wake_r: int, received: list[int], actions: list[Action], kill_tag: str) -> int:
    """Guard mode: no child; clean up if the owner dies, exit quietly on SIGTERM/SIGINT/SIGHUP."""
    while not received:
        readable, _, _ = select.select([watch_fd, wake_r], [], [], 1.0)
        if wake_r in readable:
            os.read(wake_r, 512)
        if watch_fd in readable and not os.read(watch_fd, 512):
            break
    if _owner_gone(watch_fd):
        _clean_up(actions, kill_tag)
    return 0


def _reap_zombies_except(child: subprocess.Popen[bytes]) -> None:
    """Reap orphans re-parented to us while opencode still runs, leaving opencode to Popen."""
    me = str(os.getpid()).encode()
    for pid, fields in _proc_stats():
        after = fields.split()
        if len(after) > 1 and after[0] == b"Z" and after[1] == me and pid != child.pid:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)


def _die_by(signum: int) -> int:
    if signum not in (signal.SIGKILL, signal.SIGSTOP):  # those two cannot have handlers
        signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)
    return 128 + signum


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
