"""Readable lines for events and results, and their JSON form (``run`` and ``batch``)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from opencode_wrapper.events import (
    DiagnosticEvent,
    ErrorEvent,
    Event,
    Part,
    ReasoningEvent,
    RunError,
    RunResult,
    TextEvent,
    TokenUsage,
    ToolUseEvent,
)

if TYPE_CHECKING:
    from rich.text import Text

#: Lines of a tool's output shown under it.
OUTPUT_LINES = 6
_INPUT_KEYS = ("command", "filePath", "path", "pattern", "url", "query", "description")


def tool_summary(part: Part) -> str:
    """What a tool call did, in one line: its title, or its main input."""
    state = part.state
    if state.title:
        return _one_line(state.title)
    questions = state.input.get("questions")
    if isinstance(questions, list) and questions and isinstance(questions[0], dict):
        return _one_line(str(questions[0].get("question") or ""))
    for key in _INPUT_KEYS:
        value = state.input.get(key)
        if isinstance(value, str) and value.strip():
            return _one_line(value)
    return _one_line(json.dumps(state.input, ensure_ascii=False)) if state.input else ""


def _one_line(text: str, limit: int = 80) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def status_style(status: str | None) -> str:
    return {"completed": "green", "error": "red", "running": "yellow", "pending": "yellow"}.get(
        status or "", ""
    )


def _text(*pieces: tuple[str, str] | str) -> Text:
    from rich.text import Text

    return Text.assemble(*pieces)


def tool_lines(part: Part) -> list[Text]:
    """``[tool] bash completed: echo hi`` and the first lines of its output (or its error)."""
    state = part.state
    status = state.status or "?"
    head = _text(
        ("[tool] ", "bold cyan"),
        (part.tool or "?", "bold cyan"),
        " ",
        (status, status_style(status)),
        (": " + tool_summary(part)) if tool_summary(part) else "",
    )
    lines = [head]
    body = state.error if status == "error" else state.output
    if body:
        shown = body.rstrip("\n").splitlines()
        for line in shown[:OUTPUT_LINES]:
            lines.append(_text(("    | ", "dim"), (line, "red" if status == "error" else "")))
        if len(shown) > OUTPUT_LINES:
            lines.append(_text((f"    | ... {len(shown) - OUTPUT_LINES} more lines", "dim")))
    return lines


def error_line(error: RunError) -> Text:
    return _text(("[error] ", "bold red"), (str(error), "red"))


def event_lines(event: Event) -> list[Text]:
    """The readable lines of one run-mode event (none for step boundaries)."""
    part = event.part
    if isinstance(event, TextEvent) and part is not None and part.text:
        return [_text(part.text.rstrip("\n"))]
    if isinstance(event, ReasoningEvent) and part is not None and part.text:
        return [_text(("[thinking] " + part.text.strip(), "dim italic"))]
    if isinstance(event, ToolUseEvent) and part is not None:
        return tool_lines(part)
    if isinstance(event, ErrorEvent) and event.error is not None:
        return [error_line(RunError.from_event_error(event.error))]
    if isinstance(event, DiagnosticEvent):
        raw = event.get("raw")
        return [_text(("[opencode] " + str(raw).strip(), "dim"))] if raw else []
    return []


def usage_text(usage: TokenUsage, cost: float) -> str:
    return f"{usage.total:,} tokens ({usage.input:,} in, {usage.output:,} out), ${cost:.4f}"


def result_line(result: RunResult, elapsed_s: float) -> Text:
    """The closing line: ``[ok] ...`` or ``[failed] kind: message``."""
    steps = f"{result.turns} step{'s' if result.turns != 1 else ''}"
    numbers = f"{steps}, {usage_text(result.token_usage, result.total_cost)}, {elapsed_s:.1f} s"
    if result.ok:
        return _text(("[ok] ", "bold green"), numbers)
    return _text(("[failed] ", "bold red"), (str(result.error), "red"), f"  ({numbers})")


def error_record(error: RunError | None) -> dict[str, Any] | None:
    if error is None:
        return None
    return {
        "kind": error.kind,
        "message": error.message,
        "status_code": error.status_code,
        "name": error.name,
    }


def usage_record(usage: TokenUsage) -> dict[str, int]:
    return {
        "total": usage.total,
        "input": usage.input,
        "output": usage.output,
        "reasoning": usage.reasoning,
        "cache_read": usage.cache_read,
        "cache_write": usage.cache_write,
    }


def tools_used(result: RunResult) -> list[str]:
    return list(result.tools)


def result_record(result: RunResult, elapsed_s: float) -> dict[str, Any]:
    """The JSON summary of one run (the last line of ``run --json``, the body of a batch result)."""
    return {
        "ok": result.ok,
        "error": error_record(result.error),
        "final_text": result.final_text,
        "tokens": usage_record(result.token_usage),
        "cost": result.total_cost,
        "steps": result.turns,
        "tools": tools_used(result),
        "session_id": result.session_id,
        "exit_code": result.exit_code,
        "elapsed_s": round(elapsed_s, 3),
    }
