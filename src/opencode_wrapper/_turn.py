"""One session turn, without I/O: message ids, when a turn is over, its result, structured output.

Kept free of network code so that the rules can be tested with made-up event sequences,
including the ones opencode 1.18.33 really produces (measured, see the project notes):

* idle events arrive twice (abort, model errors), late (after the next prompt was sent), or not
  at all (an unknown agent only produces ``session.error``);
* a fresh instance may take seconds before it even stores the user message, while
  ``GET /session/status`` already (still) says "idle";
* prompts sent to a busy session are merged into the running loop.

So a turn is identified by the user message id *we* choose, and it is over only when opencode
has stored that message, worked on it (busy), and is idle again with every assistant message of
the turn complete.
"""

from __future__ import annotations

import importlib
import json
import math
import re
import secrets
import string
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from opencode_wrapper.errors import OpenCodeConfigError
from opencode_wrapper.events import (
    Event,
    EventError,
    PermissionRejection,
    RunError,
    RunResult,
    make_event,
)

__all__ = [
    "StructuredSpec",
    "TurnTracker",
    "aggregate_server_result",
    "new_message_id",
    "structured_spec",
]

# ----------------------------------------------------------------------------- message ids

_BASE62 = string.digits + string.ascii_uppercase + string.ascii_lowercase
_last_id_value = 0


def new_message_id(now_ms: int | None = None) -> str:
    """A user message id in opencode's own format, ascending like the ones the server makes.

    opencode's ids are ``msg_`` + 12 hex digits of ``(milliseconds * 4096 + counter)`` (its low
    48 bits) + 14 random base-62 characters, and it orders messages by id. Ours use the same
    clock, so the assistant messages opencode creates after our prompt sort after it; they are
    strictly increasing within this process even if the clock stalls.
    """
    global _last_id_value
    millis = int(time.time() * 1000) if now_ms is None else now_ms
    value = max(millis * 0x1000 + 1, _last_id_value + 1)
    _last_id_value = value
    return format_message_id(value)


def format_message_id(value: int) -> str:
    """``msg_`` + the low 48 bits of ``value`` in hex + 14 random base-62 characters."""
    random_part = "".join(secrets.choice(_BASE62) for _ in range(14))
    return f"msg_{value & 0xFFFFFFFFFFFF:012x}{random_part}"


# ----------------------------------------------------------------------------- end of a turn


def _status_type(props: Mapping[str, Any]) -> str | None:
    status = props.get("status")
    if isinstance(status, Mapping) and isinstance(status.get("type"), str):
        return str(status["type"])
    return None


def _is_complete(info: Mapping[str, Any]) -> bool:
    times = info.get("time")
    completed = isinstance(times, Mapping) and times.get("completed") is not None
    return completed or info.get("error") is not None


