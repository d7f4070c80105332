"""Builders for ``opencode run --format json`` events, in the shapes opencode 1.18.33 really emits.

See /work/shared/opencode-notes.md §1.1; ids and timestamps are copied from captured runs.
"""

from __future__ import annotations

import json
from typing import Any

SESSION = "ses_df5632d50ffeHDTVaCTTZoPlJb"
MESSAGE = "msg_df5632d5c001JpUVUGtj3KmSEx"
TS = 1795474381383

ANSI_REJECT_BASH = "\x1b[93m\x1b[1m! \x1b[0mpermission requested: bash (echo hi-from-tool); auto-rejecting\n"
ANSI_REJECT_EXTERNAL = (
    "\x1b[93m\x1b[1m! \x1b[0mpermission requested: external_directory (/nonexistent/*); auto-rejecting\n"
)
REJECTED_MESSAGE = "The user rejected permission to use this specific tool call."


def _envelope(kind: str, *, session: str = SESSION, ts: int = TS, **rest: Any) -> dict[str, Any]:
    return {"type": kind, "timestamp": ts, "sessionID": session, **rest}


def _part(part_type: str, part_id: str, *, message: str = MESSAGE, session: str = SESSION) -> dict[str, Any]:
    return {"id": part_id, "messageID": message, "sessionID": session, "type": part_type}


def step_start(*, message: str = MESSAGE, session: str = SESSION) -> dict[str, Any]:
    part = _part("step-start", "prt_df5632d61001", message=message, session=session)
    part["snapshot"] = "fe8a5305ed92b7f0c2b13e8d26b5f3ad8c5b1d00"
    return _envelope("step_start", session=session, part=part)


def text(value: str, *, message: str = MESSAGE, session: str = SESSION) -> dict[str, Any]:
    part = _part("text", "prt_df5632d62001", message=message, session=session)
    part["text"] = value
    part["time"] = {"start": 1795474381372, "end": 1795474381379}
    return _envelope("text", session=session, ts=TS + 1, part=part)


def reasoning(value: str) -> dict[str, Any]:
    part = _part("reasoning", "prt_df5632d62101")
    part["text"] = value
    part["time"] = {"start": 1795474381372, "end": 1795474381379}
    return _envelope("reasoning", part=part)


def tool_use(
    *,
    tool: str = "bash",
    command: str = "echo hi-from-tool",
    status: str = "completed",
    output: str = "hi-from-tool\n",
    error: str | None = None,
) -> dict[str, Any]:
    part = _part("tool", "prt_df5632d63001")
    part["tool"] = tool
    part["callID"] = "call_1"
    state: dict[str, Any] = {
        "status": status,
        "input": {"command": command, "description": "echo"},
        "time": {"start": 1795474381380, "end": 1795474381381},
    }
    if status == "completed":
        state["output"] = output
        state["metadata"] = {"output": output, "exit": 0, "truncated": False}
        state["title"] = command
    else:
        state["error"] = error or REJECTED_MESSAGE
    part["state"] = state
    return _envelope("tool_use", part=part)


def step_finish(
    *,
    reason: str = "stop",
    total: int = 15,
    input: int = 10,
    output: int = 5,
    reasoning: int = 0,
    cache_read: int = 0,
    cache_write: int = 0,
    cost: float = 0,
) -> dict[str, Any]:
    part = _part("step-finish", "prt_df5632d64001")
    part["reason"] = reason
    part["snapshot"] = "fe8a5305ed92b7f0c2b13e8d26b5f3ad8c5b1d00"
    part["tokens"] = {
        "total": total,
        "input": input,
        "output": output,
        "reasoning": reasoning,
        "cache": {"write": cache_write, "read": cache_read},
    }
    part["cost"] = cost
    return _envelope("step_finish", part=part)


def api_error(
    status: int = 401, message: str = "Incorrect API key provided", retryable: bool = False
) -> dict[str, Any]:
    return _envelope(
        "error",
        error={
            "name": "APIError",
            "data": {
                "message": message,
                "statusCode": status,
                "isRetryable": retryable,
                "responseHeaders": {"content-type": "application/json"},
                "responseBody": json.dumps({"error": {"message": message}}),
                "metadata": {"url": "http://127.0.0.1:19123/v1/chat/completions"},
            },
        },
    )


def unknown_error() -> dict[str, Any]:
    return _envelope(
        "error",
        error={
            "name": "UnknownError",
            "data": {
                "message": "Unexpected server error. Check server logs for details.",
                "ref": "err_ab8db829",
            },
        },
    )


def bad_request_error() -> dict[str, Any]:
    """Corrupt image attachment: note ``_tag`` and no ``name``/``data``."""
    return _envelope("error", error={"_tag": "BadRequest"})


def simple_turn(answer: str = "Hello from fake model.") -> list[dict[str, Any]]:
    """A complete one-step turn: step_start, text, step_finish(stop)."""
    return [step_start(), text(answer), step_finish()]


def tool_turn(answer: str = "The command printed hi-from-tool.") -> list[dict[str, Any]]:
    """step_start, tool_use, step_finish(tool-calls), step_start, text, step_finish(stop)."""
    return [
        step_start(),
        tool_use(),
        step_finish(reason="tool-calls", total=30, input=25, output=5, cost=0.25),
        step_start(),
        text(answer),
        step_finish(total=40, input=32, output=8, cache_read=16, cost=0.5),
    ]


def line(event: dict[str, Any]) -> str:
    return json.dumps(event, ensure_ascii=False)
