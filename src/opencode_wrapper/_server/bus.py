"""The event bus of one server: ``/global/event`` payloads routed to the subscribers of each session.

One stream carries every session of the server; each subscriber gets its session's events (and
those of its sub-agent sessions, made by the task tool), typed by its own
:class:`~opencode_wrapper._wire.server.ServerEventParser`, plus every heartbeat (the turn engine's
safety net runs on them).
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Mapping
from typing import Any

from opencode_wrapper._aio import wait_within
from opencode_wrapper._model.event import Event
from opencode_wrapper._wire.server import ServerEventParser, event_session_id

__all__ = ["Bus", "Subscription"]


class Subscription:
    """The events of one session (and its sub-agent sessions), for one consumer, in order."""

    def __init__(self, session_id: str) -> None:
        self.session_id = session_id
        self._parser = ServerEventParser()
        self._items: collections.deque[Event] = collections.deque()
        self._failure: BaseException | None = None
        # Waiting on an Event rather than a Queue: a wait that times out never loses an item.
        self._ready = asyncio.Event()

    def put(self, payload: Mapping[str, Any]) -> None:
        self._items.append(self._parser.parse(payload))
        self._ready.set()

    def fail(self, error: BaseException) -> None:
        """Make the next ``get`` (after the events already queued) raise ``error``."""
        if self._failure is None:
            self._failure = error
        self._ready.set()

    async def get(self, timeout_s: float | None = None) -> Event | None:
        """The next event, or ``None`` after ``timeout_s``; raises the failure once drained."""
        while not self._items:
            if self._failure is not None:
                raise self._failure
            self._ready.clear()
            try:
                await wait_within(self._ready.wait(), timeout_s)
            except asyncio.TimeoutError:
                return None
        return self._items.popleft()


class Bus:
    """Routes payloads to :class:`Subscription` objects by session."""

    def __init__(self) -> None:
        self._subs: dict[str, set[Subscription]] = {}
        self._parent_of: dict[str, str] = {}

    def subscribe(self, session_id: str) -> Subscription:
        sub = Subscription(session_id)
        self._subs.setdefault(session_id, set()).add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        subs = self._subs.get(sub.session_id)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._subs[sub.session_id]

    def fail_all(self, error: BaseException) -> None:
        for subs in self._subs.values():
            for sub in subs:
                sub.fail(error)

    def dispatch(self, payload: Mapping[str, Any]) -> None:
        kind = payload.get("type")
        if kind == "server.heartbeat":
            for subs in self._subs.values():
                for sub in subs:
                    sub.put(payload)
            return
        session_id = event_session_id(payload)
        if session_id is None:
            return
        if kind in ("session.created", "session.updated"):
            props = payload.get("properties")
            info = props.get("info") if isinstance(props, Mapping) else None
            parent = info.get("parentID") if isinstance(info, Mapping) else None
            if isinstance(parent, str) and parent:
                # A sub-agent session (task tool): its events, including its permission requests,
                # go to the consumers of the root session.
                self._parent_of[session_id] = self._parent_of.get(parent, parent)
        root = self._parent_of.get(session_id, session_id)
        for sub in list(self._subs.get(root, ())):
            sub.put(payload)
