"""``SessionLink``: one opencode session on a server, and what its turns share.

Its turns run one at a time (``lock``): opencode would otherwise merge prompts into the running
loop. The link also remembers what opencode does not tell each prompt: which agents exist, and
which model the session uses by default (opencode reuses a session's *last* model when a prompt
names none, so once a turn chose another model, later turns must name the default one again).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, Protocol

from opencode_wrapper._eventlog import EventLog
from opencode_wrapper._model.event import Event
from opencode_wrapper._server.base import ServerBase
from opencode_wrapper.config import RunConfig, split_model
from opencode_wrapper.errors import OpenCodeConfigError, OpenCodeError, OpenCodeServerError, ServerHTTPError

__all__ = ["ABORT_TIMEOUT_S", "SessionLink"]

ABORT_TIMEOUT_S = 5.0


class _ActiveTurn(Protocol):
    def request_abort(self) -> None: ...


class _WaitingTurn(Protocol):
    def abort_before_start(self) -> None: ...


class SessionLink:
    """A session on ``server`` in ``workspace``: created (or resumed) by :meth:`open`.

    Args:
        server: a running server.
        workspace: the session's directory (absolute).
        session_id: resume this session instead of creating one.
        title: the new session's title (no title request to the model).
        delete_on_exit: delete the session in :meth:`close` (default: unless resumed).
    """

    def __init__(
        self,
        server: ServerBase,
        workspace: str,
        *,
        session_id: str | None = None,
        title: str | None = None,
        delete_on_exit: bool | None = None,
    ) -> None:
        self.server = server
        self.workspace = workspace
        self.session_id = session_id
        self.title = title
        self.delete_on_exit = (session_id is None) if delete_on_exit is None else bool(delete_on_exit)
        self.lock = asyncio.Lock()
        self.active: _ActiveTurn | None = None
        #: Turns asked for but not yet running (waiting for the lock, or not yet started).
        self.waiting: set[_WaitingTurn] = set()
        self.log: EventLog | None = None
        self._agents: set[str] | None = None
        self._default_model: dict[str, str] | None = None
        self._model_overridden = False
        self._unregister: Any = None

    def where(self) -> dict[str, str]:
        return {"directory": self.workspace}

    @property
    def id(self) -> str:
        if self.session_id is None:
            raise OpenCodeError("the session is not open")
        return self.session_id

    async def open(self) -> None:
        """Create (or check the resumed) session; close it first when the server closes."""
        server = self.server
        server.check_usable()
        if self.session_id is None:
            body = {} if self.title is None else {"title": self.title}
            info = await server.request("POST", "/session", params=self.where(), json_body=body)
            if not isinstance(info, dict) or not isinstance(info.get("id"), str):
                raise OpenCodeServerError(
                    exit_code=None, stderr="", message=f"unexpected POST /session answer {info!r}"
                )
            self.session_id = info["id"]
        else:
            try:
                await server.request("GET", f"/session/{self.session_id}", params=self.where())
            except ServerHTTPError as exc:
                if exc.status_code == 404:
                    raise OpenCodeConfigError(
                        f"no session {self.session_id!r} on this server; resume a session of the same server "
                        "(or of the same data_home)"
                    ) from exc
                raise
        self._unregister = server.on_close(self.close)
        server.use_directory(self.workspace)

    async def close(self) -> None:
        """Abort a running turn and delete the session (if it should be). Idempotent."""
        if self._unregister is None:
            return  # never opened, or closed already
        self._unregister()
        self._unregister = None
        server = self.server
        if self.session_id is None or not server.alive:
            return
        try:
            await self._end_session()
        finally:
            server.release_directory(self.workspace)

    async def _end_session(self) -> None:
        server = self.server
        if self.active is not None:
            self.active.request_abort()
            with contextlib.suppress(OpenCodeError):
                await self.post_abort()
        if self.delete_on_exit:
            with contextlib.suppress(OpenCodeError):
                await server.request(
                    "DELETE", f"/session/{self.session_id}", params=self.where(), timeout_s=ABORT_TIMEOUT_S
                )

    async def abort(self) -> None:
        """Abort the running turn and every turn still waiting for its turn."""
        for waiting in list(self.waiting):
            waiting.abort_before_start()
        if self.active is not None:
            # The turn may not have reached opencode yet (then abort finds an idle session): it
            # remembers, and aborts again once opencode runs it.
            self.active.request_abort()
        await self.post_abort()

    async def post_abort(self, timeout_s: float = ABORT_TIMEOUT_S) -> None:
        await self.server.request(
            "POST", f"/session/{self.id}/abort", params=self.where(), timeout_s=timeout_s
        )

    def record(self, event: Event) -> None:
        """The session log keeps the session's whole life."""
        if self.log is not None:
            self.log.write(event)

    async def unknown_agent(self, name: str) -> list[str] | None:
        """``None`` if opencode knows agent ``name`` here, else the names it knows."""
        if self._agents is None or name not in self._agents:
            data = await self.server.request("GET", "/agent", params=self.where())
            self._agents = {
                a["name"] for a in data or [] if isinstance(a, dict) and isinstance(a.get("name"), str)
            }
        return None if name in self._agents else sorted(self._agents)

    async def model_for(self, cfg: RunConfig) -> dict[str, str] | None:
        """The model to name in a prompt of ``cfg`` (``None``: opencode's default)."""
        if cfg.model:
            chosen = split_model(cfg.model)
            if chosen != self._default_model:
                self._model_overridden = True
            return chosen
        if self._default_model is None and self._model_overridden:
            config = await self.server.request("GET", "/config", params=self.where())
            model = config.get("model") if isinstance(config, dict) else None
            if isinstance(model, str) and "/" in model:
                self._default_model = split_model(model)
        return self._default_model if self._model_overridden else None

    def learn_default_model(self, events: list[Event], message_id: str, sent_model: bool) -> None:
        """Remember the model opencode chose when we named none (to name it again later)."""
        if sent_model or self._model_overridden or self._default_model is not None:
            return
        for event in events:
            info = event.properties.get("info") if event.type == "message.updated" else None
            if isinstance(info, dict) and info.get("id") == message_id:
                model = info.get("model")
                if isinstance(model, dict) and isinstance(model.get("providerID"), str):
                    self._default_model = {
                        "providerID": model["providerID"],
                        "modelID": str(model.get("modelID")),
                    }
                return
