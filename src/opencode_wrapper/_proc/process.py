"""Owning a process tree: spawn opencode under the reaper, read its output, end all of it.

Every opencode process this package starts goes through :class:`OwnedProcess`, which puts the
supervisor from ``reaper.py`` between us and opencode. Ending an ``OwnedProcess`` ends
opencode *and* every process it started, even the ones that left its session.

Second line of defence: every process of the tree carries a unique tag in
``$OPENCODE_WRAPPER_TAGS`` (inherited by all children). Should the supervisor itself be killed
(``pkill -9 -f opencode`` matches its command line), its orphans are re-parented to init; when
the ``OwnedProcess`` ends, a sweep finds our uid's processes still carrying the tag (in
``/proc/<pid>/environ``) and kills them by PID.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path

from opencode_wrapper._aio import complete, finish, wait_within
from opencode_wrapper._proc.cleanup import CleanupAction, reaper_args
from opencode_wrapper._proc.reaper import TAGS_ENV, add_tag, kill_tagged

_REAPER = str(Path(__file__).with_name("reaper.py"))
_READ_CHUNK = 1 << 20
# How much of the child's output asyncio reads ahead of us before it stops reading the pipe. A
# paused pipe fills, and opencode's last writes wait in Bun until it exits and drops them. In runs
# that exit fast (no models catalog) a 5 MB answer was cut in 5 of 6 with asyncio's default
# (64 KiB), in 3 of 12 reading ahead. It only holds what we have not consumed yet.
_READ_AHEAD = 1 << 26
# opencode (Bun) drops what it has not yet written to a full stdout pipe when it exits: with the
# default 64 KiB pipe, a multi-megabyte final event line was cut short in about half of the runs
# on a busy machine (measured: 5 MB answer, 3 of 6 cut; with 1 MiB, 0 of 18). A bigger pipe
# lets its last writes through. Linux only (F_SETPIPE_SZ); best effort elsewhere.
_F_SETPIPE_SZ = 1031
_STDOUT_PIPE_SIZE = 1 << 20


class OwnedProcess:
    """One opencode process (and its descendants) owned by the caller.

    Use :meth:`start`, read :attr:`stdout`/:attr:`stderr`, then always :meth:`end` or
    :meth:`wait`; :meth:`end` is safe to call at any time, any number of times.
    """

    def __init__(self, proc: asyncio.subprocess.Process, watch_fd: int, tag: str = "") -> None:
        self._proc = proc
        self._watch_fd: int | None = watch_fd
        self._tag = tag
        self._sweep_task: asyncio.Future[list[int]] | None = None
        self._exit_fd: int | None = None

    @classmethod
    async def start(
        cls,
        argv: Sequence[str],
        *,
        cwd: str,
        env: Mapping[str, str],
        stdin_data: bytes | None,
        cleanup_dirs: Sequence[str | os.PathLike[str]] = (),
        cleanup: Sequence[CleanupAction] = (),
    ) -> OwnedProcess:
        """Spawn ``argv`` under the reaper.

        ``stdin_data`` is written to opencode's stdin and the pipe closed (``None``: stdin is
        /dev/null). opencode reads stdin to EOF, so it must never see an open, idle pipe.
        ``cleanup_dirs`` are removed by the reaper if this process dies without removing them
        (e.g. SIGKILL); normally the caller removes them after :meth:`end`/:meth:`wait`.
        ``cleanup`` are more such actions (:class:`~opencode_wrapper._proc.cleanup.RemoveTree`,
        :class:`~opencode_wrapper._proc.cleanup.RemoveGitWorktree`), done only if this process
        dies, after the whole tree is gone (so nothing of the run can write into a worktree
        being removed), in the order given, after ``cleanup_dirs``.

        ``env`` gets one more variable: ``$OPENCODE_WRAPPER_TAGS`` with this process's
        :attr:`tag` appended.
        """
        extra = reaper_args(list(cleanup))  # bad actions fail here, before anything is spawned
        remove = [arg for path in cleanup_dirs for arg in ("--rm", os.fspath(path))]
        tag = uuid.uuid4().hex
        tagged_env = dict(env)
        tagged_env[TAGS_ENV] = add_tag(env.get(TAGS_ENV), tag)
        proc, watch_w, cancelled = await spawn_reaper(
            [*remove, *extra, "--", *argv],
            cwd=cwd,
            env=tagged_env,
            stdin=asyncio.subprocess.PIPE if stdin_data is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        _widen_pipe(proc, 1)
        owned = cls(proc, watch_w, tag)
        owned._watch_exit()
        if cancelled:
            await finish(owned.end())
            raise asyncio.CancelledError
        if stdin_data is not None:
            owned._feed_task = asyncio.ensure_future(owned._feed(stdin_data))
        return owned

    _feed_task: asyncio.Future[None] | None = None

    async def _feed(self, data: bytes) -> None:
        stdin = self._proc.stdin
        assert stdin is not None
        try:
            stdin.write(data)
            await stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            pass  # opencode exited before reading its prompt; its exit status says why
        finally:
            stdin.close()

    @property
    def pid(self) -> int:
        """PID of the supervisor (opencode is its only direct child)."""
        return self._proc.pid

    @property
    def tag(self) -> str:
        """This tree's tag: every process of it carries it in ``$OPENCODE_WRAPPER_TAGS``."""
        return self._tag

    @property
    def swept(self) -> list[int] | None:
        """PIDs the end-of-life sweep had to kill (``[]`` normally; ``None`` before the sweep).

        Non-empty only when processes of the tree outlived its supervisor (it was killed)."""
        if self._sweep_task is None or not self._sweep_task.done() or self._sweep_task.cancelled():
            return None
        return self._sweep_task.result()

    @property
    def returncode(self) -> int | None:
        """opencode's exit status once ended (negative: killed by that signal)."""
        return self._proc.returncode

    @property
    def stdout(self) -> asyncio.StreamReader:
        assert self._proc.stdout is not None
        return self._proc.stdout

    @property
    def stderr(self) -> asyncio.StreamReader:
        assert self._proc.stderr is not None
        return self._proc.stderr

    async def wait(self) -> int:
        """Wait until opencode and everything it started are gone; return the exit status."""
        try:
            code = await self._proc.wait()
        finally:
            self._release()
        await self._sweep()
        return code

    async def end(self, grace_s: float = 5.0) -> int:
        """End the whole tree now (SIGTERM to the supervisor, SIGKILL after ``grace_s``).

        Then sweep: any process still carrying :attr:`tag` (the supervisor was killed and its
        orphans went to init) is killed by PID, and this returns once they are gone.
        """
        if self._proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.send_signal(signal.SIGTERM)
            try:
                await wait_within(asyncio.shield(self._proc.wait()), grace_s)
            except asyncio.TimeoutError:
                # The supervisor itself is stuck: kill its process group as a last resort.
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self._proc.pid, signal.SIGKILL)
        code = await asyncio.shield(self._proc.wait())
        self._release()
        await self._sweep()
        return code

    def _watch_exit(self) -> None:
        """Sweep as soon as the supervisor is gone, whoever awaits what.

        A killed supervisor's orphans still hold our stdout/stderr pipes: a reader waits for EOF,
        and asyncio's ``Process.wait()`` for the pipes to close too, as long as the orphans live
        (a ``sleep 60``: a minute). Ending them at the supervisor's exit lets both finish.
        Linux (pidfd) only; elsewhere the sweep waits for :meth:`wait`/:meth:`end`.
        """
        pidfd_open = getattr(os, "pidfd_open", None)
        if pidfd_open is None or not self._tag:
            return
        try:
            self._exit_fd = pidfd_open(self._proc.pid)
        except OSError:
            return  # already gone and reaped
        asyncio.get_running_loop().add_reader(self._exit_fd, self._supervisor_exited)

    def _supervisor_exited(self) -> None:
        self._unwatch_exit()
        self._begin_sweep()

    def _unwatch_exit(self) -> None:
        if self._exit_fd is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closed already
                asyncio.get_running_loop().remove_reader(self._exit_fd)
            os.close(self._exit_fd)
            self._exit_fd = None

    def _begin_sweep(self) -> None:
        if self._tag and self._sweep_task is None:
            self._sweep_task = asyncio.ensure_future(asyncio.to_thread(kill_tagged, self._tag))

    async def _sweep(self) -> None:
        """Kill (once) what still carries our tag; runs in a thread: it reads /proc and may wait."""
        self._begin_sweep()
        if self._sweep_task is not None:
            await asyncio.shield(self._sweep_task)

    def _release(self) -> None:
        self._unwatch_exit()
        if self._feed_task is not None and not self._feed_task.done():
            self._feed_task.cancel()
        if self._watch_fd is not None:
            os.close(self._watch_fd)
            self._watch_fd = None