class TurnTracker:
    """Decides when the turn whose user message has id ``message_id`` is over.

    Feed it every event of the session (in order) with :meth:`feed`; :attr:`finished` says when
    the turn is over. Events of other sessions (e.g. sub-agent sessions) are ignored.

    The turn is over when all of these hold:

    1. opencode stored our user message (``message.updated`` with our id), so nothing that came
       before it (a late idle of the previous turn) can count;
    2. after that, the session was ``busy`` (our prompt was actually worked on);
    3. the latest status since then is ``idle``;
    4. every assistant message answering our message (``parentID`` = our id) is complete
       (``time.completed`` or ``error`` set): after an abort the first idle comes *before* the
       aborted message is finalised, and a second idle follows.

    Two situations need a question to the server, which the caller asks and reports back:

    * :attr:`refused`: a ``session.error`` arrived while our message was still unknown. Either
      opencode refused the prompt before storing it (unknown agent: no idle ever follows), or
      the error is a late one of the previous turn. The caller checks whether the message
      exists (:meth:`message_exists`); if it never appears, the turn ended with that error.
    * the heartbeat safety net: if an idle event were lost, :meth:`server_idle` (the session is
      absent from ``GET /session/status``) ends the turn.
    """

    def __init__(self, session_id: str, message_id: str) -> None:
        self.session_id = session_id
        self.message_id = message_id
        self.seen_user = False
        self.busy_after_user = False
        self.status: str | None = None
        self.assistants: dict[str, dict[str, Any]] = {}
        self.errors: list[EventError] = []
        self.early_errors: list[EventError] = []
        self.ended_without_message = False
        #: Set by the caller once it asked opencode to abort the turn.
        self.abort_requested = False
        self._idle_reports = 0

    def feed(self, event: Event) -> None:
        """Update the state with one event (any session's; others are ignored)."""
        if event.session_id != self.session_id:
            return
        kind = event.type
        props = event.properties
        if kind == "message.updated":
            info = props.get("info")
            if not isinstance(info, dict):
                return
            if info.get("id") == self.message_id:
                self._see_user()
            elif info.get("role") == "assistant" and info.get("parentID") == self.message_id:
                self._see_user()
                self.assistants[str(info.get("id"))] = info
        elif kind == "message.part.updated":
            part = event.part
            if part is not None and part.message_id == self.message_id:
                self._see_user()
        elif kind == "session.status":
            status = _status_type(props)
            if self.seen_user and status is not None:
                self.status = status
                if status != "idle":
                    self.busy_after_user = True
                    self._idle_reports = 0
        elif kind == "session.idle":
            if self.seen_user:
                self.status = "idle"
        elif kind == "session.error":
            error = event.error or EventError({"name": "UnknownError"})
            (self.errors if self.seen_user else self.early_errors).append(error)

    def _see_user(self) -> None:
        self.seen_user = True

    @property
    def finished(self) -> bool:
        if self.ended_without_message:
            return True
        return (
            self.seen_user
            # An abort that lands while opencode sets the prompt up ends it before it ever is
            # busy: stored message, then idle.
            and (self.busy_after_user or self.abort_requested)
            and self.status == "idle"
            and all(_is_complete(info) for info in self.assistants.values())
        )

    @property
    def refused(self) -> bool:
        """A ``session.error`` came and our message is still unknown (ask the server)."""
        return not self.seen_user and bool(self.early_errors) and not self.ended_without_message

    def message_exists(self, exists: bool) -> None:
        """Report whether ``GET /session/{id}/message/{message_id}`` found our message.

        ``False`` ends the turn: opencode refused the prompt (the error says why).
        """
        if exists:
            self._see_user()
        elif not self.seen_user:
            self.ended_without_message = True

    def server_idle(self) -> None:
        """Report that ``GET /session/status`` does not list the session (it is not busy).

        Ends the turn if every assistant message is complete and the turn has visibly run (an
        assistant message or an error) or was aborted. Otherwise opencode may just not have
        started the loop yet (a matter of milliseconds), so only a second report (a heartbeat
        later) with no busy status in between ends it: the prompt was stored but never run.
        """
        if not self.seen_user or not all(_is_complete(info) for info in self.assistants.values()):
            return
        self._idle_reports += 1
        if self.assistants or self.errors or self.abort_requested or self._idle_reports >= 2:
            self.busy_after_user = True
            self.status = "idle"

    def refusal(self) -> EventError | None:
        """The most telling error that came before our message (stack traces come last)."""
        for error in self.early_errors:
            if not _is_stack_trace(error.message):
                return error
        return self.early_errors[0] if self.early_errors else None


def _is_stack_trace(message: str) -> bool:
    # prompt_async's own error handler re-publishes the failure as "UnknownError: ...\n    at ...".
    return "\n    at " in message


# ----------------------------------------------------------------------------- results


def _error_kind(error: EventError) -> str:
    name = error.name
    if name == "MessageAbortedError":
        return "aborted"
    if name == "StructuredOutputError":
        return "structured_output"
    if name == "APIError" or error.status_code is not None:
        return "api_error"
    return "session_error"


def run_error_from(error: EventError) -> RunError:
    """The :class:`RunError` for an opencode error object seen in server mode."""
    return RunError.from_event_error(error, kind=_error_kind(error))  # type: ignore[arg-type]


def _typed_events(events: Sequence[Mapping[str, Any]]) -> list[Event]:
    return [ev if isinstance(ev, Event) else make_event(dict(ev)) for ev in events]


