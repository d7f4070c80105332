"""Run mode: ``opencode run --format json`` as an async subprocess, one process per run."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncGenerator, AsyncIterator, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

from opencode_wrapper._aio import finish, wait_within
from opencode_wrapper._eventlog import EventLog
from opencode_wrapper._observers import EventCallback, notify
from opencode_wrapper._proc.binary import check_version, resolve_binary
from opencode_wrapper._proc.environment import build_env, check_data_home, prepare_environment
from opencode_wrapper._proc.process import OwnedProcess, drain_text, iter_lines
from opencode_wrapper._validation import (
    check_non_negative,
    check_prompt,
    check_timeout,
    check_type_names,
    check_workspace,
)
from opencode_wrapper.config import RunConfig, validate_config_for_run

if TYPE_CHECKING:
    from opencode_wrapper.pool import ServerPool
from opencode_wrapper.errors import (
    OpenCodeCancelledError,
    OpenCodeConfigError,
    OpenCodeProcessError,
    OpenCodeTimeoutError,
)
from opencode_wrapper.events import (
    Event,
    RunError,
    RunResult,
    StepStartEvent,
    aggregate_run_result,
    parse_event_line,
)

__all__ = ["AsyncOpenCodeClient", "build_argv", "build_env", "resolve_binary"]

_T = TypeVar("_T")

# Substrings of opencode's stderr when it crashed while opening its SQLite database.
_SQLITE_STARTUP_PATTERNS = (
    "database is locked",
    "sqlite_busy",
    "sqliteerror",
    "journal_mode",
    "disk i/o error",
    # drizzle's wording for a failed SQL statement: seen when several processes create the tables
    # of a fresh shared database at once (opencode exits 1 with "Failed query: CREATE TABLE ...").
    "failed query:",
    "create table",
)
# Signals that mean "somebody stopped this run" rather than "it crashed".
_CANCEL_SIGNALS = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}


def build_argv(
    binary_resolved: str,
    prompt: str,
    run_cfg: RunConfig,
    *,
    prompt_in_argv: bool = False,
) -> list[str]:
    """The ``opencode run`` command line for ``run_cfg``.

    The prompt is *not* put on the command line by default: opencode wraps arguments that
    contain spaces in literal quotes, so the client sends the prompt on stdin, byte for byte.
    ``prompt_in_argv=True`` appends it as the last argument, as the seed did.

    ``cli_kwargs`` expand to ``--flag`` (``True``), ``--flag=value`` (long), ``-k value``
    (single-char), one per element for a list, nothing for ``False``/``None``.
    """
    cmd = [binary_resolved, "run", "--format", "json"]
    if run_cfg.model:
        cmd += ["-m", run_cfg.model]
    if run_cfg.agent:
        cmd += ["--agent", run_cfg.agent]
    for key, value in (run_cfg.cli_kwargs or {}).items():
        flag = f"-{key}" if len(key) == 1 else f"--{key}"
        for item in value if isinstance(value, (list, tuple)) else [value]:
            if item is True:
                cmd.append(flag)
            elif item is False or item is None:
                continue
            elif len(key) == 1:
                cmd += [flag, str(item)]
            else:
                cmd.append(f"{flag}={item}")
    if prompt_in_argv and prompt:
        cmd.append(prompt)
    return cmd


class _Recorder:
    """What one attempt produced so far, kept outside the task so a timeout can report it."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.raw_lines: list[str] = []
        self.stderr: list[str] = []
        self.exit_code: int | None = None

    def result(self) -> RunResult:
        return aggregate_run_result(
            events=list(self.events),
            raw_stdout_lines=self.raw_lines,
            exit_code=self.exit_code,
            stderr="".join(self.stderr),
        )

    @property
    def model_was_called(self) -> bool:
        return any(isinstance(ev, StepStartEvent) for ev in self.events)