async def spawn_reaper(
    reaper_argv: Sequence[str],
    *,
    cwd: str,
    env: Mapping[str, str],
    stdin: int,
    stdout: int,
    stderr: int,
) -> tuple[asyncio.subprocess.Process, int, bool]:
    """Start ``reaper.py WATCH_FD *reaper_argv`` in a new session; return it, the watch pipe's write
    end (close it to tell the reaper its owner is gone) and whether we were cancelled meanwhile.

    A cancellation must not cut the spawn short: asyncio's own clean-up would SIGKILL the
    supervisor alone, after it may have started opencode, which would then be orphaned. So the
    spawn always completes, and the caller ends what was started if it was cancelled.
    """
    watch_r, watch_w = os.pipe()
    try:
        proc, cancelled = await complete(
            asyncio.create_subprocess_exec(
                sys.executable,
                "-I",
                "-S",
                _REAPER,
                str(watch_r),
                *reaper_argv,
                cwd=cwd,
                env=dict(env),
                stdin=stdin,
                stdout=stdout,
                stderr=stderr,
                pass_fds=(watch_r,),
                start_new_session=True,
                limit=_READ_AHEAD,
            )
        )
    except BaseException:
        os.close(watch_w)
        raise
    finally:
        os.close(watch_r)
    return proc, watch_w, cancelled


