"""``ServerBackend``: runs on one warm ``opencode serve`` — one-shot runs, or the turns of one session.

A one-shot run opens a fresh session (titled, so no title request goes to the model), runs one
turn and deletes the session. With a :class:`~opencode_wrapper._turn.link.SessionLink`, each
request is the next turn of that session instead.

A server's global config (permission, mcp, instructions, providers, environment) was fixed when
it started, so a request whose global config differs is refused: start a server with it, or use a
``ServerPool``, which starts one server per distinct global config.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Awaitable, Callable

from opencode_wrapper._aio import finish
from opencode_wrapper._model.fold import Fold
from opencode_wrapper._model.outcome import RunResult
from opencode_wrapper._model.run_error import RunError
from opencode_wrapper._proc.environment import check_data_home
from opencode_wrapper._server.base import ServerBase
from opencode_wrapper._turn.engine import Turn
from opencode_wrapper._turn.link import SessionLink
from opencode_wrapper._turn.tracker import new_message_id
from opencode_wrapper.backends.base import Backend, refuse
from opencode_wrapper.backends.handle import RunHandle
from opencode_wrapper.backends.request import RunRequest
from opencode_wrapper.config import RunConfig
from opencode_wrapper.errors import OpenCodeServerError

__all__ = ["ServerBackend", "ServerRun", "check_for_server", "differing_global_fields"]

#: ``RunConfig`` fields a prompt can set; every other field is fixed by the server.
PER_PROMPT_FIELDS = frozenset({"model", "agent", "tools"})


def differing_global_fields(wanted: RunConfig, server: RunConfig) -> list[str]:
    """The server-global fields of ``wanted`` that differ from the server's own."""
    wanted_cfg, server_cfg = wanted.build_opencode_config_dict(), server.build_opencode_config_dict()
    differing = [
        key
        for key in sorted((set(wanted_cfg) | set(server_cfg)) - {"tools"})
        if wanted_cfg.get(key) != server_cfg.get(key)
    ]
    for name in ("extra_env", "inherit_user_config", "disable_autoupdate", "python_tools"):
        if json.dumps(getattr(wanted, name), sort_keys=True, default=str) != json.dumps(
            getattr(server, name), sort_keys=True, default=str
        ):
            differing.append(name)
    return differing


def check_for_server(request: RunRequest, backend: str) -> None:
    """What no server can take from a request: ``opencode run`` flags."""
    if request.config.cli_kwargs:
        raise refuse(
            backend,
            f"cli_kwargs {sorted(request.config.cli_kwargs)}",
            "they are `opencode run` flags; drop them or use run mode "
            "(AsyncOpenCodeClient without warm servers)",
        )


class ServerBackend(Backend):
    """Runs requests on ``server`` (started by the caller, who also ends it).

    Args:
        server: a running server.
        link: run every request as the next turn of this session instead of a one-shot session.
    """

    name = "server"

    def __init__(self, server: ServerBase, *, link: SessionLink | None = None) -> None:
        self.server = server
        self.link = link

    def check(self, request: RunRequest) -> None:
        check_for_server(request, self.name)
        differing = differing_global_fields(request.config, self.server.run_cfg)
        if differing:
            where = "a session" if self.link is not None else "a one-shot run on an OpenCodeServer"
            raise refuse(
                self.name,
                f"RunConfig field(s) {differing}",
                f"{where} can only change {sorted(PER_PROMPT_FIELDS)}; the other fields configure the "
                "server, which is already running with its own (use a ServerPool or run_many, which start "
                "a server per configuration, or start a server with them)",
            )
        server_home = self.server.data_home
        # Both sides as opencode gets them (absolute, ``~`` expanded): the same directory given as
        # "data" or "~/data" is the server's own.
        if request.data_home is not None and (
            server_home is None or request.data_home != os.fspath(check_data_home(server_home))
        ):
            raise refuse(self.name, "data_home", "the server's data directory was fixed when it started")
        if self.link is not None and request.workspace != self.link.workspace:
            raise refuse(self.name, "workspace", f"the session works in {self.link.workspace}")
        if self.link is not None and request.isolation != "none":
            raise refuse(
                self.name,
                f"isolation={request.isolation!r}",
                "a session's turns share its workspace; isolate the session's workspace yourself "
                "(opencode_wrapper.isolation.isolate) or use one-shot runs",
            )

    def _handle(self, request: RunRequest) -> RunHandle:
        if self.link is not None:
            return SessionTurnRun(request, self.link)

        async def acquire() -> ServerBase:
            return self.server

        async def release(_: ServerBase) -> None:
            return None

        return ServerRun(request, acquire, release)