def aggregate_server_result(
    *,
    events: list[dict[str, Any]],
    session_id: str | None,
    final_messages: list[dict[str, Any]] | None = None,
    exit_code: int | None = 0,
    stderr: str = "",
    user_message_id: str | None = None,
) -> RunResult:
    """Build the :class:`RunResult` of one server-mode turn from its events (seed API).

    ``events`` are the turn's server events (``/event`` shape: ``{"type", "properties"}``).
    Only assistant messages answering ``user_message_id`` count when it is given (otherwise
    every assistant message in ``events``); events of other sessions (sub-agents) are kept in
    ``result.events`` but not counted. ``final_messages`` (``GET /session/{id}/message``
    entries, ``{"info", "parts"}``), when given, override what the events said about the same
    messages and parts.

    * ``final_text``: the text parts of the turn's last assistant message (``""`` if it has none:
      never an earlier turn's text);
    * ``token_usage``/``total_cost``: the latest ``tokens``/``cost`` of each assistant message,
      added once per message (opencode re-sends the whole message on every update);
    * ``turns``: the number of assistant messages (model steps);
    * ``tool_calls``: one entry per tool part, in its latest state;
    * ``structured``: the last ``info.structured`` (not validated here);
    * ``error``: the turn's error, if any (``aborted``, ``api_error``, ``session_error``,
      ``structured_output``, or ``permission_rejected``/``question_rejected`` when a refused
      request stopped the turn).
    """
    typed = _typed_events(events)
    result = RunResult(events=typed, exit_code=exit_code, stderr=stderr, session_id=session_id)
    infos: dict[str, dict[str, Any]] = {}
    parts: dict[str, dict[str, Any]] = {}
    session_errors: list[EventError] = []
    # A session.error before our user message was stored belongs to the previous turn (opencode
    # re-publishes a failure after its idle); a refused prompt is reported by the caller instead.
    seen_user = user_message_id is None

    def wanted(info: Mapping[str, Any]) -> bool:
        return info.get("role") == "assistant" and (
            user_message_id is None or info.get("parentID") == user_message_id
        )

    for ev in typed:
        if session_id is not None and ev.session_id not in (session_id, None):
            continue
        props = ev.properties
        if ev.type == "message.updated":
            info = props.get("info")
            if isinstance(info, dict) and info.get("id") == user_message_id:
                seen_user = True
            elif isinstance(info, dict) and isinstance(info.get("id"), str) and wanted(info):
                seen_user = True
                infos[info["id"]] = info
        elif ev.type == "message.part.updated":
            part = props.get("part")
            if isinstance(part, dict) and isinstance(part.get("id"), str):
                parts[part["id"]] = dict(part)
        elif ev.type == "message.part.delta":
            # A part streams as deltas and is normally re-sent whole at its end; an aborted part
            # may never be, so the deltas are applied to the last snapshot.
            target = parts.get(str(props.get("partID")))
            name, delta = props.get("field"), props.get("delta")
            if target is not None and isinstance(name, str) and isinstance(delta, str):
                before = target.get(name)
                target[name] = (before if isinstance(before, str) else "") + delta
        elif ev.type == "session.error" and ev.error is not None and seen_user:
            session_errors.append(ev.error)

    for message in final_messages or []:
        info = message.get("info") if isinstance(message, dict) else None
        if isinstance(info, dict) and isinstance(info.get("id"), str) and wanted(info):
            infos[info["id"]] = info
            for part in message.get("parts") or []:
                if isinstance(part, dict) and isinstance(part.get("id"), str):
                    parts[part["id"]] = dict(part)

    order = sorted(infos)  # opencode's ids ascend in creation order
    by_message: dict[str, list[dict[str, Any]]] = {mid: [] for mid in order}
    for part_id in sorted(parts):
        part = parts[part_id]
        owner = part.get("messageID")
        if isinstance(owner, str) and owner in by_message:
            by_message[owner].append(part)

    for mid in order:
        info = infos[mid]
        result.turns += 1
        tokens = info.get("tokens")
        if isinstance(tokens, dict):
            result.token_usage.add(tokens)
        cost = info.get("cost")
        if isinstance(cost, (int, float)) and not isinstance(cost, bool):
            result.total_cost += float(cost)
        if "structured" in info:
            result.structured = info["structured"]
        for part in by_message[mid]:
            if part.get("type") == "tool":
                state = part.get("state") if isinstance(part.get("state"), dict) else {}
                result.tool_calls.append(
                    {
                        "type": "tool",
                        "tool": part.get("tool"),
                        "callID": part.get("callID"),
                        "state": state,
                        "id": part.get("id"),
                        "messageID": mid,
                    }
                )
                error_text = state.get("error") if isinstance(state, dict) else None
                if isinstance(error_text, str) and "rejected permission" in error_text:
                    result.permission_rejections.append(
                        PermissionRejection(permission=str(part.get("tool") or ""), message=error_text)
                    )

    if order:
        last = by_message[order[-1]]
        result.final_text = "".join(
            str(p.get("text") or "") for p in last if p.get("type") == "text" and not p.get("ignored")
        ).strip()
    result.error = _diagnose(
        [infos[mid] for mid in order], by_message.get(order[-1], []) if order else [], session_errors
    )
    return result


