"""``AsyncOpenCodeClient``: one-shot runs, in run mode (one ``opencode run`` each) or on warm servers.

Every method is a thin use of one mechanism: the call becomes a
:class:`~opencode_wrapper.backends.request.RunRequest` (validated before anything starts) for the
client's backend — a :class:`~opencode_wrapper.backends.process.ProcessBackend`, or with
``warm_servers=True`` a :class:`~opencode_wrapper.ServerPool` — which returns a
:class:`~opencode_wrapper.RunHandle`. ``async_run`` drains it, ``async_stream`` iterates it,
``start`` hands it to you.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from opencode_wrapper._model.event import Event
from opencode_wrapper._model.outcome import RunResult
from opencode_wrapper._proc.binary import resolve_binary
from opencode_wrapper._proc.environment import build_env
from opencode_wrapper._validation import check_non_negative
from opencode_wrapper.backends.base import Backend, run_request, stream_request
from opencode_wrapper.backends.handle import RunHandle
from opencode_wrapper.backends.process import ProcessBackend, build_argv
from opencode_wrapper.backends.request import RunOptions, RunRequest
from opencode_wrapper.errors import OpenCodeConfigError
from opencode_wrapper.pool import ServerPool

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["AsyncOpenCodeClient", "build_argv", "build_env", "resolve_binary"]


def _at_least_one(value: object, name: str, *, allow_none: bool = False) -> None:
    if allow_none and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        suffix = " or None" if allow_none else ""
        raise OpenCodeConfigError(f"{name} must be an integer >= 1{suffix}, got {value!r}")


class AsyncOpenCodeClient:
    """Runs prompts in run mode (one ``opencode run`` each) or on warm servers; safe to share.

    Args:
        binary: the ``opencode`` executable (path or name); ``"opencode"`` means "find it":
            ``OPENCODE_BINARY``, then ``PATH``, then the per-user install.
        startup_concurrency: how many opencode processes (or warm servers) may start at once.
        startup_delay_s: how long each start holds its slot (spaces out SQLite initialisation).
        isolate_db: give each run (or warm server) a private data dir (its own SQLite DB), removed
            afterwards.
        shared_data_concurrency: how many runs of this client may use one shared data dir at
            once (``data_home=...``, or ``isolate_db=False``); the others wait their turn, inside
            their ``timeout_s``. opencode 1.18 fails prompts with "Failed to execute statement"
            when many processes write to one SQLite database (upstream issue #47566; 32 at once
            lost 27 runs here), and a run that failed after the model was called cannot be
            retried without sending its prompt twice. Runs with private data dirs are not limited.
        warm_servers: run on warm ``opencode serve`` processes (a :class:`ServerPool`) instead of
            one ``opencode run`` each: much faster and leaner for many runs. The client must then
            be used as ``async with client:``, which ends the servers on exit.
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
        _at_least_one(startup_concurrency, "startup_concurrency")
        check_non_negative(startup_delay_s, "startup_delay_s")
        _at_least_one(shared_data_concurrency, "shared_data_concurrency")
        _at_least_one(max_servers, "max_servers", allow_none=True)
        self.binary = os.fspath(binary)
        self._startup_concurrency = startup_concurrency
        self._startup_delay_s = float(startup_delay_s)
        self._process = ProcessBackend(
            self.binary,
            startup_concurrency=startup_concurrency,
            startup_delay_s=startup_delay_s,
            isolate_db=isolate_db,
            shared_data_concurrency=shared_data_concurrency,
        )
        self._warm_servers = bool(warm_servers)
        self._max_servers = max_servers
        self._lean = bool(lean)
        self._pool: ServerPool | None = None

    def __repr__(self) -> str:
        mode = "warm" if self._warm_servers else "run"
        return f"AsyncOpenCodeClient(binary={self.binary!r}, isolate_db={self.isolate_db}, {mode})"

    @property
    def isolate_db(self) -> bool:
        """Whether each run (or warm server) gets a private data dir."""
        return self._process.isolate_db

    async def __aenter__(self) -> AsyncOpenCodeClient:
        if self._warm_servers:
            if self._pool is not None:
                raise OpenCodeConfigError(
                    "this AsyncOpenCodeClient is already open; nest no second 'async with'"
                )
            self._pool = ServerPool(
                binary=self.binary,
                max_servers=self._max_servers,
                lean=self._lean,
                isolate_db=self.isolate_db,
                startup_concurrency=self._startup_concurrency,
                startup_delay_s=self._startup_delay_s,
            )
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.aclose()

    def resolved_binary(self) -> str:
        """The absolute path of the opencode binary (resolved and version-checked once)."""
        return self._process.resolved_binary()

    @property
    def backend(self) -> Backend:
        """Where this client's runs happen: run mode, or (``warm_servers``) its server pool."""
        if not self._warm_servers:
            return self._process
        if self._pool is None:
            raise OpenCodeConfigError(
                "AsyncOpenCodeClient(warm_servers=True) runs on servers it must end: use it as "
                "'async with client:' around your calls"
            )
        return self._pool

    # ------------------------------------------------------------------ public API

    def start(
        self, prompt: str, workspace: str | os.PathLike[str], **options: Unpack[RunOptions]
    ) -> RunHandle:
        """A :class:`RunHandle` for one run (checked now, started when entered, iterated or awaited).

        ``async with client.start(prompt, ws) as run: async for event in run: ...``; then
        ``run.result`` (never raises for a failed run: see ``result.error``, or
        ``result.raise_for_error()``). Options as for :meth:`async_run`.
        """
        return self.backend.open(RunRequest.create(prompt, workspace, **options))

    async def async_run(
        self, prompt: str, workspace: str | os.PathLike[str], **options: Unpack[RunOptions]
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
            log_file: write each event as a JSON line as it arrives (file mode 0600).
            log_exclude_types: event types to keep out of ``log_file`` (still in the result).
            on_event: called with each typed event as it arrives (a live view); an exception in
                it is logged and ignored.
            max_retries: extra attempts after opencode crashed while starting (or a warm server
                failed to start); only when the model was never called, so a prompt is never sent
                twice (default 2).
            retry_delay_s: pause between attempts (default 1 s).
            data_home: use this ``XDG_DATA_HOME`` (shared history) instead of a private one.
            files: files or directories to attach.
            title: the session's title (default: a fixed one, so no title request is made).
            output_schema, on_permission, on_question, callback_timeout_s: warm servers only
                (refused in run mode, where ``opencode run`` cannot do them); as for
                :meth:`OpenCodeSession.send`.

        Raises:
            OpenCodeConfigError: bad arguments, or an option this client's backend cannot honour
                (before anything is started).
            OpenCodeProcessError: opencode, its provider or its server failed; ``.result`` says why.
            OpenCodeTimeoutError: the timeout passed; ``.result`` holds what was done.
            OpenCodeCancelledError: opencode was stopped by a signal from outside.
        """
        return await run_request(self.backend, RunRequest.create(prompt, workspace, **options))

    def async_stream(
        self, prompt: str, workspace: str | os.PathLike[str], **options: Unpack[RunOptions]
    ) -> AsyncIterator[Event]:
        """Yield typed events as opencode emits them, on this client's backend.

        After the last event, raises what :meth:`async_run` raises (the process tree is ended
        first). Leaving the loop early ends the run; ``contextlib.aclosing`` makes that immediate.
        Options as for :meth:`async_run`; they are checked now, before anything starts.
        """
        return stream_request(self.backend, RunRequest.create(prompt, workspace, **options))
