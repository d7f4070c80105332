"""``opencode serve`` events: SSE payloads of one stream, typed with the context the stream gives.

A single server event does not say everything its normalized kind needs: a text part of the
*user's* message looks like the agent's, and a ``message.part.delta`` does not say whether it
streams text or reasoning. :class:`ServerEventParser` follows one stream (one session's events, in
order) and remembers what it learnt: the ids of user messages and the type of every part.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from opencode_wrapper._model.event import Event, as_event

__all__ = ["ServerEventParser", "event_session_id"]


def event_session_id(payload: Mapping[str, Any]) -> str | None:
    """The session of a raw payload (``properties.sessionID``, or inside its ``part``/``info``)."""
    props = payload.get("properties")
    if not isinstance(props, Mapping):
        return None
    found = props.get("sessionID")
    if isinstance(found, str) and found:
        return found
    for key in ("part", "info"):
        nested = props.get(key)
        if isinstance(nested, Mapping) and isinstance(nested.get("sessionID"), str):
            return str(nested["sessionID"])
    return None


class ServerEventParser:
    """Types the payloads of one event stream, in order (one parser per stream)."""

    def __init__(self) -> None:
        self._user_messages: set[str] = set()
        self._part_types: dict[str, str] = {}

    def parse(self, payload: Mapping[str, Any]) -> Event:
        event = as_event(payload)
        kind = event.kind
        props = event.properties
        if event.type == "message.updated":
            info = props.get("info")
            if isinstance(info, dict) and info.get("role") == "user" and isinstance(info.get("id"), str):
                self._user_messages.add(info["id"])
        elif event.type == "message.part.updated":
            part = event.part
            if part is not None:
                if part.id is not None and part.type is not None:
                    self._part_types[part.id] = part.type
                if part.message_id in self._user_messages:
                    kind = "other"  # the prompt itself, echoed back
        elif (
            event.type == "message.part.delta"
            and kind == "text_delta"
            and self._part_types.get(str(props.get("partID")), "text") != "text"
        ):
            kind = "other"  # a reasoning part streaming
        event._set_kind(kind)
        return event
