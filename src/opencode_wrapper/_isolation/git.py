"""Running git for isolated runs: a clean environment, our tag, completion despite cancellation.

Every git command runs to its end even if the awaiting task is cancelled meanwhile (then the
cancellation is raised): a git command cut short leaves lock files and half-written state, and
one left running in the background could recreate a worktree after its removal. git commands
are short (milliseconds, a checkout or ``git add -A`` of a big tree: seconds), so a cancellation
takes effect after at most one of them.

Each command carries the isolated run's tag in ``$OPENCODE_WRAPPER_TAGS``, so that the run's
guard can kill what is still running should we die (see ``_proc/guard.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import weakref
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass

from opencode_wrapper._aio import complete
from opencode_wrapper._isolation.errors import IsolationError
from opencode_wrapper._proc.reaper import TAGS_ENV, WORKTREE_LOCK_NAME, add_tag, git_env

_LOCK_POLL_S = (0.002, 0.005, 0.01, 0.02, 0.05)
_loop_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, asyncio.Lock]] = (
    weakref.WeakKeyDictionary()
)


@dataclass(frozen=True)
class GitResult:
    code: int
    stdout: bytes
    stderr: str


def environment(tag: str, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of our git commands: ours without git's location variables, plus ``tag``."""
    env = git_env()
    env[TAGS_ENV] = add_tag(env.get(TAGS_ENV), tag)
    env["LC_ALL"] = "C"  # messages we show in errors, in one language
    if extra:
        env.update(extra)
    return env


async def git(
    *args: str,
    cwd: str,
    tag: str,
    input: bytes | None = None,
    env: Mapping[str, str] | None = None,
    check: bool = True,
) -> GitResult:
    """Run ``git ARGS`` in ``cwd`` to its end; raise :class:`IsolationError` on failure if ``check``."""

    async def run() -> GitResult:
        proc = await asyncio.create_subprocess_exec(
            "git",
            *args,
            cwd=cwd,
            env=environment(tag, env),
            stdin=asyncio.subprocess.PIPE if input is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await proc.communicate(input)
        assert proc.returncode is not None
        return GitResult(proc.returncode, out, err.decode("utf-8", errors="replace"))

    try:
        result, cancelled = await complete(run())
    except OSError as exc:  # no git at all, or cwd gone
        raise IsolationError(f"could not run git {' '.join(args)} in {cwd}: {exc}") from exc
    if cancelled:
        raise asyncio.CancelledError
    if check and result.code != 0:
        raise IsolationError(f"git {' '.join(args)} failed (exit {result.code}) in {cwd}", result.stderr)
    return result


async def text(*args: str, cwd: str, tag: str, env: Mapping[str, str] | None = None) -> str:
    """``git ARGS`` stdout as text, stripped."""
    return (await git(*args, cwd=cwd, tag=tag, env=env)).stdout.decode("utf-8", "surrogateescape").strip()


def _loop_lock(common_dir: str) -> asyncio.Lock:
    locks = _loop_locks.setdefault(asyncio.get_running_loop(), {})
    return locks.setdefault(common_dir, asyncio.Lock())


@contextlib.asynccontextmanager
async def worktree_lock(common_dir: str) -> AsyncIterator[None]:
    """Hold the repository's worktree lock (the one ``reaper.remove_git_worktree`` takes).

    Within a process, waiters queue on an asyncio lock; across processes, on ``flock`` of
    :data:`~opencode_wrapper._proc.reaper.WORKTREE_LOCK_NAME` in the common git dir (polled
    without blocking the event loop: each hold lasts one short git command).
    """
    async with _loop_lock(common_dir):
        path = os.path.join(common_dir, WORKTREE_LOCK_NAME)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            attempt = 0
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    await asyncio.sleep(_LOCK_POLL_S[min(attempt, len(_LOCK_POLL_S) - 1)])
                    attempt += 1
            yield
        finally:
            os.close(fd)  # releases the flock
