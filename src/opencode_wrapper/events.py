"""Typed events and results.

Every event is a ``dict`` (seed code keeps doing ``ev["part"]["text"]`` and
``json.dumps(ev)``) *and* a typed object (``ev.type``, ``ev.part.text``, ``ev.session_id``
with editor completion). Unknown fields and event types are kept as they came.

The same classes serve run mode (``opencode run --format json`` lines) and server mode (SSE
events of ``opencode serve``, which carry ``properties``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Literal

# ----------------------------------------------------------------------------- typed dicts


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _count(value: Any) -> int | None:
    """``value`` as a token count, or ``None`` (JSON allows NaN and Infinity; int() does not)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return int(value) if isinstance(value, int) or math.isfinite(value) else None


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


class _TypedDict(dict[str, Any]):
    """A dict with typed read-only accessors; equality and JSON are those of a dict."""

    __slots__ = ()

    def _get_dict(self, key: str) -> dict[str, Any]:
        value = self.get(key)
        return value if isinstance(value, dict) else {}


class ToolState(_TypedDict):
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


class Part(_TypedDict):
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


class EventError(_TypedDict):
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
        return code if isinstance(code, int) else None

    @property
    def is_retryable(self) -> bool | None:
        value = self.data.get("isRetryable")
        return value if isinstance(value, bool) else None


class Event(_TypedDict):
    """One event from opencode. Subclasses narrow the type; all of them are plain dicts too."""

    __slots__ = ()

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
    def part(self) -> Part | None:
        value = self.get("part")
        if value is None:
            value = self.properties.get("part")
        if isinstance(value, Part):
            return value
        return Part(value) if isinstance(value, dict) else None

    @property
    def error(self) -> EventError | None:
        value = self.get("error")
        if value is None:
            value = self.properties.get("error")
        if isinstance(value, EventError):
            return value
        return EventError(value) if isinstance(value, dict) else None

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


def _typed(obj: dict[str, Any]) -> Event:
    """Wrap a decoded JSON object in its event class, typing the nested part/error/state too."""
    part = obj.get("part")
    if isinstance(part, dict):
        state = part.get("state")
        if isinstance(state, dict):
            part["state"] = ToolState(state)
        obj["part"] = Part(part)
    error = obj.get("error")
    if isinstance(error, dict):
        obj["error"] = EventError(error)
    cls = _EVENT_CLASSES.get(obj.get("type") if isinstance(obj.get("type"), str) else "", Event)  # type: ignore[arg-type]
    return cls(obj)


def make_event(obj: dict[str, Any]) -> Event:
    """Type an already-decoded event dict (e.g. one SSE ``data:`` payload)."""
    return _typed(obj)


def parse_event_line(line: str | bytes) -> Event:
    """Parse one stdout line of ``opencode run --format json`` into an :class:`Event`.

    Never raises: an empty line, invalid JSON or non-object JSON becomes a
    :class:`DiagnosticEvent` (``{"type": "diagnostic", "kind": ..., "raw": ...}``).
    """
    if isinstance(line, bytes):
        line = line.decode("utf-8", errors="replace")
    stripped = line.strip()
    if not stripped:
        return DiagnosticEvent({"type": "diagnostic", "kind": "empty_line", "raw": line})
    try:
        obj = json.loads(stripped)
    except (ValueError, RecursionError) as exc:  # ValueError: also an integer of > 4300 digits
        return DiagnosticEvent(
            {"type": "diagnostic", "kind": "json_decode_error", "raw": stripped, "error": str(exc)}
        )
    if not isinstance(obj, dict):
        return DiagnosticEvent(
            {"type": "diagnostic", "kind": "non_object_json", "value": obj, "raw": stripped}
        )
    return _typed(obj)


# ----------------------------------------------------------------------------- results

ErrorKind = Literal[
    "api_error",
    "error_event",
    "permission_rejected",
    "question_rejected",
    "timeout",
    "cancelled",
    "process_exit",
    "session_error",
    "aborted",
    "server_failure",
    "callback_error",
    "structured_output",
    "budget_exhausted",
]


