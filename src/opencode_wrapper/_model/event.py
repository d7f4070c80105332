"""Events: the dict opencode sent, plus one normalized view that reads the same in both transports.

Every event is a ``dict`` (seed code keeps doing ``ev["part"]["text"]`` and ``json.dumps(ev)``)
*and* a typed object. Two layers of typing:

* the raw shape with accessors: ``ev.type``, ``ev.part.text``, ``ev.session_id``, ``ev.properties``;
* the normalized view, the same for ``opencode run --format json`` lines and ``opencode serve``
  events: ``ev.kind`` (see :data:`EventKind`), ``ev.text``, ``ev.tool`` (a :class:`ToolCall`),
  ``ev.tokens`` (a :class:`TokenUsage`), ``ev.cost``, ``ev.error`` (an :class:`EventError`).

Some kinds need context that one server event does not carry (whether a part belongs to the
user's message, whether a delta is text or reasoning): the server wire parser computes them per
stream and stores them on the event; without it, :func:`classify` decides from the event alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, get_args

from opencode_wrapper._model.parts import (
    EventError,
    Part,
    TokenUsage,
    ToolCall,
    ToolState,
    TypedView,
    _num,
    _str,
)

__all__ = [
    "DiagnosticEvent",
    "ErrorEvent",
    "Event",
    "EventError",
    "EventKind",
    "Part",
    "ReasoningEvent",
    "StepFinishEvent",
    "StepStartEvent",
    "TextEvent",
    "TokenUsage",
    "ToolCall",
    "ToolState",
    "ToolUseEvent",
    "as_event",
    "classify",
]

#: What an event is about, the same in run mode and on a server.
#:
#: * ``text``: a finished text part of the agent (run mode: every ``text`` line; server: a text
#:   part once it is complete); ``ev.text`` is the whole text.
#: * ``text_delta``: a piece of text as the model streams it (servers only); ``ev.text`` is the piece.
#: * ``reasoning``: a finished reasoning part (run mode needs ``cli_kwargs={"thinking": True}``).
#: * ``tool``: a tool call changed state (run mode: once, completed or error; server: pending,
#:   running, completed, error); ``ev.tool`` has its name, status, input and output.
#: * ``step_start`` / ``step_finish``: a model step began / ended (``ev.tokens``, ``ev.cost``).
#: * ``error``: opencode reported an error (``ev.error``).
#: * ``permission`` / ``question``: opencode asks for a permission / the model asks a question
#:   (servers only: ``opencode run`` auto-rejects both).
#: * ``status``: the session became busy, idle, or is retrying (servers only).
#: * ``other``: everything else (message bookkeeping, heartbeats, diagnostics, ...).
EventKind = Literal[
    "text",
    "text_delta",
    "reasoning",
    "tool",
    "step_start",
    "step_finish",
    "error",
    "permission",
    "question",
    "status",
    "other",
]
EVENT_KINDS: tuple[str, ...] = get_args(EventKind)


_RUN_TOOL_TYPES = frozenset({"tool_use", "tool_call", "tool_result", "tool"})
_FLAT_TEXT_TYPES = frozenset({"message", "assistant", "model"})


def _content_text(content: Any) -> str | None:
    """Text of a flat ``content`` field: a string, or a list of parts/strings."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return None
    pieces = []
    for item in content:
        if isinstance(item, str):
            pieces.append(item)
        elif isinstance(item, dict):
            text = _str(item.get("text")) if isinstance(item.get("text"), str) else _str(item.get("content"))
            if text is not None:
                pieces.append(text)
    return "".join(pieces) if pieces else None


class Event(TypedView):
    """One event from opencode, in either transport. Subclasses narrow the run-mode types."""

    __slots__ = ("_kind",)

    # ------------------------------------------------------------------ raw shape

    @property
    def type(self) -> str:
        return _str(self.get("type")) or ""

    @property
    def timestamp(self) -> int | None:
        value = self.get("timestamp")
        return value if isinstance(value, int) else None

    @property
    def properties(self) -> dict[str, Any]:
        """Server events only: the event payload."""
        return self._get_dict("properties")

    @property
    def is_server_event(self) -> bool:
        """Whether this came from ``opencode serve`` (its events carry ``properties``)."""
        return "properties" in self

    @property
    def part(self) -> Part | None:
        value = self.get("part")
        if value is None:
            value = self.properties.get("part")
        if isinstance(value, Part):
            return value
        return Part(value) if isinstance(value, dict) else None

    @property
    def session_id(self) -> str | None:
        """The session this event belongs to, wherever opencode put it."""
        found = _str(self.get("sessionID"))
        if found:
            return found
        for holder in (self._get_dict("part"), self.properties):
            found = _str(holder.get("sessionID"))
            if found:
                return found
        for key in ("part", "info"):
            nested = self.properties.get(key)
            if isinstance(nested, dict) and isinstance(nested.get("sessionID"), str):
                return str(nested["sessionID"])
        return None

    # ------------------------------------------------------------------ normalized view

    @property
    def kind(self) -> EventKind:
        """What the event is about (see :data:`EventKind`), the same in both transports."""
        try:
            return self._kind
        except AttributeError:
            self._kind: EventKind = classify(self)
            return self._kind

    def _set_kind(self, kind: EventKind) -> None:
        self._kind = kind

    @property
    def text(self) -> str | None:
        """The text of a ``text``/``reasoning`` event, or the piece of a ``text_delta``."""
        kind = self.kind
        if kind not in ("text", "text_delta", "reasoning"):
            return None
        if self.is_server_event:
            if self.type == "message.part.delta":
                return _str(self.properties.get("delta"))
            part = self.part
            return part.text if part is not None else None
        part = self.part
        if part is not None and part.text is not None:
            return part.text
        for key in ("content", "text", "delta"):
            value = _content_text(self.get(key))
            if value is not None:
                return value
        return None

    @property
    def tool(self) -> ToolCall | None:
        """The tool call of a ``tool`` event."""
        if self.kind != "tool":
            return None
        if self.is_server_event:
            part = self.properties.get("part")
            return ToolCall(part) if isinstance(part, dict) else None
        return ToolCall({k: v for k, v in self.items() if k != "type"} | {"type": self.type})

    @property
    def tokens(self) -> TokenUsage | None:
        """The step's token counts, for a ``step_finish`` event."""
        if self.kind != "step_finish":
            return None
        holder = self.part if self.part is not None else self
        tokens = holder.get("tokens")
        return TokenUsage.from_tokens(tokens) if isinstance(tokens, dict) else TokenUsage()

    @property
    def cost(self) -> float | None:
        """The step's cost, for a ``step_finish`` event."""
        if self.kind != "step_finish":
            return None
        holder = self.part if self.part is not None else self
        return _num(holder.get("cost")) or 0.0

    @property
    def error(self) -> EventError | None:
        """The error object of an ``error`` event (run mode ``error``, server ``session.error``)."""
        value = self.get("error")
        if value is None:
            value = self.properties.get("error")
        if isinstance(value, EventError):
            return value
        return EventError(value) if isinstance(value, dict) else None


