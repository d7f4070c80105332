"""``ProcessBackend``: one ``opencode run --format json`` process per run, under the process supervisor.

The prompt goes on stdin (byte for byte: opencode wraps arguments with spaces in literal quotes);
stdout is one JSON event per line; opencode's whole process tree is ended when the run ends,
whatever ends it. Start-up crashes of opencode's SQLite database are retried (``max_retries``),
only while the model was never called, so a prompt is never sent twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Callable

from opencode_wrapper._aio import finish, wait_within
from opencode_wrapper._lean import one_shot_run_config
from opencode_wrapper._model.fold import Fold, diagnose_run
from opencode_wrapper._model.outcome import RunResult
from opencode_wrapper._model.run_error import RunError
from opencode_wrapper._proc.binary import check_version, resolve_binary
from opencode_wrapper._proc.environment import check_data_home, prepare_environment
from opencode_wrapper._proc.process import OwnedProcess, drain_text, iter_lines
from opencode_wrapper._tool_lease import leased_tools
from opencode_wrapper._wire.run import parse_event_line
from opencode_wrapper.backends.base import Backend, refuse
from opencode_wrapper.backends.handle import RunHandle
from opencode_wrapper.backends.request import RunRequest
from opencode_wrapper.config import RunConfig, validate_permission_actions
from opencode_wrapper.errors import OpenCodeConfigError

__all__ = ["ProcessBackend", "build_argv"]

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


def _is_sqlite_startup_error(stderr: str) -> bool:
    lower = stderr.lower()
    return any(pattern in lower for pattern in _SQLITE_STARTUP_PATTERNS)


class ProcessBackend(Backend):
    """Runs each request as its own ``opencode run`` process.

    Args:
        binary: the ``opencode`` executable; ``"opencode"`` means "find it" (``OPENCODE_BINARY``,
            then ``PATH``, then the per-user install).
        startup_concurrency: how many opencode processes may start at the same moment.
        startup_delay_s: how long each start holds its slot (spaces out SQLite initialisation).
        isolate_db: give each run a private data dir (its own SQLite DB), removed afterwards.
        shared_data_concurrency: how many runs may use one shared data dir at once (opencode 1.18
            fails prompts when many processes write one SQLite database, upstream #47566).
    """

    name = "run"

    def __init__(
        self,
        binary: str | os.PathLike[str] = "opencode",
        *,
        startup_concurrency: int = 1,
        startup_delay_s: float = 0.3,
        isolate_db: bool = True,
        shared_data_concurrency: int = 4,
    ) -> None:
        self.binary = os.fspath(binary)
        self.isolate_db = bool(isolate_db)
        self._resolved: str | None = None
        self._startup = asyncio.Semaphore(startup_concurrency)
        self._startup_delay_s = float(startup_delay_s)
        self._shared_data_concurrency = shared_data_concurrency
        self._shared_data_slots: dict[str, asyncio.Semaphore] = {}

    def resolved_binary(self) -> str:
        """The absolute path of the opencode binary (resolved and version-checked once)."""
        if self._resolved is None:
            path = resolve_binary(self.binary)
            check_version(path)
            self._resolved = path
        return self._resolved

    def check(self, request: RunRequest) -> None:
        permission = request.user_permission
        if permission is not None:
            validate_permission_actions(permission, allow_ask=False)
        for option in ("on_permission", "on_question"):
            if getattr(request, option) is not None:
                raise refuse(
                    "run-mode",
                    option,
                    "`opencode run` auto-rejects every permission request and question; use a warm backend "
                    "(AsyncOpenCodeClient(warm_servers=True), an OpenCodeServer, a ServerPool or run_many)",
                )
        if request.hooks is not None and request.hooks.intercepts:
            raise refuse(
                "run-mode",
                "Hooks(before_tool=...)",
                "`opencode run` answers every permission request itself, so a hook cannot stand between "
                "the agent and its tools; use a warm backend (AsyncOpenCodeClient(warm_servers=True), a "
                "session, an OpenCodeServer, a ServerPool or run_many). after_tool and on_turn_end work here",
            )
        if request.structured is not None:
            raise refuse(
                "run-mode",
                "output_schema",
                "`opencode run` has no structured output; use a session or a warm backend",
            )
        if request.title is not None and "title" in (request.config.cli_kwargs or {}):
            raise OpenCodeConfigError("give the title once: title= or cli_kwargs={'title': ...}, not both")
        self.resolved_binary()

    def _handle(self, request: RunRequest) -> RunHandle:
        return ProcessRun(self, request)

    def data_dir_slot(self, data_home: str | None) -> asyncio.Semaphore | contextlib.nullcontext[None]:
        """A turn among the runs sharing a data dir (see ``shared_data_concurrency``)."""
        if data_home is None and self.isolate_db:
            return contextlib.nullcontext()
        # "" stands for the user's own data dir (isolate_db=False without data_home).
        key = os.path.realpath(check_data_home(data_home)) if data_home is not None else ""
        slot = self._shared_data_slots.get(key)
        if slot is None:
            slot = self._shared_data_slots[key] = asyncio.Semaphore(self._shared_data_concurrency)
        return slot


class ProcessRun(RunHandle):
    """One request as ``opencode run`` processes (more than one only after a start-up crash)."""

    backend = "run"

    def __init__(self, owner: ProcessBackend, request: RunRequest) -> None:
        super().__init__(request)
        self._owner = owner
        self._fold = Fold()
        self._raw: list[str] = []
        self._stderr: list[str] = []
        self._exit_code: int | None = None

    def argv(self) -> list[str]:
        request = self.request
        cfg = request.config
        flags = dict(cfg.cli_kwargs or {})
        if "title" not in flags:
            # A titled session costs no title request to the model.
            flags["title"] = request.session_title
        if request.files:
            flags["f"] = [*_as_list(flags.get("f")), *request.files]
        return build_argv(self._owner.resolved_binary(), request.prompt, cfg.replace(cli_kwargs=flags))

    async def _produce(self) -> None:
        request = self.request
        for attempt in range(request.max_retries + 1):
            self._fold, self._raw, self._stderr, self._exit_code = Fold(), [], [], None
            await self._attempt()
            retry = (
                attempt < request.max_retries
                and self._exit_code != 0
                and not self._fold.model_was_called
                and _is_sqlite_startup_error("".join(self._stderr))
            )
            if not retry:
                return
            await asyncio.sleep(request.retry_delay_s)

    async def _attempt(self) -> None:
        """One ``opencode run``: start it, pass its events on, and always end its whole tree."""
        request = self.request
        owner = self._owner
        async with owner.data_dir_slot(request.data_home), leased_tools(request.config) as cfg:
            argv = self.argv()
            prepared = prepare_environment(
                # No empty models catalog here, though it would pay: opencode then exits so soon after
                # its last event that a multi-megabyte answer is cut in the stdout pipe (measured:
                # a 5 MB answer cut in 3 of 12 runs; with the catalog, in none).
                one_shot_run_config(cfg, isolated=request.isolation != "none"),
                cwd=self.workspace,
                private_data=owner.isolate_db,
                data_home=request.data_home,
            )
            proc: OwnedProcess | None = None
            stderr_task: asyncio.Task[None] | None = None
            try:
                async with owner._startup:
                    proc = await OwnedProcess.start(
                        argv,
                        cwd=self.workspace,
                        env=prepared.env,
                        stdin_data=request.prompt.encode(),
                        cleanup_dirs=prepared.temp_dirs,
                        cleanup=self.cleanup_actions,
                    )
                    stderr_task = asyncio.ensure_future(drain_text(proc.stderr, self._stderr))
                    if owner._startup_delay_s > 0:
                        await asyncio.sleep(owner._startup_delay_s)
                async for line in iter_lines(proc.stdout):
                    text = line.decode("utf-8", errors="replace")
                    event = parse_event_line(text)
                    self._raw.append(text)
                    self._fold.add(event)
                    self._emit(event)
                self._exit_code = await proc.wait()
                await stderr_task
            finally:
                await finish(self._cleanup(proc, stderr_task, prepared.cleanup))

    async def _cleanup(
        self,
        proc: OwnedProcess | None,
        stderr_task: asyncio.Task[None] | None,
        remove_dirs: Callable[[], None],
    ) -> None:
        if proc is not None:
            code = await proc.end()
            if self._exit_code is None:
                self._exit_code = code
        if stderr_task is not None:
            with contextlib.suppress(asyncio.CancelledError, asyncio.TimeoutError):
                await wait_within(stderr_task, 5)
        remove_dirs()

    def _partial(self) -> RunResult:
        stderr = "".join(self._stderr)
        fields = self._fold.fields()
        error, rejections = diagnose_run(fields, exit_code=self._exit_code, stderr=stderr)
        code = self._exit_code
        if code is not None and code < 0 and -code in _CANCEL_SIGNALS:
            error = RunError(
                kind="cancelled",
                message=f"opencode was stopped by signal {signal.Signals(-code).name} from outside",
            )
        elif (
            error is not None
            and error.kind == "process_exit"
            and not self._fold.model_was_called
            and _is_sqlite_startup_error(stderr)
        ):
            error.retryable = True  # a start-up crash: a fresh start usually works
        fields.update(
            error=error,
            permission_rejections=rejections,
            raw_stdout_lines=list(self._raw),
            exit_code=code,
            stderr=stderr,
        )
        return RunResult(**fields)


def _as_list(value: object) -> list[str]:
    if value is None or value is False:
        return []
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    return [str(value)]