class AsyncOpenCodeClient:
    """Runs ``opencode run --format json`` for each call; safe to use from many tasks at once.

    Args:
        binary: the ``opencode`` executable (path or name); ``"opencode"`` means "find it":
            ``OPENCODE_BINARY``, then ``PATH``, then the per-user install.
        startup_concurrency: how many opencode processes may start at the same moment.
        startup_delay_s: how long each start holds its slot (spaces out SQLite initialisation).
        isolate_db: give each run a private data dir (its own SQLite DB), removed afterwards.
        shared_data_concurrency: how many runs of this client may use one shared data dir at
            once (``data_home=...``, or ``isolate_db=False``); the others wait their turn, inside
            their ``timeout_s``. opencode 1.18 fails prompts with "Failed to execute statement"
            when many processes write to one SQLite database (upstream issue #47566; 32 at once
            lost 27 runs here), and a run that failed after the model was called cannot be
            retried without sending its prompt twice. Runs with private data dirs are not limited.
        warm_servers: run ``async_run`` on warm ``opencode serve`` processes instead of one
            ``opencode run`` each (much faster and leaner for many runs). The client must then be
            used as ``async with client:``, which ends the servers on exit.
        max_servers: with ``warm_servers``, the most servers at once (default: sized to the machine).
        lean: with ``warm_servers``, start servers with the lean profile.
    """

    def __init__(
        self,
        binary: str | os.PathLike[str] = "opencode",
        startup_concurrency: int = 1,
        startup_delay_s: float = 0.3,
        isolate_db: bool = True,
        *,
        shared_data_concurrency: int = 4,
        warm_servers: bool = False,
        max_servers: int | None = None,
        lean: bool = False,
    ) -> None:
        if (
            isinstance(startup_concurrency, bool)
            or not isinstance(startup_concurrency, int)
            or startup_concurrency < 1
        ):
            raise OpenCodeConfigError(
                f"startup_concurrency must be an integer >= 1, got {startup_concurrency!r}"
            )
        check_non_negative(startup_delay_s, "startup_delay_s")
        if (
            isinstance(shared_data_concurrency, bool)
            or not isinstance(shared_data_concurrency, int)
            or shared_data_concurrency < 1
        ):
            raise OpenCodeConfigError(
                f"shared_data_concurrency must be an integer >= 1, got {shared_data_concurrency!r}"
            )
        self._shared_data_concurrency = shared_data_concurrency
        self._shared_data_slots: dict[str, asyncio.Semaphore] = {}
        self.binary = os.fspath(binary)
        self._resolved_binary: str | None = None
        self._startup_sem = asyncio.Semaphore(startup_concurrency)
        self._startup_delay_s = float(startup_delay_s)
        self._isolate_db = bool(isolate_db)
        self._warm_servers = bool(warm_servers)
        self._max_servers = max_servers
        self._lean = bool(lean)
        self._pool: ServerPool | None = None
        if max_servers is not None and (
            isinstance(max_servers, bool) or not isinstance(max_servers, int) or max_servers < 1
        ):
            raise OpenCodeConfigError(f"max_servers must be an integer >= 1 or None, got {max_servers!r}")

    def __repr__(self) -> str:
        return f"AsyncOpenCodeClient(binary={self.binary!r}, isolate_db={self._isolate_db})"

    async def __aenter__(self) -> AsyncOpenCodeClient:
        if self._warm_servers:
            if self._pool is not None:
                raise OpenCodeConfigError(
                    "this AsyncOpenCodeClient is already open; nest no second 'async with'"
                )
            from opencode_wrapper.pool import ServerPool

            self._pool = ServerPool(
                binary=self.binary,
                max_servers=self._max_servers,
                lean=self._lean,
                isolate_db=self._isolate_db,
            )
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.aclose()

    def resolved_binary(self) -> str:
        """The absolute path of the opencode binary (resolved and version-checked once)."""
        if self._resolved_binary is None:
            path = resolve_binary(self.binary)
            check_version(path)
            self._resolved_binary = path
        return self._resolved_binary

    # ------------------------------------------------------------------ public API

    async def async_stream(
        self,
        prompt: str,
        workspace: str | os.PathLike[str],
        *,
        run_cfg: RunConfig | None = None,
        timeout_s: float | None = None,
        data_home: str | os.PathLike[str] | None = None,
    ) -> AsyncIterator[Event]:
        """Yield typed events as opencode emits them.

        After the last event, raises :class:`OpenCodeProcessError` if opencode exited non-zero,
        :class:`OpenCodeTimeoutError` if ``timeout_s`` passed (the process tree is ended first).
        Leaving the loop early ends the run; ``contextlib.aclosing`` makes that immediate.
        """
        cfg, cwd, timeout = self._check(prompt, workspace, run_cfg, timeout_s)
        recorder = _Recorder()
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        stream = self._attempt(prompt, cwd, cfg, recorder, data_home)
        try:
            while True:
                remaining = None if deadline is None else deadline - loop.time()
                try:
                    if remaining is not None and remaining <= 0:
                        raise asyncio.TimeoutError
                    event = await wait_within(stream.__anext__(), remaining)
                except StopAsyncIteration:
                    break
                except asyncio.TimeoutError:
                    await stream.aclose()
                    raise self._timeout_error(recorder, timeout) from None
                yield event
        finally:
            await finish(stream.aclose())
        self._raise_for_exit(recorder)

    async def async_run(
        self,
        prompt: str,
        workspace: str | os.PathLike[str],
        *,
        run_cfg: RunConfig | None = None,
        timeout_s: float | None = None,
        log_file: str | os.PathLike[str] | None = None,
        log_exclude_types: Iterable[str] | None = None,
        max_retries: int = 2,
        retry_delay_s: float = 1.0,
        data_home: str | os.PathLike[str] | None = None,
        on_event: EventCallback | None = None,
    ) -> RunResult:
        """Run one prompt to completion and return its :class:`RunResult`.

        ``result.ok`` / ``result.error`` say whether it succeeded; opencode exiting 0 after
        auto-rejecting a permission is *not* success (``error.kind == "permission_rejected"``).

        Args:
            prompt: the message, sent to the model byte for byte (any text).
            workspace: an existing directory; opencode's tools work there.
            run_cfg: model, agent, permissions, tools...
            timeout_s: end the run (and every process it started) after this many seconds and
                raise :class:`OpenCodeTimeoutError` carrying the partial result.
            log_file: append each event as a JSON line as it arrives (file mode 0600).
            log_exclude_types: event types to keep out of ``log_file`` (still in the result).
            max_retries: extra attempts after an SQLite start-up crash; only when the model was
                never called, so a prompt is never sent twice.
            retry_delay_s: pause between attempts.
            data_home: use this ``XDG_DATA_HOME`` (shared history) instead of a private one.
            on_event: called with each typed event as it arrives (a live view); an exception in
                it is logged and ignored.

        Raises:
            OpenCodeConfigError: bad arguments (before anything is started).
            OpenCodeProcessError: opencode exited non-zero; ``.result`` says why.
            OpenCodeTimeoutError: the timeout passed; ``.result`` holds what was done.
            OpenCodeCancelledError: opencode was stopped by a signal from outside.
        """
        cfg, cwd, timeout = self._check(prompt, workspace, run_cfg, timeout_s)
        exclude = check_type_names(log_exclude_types, "log_exclude_types")
        check_non_negative(max_retries, "max_retries", integer=True)
        check_non_negative(retry_delay_s, "retry_delay_s")
        if self._warm_servers:
            return await self._run_warm(prompt, cwd, cfg, timeout, log_file, exclude, data_home, on_event)
        log = EventLog(log_file, exclude) if log_file is not None else None
        recorder = _Recorder()

        async def attempts() -> RunResult:
            nonlocal recorder
            for attempt in range(max_retries + 1):
                recorder = _Recorder()
                async for event in self._attempt(prompt, cwd, cfg, recorder, data_home):
                    if log is not None:
                        log.write(event)
                    notify(on_event, event)
                retry = (
                    attempt < max_retries
                    and recorder.exit_code != 0
                    and not recorder.model_was_called
                    and _is_sqlite_startup_error("".join(recorder.stderr))
                )
                if not retry:
                    break
                await asyncio.sleep(retry_delay_s)
            self._raise_for_exit(recorder)
            return recorder.result()

        try:
            if timeout is None:
                return await attempts()
            try:
                return await wait_within(attempts(), timeout)
            except asyncio.TimeoutError:
                raise self._timeout_error(recorder, timeout) from None
        finally:
            if log is not None:
                log.close()

    # ------------------------------------------------------------------ internals

    async def _run_warm(
        self,
        prompt: str,
        cwd: str,
        cfg: RunConfig,
        timeout: float | None,
        log_file: str | os.PathLike[str] | None,
        exclude: frozenset[str],
        data_home: str | os.PathLike[str] | None,
        on_event: EventCallback | None,
    ) -> RunResult:
        if self._pool is None:
            raise OpenCodeConfigError(
                "AsyncOpenCodeClient(warm_servers=True) runs on servers it must end: use it as "
                "'async with client:' around your async_run calls"
            )
        if data_home is not None:
            raise OpenCodeConfigError("data_home is a run-mode option, refused with warm_servers=True")
        return await self._pool.run(
            prompt,
            cwd,
            run_cfg=cfg,
            timeout_s=timeout,
            log_file=log_file,
            log_exclude_types=exclude,
            on_event=on_event,
        )

    def _check(
        self,
        prompt: object,
        workspace: object,
        run_cfg: RunConfig | None,
        timeout_s: object,
    ) -> tuple[RunConfig, str, float | None]:
        check_prompt(prompt)
        cwd = check_workspace(workspace)
        timeout = check_timeout(timeout_s)
        cfg = RunConfig() if run_cfg is None else run_cfg
        validate_config_for_run(cfg)
        self.resolved_binary()
        return cfg, cwd, timeout

    def _data_dir_slot(
        self, data_home: str | os.PathLike[str] | None
    ) -> asyncio.Semaphore | contextlib.nullcontext[None]:
        """A turn among the runs sharing a data dir (see ``shared_data_concurrency``)."""
        if data_home is None and self._isolate_db:
            return contextlib.nullcontext()
        # "" stands for the user's own data dir (isolate_db=False without data_home).
        key = os.path.realpath(check_data_home(data_home)) if data_home is not None else ""
        slot = self._shared_data_slots.get(key)
        if slot is None:
            slot = self._shared_data_slots[key] = asyncio.Semaphore(self._shared_data_concurrency)
        return slot

    async def _attempt(
        self,
        prompt: str,
        cwd: str,
        cfg: RunConfig,
        recorder: _Recorder,
        data_home: str | os.PathLike[str] | None,
    ) -> AsyncGenerator[Event, None]:
        """One ``opencode run``: start it, yield its events, and always end its whole tree."""
        async with self._data_dir_slot(data_home):
            argv = build_argv(self.resolved_binary(), prompt, cfg)
            prepared = prepare_environment(cfg, cwd=cwd, private_data=self._isolate_db, data_home=data_home)
            proc: OwnedProcess | None = None
            stderr_task: asyncio.Task[None] | None = None
            try:
                async with self._startup_sem:
                    proc = await OwnedProcess.start(
                        argv,
                        cwd=cwd,
                        env=prepared.env,
                        stdin_data=prompt.encode(),
                        cleanup_dirs=prepared.temp_dirs,
                    )
                    stderr_task = asyncio.ensure_future(drain_text(proc.stderr, recorder.stderr))
                    if self._startup_delay_s > 0:
                        await asyncio.sleep(self._startup_delay_s)
                async for line in iter_lines(proc.stdout):
                    text = line.decode("utf-8", errors="replace")
                    event = parse_event_line(text)
                    recorder.raw_lines.append(text)
                    recorder.events.append(event)
                    yield event
                recorder.exit_code = await proc.wait()
                await stderr_task
            finally:
                await finish(self._cleanup(proc, stderr_task, prepared.cleanup, recorder))

    @staticmethod
    async def _cleanup(
        proc: OwnedProcess | None,
        stderr_task: asyncio.Task[None] | None,
        remove_dirs: Any,
        recorder: _Recorder,
    ) -> None:
        if proc is not None:
            code = await proc.end()
            if recorder.exit_code is None:
                recorder.exit_code = code
        if stderr_task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await wait_within(stderr_task, 5)
        remove_dirs()

    @staticmethod
    def _timeout_error(recorder: _Recorder, timeout: float | None) -> OpenCodeTimeoutError:
        result = recorder.result()
        result.error = RunError(
            kind="timeout", message=f"no result within timeout_s={timeout!r}; opencode was ended"
        )
        return OpenCodeTimeoutError(
            f"OpenCode run exceeded timeout_s={timeout!r}; opencode and its processes were ended",
            timeout_s=timeout,
            result=result,
        )

    @staticmethod
    def _raise_for_exit(recorder: _Recorder) -> None:
        code = recorder.exit_code
        if code == 0:
            return
        result = recorder.result()
        stderr = "".join(recorder.stderr)
        if code is not None and code < 0 and -code in _CANCEL_SIGNALS:
            result.error = RunError(kind="cancelled", message=f"opencode was stopped by signal {-code}")
            raise OpenCodeCancelledError(
                f"opencode was stopped by signal {signal.Signals(-code).name} from outside", result=result
            )
        raise OpenCodeProcessError(
            exit_code=code,
            stderr=stderr,
            events=result.events,
            raw_stdout_lines=result.raw_stdout_lines,
            result=result,
        )


def _is_sqlite_startup_error(stderr: str) -> bool:
    lower = stderr.lower()
    return any(pattern in lower for pattern in _SQLITE_STARTUP_PATTERNS)
