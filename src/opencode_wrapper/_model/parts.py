"""The values inside events: parts, tool calls and their state, error objects, token counts.

Each is a dict (as opencode sent it) with typed read-only accessors, except :class:`TokenUsage`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["EventError", "Part", "TokenUsage", "ToolCall", "ToolState", "TypedView"]


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _count(value: Any) -> int | None:
    """``value`` as a token count, or ``None`` (JSON allows NaN and Infinity; int() does not)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return int(value) if isinstance(value, int) or math.isfinite(value) else None


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


class TypedView(dict[str, Any]):
    """A dict with typed read-only accessors; equality and JSON are those of a dict."""

    __slots__ = ()

    def _get_dict(self, key: str) -> dict[str, Any]:
        value = self.get(key)
        return value if isinstance(value, dict) else {}


@dataclass
class TokenUsage:
    """Token counts of one model step, or summed over a run or turn."""

    total: int = 0
    input: int = 0
    output: int = 0
    reasoning: int = 0
    cache_read: int = 0
    cache_write: int = 0

    @classmethod
    def from_tokens(cls, tokens: Mapping[str, Any]) -> TokenUsage:
        """Read opencode's ``tokens`` object (``{"total", "input", "output", "reasoning", "cache"}``)."""
        usage = cls()
        usage.add(tokens)
        return usage

    def add(self, tokens: Mapping[str, Any]) -> None:
        """Add one step's ``tokens`` object."""
        for attr in ("total", "input", "output", "reasoning"):
            count = _count(tokens.get(attr))
            if count is not None:
                setattr(self, attr, getattr(self, attr) + count)
        cache = tokens.get("cache")
        if isinstance(cache, Mapping):
            for attr, key in (("cache_read", "read"), ("cache_write", "write")):
                count = _count(cache.get(key))
                if count is not None:
                    setattr(self, attr, getattr(self, attr) + count)

    def __iadd__(self, other: TokenUsage) -> TokenUsage:
        for attr in ("total", "input", "output", "reasoning", "cache_read", "cache_write"):
            setattr(self, attr, getattr(self, attr) + getattr(other, attr))
        return self

    def __add__(self, other: TokenUsage) -> TokenUsage:
        total = TokenUsage(**vars(self))
        total += other
        return total


class ToolState(TypedView):
    """``part.state`` of a tool part: ``pending`` -> ``running`` -> ``completed`` | ``error``."""

    __slots__ = ()

    @property
    def status(self) -> str | None:
        return _str(self.get("status"))

    @property
    def input(self) -> dict[str, Any]:
        return self._get_dict("input")

    @property
    def output(self) -> str | None:
        return _str(self.get("output"))

    @property
    def error(self) -> str | None:
        return _str(self.get("error"))

    @property
    def title(self) -> str | None:
        return _str(self.get("title"))

    @property
    def metadata(self) -> dict[str, Any]:
        return self._get_dict("metadata")


class Part(TypedView):
    """A message part: ``text``, ``reasoning``, ``tool``, ``step-start``, ``step-finish``, ``file``..."""

    __slots__ = ()

    @property
    def id(self) -> str | None:
        return _str(self.get("id"))

    @property
    def type(self) -> str | None:
        return _str(self.get("type"))

    @property
    def text(self) -> str | None:
        return _str(self.get("text"))

    @property
    def tool(self) -> str | None:
        return _str(self.get("tool"))

    @property
    def call_id(self) -> str | None:
        return _str(self.get("callID"))

    @property
    def state(self) -> ToolState:
        value = self.get("state")
        return value if isinstance(value, ToolState) else ToolState(value if isinstance(value, dict) else {})

    @property
    def message_id(self) -> str | None:
        return _str(self.get("messageID"))

    @property
    def session_id(self) -> str | None:
        return _str(self.get("sessionID"))

    @property
    def reason(self) -> str | None:
        """``step-finish`` only: ``"stop"`` or ``"tool-calls"``."""
        return _str(self.get("reason"))

    @property
    def cost(self) -> float | None:
        return _num(self.get("cost"))

    @property
    def tokens(self) -> dict[str, Any]:
        return self._get_dict("tokens")

    @property
    def finished(self) -> bool:
        """Whether opencode marked the part complete (``time.end``); parts without times count as complete."""
        times = self.get("time")
        return not isinstance(times, dict) or times.get("end") is not None


class ToolCall(TypedView):
    """One tool call: the same typed view in both transports, over the dict seed code reads.

    The dict keeps the shape the seed package gave each transport: in run mode the ``tool_use``
    event (``call["part"]["tool"]``, ``call["part"]["state"]["output"]``), on a server the tool
    part (``call["tool"]``, ``call["callID"]``, ``call["state"]``). The attributes read either.
    """

    __slots__ = ()

    def _part(self) -> dict[str, Any]:
        part = self.get("part")
        return part if isinstance(part, dict) else self

    def _state(self) -> dict[str, Any]:
        state = self._part().get("state")
        if isinstance(state, dict):
            return state
        # Flat shapes of older opencode versions: {"type": "tool_use", "name": ..., "status": ...}.
        return self._part()

    @property
    def name(self) -> str | None:
        part = self._part()
        return _str(part.get("tool")) or _str(part.get("name"))

    @property
    def call_id(self) -> str | None:
        return _str(self._part().get("callID"))

    @property
    def part_id(self) -> str | None:
        part = self._part()
        return _str(part.get("id")) if part is not self else _str(self.get("id"))

    @property
    def status(self) -> str | None:
        """``pending``, ``running``, ``completed`` or ``error``."""
        return _str(self._state().get("status"))

    @property
    def input(self) -> dict[str, Any]:
        value = self._state().get("input")
        return value if isinstance(value, dict) else {}

    @property
    def output(self) -> str | None:
        return _str(self._state().get("output"))

    @property
    def error(self) -> str | None:
        return _str(self._state().get("error"))

    @property
    def title(self) -> str | None:
        return _str(self._state().get("title"))

    @property
    def metadata(self) -> dict[str, Any]:
        value = self._state().get("metadata")
        return value if isinstance(value, dict) else {}

    @property
    def duration_s(self) -> float | None:
        """How long the call ran, from opencode's ``time.start``/``time.end`` (milliseconds)."""
        times = self._state().get("time")
        if not isinstance(times, dict):
            return None
        start, end = _num(times.get("start")), _num(times.get("end"))
        return None if start is None or end is None else max(0.0, (end - start) / 1000.0)


class EventError(TypedView):
    """An opencode error object: ``{"name": "APIError", "data": {"message", "statusCode"...}}``."""

    __slots__ = ()

    @property
    def name(self) -> str | None:
        return _str(self.get("name")) or _str(self.get("_tag"))

    @property
    def data(self) -> dict[str, Any]:
        return self._get_dict("data")

    @property
    def message(self) -> str:
        return _str(self.data.get("message")) or _str(self.get("message")) or self.name or "unknown error"

    @property
    def status_code(self) -> int | None:
        code = self.data.get("statusCode")
        return code if isinstance(code, int) and not isinstance(code, bool) else None

    @property
    def is_retryable(self) -> bool | None:
        value = self.data.get("isRetryable")
        return value if isinstance(value, bool) else None


# Shown (and pickled) under the public module that exports them.
for _exported in (TokenUsage, ToolState, Part, ToolCall, EventError):
    _exported.__module__ = "opencode_wrapper.events"
