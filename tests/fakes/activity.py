"""One agent activity described by both transports, in the shapes opencode 1.18.33 really sends.

The activity: the user asks "List the files."; step 1 calls ``bash`` (``ls``, completed) and
``read`` (error: file not found) and stops on ``tool-calls``; step 2 reasons, answers "Found a.txt
and b.txt." and stops. ``run_lines()`` is what ``opencode run --format json --thinking`` prints
(one finished part per line, /work/shared/opencode-notes.md §1.1); ``server_payloads()`` is what
``opencode serve`` publishes on ``/event`` for the same turn (§3.5: parts re-sent on every
change, text streamed as deltas, each assistant message re-sent whole). Both report the same
totals: :data:`USAGE` tokens and :data:`COST`.
"""

from __future__ import annotations

import copy
import json
from typing import Any

SESSION = "ses_7f3aa1b2cffeQm2Xr0zK1Lp9Tq"
CHILD_SESSION = "ses_7f3aa1b9affeChildAgent00001"
USER_MSG = "msg_7f3aa1b30001Aa0000000000"
STEP1_MSG = "msg_7f3aa1b31001Bb0000000000"
STEP2_MSG = "msg_7f3aa1b32001Cc0000000000"
PREVIOUS_USER_MSG = "msg_7f3aa1a00001Zz0000000000"
PREVIOUS_ANSWER_MSG = "msg_7f3aa1a01001Zz0000000000"
TS = 1795474381383

PROMPT = "List the files."
ANSWER = "Found a.txt and b.txt."
THOUGHT = "I should answer."
LS_OUTPUT = "a.txt\nb.txt\n"
READ_ERROR = "File not found: /nope.txt"

STEP1_TOKENS: dict[str, Any] = {
    "total": 30,
    "input": 25,
    "output": 5,
    "reasoning": 0,
    "cache": {"write": 0, "read": 0},
}
STEP2_TOKENS: dict[str, Any] = {
    "total": 40,
    "input": 32,
    "output": 6,
    "reasoning": 2,
    "cache": {"write": 4, "read": 16},
}
STEP1_COST = 0.25
STEP2_COST = 0.5
#: The sums over both steps, as ``TokenUsage`` fields.
USAGE = {"total": 70, "input": 57, "output": 11, "reasoning": 2, "cache_read": 16, "cache_write": 4}
COST = 0.75
#: ``(name, last status)`` of each tool call, in call order.
TOOLS = [("bash", "completed"), ("read", "error")]

_ZERO_TOKENS: dict[str, Any] = {
    "total": 0,
    "input": 0,
    "output": 0,
    "reasoning": 0,
    "cache": {"write": 0, "read": 0},
}


def _part(part_type: str, part_id: str, message: str, **rest: Any) -> dict[str, Any]:
    return {"id": part_id, "messageID": message, "sessionID": SESSION, "type": part_type, **rest}


def _bash_state(status: str) -> dict[str, Any]:
    if status == "pending":
        return {"status": "pending", "input": {}, "raw": ""}
    state: dict[str, Any] = {"status": status, "input": {"command": "ls", "description": "list"}}
    if status == "running":
        state["time"] = {"start": TS + 10}
    else:
        state.update(
            output=LS_OUTPUT,
            metadata={"output": LS_OUTPUT, "exit": 0, "truncated": False},
            title="ls",
            time={"start": TS + 10, "end": TS + 12},
        )
    return state


def _read_state(status: str) -> dict[str, Any]:
    if status == "pending":
        return {"status": "pending", "input": {}, "raw": ""}
    state: dict[str, Any] = {"status": status, "input": {"filePath": "/nope.txt"}}
    if status == "running":
        state["time"] = {"start": TS + 13}
    else:
        state.update(error=READ_ERROR, time={"start": TS + 13, "end": TS + 14})
    return state


def _bash(status: str) -> dict[str, Any]:
    return _part(
        "tool", "prt_7f3aa1b31003", STEP1_MSG, tool="bash", callID="call_1", state=_bash_state(status)
    )


def _read(status: str) -> dict[str, Any]:
    return _part(
        "tool", "prt_7f3aa1b31004", STEP1_MSG, tool="read", callID="call_2", state=_read_state(status)
    )


def _step_start(message: str, part_id: str) -> dict[str, Any]:
    return _part("step-start", part_id, message, snapshot="fe8a5305ed92b7f0c2b13e8d26b5f3ad8c5b1d00")


def _step_finish(
    message: str, part_id: str, reason: str, tokens: dict[str, Any], cost: float
) -> dict[str, Any]:
    return _part(
        "step-finish",
        part_id,
        message,
        reason=reason,
        snapshot="0c2b13e8d2",
        tokens=copy.deepcopy(tokens),
        cost=cost,
    )


def _reasoning(text: str, *, finished: bool) -> dict[str, Any]:
    times = {"start": TS + 20, "end": TS + 21} if finished else {"start": TS + 20}
    return _part("reasoning", "prt_7f3aa1b32002", STEP2_MSG, text=text, time=times)