def _diagnose(
    infos: list[dict[str, Any]], last_parts: list[dict[str, Any]], session_errors: list[EventError]
) -> RunError | None:
    for info in reversed(infos):
        error = info.get("error")
        if isinstance(error, dict):
            return run_error_from(EventError(error))
    telling = [e for e in session_errors if not _is_stack_trace(e.message)] or session_errors
    if telling:
        return run_error_from(telling[0])
    if infos and infos[-1].get("finish") == "tool-calls":
        # The turn stopped right after a tool step: a refused request is why, if there was one.
        for part in last_parts:
            state = part.get("state")
            if part.get("type") != "tool" or not isinstance(state, dict) or state.get("status") != "error":
                continue
            text = str(state.get("error") or "")
            if "rejected permission" in text:
                return RunError(
                    kind="permission_rejected",
                    message=f"the {part.get('tool')} tool call was refused and the turn stopped: {text}",
                )
            if part.get("tool") == "question":
                return RunError(
                    kind="question_rejected",
                    message=f"the model's question was dismissed and the turn stopped: {text}",
                )
    return None


# ----------------------------------------------------------------------------- structured output


@dataclass(frozen=True)
class StructuredSpec:
    """A requested structured output: the JSON schema sent to opencode, and how to check the answer.

    Attributes:
        schema: the JSON schema (an object schema; the model fills it as tool arguments).
        model: a pydantic model class, when one was given (the answer becomes an instance).
    """

    schema: dict[str, Any]
    model: Any = None

    def check(self, value: Any) -> tuple[Any, list[str]]:
        """``(validated value, [])`` or ``(None, [reasons])``."""
        if self.model is not None:
            try:
                return self.model.model_validate(value), []
            except Exception as exc:  # pydantic.ValidationError, without importing pydantic
                return None, [str(exc)]
        problems = validate_json_schema(value, self.schema)
        return (value, []) if not problems else (None, problems)


def structured_spec(output_schema: object) -> StructuredSpec:
    """Read ``output_schema`` (a JSON schema dict or a pydantic model class).

    Raises:
        OpenCodeConfigError: anything else, a schema that is not JSON, or not an object schema.
    """
    make_schema = getattr(output_schema, "model_json_schema", None)
    if isinstance(output_schema, type) and callable(make_schema):
        return StructuredSpec(schema=_checked_schema(make_schema()), model=output_schema)
    if isinstance(output_schema, Mapping):
        return StructuredSpec(schema=_checked_schema(output_schema))
    raise OpenCodeConfigError(
        f"output_schema must be a JSON schema dict or a pydantic model class, got {output_schema!r:.200}"
    )