class StepStartEvent(Event):
    """A model step began (``step_start``)."""

    __slots__ = ()


class TextEvent(Event):
    """A finished text part (``text``): ``ev.part.text``."""

    __slots__ = ()


class ReasoningEvent(Event):
    """A finished reasoning part (``reasoning``; run mode needs ``cli_kwargs={"thinking": True}``)."""

    __slots__ = ()


class ToolUseEvent(Event):
    """A tool call at its end (``tool_use``): ``ev.part.tool``, ``ev.part.state.output``."""

    __slots__ = ()


class StepFinishEvent(Event):
    """A model step ended (``step_finish``): ``ev.part.tokens``, ``ev.part.cost``, ``ev.part.reason``."""

    __slots__ = ()


class ErrorEvent(Event):
    """opencode reported an error (``error``): ``ev.error.name``, ``ev.error.status_code``."""

    __slots__ = ()


class DiagnosticEvent(Event):
    """A line that was not a JSON object (kept in ``raw``; ``kind`` says what was wrong)."""

    __slots__ = ()


_EVENT_CLASSES: dict[str, type[Event]] = {
    "step_start": StepStartEvent,
    "text": TextEvent,
    "reasoning": ReasoningEvent,
    "tool_use": ToolUseEvent,
    "step_finish": StepFinishEvent,
    "error": ErrorEvent,
    "diagnostic": DiagnosticEvent,
}

_SERVER_KINDS: dict[str, EventKind] = {
    "session.error": "error",
    "permission.asked": "permission",
    "question.asked": "question",
    "session.status": "status",
    "session.idle": "status",
}
_PART_KINDS: dict[str, EventKind] = {
    "text": "text",
    "reasoning": "reasoning",
    "tool": "tool",
    "step-start": "step_start",
    "step-finish": "step_finish",
}
_RUN_KINDS: dict[str, EventKind] = {
    "step_start": "step_start",
    "reasoning": "reasoning",
    "step_finish": "step_finish",
    "error": "error",
}


def classify(event: Event) -> EventKind:
    """The kind of ``event`` judged from the event alone (see the module docstring)."""
    kind = event.type
    if event.is_server_event:
        if kind == "message.part.updated":
            part = event.part
            found = _PART_KINDS.get(part.type or "", "other") if part is not None else "other"
            if found in ("text", "reasoning") and part is not None and not part.finished:
                return "other"  # the part's opening snapshot; its end (or its deltas) follow
            return found
        if kind == "message.part.delta":
            return "text_delta" if event.properties.get("field", "text") == "text" else "other"
        return _SERVER_KINDS.get(kind, "other")
    if kind in _RUN_KINDS:
        return _RUN_KINDS[kind]
    if kind in _RUN_TOOL_TYPES:
        return "tool"
    if kind == "text":
        part = event.part
        if part is not None and part.text is not None:
            return "text"
        if _content_text(event.get("content")) is not None or isinstance(event.get("text"), str):
            return "text"
        return "text_delta" if isinstance(event.get("delta"), str) else "other"
    if kind in _FLAT_TEXT_TYPES and _content_text(event.get("content")) is not None:
        return "text"
    return "other"


def as_event(obj: Mapping[str, Any]) -> Event:
    """Type an already-decoded event object (a copy; its part, state and error are typed too)."""
    data = dict(obj)
    part = data.get("part")
    if isinstance(part, dict):
        part = dict(part)
        state = part.get("state")
        if isinstance(state, dict):
            part["state"] = ToolState(state)
        data["part"] = Part(part)
    error = data.get("error")
    if isinstance(error, dict):
        data["error"] = EventError(error)
    kind = data.get("type")
    cls = _EVENT_CLASSES.get(kind, Event) if isinstance(kind, str) and "properties" not in data else Event
    return cls(data)


# Shown (and pickled) under the public module that exports them.
for _exported in (
    Event,
    StepStartEvent,
    TextEvent,
    ReasoningEvent,
    ToolUseEvent,
    StepFinishEvent,
    ErrorEvent,
    DiagnosticEvent,
):
    _exported.__module__ = "opencode_wrapper.events"
