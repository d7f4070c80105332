"""Results: :class:`RunResult`, :class:`RunError`, :class:`ToolCall`, and building them from events.

``aggregate_run_result`` and ``aggregate_server_result`` are the seed package's functions: they
build the result of a finished run from its events (run mode) or of one turn (server mode),
with the same accumulator the library itself uses.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from opencode_wrapper._model.event import Event, TokenUsage, ToolCall, as_event
from opencode_wrapper._model.fold import Fold, diagnose_run
from opencode_wrapper._model.outcome import RunResult, exception_for
from opencode_wrapper._model.run_error import (
    ERROR_KINDS,
    RAISED_KINDS,
    Attempt,
    ErrorKind,
    PermissionRejection,
    RunError,
)
from opencode_wrapper._wire.server import ServerEventParser

__all__ = [
    "ERROR_KINDS",
    "RAISED_KINDS",
    "Attempt",
    "ErrorKind",
    "PermissionRejection",
    "RunError",
    "RunResult",
    "TokenUsage",
    "ToolCall",
    "aggregate_run_result",
    "aggregate_server_result",
    "exception_for",
    "run_result_fuzzy_text",
]


def aggregate_run_result(
    *,
    events: Iterable[Mapping[str, Any]],
    raw_stdout_lines: list[str],
    exit_code: int | None,
    stderr: str,
) -> RunResult:
    """Build the :class:`RunResult` of a finished ``opencode run`` (seed API).

    Token and cost totals are exact sums over ``step_finish`` events; ``error`` says why the
    run failed (including the exit-0 case where opencode auto-rejected a permission).
    """
    fold = Fold()
    for ev in events:
        fold.add(ev if isinstance(ev, Event) else as_event(ev))
    fields = fold.fields()
    error, rejections = diagnose_run(fields, exit_code=exit_code, stderr=stderr)
    fields.update(
        error=error,
        permission_rejections=rejections,
        raw_stdout_lines=list(raw_stdout_lines),
        exit_code=exit_code,
        stderr=stderr,
    )
    return RunResult(**fields)


def aggregate_server_result(
    *,
    events: Iterable[Mapping[str, Any]],
    session_id: str | None,
    final_messages: list[dict[str, Any]] | None = None,
    exit_code: int | None = 0,
    stderr: str = "",
    user_message_id: str | None = None,
) -> RunResult:
    """Build the :class:`RunResult` of one server-mode turn from its events (seed API).

    ``events`` are the turn's server events (``/event`` shape: ``{"type", "properties"}``).
    Only assistant messages answering ``user_message_id`` count when it is given (otherwise
    every assistant message); events of other sessions (sub-agents) are kept in
    ``result.events`` but not counted. ``final_messages`` (``GET /session/{id}/message``
    entries, ``{"info", "parts"}``), when given, are preferred over what the events said about
    the same messages and parts.

    * ``final_text``: the text parts of the turn's last assistant message;
    * ``token_usage``/``total_cost``: each assistant message's latest ``tokens``/``cost``, once;
    * ``turns``: the number of assistant messages (model steps);
    * ``tool_calls``: one :class:`ToolCall` per tool part, in its latest state;
    * ``structured``: the last ``info.structured`` (not validated here);
    * ``error``: the turn's error, if any.
    """
    parser = ServerEventParser()
    fold = Fold(session_id=session_id, user_message_id=user_message_id)
    for ev in events:
        fold.add(parser.parse(ev))
    if final_messages:
        fold.add_final_messages(final_messages)
    return RunResult.from_fold(fold, exit_code=exit_code, stderr=stderr, session_id=session_id)


def run_result_fuzzy_text(result: RunResult) -> str:
    """Best-effort human-visible output: ``final_text``, else any text in events, else raw stdout."""
    if result.final_text.strip():
        return result.final_text.strip()
    pieces: list[str] = []
    for ev in result.events:
        if ev.get("type") == "diagnostic":
            continue
        typed = ev if isinstance(ev, Event) else as_event(ev)
        chunk = typed.text
        if chunk and chunk.strip():
            pieces.append(chunk.strip())
            continue
        for key in ("content", "text", "delta", "output", "message", "result", "value"):
            value = ev.get(key)
            if isinstance(value, str) and value.strip():
                pieces.append(value.strip())
        message = ev.get("message")
        if isinstance(message, dict):
            for key in ("content", "text"):
                value = message.get(key)
                if isinstance(value, str) and value.strip():
                    pieces.append(value.strip())
    if pieces:
        return "\n".join(pieces).strip()
    return "\n".join(x.strip() for x in result.raw_stdout_lines if x.strip()).strip()