class _TurnRun(RunHandle):
    """A run that is one turn on a server session."""

    backend = "server"

    def __init__(self, request: RunRequest) -> None:
        super().__init__(request)
        self._message_id = new_message_id()
        self._fold = Fold(user_message_id=self._message_id)
        self._turn: Turn | None = None
        self._failure: RunError | None = None

    def _make_turn(self, link: SessionLink) -> Turn:
        request = self.request
        self._fold.session_id = link.session_id
        self._turn = Turn(
            link,
            message_id=self._message_id,
            parts=[{"type": "text", "text": request.prompt}, *request.file_parts()],
            cfg=request.config,
            fold=self._fold,
            sink=self._emit,
            on_permission=request.on_permission,
            on_question=request.on_question,
            callback_timeout_s=request.callback_timeout_s,
            structured=request.structured,
            hooks=request.hooks,
            user_permission=request.user_permission,
        )
        return self._turn

    def _partial(self) -> RunResult:
        if self._turn is not None:
            result = self._turn.result()
            if self._failure is not None and result.error is None:
                result.error = self._failure
            return result
        return RunResult(
            error=self._failure
            or RunError(kind="aborted", message="the run ended before its prompt was sent"),
            exit_code=0,
        )


class SessionTurnRun(_TurnRun):
    """The next turn of an open session."""

    session_turn = True

    def __init__(self, request: RunRequest, link: SessionLink) -> None:
        super().__init__(request)
        self._link = link
        link.waiting.add(self)

    def abort_before_start(self) -> None:
        """``session.abort()`` came before this turn reached opencode: it ends unsent."""
        self.stop(RunError(kind="aborted", message="aborted before the prompt was sent"))

    def _partial(self) -> RunResult:
        self._link.waiting.discard(self)
        return super()._partial()

    async def _produce(self) -> None:
        link = self._link
        async with link.lock:
            link.waiting.discard(self)
            turn = self._make_turn(link)
            try:
                link.server.check_usable()
            except OpenCodeServerError as exc:
                self._failure = RunError(kind="server_failure", message=exc.message or str(exc))
                return
            await turn.run()


class ServerRun(_TurnRun):
    """A one-shot run: a fresh session on a server from ``acquire``, one turn, session deleted."""

    def __init__(
        self,
        request: RunRequest,
        acquire: Callable[[], Awaitable[ServerBase]],
        release: Callable[[ServerBase], Awaitable[None]],
        *,
        backend: str = "server",
    ) -> None:
        super().__init__(request)
        self._acquire = acquire
        self._release = release
        self.backend = backend

    async def _produce(self) -> None:
        try:
            server = await self._acquire()
        except OpenCodeServerError as exc:
            self._failure = RunError(kind="server_failure", message=exc.message or str(exc), retryable=True)
            return
        try:
            link = SessionLink(server, self.workspace, title=self.request.session_title)
            try:
                await link.open()
            except OpenCodeServerError as exc:
                self._failure = RunError(kind="server_failure", message=exc.message or str(exc))
                return
            try:
                async with link.lock:
                    await self._make_turn(link).run()
            finally:
                with contextlib.suppress(Exception):
                    await finish(link.close())
        finally:
            await finish(self._release(server))
