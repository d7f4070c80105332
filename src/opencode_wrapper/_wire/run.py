"""``opencode run --format json``: one JSON object per stdout line, parsed into typed events."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator

from opencode_wrapper._model.event import DiagnosticEvent, Event, as_event

__all__ = ["iter_parse_lines", "parse_event_line"]


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
    return as_event(obj)


def iter_parse_lines(lines: Iterable[str | bytes]) -> Iterator[Event]:
    """Parse every line of ``lines`` (seed API)."""
    for line in lines:
        yield parse_event_line(line)
