"""A guard: a supervisor with no child that cleans up after us if we die.

For state that outlives any one process, e.g. an isolated run's git worktree, which exists from
``git worktree add`` until its removal, with opencode running only for part of that time.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Sequence

from opencode_wrapper._aio import finish, wait_within
from opencode_wrapper._proc.cleanup import CleanupAction, reaper_args
from opencode_wrapper._proc.process import spawn_reaper


class CleanupGuard:
    """Does ``actions`` if (and only if) this process dies before :meth:`release`.

    The guard (``reaper.py`` in guard mode, about 13 MB of RSS) sees the death as EOF on a pipe
    that only we hold, whatever killed us, SIGKILL included. It then first kills every process
    carrying ``kill_tag`` (our own git commands, which would otherwise go on writing), then does
    ``actions`` in order.
    """

    def __init__(self, proc: asyncio.subprocess.Process, watch_fd: int) -> None:
        self._proc = proc
        self._watch_fd: int | None = watch_fd

    @classmethod
    async def start(cls, actions: Sequence[CleanupAction], *, kill_tag: str = "") -> CleanupGuard:
        """Start a guard (returns once it runs; a cancelled start leaves nothing running)."""
        args = reaper_args(list(actions), kill_tag)
        proc, watch_w, cancelled = await spawn_reaper(
            [*args, "--"],
            cwd="/",
            env=dict(os.environ),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        guard = cls(proc, watch_w)
        if cancelled:
            await finish(guard.release())
            raise asyncio.CancelledError
        return guard

    @property
    def pid(self) -> int:
        return self._proc.pid

    async def release(self, grace_s: float = 5.0) -> None:
        """Stop the guard without its clean-up (we did it, or chose to keep things). Idempotent."""
        if self._proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.send_signal(signal.SIGTERM)
            try:
                await wait_within(asyncio.shield(self._proc.wait()), grace_s)
            except asyncio.TimeoutError:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self._proc.pid, signal.SIGKILL)
        await asyncio.shield(self._proc.wait())
        if self._watch_fd is not None:
            os.close(self._watch_fd)
            self._watch_fd = None
