"""Typed events: every event is the dict opencode sent *and* a typed object with one normalized view.

``ev.kind`` (:data:`EventKind`), ``ev.text``, ``ev.tool``, ``ev.tokens``, ``ev.cost`` and
``ev.error`` read the same for ``opencode run --format json`` lines and ``opencode serve``
events, so one consumer works with every backend. The raw shape stays: ``ev["part"]["text"]``,
``ev.part.state.output``, ``ev.properties``.

The seed package's names that lived here (``RunResult``, ``TokenUsage``, ``aggregate_run_result``,
``aggregate_server_result``, ``run_result_fuzzy_text``, ``iter_parse_lines``) are importable
from here too.
"""

from opencode_wrapper._model.event import (
    EVENT_KINDS,
    DiagnosticEvent,
    ErrorEvent,
    Event,
    EventError,
    EventKind,
    Part,
    ReasoningEvent,
    StepFinishEvent,
    StepStartEvent,
    TextEvent,
    TokenUsage,
    ToolCall,
    ToolState,
    ToolUseEvent,
    as_event,
)
from opencode_wrapper._wire.run import iter_parse_lines, parse_event_line
from opencode_wrapper.results import (
    PermissionRejection,
    RunError,
    RunResult,
    aggregate_run_result,
    aggregate_server_result,
    run_result_fuzzy_text,
)

#: Type an already-decoded event dict (e.g. one SSE ``data:`` payload); kept from 0.4.0.
make_event = as_event

__all__ = [
    "EVENT_KINDS",
    "DiagnosticEvent",
    "ErrorEvent",
    "Event",
    "EventError",
    "EventKind",
    "Part",
    "PermissionRejection",
    "ReasoningEvent",
    "RunError",
    "RunResult",
    "StepFinishEvent",
    "StepStartEvent",
    "TextEvent",
    "TokenUsage",
    "ToolCall",
    "ToolState",
    "ToolUseEvent",
    "aggregate_run_result",
    "aggregate_server_result",
    "as_event",
    "iter_parse_lines",
    "make_event",
    "parse_event_line",
    "run_result_fuzzy_text",
]