def _text(text: str, *, finished: bool) -> dict[str, Any]:
    times = {"start": TS + 22, "end": TS + 23} if finished else {"start": TS + 22}
    return _part("text", "prt_7f3aa1b32003", STEP2_MSG, text=text, time=times)


# ----------------------------------------------------------------------------- run mode


def _line(kind: str, **rest: Any) -> dict[str, Any]:
    return {"type": kind, "timestamp": TS, "sessionID": SESSION, **rest}


def run_events() -> list[dict[str, Any]]:
    """The activity as ``opencode run --format json --thinking`` objects (one per stdout line)."""
    return [
        _line("step_start", part=_step_start(STEP1_MSG, "prt_7f3aa1b31002")),
        _line("tool_use", part=_bash("completed")),
        _line("tool_use", part=_read("error")),
        _line(
            "step_finish",
            part=_step_finish(STEP1_MSG, "prt_7f3aa1b31005", "tool-calls", STEP1_TOKENS, STEP1_COST),
        ),
        _line("step_start", part=_step_start(STEP2_MSG, "prt_7f3aa1b32001")),
        _line("reasoning", part=_reasoning(THOUGHT, finished=True)),
        _line("text", part=_text(ANSWER, finished=True)),
        _line(
            "step_finish", part=_step_finish(STEP2_MSG, "prt_7f3aa1b32004", "stop", STEP2_TOKENS, STEP2_COST)
        ),
    ]


#: The normalized kind of each of :func:`run_events`.
RUN_KINDS = ["step_start", "tool", "tool", "step_finish", "step_start", "reasoning", "text", "step_finish"]


def run_lines() -> list[str]:
    return [json.dumps(ev) for ev in run_events()]


def run_error_event() -> dict[str, Any]:
    """A run-mode ``error`` line: the provider answered HTTP 500."""
    return _line(
        "error",
        error={
            "name": "APIError",
            "data": {
                "message": "fake internal server error",
                "statusCode": 500,
                "isRetryable": True,
                "responseHeaders": {"content-type": "application/json"},
                "metadata": {"url": "http://127.0.0.1:19123/v1/chat/completions"},
            },
        },
    )


# ----------------------------------------------------------------------------- server mode


def server_event(kind: str, session: str = SESSION, **props: Any) -> dict[str, Any]:
    return {"id": "evt_7f3aa1b40001", "type": kind, "properties": {"sessionID": session, **props}}


def _updated(part: dict[str, Any]) -> dict[str, Any]:
    return server_event("message.part.updated", part=part, time=TS)


def _delta(message: str, part_id: str, delta: str) -> dict[str, Any]:
    return server_event("message.part.delta", messageID=message, partID=part_id, field="text", delta=delta)


def assistant_info(
    message: str,
    *,
    tokens: dict[str, Any],
    cost: float,
    finish: str | None = None,
    completed: bool = False,
    parent: str = USER_MSG,
    session: str = SESSION,
) -> dict[str, Any]:
    info: dict[str, Any] = {
        "id": message,
        "sessionID": session,
        "role": "assistant",
        "parentID": parent,
        "modelID": "scripted",
        "providerID": "offline",
        "mode": "build",
        "agent": "build",
        "path": {"cwd": "/ws", "root": "/ws"},
        "cost": cost,
        "tokens": copy.deepcopy(tokens),
        "time": {"created": TS, **({"completed": TS + 30} if completed else {})},
    }
    if finish is not None:
        info["finish"] = finish
    return info


def server_payloads() -> list[dict[str, Any]]:
    """The activity as ``opencode serve`` ``/event`` payloads of one turn, in order."""
    user = {
        "id": USER_MSG,
        "sessionID": SESSION,
        "role": "user",
        "time": {"created": TS},
        "agent": "build",
        "model": {"providerID": "offline", "modelID": "scripted"},
    }
    return [
        server_event("message.updated", info=user),
        _updated(
            {
                "id": "prt_7f3aa1b30002",
                "messageID": USER_MSG,
                "sessionID": SESSION,
                "type": "text",
                "text": PROMPT,
            }
        ),
        server_event("session.status", status={"type": "busy"}),
        server_event("message.updated", info=assistant_info(STEP1_MSG, tokens=_ZERO_TOKENS, cost=0)),
        _updated(_step_start(STEP1_MSG, "prt_7f3aa1b31002")),
        _updated(_bash("pending")),
        _updated(_bash("running")),
        _updated(_bash("completed")),
        _updated(_read("pending")),
        _updated(_read("running")),
        _updated(_read("error")),
        _updated(_step_finish(STEP1_MSG, "prt_7f3aa1b31005", "tool-calls", STEP1_TOKENS, STEP1_COST)),
        server_event(
            "message.updated",
            info=assistant_info(
                STEP1_MSG, tokens=STEP1_TOKENS, cost=STEP1_COST, finish="tool-calls", completed=True
            ),
        ),
        server_event("message.updated", info=assistant_info(STEP2_MSG, tokens=_ZERO_TOKENS, cost=0)),
        _updated(_step_start(STEP2_MSG, "prt_7f3aa1b32001")),
        _updated(_reasoning("", finished=False)),
        _delta(STEP2_MSG, "prt_7f3aa1b32002", "I should "),
        _delta(STEP2_MSG, "prt_7f3aa1b32002", "answer."),
        _updated(_reasoning(THOUGHT, finished=True)),
        _updated(_text("", finished=False)),
        _delta(STEP2_MSG, "prt_7f3aa1b32003", "Found a.txt "),
        _delta(STEP2_MSG, "prt_7f3aa1b32003", "and b.txt."),
        _updated(_text(ANSWER, finished=True)),
        _updated(_step_finish(STEP2_MSG, "prt_7f3aa1b32004", "stop", STEP2_TOKENS, STEP2_COST)),
        server_event(
            "message.updated",
            info=assistant_info(STEP2_MSG, tokens=STEP2_TOKENS, cost=STEP2_COST, finish="stop"),
        ),
        server_event(
            "message.updated",
            info=assistant_info(
                STEP2_MSG, tokens=STEP2_TOKENS, cost=STEP2_COST, finish="stop", completed=True
            ),
        ),
        server_event("session.status", status={"type": "idle"}),
        server_event("session.idle"),
    ]


