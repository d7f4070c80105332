"""Multi-turn sessions over ``opencode serve``: ``OpenCodeSession`` and ``TurnStream``.

``OpenCodeSession(client, workspace, ...)`` is the seed API: it owns its own server for the
``async with`` block. ``server.session(...)`` gives the same object on a shared server. Each
:meth:`~OpenCodeSession.send` (or :meth:`~OpenCodeSession.stream`) is one turn, run like every
other run: a :class:`~opencode_wrapper.backends.request.RunRequest` for a
:class:`~opencode_wrapper.backends.server.ServerBackend` bound to the session, so turns have the
same events, results and errors as one-shot runs.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterable, Sequence
from types import TracebackType
from typing import Any, Protocol

from opencode_wrapper._eventlog import EventLog
from opencode_wrapper._model.event import Event
from opencode_wrapper._model.outcome import RunResult, raise_for_run
from opencode_wrapper._server.base import ServerBase
from opencode_wrapper._turn.callbacks import (
    DEFAULT_CALLBACK_TIMEOUT_S,
    PermissionCallback,
    PermissionReply,
    QuestionCallback,
    check_callback,
)
from opencode_wrapper._turn.link import SessionLink
from opencode_wrapper._validation import check_timeout, check_type_names, check_workspace
from opencode_wrapper.backends.base import run_request
from opencode_wrapper.backends.handle import RunHandle
from opencode_wrapper.backends.request import RunRequest
from opencode_wrapper.backends.server import ServerBackend, differing_global_fields
from opencode_wrapper.config import RunConfig, validate_config
from opencode_wrapper.errors import OpenCodeConfigError, OpenCodeError
from opencode_wrapper.hooks import Hooks
from opencode_wrapper.results import aggregate_server_result


class _Client(Protocol):
    """What a session needs of its :class:`~opencode_wrapper.AsyncOpenCodeClient`."""

    @property
    def isolate_db(self) -> bool: ...

    def resolved_binary(self) -> str: ...


__all__ = [
    "OpenCodeSession",
    "PermissionCallback",
    "PermissionReply",
    "QuestionCallback",
    "TurnStream",
    "aggregate_server_result",
]

_UNSET: Any = object()


class OpenCodeSession:
    """A multi-turn conversation: one opencode session, prompted turn after turn.

    ``async with OpenCodeSession(client, workspace) as s:`` starts a private ``opencode serve``
    (the same isolation as run mode) and creates a session in ``workspace``; leaving the block
    deletes the session and ends the server with every process it started. On a shared server
    use ``server.session(workspace)`` instead (same object, same methods).

    Args:
        client: the :class:`~opencode_wrapper.AsyncOpenCodeClient`; gives the binary and its
            ``isolate_db`` setting.
        workspace: an existing directory; the session's tools work there.
        run_cfg: ``model``/``agent``/``tools`` for every turn (a turn's ``run_cfg`` overrides
            them). ``permission``, ``mcp``, ``instructions``, ``config_overrides`` and
            ``extra_env`` configure the server (fixed for the session); ``"ask"`` is allowed.
        timeout_s: default per-turn timeout (the turn is aborted, then
            :class:`~opencode_wrapper.OpenCodeTimeoutError` is raised with the partial result).
        on_permission: ``async (request) -> "once" | "always" | "reject" | PermissionReply``;
            ``None`` rejects every request (the turn never blocks).
        on_question: ``async (request) -> list[list[str]] | None`` for the model's ``question``
            tool; ``None`` (or returning ``None``) dismisses the questions.
        log_file: every event of every turn, one JSON line each (file mode 0600, truncated at
            the start of the block).
        log_exclude_types: event types kept out of ``log_file`` (still in ``result.events``).
        session_id: resume this opencode session instead of creating one (needs a server that
            has it: ``server.session(...)``, or a client with ``isolate_db=False``).
        callback_timeout_s: a callback that has not answered after this long is cancelled and the
            request rejected (``None``: wait forever, e.g. for a human).
        delete_on_exit: delete the opencode session at the end of the block (default: yes,
            unless it was resumed).
        title: the new session's title. Without one, opencode asks the model for a title on
            the first prompt (one more model request); ignored when resuming.
        hooks: tool hooks for every turn (:class:`~opencode_wrapper.Hooks`): ``before_tool``
            sees and may refuse each tool call, ``after_tool`` each finished one, ``on_turn_end``
            each turn's result. On a shared server, ``before_tool`` needs a server started with
            ``hooks.server_config(run_cfg)``.
    """

    def __init__(
        self,
        client: _Client | None,
        workspace: str | os.PathLike[str],
        *,
        run_cfg: RunConfig | None = None,
        timeout_s: float | None = None,
        on_permission: PermissionCallback | None = None,
        on_question: QuestionCallback | None = None,
        log_file: str | os.PathLike[str] | None = None,
        log_exclude_types: Iterable[str] | None = None,
        session_id: str | None = None,
        callback_timeout_s: float | None = DEFAULT_CALLBACK_TIMEOUT_S,
        delete_on_exit: bool | None = None,
        title: str | None = None,
        hooks: Hooks | None = None,
        _server: ServerBase | None = None,
    ) -> None:
        if _server is None and client is None:
            raise OpenCodeConfigError(
                "OpenCodeSession needs an AsyncOpenCodeClient (or use server.session(...))"
            )
        self._workspace = check_workspace(workspace)
        cfg = RunConfig() if run_cfg is None else run_cfg
        validate_config(cfg, allow_ask=True)
        check_callback(on_permission, "on_permission")
        check_callback(on_question, "on_question")
        if session_id is not None and (not isinstance(session_id, str) or not session_id.startswith("ses")):
            raise OpenCodeConfigError(
                f"session_id must be an opencode session id ('ses_...'), got {session_id!r}"
            )
        if title is not None and (not isinstance(title, str) or not title.strip()):
            raise OpenCodeConfigError(f"title must be a non-empty string or None, got {title!r}")
        if hooks is not None and not isinstance(hooks, Hooks):
            raise OpenCodeConfigError(f"hooks must be a Hooks(...) or None, got {type(hooks).__name__}")
        if _server is not None:
            wanted = _server.run_cfg.merged_with(run_cfg)
            differing = differing_global_fields(
                hooks.server_config(wanted) if hooks else wanted, _server.run_cfg
            )
            if differing and hooks is not None and hooks.intercepts and differing == ["permission"]:
                raise OpenCodeConfigError(
                    "Hooks(before_tool=...) on a shared server need it to ask opencode's permission for the "
                    "matched tools: start it as OpenCodeServer(run_cfg=hooks.server_config(cfg))"
                )
            if differing:
                raise OpenCodeConfigError(
                    f"RunConfig field(s) {differing} of this session differ from the server's: they "
                    "configure the server, which is already running; a session on it can only choose "
                    "model, agent and tools"
                )
        self._client = client
        # On a shared server, the server's model/agent/tools are the defaults of its sessions.
        self._base_cfg = cfg if _server is None else _server.run_cfg.merged_with(run_cfg)
        self._timeout_s = check_timeout(timeout_s)
        self._callback_timeout_s = check_timeout(callback_timeout_s, "callback_timeout_s")
        self._on_permission = on_permission
        self._on_question = on_question
        self._log_file = log_file
        self._log_exclude = check_type_names(log_exclude_types, "log_exclude_types")
        self._title = title
        self._hooks = hooks
        self._requested_id = session_id
        self._delete_on_exit = delete_on_exit
        self._server = _server
        self._owns_server = _server is None
        self._link: SessionLink | None = None
        self._backend: ServerBackend | None = None
        self._streams: set[RunHandle] = set()
        self._state = "new"  # new -> opening -> open -> closed

    def __repr__(self) -> str:
        return (
            f"OpenCodeSession(session_id={self.session_id!r}, workspace={self._workspace!r}, "
            f"state={self._state!r})"
        )

    @property
    def session_id(self) -> str | None:
        """The opencode session's id (once open)."""
        return self._link.session_id if self._link is not None else self._requested_id

    @property
    def workspace(self) -> str:
        """The session's directory (absolute)."""
        return self._workspace

    @property
    def server(self) -> ServerBase | None:
        """The server the session runs on."""
        return self._server

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> OpenCodeSession:
        if self._state != "new":
            raise OpenCodeError("an OpenCodeSession can be entered only once")
        self._state = "opening"
        try:
            await self._open()
        except BaseException:
            await self.aclose()
            raise
        self._state = "open"
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def _open(self) -> None:
        if self._owns_server:
            assert self._client is not None
            binary = await asyncio.to_thread(self._client.resolved_binary)
            server_cfg = self._hooks.server_config(self._base_cfg) if self._hooks else self._base_cfg
            self._server = ServerBase(
                binary=binary, run_cfg=server_cfg, isolate_db=self._client.isolate_db, cwd=self._workspace
            )
            await self._server.start()
        assert self._server is not None
        if self._server.closing:
            raise OpenCodeError("the OpenCodeServer is closing")
        link = SessionLink(
            self._server,
            self._workspace,
            session_id=self._requested_id,
            title=self._title,
            delete_on_exit=self._delete_on_exit,
        )
        self._link = link
        await link.open()
        if self._log_file is not None:
            link.log = EventLog(self._log_file, self._log_exclude)
        self._backend = ServerBackend(self._server, link=link)

    async def aclose(self) -> None:
        """Abort a running turn, delete the session (see ``delete_on_exit``), end an owned server."""
        if self._state == "closed":
            return
        self._state = "closed"
        try:
            for handle in list(self._streams):
                await handle.aclose()
            if self._link is not None:
                await self._link.close()
        finally:
            if self._link is not None and self._link.log is not None:
                self._link.log.close()
            if self._owns_server and self._server is not None:
                await self._server.aclose()

    # ------------------------------------------------------------------ turns

    async def send(
        self,
        prompt: str,
        *,
        run_cfg: RunConfig | None = None,
        timeout_s: float | None = _UNSET,
        on_permission: PermissionCallback | None = _UNSET,
        on_question: QuestionCallback | None = _UNSET,
        files: Sequence[str | os.PathLike[str]] | None = None,
        output_schema: Any = None,
    ) -> RunResult:
        """Run one turn and return its :class:`~opencode_wrapper.RunResult` (this turn only).

        ``result.ok``/``result.error`` say how it ended (``aborted``, ``permission_rejected``,
        ``callback_error``, ``structured_output``...).

        Args:
            prompt: the message.
            run_cfg: this turn's ``model``/``agent``/``tools`` (merged over the session's); a field
                that configures the server (``permission``, ``mcp``, ...) is refused.
            timeout_s: this turn's timeout (default: the session's).
            on_permission: this turn's permission callback (default: the session's).
            on_question: this turn's question callback (default: the session's).
            files: files or directories to attach (paths; relative ones are resolved against the
                current directory). opencode inlines them into the prompt.
            output_schema: ask for structured output: a JSON schema dict (of an object) or a
                pydantic model class. ``result.structured`` is the validated value (a model
                instance for pydantic); a non-matching answer gives ``error.kind ==
                "structured_output"`` with the reasons and the raw value in ``error.detail``.

        Raises:
            OpenCodeConfigError: bad arguments (nothing was sent).
            OpenCodeProcessError: the model provider or opencode reported an error
                (``api_error``, ``session_error``); ``.result`` holds what the turn produced.
            OpenCodeTimeoutError: the timeout passed; the turn was aborted; ``.result`` holds
                what it produced.
            OpenCodeServerError: the server died, refused a request, or its event stream broke;
                ``.result`` holds what the turn produced.
        """
        request = self._request(prompt, run_cfg, timeout_s, on_permission, on_question, files, output_schema)
        return await run_request(self._require_backend(), request)

    def stream(
        self,
        prompt: str,
        *,
        run_cfg: RunConfig | None = None,
        timeout_s: float | None = _UNSET,
        on_permission: PermissionCallback | None = _UNSET,
        on_question: QuestionCallback | None = _UNSET,
        files: Sequence[str | os.PathLike[str]] | None = None,
        output_schema: Any = None,
    ) -> TurnStream:
        """Run one turn, yielding its events live (``message.part.delta`` text deltas included).

        ``async for event in s.stream(prompt): ...`` ends with the turn; the result is then
        ``stream.result``. Leaving the loop early does not stop the turn: use
        ``async with s.stream(prompt) as events:`` (or :meth:`abort`) to stop it on exit.
        Arguments and errors as for :meth:`send`; errors are raised by the iteration.
        """
        request = self._request(prompt, run_cfg, timeout_s, on_permission, on_question, files, output_schema)
        handle = self._require_backend().open(request)
        self._streams.add(handle)
        return TurnStream(handle, lambda: self._streams.discard(handle))

    async def abort(self) -> None:
        """Stop the running turn, if any, and the commands it started; the session stays usable.

        The running ``send``/``stream`` then ends with ``result.error.kind == "aborted"``.
        """
        await self._require_link().abort()

    # ------------------------------------------------------------------ internals

    def _require_link(self) -> SessionLink:
        if self._state != "open" or self._link is None:
            raise RuntimeError("OpenCodeSession.send() must be called inside 'async with'")
        return self._link

    def _require_backend(self) -> ServerBackend:
        self._require_link()
        assert self._backend is not None
        return self._backend

    def _request(
        self,
        prompt: object,
        run_cfg: RunConfig | None,
        timeout_s: object,
        on_permission: Any,
        on_question: Any,
        files: Sequence[str | os.PathLike[str]] | None,
        output_schema: Any,
    ) -> RunRequest:
        # Bad arguments are named before anything else (even on a session not yet open).
        if run_cfg is not None:
            validate_config(run_cfg, allow_ask=True)
        request = RunRequest.create(
            prompt,
            self._workspace,
            run_cfg=self._base_cfg.merged_with(run_cfg),
            timeout_s=self._timeout_s if timeout_s is _UNSET else timeout_s,
            on_permission=self._on_permission if on_permission is _UNSET else on_permission,
            on_question=self._on_question if on_question is _UNSET else on_question,
            callback_timeout_s=self._callback_timeout_s,
            files=files,
            output_schema=output_schema,
            hooks=self._hooks,
        )
        self._require_link()
        return request


class TurnStream:
    """The live events of one turn (from :meth:`OpenCodeSession.stream`), then its result.

    An async iterator of :class:`~opencode_wrapper.Event`; also an async context manager whose
    exit aborts the turn if it is still running. The turn runs in a task owned by its
    :class:`~opencode_wrapper.RunHandle`, so it is never left half-way: closing the session ends it.
    """

    def __init__(self, handle: RunHandle, on_done: Any = None) -> None:
        self._handle = handle
        self._on_done = on_done

    @property
    def handle(self) -> RunHandle:
        """The turn's run handle."""
        return self._handle

    def __aiter__(self) -> TurnStream:
        return self

    async def __anext__(self) -> Event:
        try:
            return await self._handle.__anext__()
        except StopAsyncIteration:
            self._done()
            raise_for_run(self._handle.result)
            raise

    def _done(self) -> None:
        if self._on_done is not None:
            self._on_done()
            self._on_done = None

    async def __aenter__(self) -> TurnStream:
        self._handle.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    @property
    def result(self) -> RunResult:
        """The turn's result (for a failed turn: its partial result). Only after the end."""
        return self._handle.result

    async def aclose(self) -> None:
        """Abort the turn if it is still running and wait for its end."""
        await self._handle.aclose()
        self._done()