@dataclass
class RunError:
    """Why a run or turn did not succeed.

    Attributes:
        kind: the category (``api_error``: the model provider answered with an HTTP error;
            ``permission_rejected``: a tool permission was refused and the turn stopped;
            ``timeout``/``cancelled``; ``process_exit``: opencode exited non-zero without saying
            why; ``error_event``/``session_error``: opencode reported another error...).
        message: a human-readable explanation.
        status_code: the provider's HTTP status, for ``api_error``.
        name: opencode's error name (``APIError``, ``UnknownError``, ...), when it gave one.
        detail: the raw error object or extra data.
    """

    kind: ErrorKind
    message: str
    status_code: int | None = None
    name: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        code = f" (HTTP {self.status_code})" if self.status_code is not None else ""
        return f"{self.kind}{code}: {self.message}"

    @classmethod
    def from_event_error(cls, error: EventError, *, kind: ErrorKind | None = None) -> RunError:
        status = error.status_code
        chosen: ErrorKind = kind or (
            "api_error" if error.name == "APIError" or status is not None else "error_event"
        )
        return cls(
            kind=chosen, message=error.message, status_code=status, name=error.name, detail=dict(error)
        )


@dataclass
class TokenUsage:
    """Token counts summed over every model step of a run or turn."""

    total: int = 0
    input: int = 0
    output: int = 0
    reasoning: int = 0
    cache_read: int = 0
    cache_write: int = 0

    def add(self, tokens: dict[str, Any]) -> None:
        """Add one step's ``tokens`` object (``{"total", "input", "output", "reasoning", "cache"}``)."""
        for attr in ("total", "input", "output", "reasoning"):
            count = _count(tokens.get(attr))
            if count is not None:
                setattr(self, attr, getattr(self, attr) + count)
        cache = tokens.get("cache")
        if isinstance(cache, dict):
            for attr, key in (("cache_read", "read"), ("cache_write", "write")):
                count = _count(cache.get(key))
                if count is not None:
                    setattr(self, attr, getattr(self, attr) + count)

    def __iadd__(self, other: TokenUsage) -> TokenUsage:
        for attr in ("total", "input", "output", "reasoning", "cache_read", "cache_write"):
            setattr(self, attr, getattr(self, attr) + getattr(other, attr))
        return self


@dataclass
class PermissionRejection:
    """A tool permission that was refused (by opencode's run mode, a callback, or a default)."""

    permission: str
    pattern: str | None = None
    message: str | None = None


@dataclass
class RunResult:
    """The outcome of one run (``async_run``) or one session turn (``send``).

    Seed-compatible fields (``events``, ``final_text``, ``tool_calls``, ``exit_code``, ``stderr``,
    ``raw_stdout_lines``, ``token_usage``, ``total_cost``, ``turns``, ``session_id``) plus the
    truth about success: ``ok`` and ``error``.

    Attributes:
        final_text: the answer: the text of the run's last model step.
        turns: the number of model steps.
        error: why the run did not succeed, or ``None``.
        structured: the validated structured output, when one was requested.
        permission_rejections: tool permissions refused during the run.
    """

    events: list[Event] = field(default_factory=list)
    final_text: str = ""
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    exit_code: int | None = None
    stderr: str = ""
    raw_stdout_lines: list[str] = field(default_factory=list)
    token_usage: TokenUsage = field(default_factory=TokenUsage)
    total_cost: float = 0.0
    turns: int = 0
    session_id: str | None = None
    error: RunError | None = None
    structured: Any = None
    permission_rejections: list[PermissionRejection] = field(default_factory=list)
    _step_texts: list[str] = field(default_factory=list, repr=False)

    @property
    def ok(self) -> bool:
        """``True`` only when the run finished without any error."""
        return self.error is None

    @property
    def tools(self) -> list[str]:
        """The name of each tool called, in order (run mode and sessions alike)."""
        names = []
        for call in self.tool_calls:
            part = call.get("part")
            name = part.get("tool") if isinstance(part, dict) else call.get("tool")
            if isinstance(name, str):
                names.append(name)
        return names

    @property
    def texts(self) -> list[str]:
        """Every text part of the run, in order (``final_text`` is only the last step's)."""
        return [ev.part.text for ev in self.events if isinstance(ev, TextEvent) and ev.part and ev.part.text]

    def append_event(self, ev: dict[str, Any]) -> None:
        """Fold one run-mode event into the result (seed API)."""
        event = ev if isinstance(ev, Event) else make_event(dict(ev))
        self.events.append(event)
        if self.session_id is None:
            self.session_id = event.session_id
        part = event.part
        if isinstance(event, StepStartEvent):
            self._step_texts = []
            self.final_text = ""  # the answer is the text of the *last* step, even if it has none
        elif isinstance(event, TextEvent) and part is not None and part.text is not None:
            self._step_texts.append(part.text)
            self.final_text = "".join(self._step_texts)
        elif isinstance(event, ToolUseEvent) and part is not None:
            self.tool_calls.append({k: v for k, v in event.items() if k != "type"} | {"type": event.type})
            state = part.state
            if state.status == "error" and "rejected permission" in (state.error or ""):
                self.permission_rejections.append(
                    PermissionRejection(permission=part.tool or "", message=state.error)
                )
        elif isinstance(event, StepFinishEvent) and part is not None:
            self.turns += 1
            self.token_usage.add(part.tokens)
            self.total_cost += part.cost or 0.0
        elif isinstance(event, ErrorEvent) and event.error is not None and self.error is None:
            self.error = RunError.from_event_error(event.error)


