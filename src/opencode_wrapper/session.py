"""Multi-turn sessions over ``opencode serve``: ``OpenCodeSession`` and one turn's machinery.

``OpenCodeSession(client, workspace, ...)`` is the seed API: it owns its own
:class:`~opencode_wrapper.OpenCodeServer` for the ``async with`` block. ``server.session(...)``
gives the same object on a shared server. Each :meth:`~OpenCodeSession.send` (or
:meth:`~OpenCodeSession.stream`) is one turn:

1. subscribe to the session's events (the server's one event stream, routed by session);
2. post the prompt (``prompt_async``) with a user message id we chose;
3. answer permission and question requests with the callbacks, each in its own task so that
   events keep flowing;
4. stop when :class:`~opencode_wrapper._turn.TurnTracker` says the turn is over, and build the
   result from this turn's events only.

Turns of one session run one at a time (a lock); opencode would otherwise merge them.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import mimetypes
import os
from collections.abc import AsyncIterator, Awaitable, Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from opencode_wrapper._aio import finish, wait_within
from opencode_wrapper._callbacks import (
    PermissionCallback,
    PermissionReply,
    QuestionCallback,
    check_callback,
    read_answers,
    read_permission_reply,
)
from opencode_wrapper._eventlog import EventLog
from opencode_wrapper._http import ServerHTTPError
from opencode_wrapper._observers import EventCallback, notify
from opencode_wrapper._turn import (
    StructuredSpec,
    TurnTracker,
    aggregate_server_result,
    new_message_id,
    run_error_from,
    structured_spec,
)
from opencode_wrapper._validation import check_prompt, check_timeout, check_type_names, check_workspace
from opencode_wrapper.config import RunConfig, split_model, validate_config
from opencode_wrapper.errors import (
    OpenCodeConfigError,
    OpenCodeError,
    OpenCodeServerError,
    OpenCodeTimeoutError,
)
from opencode_wrapper.events import Event, EventError, PermissionRejection, RunError, RunResult
from opencode_wrapper.server import DEFAULT_CALLBACK_TIMEOUT_S, OpenCodeServer, _Subscription

if TYPE_CHECKING:
    from opencode_wrapper.client import AsyncOpenCodeClient

__all__ = [
    "OpenCodeSession",
    "PermissionCallback",
    "PermissionReply",
    "QuestionCallback",
    "TurnStream",
    "aggregate_server_result",
]

_UNSET: Any = object()

# After a timeout or a cancellation: how long, in all, the abort request plus following the turn
# to its end may take (so the partial result is complete and the session idle for the next turn).
# Short, because the caller is waiting: a timeout is reported within this of ``timeout_s``. A turn
# still running after it is aborted by opencode anyway, and a next prompt queues behind it.
_ABORT_SETTLE_S = 1.5
_ABORT_TIMEOUT_S = 5.0
# A session.error before our message was stored: how long our message may still take to appear
# before the prompt counts as refused (e.g. an agent that only exists in a file opencode reads).
_REFUSAL_GRACE_S = 3.0


class _Deadline(Exception):
    """Internal: the turn's deadline passed."""


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
    """

    def __init__(
        self,
        client: AsyncOpenCodeClient | None,
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
        _server: OpenCodeServer | None = None,
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
        self._client = client
        # On a shared server, the server's model/agent/tools are the defaults of its sessions.
        self._base_cfg = cfg if _server is None else _server.run_cfg.merged_with(run_cfg)
        self._timeout_s = check_timeout(timeout_s)
        self._callback_timeout_s = check_timeout(callback_timeout_s, "callback_timeout_s")
        self._on_permission = on_permission
        self._on_question = on_question
        self._log_file = log_file
        self._log_exclude = check_type_names(log_exclude_types, "log_exclude_types")
        self._log: EventLog | None = None
        if title is not None and (not isinstance(title, str) or not title.strip()):
            raise OpenCodeConfigError(f"title must be a non-empty string or None, got {title!r}")
        self._title = title
        self._delete_on_exit = (session_id is None) if delete_on_exit is None else bool(delete_on_exit)
        self._server: OpenCodeServer | None = _server
        self._owns_server = _server is None
        self.session_id: str | None = session_id
        self._lock = asyncio.Lock()
        self._active: _Turn | None = None
        self._streams: set[asyncio.Task[RunResult]] = set()
        self._agents: set[str] | None = None
        self._default_model: dict[str, str] | None = None
        self._model_overridden = False
        self._state = "new"  # new -> open -> closed

    def __repr__(self) -> str:
        return (
            f"OpenCodeSession(session_id={self.session_id!r}, workspace={self._workspace!r}, "
            f"state={self._state!r})"
        )

    @property
    def workspace(self) -> str:
        """The session's directory (absolute)."""
        return self._workspace

    @property
    def server(self) -> OpenCodeServer | None:
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
            self._server = OpenCodeServer(
                binary=binary,
                run_cfg=self._base_cfg,
                isolate_db=self._client._isolate_db,
                cwd=self._workspace,
            )
            await self._server.start()
        server = self._require_server()
        server._check_usable()
        if self.session_id is None:
            body = {} if self._title is None else {"title": self._title}
            info = await server._request("POST", "/session", params=self._where(), json_body=body)
            if not isinstance(info, dict) or not isinstance(info.get("id"), str):
                raise OpenCodeServerError(
                    exit_code=None, stderr="", message=f"unexpected POST /session answer {info!r}"
                )
            self.session_id = info["id"]
        else:
            try:
                await server._request("GET", f"/session/{self.session_id}", params=self._where())
            except ServerHTTPError as exc:
                if exc.status_code == 404:
                    raise OpenCodeConfigError(
                        f"no session {self.session_id!r} on this server; resume a session of the same server "
                        "(or of the same data_home)"
                    ) from exc
                raise
        if self._log_file is not None:
            self._log = EventLog(self._log_file, self._log_exclude)
        server._add_session(self)

    async def aclose(self) -> None:
        """Abort a running turn, delete the session (see ``delete_on_exit``), end an owned server."""
        await self._close(close_server=True)

    async def _server_closing(self) -> None:
        await self._close(close_server=False)

    async def _close(self, *, close_server: bool) -> None:
        if self._state == "closed":
            return
        self._state = "closed"
        server = self._server
        try:
            if server is not None and server.alive:
                if self._active is not None or self._streams:
                    with contextlib.suppress(OpenCodeError):
                        await self._post_abort()
                for task in list(self._streams):
                    task.cancel()
                if self._streams:
                    await asyncio.gather(*self._streams, return_exceptions=True)
                if self._delete_on_exit and self.session_id is not None:
                    with contextlib.suppress(OpenCodeError):
                        await server._request(
                            "DELETE",
                            f"/session/{self.session_id}",
                            params=self._where(),
                            timeout_s=_ABORT_TIMEOUT_S,
                        )
            else:
                for task in list(self._streams):
                    task.cancel()
                if self._streams:
                    await asyncio.gather(*self._streams, return_exceptions=True)
        finally:
            if server is not None:
                server._remove_session(self)
            if self._log is not None:
                self._log.close()
            if self._owns_server and close_server and server is not None:
                await server.aclose()

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

        ``result.ok``/``result.error`` say how it ended (``aborted``, ``api_error``,
        ``permission_rejected``, ``callback_error``, ``structured_output``...).

        Args:
            prompt: the message.
            run_cfg: this turn's ``model``/``agent``/``tools`` (merged over the session's).
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
            OpenCodeTimeoutError: the timeout passed; the turn was aborted; ``.result`` holds
                what it produced.
            OpenCodeServerError: the server died, refused a request, or its event stream broke;
                ``.result`` holds what the turn produced.
        """
        turn = self._prepare(prompt, run_cfg, timeout_s, on_permission, on_question, files, output_schema)
        async with self._lock:
            return await turn.run()

    async def _send_observed(self, prompt: str, on_event: EventCallback | None) -> RunResult:
        """:meth:`send`, with ``on_event`` called for each event (for ``OpenCodeServer.run``)."""
        turn = self._prepare(prompt, None, _UNSET, _UNSET, _UNSET, None, None)
        if on_event is not None:
            turn.sink = lambda event: notify(on_event, event)
        async with self._lock:
            return await turn.run()

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
        turn = self._prepare(prompt, run_cfg, timeout_s, on_permission, on_question, files, output_schema)
        return TurnStream(self, turn)

    async def abort(self) -> None:
        """Stop the running turn, if any, and the commands it started; the session stays usable.

        The running ``send``/``stream`` then ends with ``result.error.kind == "aborted"``.
        """
        self._check_open()
        if self._active is not None:
            # The turn may not have reached opencode yet (then abort finds an idle session): it
            # remembers, and aborts again once opencode runs it.
            self._active.request_abort()
        await self._post_abort()

    async def _post_abort(self, timeout_s: float = _ABORT_TIMEOUT_S) -> None:
        server = self._require_server()
        await server._request(
            "POST", f"/session/{self.session_id}/abort", params=self._where(), timeout_s=timeout_s
        )

    # ------------------------------------------------------------------ internals

    def _require_server(self) -> OpenCodeServer:
        if self._server is None:
            raise OpenCodeError("the session has no server (not entered yet)")
        return self._server

    def _check_open(self) -> None:
        if self._state != "open" or self.session_id is None:
            raise RuntimeError("OpenCodeSession.send() must be called inside 'async with'")

    def _where(self) -> dict[str, str]:
        return {"directory": self._workspace}

    def _prepare(
        self,
        prompt: object,
        run_cfg: RunConfig | None,
        timeout_s: object,
        on_permission: Any,
        on_question: Any,
        files: Sequence[str | os.PathLike[str]] | None,
        output_schema: Any,
    ) -> _Turn:
        check_prompt(prompt)
        assert isinstance(prompt, str)
        if run_cfg is not None:
            validate_config(run_cfg, allow_ask=True)
        cfg = self._base_cfg.merged_with(run_cfg)
        timeout = self._timeout_s if timeout_s is _UNSET else check_timeout(timeout_s)
        on_perm = self._on_permission if on_permission is _UNSET else on_permission
        on_q = self._on_question if on_question is _UNSET else on_question
        check_callback(on_perm, "on_permission")
        check_callback(on_q, "on_question")
        parts: list[dict[str, Any]] = [{"type": "text", "text": prompt}]
        parts += _file_parts(files)
        spec = structured_spec(output_schema) if output_schema is not None else None
        self._check_open()
        return _Turn(self, parts, cfg, timeout, on_perm, on_q, spec)

    async def _unknown_agent(self, name: str) -> list[str] | None:
        """``None`` if opencode knows agent ``name`` here, else the names it knows."""
        if self._agents is None or name not in self._agents:
            data = await self._require_server()._request("GET", "/agent", params=self._where())
            self._agents = {
                a["name"] for a in data or [] if isinstance(a, dict) and isinstance(a.get("name"), str)
            }
        return None if name in self._agents else sorted(self._agents)

    async def _model_for(self, cfg: RunConfig) -> dict[str, str] | None:
        """The model to send. opencode reuses a session's *last* model when a prompt names none,
        so once a turn chose another model, later turns must name the default one again."""
        if cfg.model:
            chosen = split_model(cfg.model)
            if chosen != self._default_model:
                self._model_overridden = True
            return chosen
        if self._default_model is None and self._model_overridden:
            config = await self._require_server()._request("GET", "/config", params=self._where())
            model = config.get("model") if isinstance(config, dict) else None
            if isinstance(model, str) and "/" in model:
                self._default_model = split_model(model)
        return self._default_model if self._model_overridden else None

    def _record(self, event: Event) -> None:
        if self._log is not None:
            self._log.write(event)


def _file_parts(files: Sequence[str | os.PathLike[str]] | None) -> list[dict[str, Any]]:
    if files is None:
        return []
    if isinstance(files, (str, bytes, os.PathLike)):
        raise OpenCodeConfigError(f"files must be a list of paths, not a single path {files!r}")
    parts = []
    for item in files:
        if not isinstance(item, (str, os.PathLike)):
            raise OpenCodeConfigError(f"files must contain paths (str or os.PathLike), got {item!r}")
        path = Path(os.fspath(item)).expanduser().resolve()
        if not path.exists():
            raise OpenCodeConfigError(f"file to attach {os.fspath(item)!r} does not exist")
        if path.is_dir():
            mime = "application/x-directory"
        else:
            mime = mimetypes.guess_type(path.name)[0] or "text/plain"
        parts.append({"type": "file", "mime": mime, "filename": path.name, "url": path.as_uri()})
    return parts


class _Turn:
    """One prompt and everything until its end (see the module docstring)."""

    def __init__(
        self,
        session: OpenCodeSession,
        parts: list[dict[str, Any]],
        cfg: RunConfig,
        timeout_s: float | None,
        on_permission: PermissionCallback | None,
        on_question: QuestionCallback | None,
        spec: StructuredSpec | None,
    ) -> None:
        self.session = session
        self.parts = parts
        self.cfg = cfg
        self.timeout_s = timeout_s
        self.on_permission = on_permission
        self.on_question = on_question
        self.spec = spec
        self.message_id = new_message_id()
        self.events: list[Event] = []
        self.callback_errors: list[RunError] = []
        self.rejections: list[PermissionRejection] = []
        self.handlers: set[asyncio.Task[None]] = set()
        self.sink: Any = None  # a stream's callable(Event), if any
        self.tracker: TurnTracker | None = None
        self.sub: _Subscription | None = None
        self.sent_model = False
        self.abort_requested = False

    # ------------------------------------------------------------------ the turn

    async def run(self) -> RunResult:
        session = self.session
        session._check_open()
        server = session._require_server()
        assert session.session_id is not None
        self.tracker = TurnTracker(session.session_id, self.message_id)
        loop = asyncio.get_running_loop()
        deadline = None if self.timeout_s is None else loop.time() + self.timeout_s
        sub = self.sub = server._subscribe(session.session_id)
        session._active = self
        try:
            refused = await self._send()
            if refused is not None:
                return refused
            await self._follow(sub, deadline)
            if self.abort_requested:
                # The turn may have ended on an idle that came before opencode ran the prompt:
                # make sure nothing of it runs on after we report it aborted.
                with contextlib.suppress(OpenCodeError):
                    await session._post_abort()
            return self._result()
        except _Deadline:
            await finish(self._abort_and_settle(sub))
            result = self._result()
            result.error = RunError(
                kind="timeout", message=f"no result within timeout_s={self.timeout_s!r}; the turn was aborted"
            )
            raise OpenCodeTimeoutError(
                f"OpenCode session turn exceeded timeout_s={self.timeout_s!r}; the turn was aborted",
                timeout_s=self.timeout_s,
                result=result,
            ) from None
        except asyncio.CancelledError:
            await finish(self._abort_and_settle(sub))
            raise
        except OpenCodeServerError as exc:
            if exc.result is None:
                result = self._result()
                result.error = RunError(kind="server_failure", message=exc.message or str(exc))
                exc.result = result
                exc.events = list(result.events)
            raise
        finally:
            await self._stop_handlers()
            server._unsubscribe(sub)
            session._active = None

    async def _send(self) -> RunResult | None:
        session = self.session
        server = session._require_server()
        body: dict[str, Any] = {"messageID": self.message_id, "parts": self.parts}
        if self.abort_requested:
            return self._aborted_before_start()
        if self.cfg.agent:
            known = await session._unknown_agent(self.cfg.agent)
            if known is not None:
                # opencode would only publish two session.error events and never go idle.
                result = RunResult(session_id=session.session_id, exit_code=0)
                result.error = RunError(
                    kind="session_error",
                    name="UnknownError",
                    message=f'Agent not found: "{self.cfg.agent}". Available agents: {", ".join(known)}',
                )
                return result
            body["agent"] = self.cfg.agent
        model = await session._model_for(self.cfg)
        if model is not None:
            body["model"] = model
            self.sent_model = True
        if self.cfg.tools:
            body["tools"] = {name: bool(on) for name, on in self.cfg.tools.items()}
        if self.spec is not None:
            body["format"] = {"type": "json_schema", "schema": self.spec.schema}
        if self.abort_requested:
            return self._aborted_before_start()
        await server._request(
            "POST", f"/session/{session.session_id}/prompt_async", params=session._where(), json_body=body
        )
        return None

    async def _follow(self, sub: _Subscription, deadline: float | None) -> None:
        """Consume events until the turn is over; raise :class:`_Deadline` at ``deadline``."""
        tracker = self.tracker
        assert tracker is not None
        loop = asyncio.get_running_loop()
        recheck_at: float | None = None
        while not tracker.finished:
            wake = min((t for t in (deadline, recheck_at) if t is not None), default=None)
            event = await sub.get(None if wake is None else max(0.0, wake - loop.time()))
            now = loop.time()
            if event is None:
                if deadline is not None and now >= deadline:
                    raise _Deadline
                if recheck_at is not None and now >= recheck_at:
                    recheck_at = None
                    tracker.message_exists(await self._message_exists())
                continue
            if event.type == "server.heartbeat":
                await self._safety_check()
                continue
            self._take(event)
            if (
                self.abort_requested
                and event.type == "session.status"
                and tracker.status not in (None, "idle")
            ):
                # An abort that reached opencode before it ran the prompt did nothing: repeat it
                # while the turn still runs (opencode may ignore one sent as the loop starts).
                await self.session._post_abort()
            if tracker.refused and recheck_at is None:
                if await self._message_exists():
                    tracker.message_exists(True)
                else:
                    recheck_at = now + _REFUSAL_GRACE_S

    def _take(self, event: Event) -> None:
        assert self.tracker is not None
        self.session._record(event)  # the log keeps the session's whole life
        self.tracker.feed(event)
        if not self.tracker.seen_user and event.type != "session.error":
            # Still the previous turn's tail (its late updates, a second idle): not this turn's.
            return
        self.events.append(event)
        if event.type == "permission.asked":
            self._spawn(self._answer_permission(dict(event.properties)))
        elif event.type == "question.asked":
            self._spawn(self._answer_question(dict(event.properties)))
        if self.sink is not None:
            self.sink(event)

    def request_abort(self) -> None:
        self.abort_requested = True
        if self.tracker is not None:
            self.tracker.abort_requested = True

    def _aborted_before_start(self) -> RunResult:
        result = RunResult(session_id=self.session.session_id, exit_code=0)
        result.error = RunError(kind="aborted", message="aborted before the prompt was sent")
        return result

    async def _safety_check(self) -> None:
        """On each heartbeat (10 s): catch a lost idle event by asking the server directly."""
        tracker = self.tracker
        assert tracker is not None
        session = self.session
        if tracker.finished or not tracker.seen_user:
            return
        if self.abort_requested:
            await session._post_abort()
        status = await session._require_server()._request("GET", "/session/status", params=session._where())
        if isinstance(status, dict) and session.session_id not in status:
            tracker.server_idle()

    async def _message_exists(self) -> bool:
        session = self.session
        try:
            await session._require_server()._request(
                "GET", f"/session/{session.session_id}/message/{self.message_id}", params=session._where()
            )
        except ServerHTTPError as exc:
            if exc.status_code in (400, 404):
                return False
            raise
        return True

    async def _abort_and_settle(self, sub: _Subscription) -> None:
        """Abort the turn and follow it to its end (bounded), so the session is idle afterwards."""
        self.request_abort()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _ABORT_SETTLE_S
        with contextlib.suppress(OpenCodeError):
            await self.session._post_abort(timeout_s=_ABORT_SETTLE_S)
            with contextlib.suppress(_Deadline):
                await self._follow(sub, deadline)

    # ------------------------------------------------------------------ requests

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self.handlers.add(task)
        task.add_done_callback(self._handler_done)

    def _handler_done(self, task: asyncio.Task[None]) -> None:
        self.handlers.discard(task)
        if not task.cancelled() and task.exception() is not None and self.sub is not None:
            # The answer could not be sent (the server failed): opencode would wait for it
            # forever, so the turn fails now with that error.
            self.sub.fail(task.exception())  # type: ignore[arg-type]

    async def _stop_handlers(self) -> None:
        for task in list(self.handlers):
            task.cancel()
        if self.handlers:
            await asyncio.gather(*self.handlers, return_exceptions=True)

    async def _ask(self, name: str, callback: Any, request: dict[str, Any]) -> tuple[Any, str | None]:
        """Call a callback with the deadline; ``(value, None)`` or ``(None, why it failed)``."""
        timeout = self.session._callback_timeout_s
        try:
            return await wait_within(callback(request), timeout), None
        except asyncio.TimeoutError:
            return None, f"{name} did not answer within callback_timeout_s={timeout!r}"
        except Exception as exc:
            return None, f"{name} raised {type(exc).__name__}: {exc}"

    def _callback_failed(self, name: str, problem: str, request: dict[str, Any]) -> None:
        self.callback_errors.append(
            RunError(
                kind="callback_error",
                message=f"{problem}; the request was rejected",
                detail={
                    "callback": name,
                    "request": request,
                },
            )
        )

    async def _answer_permission(self, request: dict[str, Any]) -> None:
        decision, message = "reject", None
        if self.on_permission is not None:
            value, problem = await self._ask("on_permission", self.on_permission, dict(request))
            if problem is None:
                try:
                    decision, message = read_permission_reply(value)
                except ValueError as exc:
                    problem = str(exc)
            if problem is not None:
                self._callback_failed("on_permission", problem, request)
        body: dict[str, Any] = {"reply": decision}
        if message is not None:
            body["message"] = message
        if decision == "reject":
            patterns = request.get("patterns")
            self.rejections.append(
                PermissionRejection(
                    permission=str(request.get("permission") or ""),
                    pattern=", ".join(map(str, patterns))
                    if isinstance(patterns, list) and patterns
                    else None,
                    message=message,
                )
            )
        await self._reply(f"/permission/{request.get('id')}/reply", body)

    async def _answer_question(self, request: dict[str, Any]) -> None:
        answers = None
        if self.on_question is not None:
            value, problem = await self._ask("on_question", self.on_question, dict(request))
            if problem is None:
                questions = request.get("questions")
                try:
                    answers = read_answers(value, questions if isinstance(questions, list) else [])
                except ValueError as exc:
                    problem = str(exc)
            if problem is not None:
                self._callback_failed("on_question", problem, request)
        request_id = request.get("id")
        if answers is None:
            await self._reply(f"/question/{request_id}/reject", None)
        else:
            await self._reply(f"/question/{request_id}/reply", {"answers": answers})

    async def _reply(self, path: str, body: dict[str, Any] | None) -> None:
        session = self.session
        try:
            await session._require_server()._request("POST", path, params=session._where(), json_body=body)
        except ServerHTTPError as exc:
            if exc.status_code != 404:  # 404: already answered elsewhere, or the turn was aborted
                raise

    # ------------------------------------------------------------------ result

    def _result(self) -> RunResult:
        session = self.session
        tracker = self.tracker
        result = aggregate_server_result(
            events=list(self.events), session_id=session.session_id, user_message_id=self.message_id
        )
        if self.abort_requested and result.error is None and result.turns == 0:
            result.error = RunError(kind="aborted", message="aborted before opencode ran the prompt")
        if tracker is not None and tracker.ended_without_message:
            refusal = tracker.refusal() or EventError(
                {"name": "UnknownError", "data": {"message": "prompt refused"}}
            )
            result.error = run_error_from(refusal)
        if self.rejections:
            result.permission_rejections = list(self.rejections)
        if self.callback_errors and (
            result.error is None or result.error.kind in ("permission_rejected", "question_rejected")
        ):
            first = self.callback_errors[0]
            if len(self.callback_errors) > 1:
                first.detail["others"] = [e.message for e in self.callback_errors[1:]]
            result.error = first
        if self.spec is not None and (result.error is None or result.error.kind == "structured_output"):
            self._check_structured(result)
        self._learn_default_model()
        return result

    def _check_structured(self, result: RunResult) -> None:
        assert self.spec is not None
        raw = result.structured
        if raw is None:
            if result.error is None:
                result.error = RunError(
                    kind="structured_output", message="the model did not produce structured output"
                )
            return
        value, problems = self.spec.check(raw)
        if problems:
            result.structured = None
            result.error = RunError(
                kind="structured_output",
                message="the structured output does not match output_schema: " + "; ".join(problems)[:2000],
                detail={"value": raw, "problems": problems},
            )
        else:
            result.structured = value

    def _learn_default_model(self) -> None:
        """Remember the model opencode chose when we named none (to name it again later)."""
        session = self.session
        if self.sent_model or session._model_overridden or session._default_model is not None:
            return
        for event in self.events:
            info = event.properties.get("info") if event.type == "message.updated" else None
            if isinstance(info, dict) and info.get("id") == self.message_id:
                model = info.get("model")
                if isinstance(model, dict) and isinstance(model.get("providerID"), str):
                    session._default_model = {
                        "providerID": model["providerID"],
                        "modelID": str(model.get("modelID")),
                    }
                return


class TurnStream:
    """The live events of one turn (from :meth:`OpenCodeSession.stream`), then its result.

    An async iterator of :class:`~opencode_wrapper.Event`; also an async context manager whose
    exit aborts the turn if it is still running. The turn runs in a task owned by the session,
    so it is never left half-way: closing the session ends it.
    """

    def __init__(self, session: OpenCodeSession, turn: _Turn) -> None:
        self._session = session
        self._turn = turn
        self._buffer: collections.deque[Event] = collections.deque()
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[RunResult] | None = None
        turn.sink = self._push

    def __aiter__(self) -> AsyncIterator[Event]:
        return self

    async def __aenter__(self) -> TurnStream:
        self._start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    def _push(self, event: Event) -> None:
        self._buffer.append(event)
        self._wakeup.set()

    def _start(self) -> None:
        if self._task is not None:
            return
        self._task = asyncio.ensure_future(self._run())
        self._session._streams.add(self._task)
        self._task.add_done_callback(self._session._streams.discard)
        self._task.add_done_callback(lambda _: self._wakeup.set())

    async def _run(self) -> RunResult:
        async with self._session._lock:
            return await self._turn.run()

    async def __anext__(self) -> Event:
        self._start()
        assert self._task is not None
        while True:
            if self._buffer:
                return self._buffer.popleft()
            if self._task.done():
                self._task.result()  # raises the turn's error, if any
                raise StopAsyncIteration
            self._wakeup.clear()
            try:
                await self._wakeup.wait()
            except asyncio.CancelledError:
                self._task.cancel()  # the consumer is gone: abort the turn (the task settles it)
                raise

    @property
    def result(self) -> RunResult:
        """The turn's result (for a timed-out turn: the partial result). Only after the end."""
        if self._task is None or not self._task.done():
            raise RuntimeError("the turn is still running; iterate the stream to its end first")
        if self._task.cancelled():
            raise RuntimeError("the turn was cancelled")
        error = self._task.exception()
        if error is not None:
            partial = getattr(error, "result", None)
            if isinstance(partial, RunResult):
                return partial
            raise error
        return self._task.result()

    async def aclose(self) -> None:
        """Abort the turn if it is still running and wait for its end."""
        if self._task is None or self._task.done():
            return
        self._task.cancel()  # the turn aborts itself and settles (see _Turn.run)
        await asyncio.gather(self._task, return_exceptions=True)