def _checked_schema(schema: Mapping[str, Any]) -> dict[str, Any]:
    try:
        copied = json.loads(json.dumps(schema, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise OpenCodeConfigError(f"output_schema is not JSON-serialisable: {exc}") from exc
    if not isinstance(copied, dict):
        raise OpenCodeConfigError("output_schema must be a JSON object")
    if copied.get("type", "object") != "object":
        raise OpenCodeConfigError(
            f'output_schema must describe an object ("type": "object"): the model answers with tool '
            f"arguments, which are always an object; got type {copied.get('type')!r}"
        )
    return copied


def validate_json_schema(value: Any, schema: Mapping[str, Any]) -> list[str]:
    """Reasons ``value`` does not match ``schema`` (empty: it matches).

    Uses the ``jsonschema`` package when it is installed; otherwise a built-in checker of the
    common keywords (``type``, ``properties``, ``required``, ``additionalProperties``,
    ``items``, ``enum``, ``const``, length/size/range bounds, ``pattern``, ``anyOf``/``oneOf``/
    ``allOf``/``not``, local ``$ref``), which covers the schemas pydantic generates.
    """
    try:
        # Optional dependency, imported by name so that type checking does not require it.
        jsonschema: Any = importlib.import_module("jsonschema")
    except ImportError:
        return check_json_schema_builtin(value, schema)
    validator_cls = jsonschema.validators.validator_for(schema)
    validator = validator_cls(schema)
    return [
        f"{_path(error.absolute_path)}: {error.message}"
        for error in sorted(validator.iter_errors(value), key=lambda e: list(map(str, e.absolute_path)))
    ]


def check_json_schema_builtin(value: Any, schema: Mapping[str, Any]) -> list[str]:
    """The built-in checker behind :func:`validate_json_schema` (used without ``jsonschema``)."""
    problems: list[str] = []
    _check(value, schema, schema, "$", problems)
    return problems


def _path(parts: Any) -> str:
    out = "$"
    for item in parts:
        out += f"[{item}]" if isinstance(item, int) else f".{item}"
    return out


_TYPES: dict[str, Callable[[Any], bool]] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "integer": lambda v: (
        (isinstance(v, int) and not isinstance(v, bool))
        or (isinstance(v, float) and math.isfinite(v) and v.is_integer())
    ),
}


def _anything(value: Any) -> bool:
    return True


def _resolve(ref: str, root: Mapping[str, Any]) -> Mapping[str, Any]:
    if not ref.startswith("#"):
        return {}  # remote references are not followed: accept
    node: Any = root
    for token in ref[1:].split("/")[1:]:
        token = token.replace("~1", "/").replace("~0", "~")
        node = node.get(token) if isinstance(node, Mapping) else None
    return node if isinstance(node, Mapping) else {}


def _check(value: Any, schema: Any, root: Mapping[str, Any], where: str, out: list[str]) -> None:
    if schema is True or schema is None:
        return
    if schema is False:
        out.append(f"{where}: no value is allowed here")
        return
    if not isinstance(schema, Mapping):
        return
    if isinstance(schema.get("$ref"), str):
        _check(value, _resolve(schema["$ref"], root), root, where, out)
    expected = schema.get("type")
    if expected is not None:
        names = expected if isinstance(expected, list) else [expected]
        if not any(_TYPES.get(name, _anything)(value) for name in names):
            wanted = " or ".join(f"'{name}'" for name in names)
            out.append(f"{where}: {json.dumps(value)[:80]} is not of type {wanted}")
            return
    if "enum" in schema and value not in schema["enum"]:
        out.append(f"{where}: {json.dumps(value)[:80]} is not one of {schema['enum']!r}")
    if "const" in schema and value != schema["const"]:
        out.append(f"{where}: {json.dumps(value)[:80]} is not {schema['const']!r}")
    if isinstance(value, dict):
        found_props = schema.get("properties")
        props: Mapping[str, Any] = found_props if isinstance(found_props, Mapping) else {}
        for name in schema.get("required") or []:
            if name not in value:
                out.append(f"{where}: {name!r} is a required property")
        extra = schema.get("additionalProperties", True)
        for name, item in value.items():
            if name in props:
                _check(item, props[name], root, f"{where}.{name}", out)
            elif extra is False:
                out.append(f"{where}: unexpected property {name!r}")
            elif isinstance(extra, Mapping):
                _check(item, extra, root, f"{where}.{name}", out)
    if isinstance(value, list):
        items = schema.get("items")
        if isinstance(items, (Mapping, bool)):
            for index, item in enumerate(value):
                _check(item, items, root, f"{where}[{index}]", out)
        _bound(len(value), schema, "minItems", "maxItems", where, "items", out)
    if isinstance(value, str):
        _bound(len(value), schema, "minLength", "maxLength", where, "characters", out)
        pattern = schema.get("pattern")
        if isinstance(pattern, str) and re.search(pattern, value) is None:
            out.append(f"{where}: {value[:80]!r} does not match {pattern!r}")
    if _TYPES["number"](value):
        for key in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
            bound = schema.get(key)
            if isinstance(bound, (int, float)) and not _within(key, float(value), float(bound)):
                out.append(f"{where}: {value} violates {key} {bound}")
    for key in ("allOf", "anyOf", "oneOf"):
        options = schema.get(key)
        if not isinstance(options, list):
            continue
        results = []
        for option in options:
            found: list[str] = []
            _check(value, option, root, where, found)
            results.append(found)
        passed = sum(1 for r in results if not r)
        if key == "allOf":
            for found in results:
                out.extend(found)
        elif key == "anyOf" and passed == 0:
            out.append(
                f"{where}: matches none of the anyOf schemas ({'; '.join(r[0] for r in results if r)})"
            )
        elif key == "oneOf" and passed != 1:
            out.append(f"{where}: matches {passed} of the oneOf schemas, expected exactly 1")
    if "not" in schema:
        found = []
        _check(value, schema["not"], root, where, found)
        if not found:
            out.append(f"{where}: must not match the 'not' schema")


def _bound(
    size: int, schema: Mapping[str, Any], low: str, high: str, where: str, unit: str, out: list[str]
) -> None:
    if isinstance(schema.get(low), int) and size < schema[low]:
        out.append(f"{where}: has {size} {unit}, fewer than {low} {schema[low]}")
    if isinstance(schema.get(high), int) and size > schema[high]:
        out.append(f"{where}: has {size} {unit}, more than {high} {schema[high]}")


def _within(key: str, value: float, bound: float) -> bool:
    if key == "minimum":
        return value >= bound
    if key == "maximum":
        return value <= bound
    if key == "exclusiveMinimum":
        return value > bound
    return value < bound