def _last_step_stopped_on_tools(events: list[Event]) -> bool:
    for ev in reversed(events):
        if isinstance(ev, StepFinishEvent):
            return ev.part is not None and ev.part.reason == "tool-calls"
    return False


def diagnose_run(result: RunResult) -> RunError | None:
    """Decide why a finished ``opencode run`` failed, from its exit code, events and stderr."""
    if result.error is not None:
        return result.error
    if result.exit_code not in (0, None):
        lines = [ln for ln in result.stderr.strip().splitlines() if ln.strip()]
        reason = _strip_ansi(lines[-1]) if lines else "no error message"
        return RunError(kind="process_exit", message=f"opencode exited with {result.exit_code}: {reason}")
    if result.permission_rejections and _last_step_stopped_on_tools(result.events):
        refused = ", ".join(_describe(r) for r in result.permission_rejections)
        return RunError(
            kind="permission_rejected",
            message=f"opencode auto-rejected a permission request and stopped: {refused}. "
            "Allow the tool (RunConfig(permission={...: 'allow'})) or use a session with on_permission.",
        )
    if result.exit_code == 0 and _last_step_stopped_on_tools(result.events):
        return RunError(kind="process_exit", message="opencode stopped after a tool step without an answer")
    if result.exit_code == 0 and not any(isinstance(ev, StepFinishEvent) for ev in result.events):
        return RunError(kind="process_exit", message="opencode exited 0 without finishing a model step")
    return None


def _describe(rejection: PermissionRejection) -> str:
    return f"{rejection.permission} ({rejection.pattern})" if rejection.pattern else rejection.permission


def _strip_ansi(text: str) -> str:
    import re

    return re.sub(r"\x1b\[[0-9;]*m", "", text).strip()


def parse_auto_rejections(stderr: str) -> list[PermissionRejection]:
    """Parse opencode's ``! permission requested: bash (echo hi); auto-rejecting`` stderr lines."""
    found: list[PermissionRejection] = []
    for raw in stderr.splitlines():
        line = _strip_ansi(raw)
        marker = "permission requested: "
        if marker not in line or not line.endswith("auto-rejecting"):
            continue
        body = line.split(marker, 1)[1].rsplit(";", 1)[0].strip()
        name, _, rest = body.partition(" (")
        found.append(
            PermissionRejection(permission=name.strip(), pattern=rest[:-1] if rest.endswith(")") else None)
        )
    return found


def aggregate_run_result(
    *,
    events: list[dict[str, Any]],
    raw_stdout_lines: list[str],
    exit_code: int | None,
    stderr: str,
) -> RunResult:
    """Build the :class:`RunResult` of a finished ``opencode run`` (seed API).

    Token and cost totals are exact sums over ``step_finish`` events; ``error`` says why the
    run failed (including the exit-0 case where opencode auto-rejected a permission).
    """
    result = RunResult(raw_stdout_lines=list(raw_stdout_lines), exit_code=exit_code, stderr=stderr)
    for ev in events:
        result.append_event(ev)
    auto = parse_auto_rejections(stderr)
    if auto:
        # stderr names the pattern; tool events only the tool. Prefer the richer record.
        result.permission_rejections = auto
    result.error = diagnose_run(result)
    return result


def run_result_fuzzy_text(result: RunResult) -> str:
    """Best-effort human-visible output: ``final_text``, else any text in events, else raw stdout."""
    if result.final_text.strip():
        return result.final_text.strip()
    pieces: list[str] = []
    for ev in result.events:
        if ev.get("type") == "diagnostic":
            continue
        part = ev.get("part")
        if isinstance(part, dict) and isinstance(part.get("text"), str) and part["text"].strip():
            pieces.append(part["text"].strip())
            continue
        for key in ("content", "text", "delta", "output", "message", "result", "value"):
            value = ev.get(key)
            if isinstance(value, str) and value.strip():
                pieces.append(value.strip())
    if pieces:
        return "\n".join(pieces)
    return "\n".join(x.strip() for x in result.raw_stdout_lines if x.strip())


def __getattr__(name: str) -> Any:
    # Seed code imports aggregate_server_result from here; it lives with the session code,
    # which imports this module, so it is loaded on first use.
    if name == "aggregate_server_result":
        from opencode_wrapper._turn import aggregate_server_result

        return aggregate_server_result
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