def _widen_pipe(proc: asyncio.subprocess.Process, fd: int) -> None:
    """Grow the pipe of the child's ``fd`` to ``_STDOUT_PIPE_SIZE`` (or the system maximum)."""
    try:
        import fcntl

        pipe = proc._transport.get_pipe_transport(fd).get_extra_info("pipe")  # type: ignore[attr-defined]
        with open("/proc/sys/fs/pipe-max-size", encoding="ascii") as fh:
            size = min(_STDOUT_PIPE_SIZE, int(fh.read()))
        fcntl.fcntl(pipe.fileno(), _F_SETPIPE_SZ, size)
    except (ImportError, AttributeError, OSError, ValueError):
        pass  # not Linux, or over the per-user pipe quota: the default size still works


async def iter_lines(reader: asyncio.StreamReader) -> AsyncIterator[bytes]:
    """Yield lines (without the newline) of any length until EOF; a final partial line too."""
    pending = bytearray()
    while True:
        chunk = await reader.read(_READ_CHUNK)
        if not chunk:
            break
        start = 0
        while True:
            newline = chunk.find(b"\n", start)
            if newline == -1:
                pending += chunk[start:]
                break
            if pending:
                pending += chunk[start:newline]
                yield bytes(pending)
                pending.clear()
            else:
                yield chunk[start:newline]
            start = newline + 1
    if pending:
        yield bytes(pending)


async def drain_text(reader: asyncio.StreamReader, sink: list[str]) -> None:
    """Read ``reader`` to EOF, appending decoded chunks to ``sink``."""
    while True:
        chunk = await reader.read(_READ_CHUNK)
        if not chunk:
            return
        sink.append(chunk.decode("utf-8", errors="replace"))