#: The normalized kind of each of :func:`server_payloads` (parsed with one ``ServerEventParser``).
SERVER_KINDS = [
    "other",  # message.updated (user)
    "other",  # the user's own prompt part
    "status",
    "other",  # message.updated (assistant, step 1)
    "step_start",
    "tool",
    "tool",
    "tool",  # bash pending, running, completed
    "tool",
    "tool",
    "tool",  # read pending, running, error
    "step_finish",
    "other",  # message.updated (step 1 finished)
    "other",  # message.updated (assistant, step 2)
    "step_start",
    "other",  # reasoning part opening snapshot
    "other",
    "other",  # reasoning deltas
    "reasoning",
    "other",  # text part opening snapshot (time.start only)
    "text_delta",
    "text_delta",
    "text",
    "step_finish",
    "other",
    "other",  # message.updated (step 2 finished, then completed)
    "status",
    "status",
]


def permission_asked() -> dict[str, Any]:
    return server_event(
        "permission.asked",
        id="per_20aa66b32001dxm5z2zYlaZ9BO",
        permission="bash",
        patterns=["echo hi-from-tool"],
        metadata={"command": "echo hi-from-tool"},
        always=["echo *"],
        tool={"messageID": STEP1_MSG, "callID": "call_61"},
    )


def question_asked() -> dict[str, Any]:
    return server_event(
        "question.asked",
        id="que_20aa74bcd001hbjuKPX2ZhFCy7",
        questions=[
            {
                "question": "Which color?",
                "header": "Color",
                "options": [
                    {"label": "red", "description": "warm"},
                    {"label": "blue", "description": "cool"},
                ],
                "multiple": False,
            }
        ],
        tool={"messageID": STEP1_MSG, "callID": "call_19"},
    )


def session_error(status: int = 401, message: str = "fake invalid api key") -> dict[str, Any]:
    return server_event(
        "session.error",
        error={"name": "APIError", "data": {"message": message, "statusCode": status, "isRetryable": False}},
    )


def previous_turn_leftovers() -> list[dict[str, Any]]:
    """Late events of the turn before (its answer arrives after our turn began): never ours."""
    old = "prt_7f3aa1a01002"
    return [
        server_event(
            "message.updated",
            info=assistant_info(
                PREVIOUS_ANSWER_MSG,
                tokens={"total": 999, "input": 900, "output": 99},
                cost=9.0,
                finish="stop",
                completed=True,
                parent=PREVIOUS_USER_MSG,
            ),
        ),
        _updated(
            {
                "id": old,
                "messageID": PREVIOUS_ANSWER_MSG,
                "sessionID": SESSION,
                "type": "text",
                "text": "old answer",
                "time": {"start": TS, "end": TS},
            }
        ),
    ]


def child_session_events() -> list[dict[str, Any]]:
    """A sub-agent's own session working during our turn (its tokens are its own turn's)."""
    child_msg = "msg_7f3aa1b35001Dd0000000000"
    return [
        server_event(
            "message.updated",
            session=CHILD_SESSION,
            info=assistant_info(
                child_msg,
                tokens={"total": 500, "input": 400, "output": 100},
                cost=5.0,
                finish="stop",
                completed=True,
                parent=USER_MSG,
                session=CHILD_SESSION,
            ),
        ),
        server_event(
            "message.part.updated",
            session=CHILD_SESSION,
            part={
                "id": "prt_7f3aa1b35002",
                "messageID": child_msg,
                "sessionID": CHILD_SESSION,
                "type": "text",
                "text": "sub-agent says hi",
                "time": {"start": TS, "end": TS},
            },
        ),
    ]
