"""Reusable opencode 1.18.33 sequences for the turn engine tests, played by :class:`FakeServerAPI`.

Each script is what opencode sends for one prompt (notes sections 3.5, 3.6 and 4); the ones that
depend on the engine's answer (a permission reply, an abort) wait for that request first.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

from fakes.server_api import FakeServerAPI, Payload, Prompt, Script, tokens
from opencode_wrapper._model.event import Event
from opencode_wrapper.backends.request import RunRequest

REJECTED = "The user rejected permission to use this specific tool call."
ABORTED = {"name": "MessageAbortedError", "data": {"message": "Aborted"}}


@contextlib.asynccontextmanager
async def serving() -> AsyncIterator[FakeServerAPI]:
    """A fake server for one test; afterwards closed, and its scripts checked (see ``verify``)."""
    server = FakeServerAPI()
    try:
        yield server
    finally:
        await server.aclose()
    await server.verify()


def request(ws: str, prompt: str = "hello", **options: Any) -> RunRequest:
    return RunRequest.create(prompt, ws, **options)


def kinds(events: list[Event]) -> list[str]:
    """The kinds a consumer acts on (``other`` is bookkeeping)."""
    return [ev.kind for ev in events if ev.kind != "other"]


def idle_statuses(events: list[Event]) -> int:
    return sum(
        1 for ev in events if ev.type == "session.status" and ev.properties["status"]["type"] == "idle"
    )


def text_turn(chunks: list[str], *, total: int = 15, cost: float = 0.25, **info: Any) -> Script:
    """opencode's sequence for one plain text turn (notes 3.5), tail included."""

    async def script(p: Prompt) -> None:
        ev, a1 = p.ev, p.assistant_id(1)
        p.emit(
            ev.user(p.message_id, p.body["parts"][0]["text"]),
            ev.updated(),
            ev.status("busy"),
            ev.answer(a1, p.message_id, chunks, tokens=tokens(total, output=5), cost=cost, **info),
            ev.status("busy"),
            ev.idle(),
            # After the end: these are the next turn's "late events", never this turn's.
            ev.updated(),
            ev.diff(),
        )

    return script


def running_bash(p: Prompt, command: str = "sleep 60") -> tuple[str, str, list[Payload]]:
    """An assistant step with a bash tool that is running: (assistant id, tool part id, payloads)."""
    ev, a1 = p.ev, p.assistant_id(1)
    tool = ev.new_part_id()
    return (
        a1,
        tool,
        [
            *ev.user(p.message_id),
            ev.status("busy"),
            ev.assistant(a1, p.message_id),
            ev.step_start(a1),
            ev.tool(a1, tool, "bash", "call_1", status="pending", input={}, raw=""),
            ev.tool(
                a1, tool, "bash", "call_1", status="running", input={"command": command}, time={"start": 1}
            ),
        ],
    )


def aborted_while_running(p: Prompt, a1: str, tool: str) -> list[Payload]:
    """An abort of a running bash tool (notes 3.6.3): idle *twice*, the message final in between."""
    ev = p.ev
    return [
        ev.error("MessageAbortedError", "Aborted"),
        *ev.idle(),
        ev.tool(
            a1,
            tool,
            "bash",
            "call_1",
            status="completed",
            input={"command": "sleep 60"},
            output="(no output)\n\n<shell_metadata>\nUser aborted the command\n</shell_metadata>",
            metadata={"exit": None},
        ),
        ev.assistant(a1, p.message_id, completed=True, error=ABORTED, tokens=tokens(9)),
        *ev.idle(),
    ]


def abort_script(on_abort: Callable[[Prompt, str, str], list[Payload]] = aborted_while_running) -> Script:
    async def script(p: Prompt) -> None:
        a1, tool, start = running_bash(p)
        p.emit(start)
        await p.wait_request("POST", f"/session/{p.session_id}/abort")
        p.emit(on_abort(p, a1, tool))

    return script


async def permission_script(p: Prompt) -> None:
    """opencode asking before a bash call, then doing what the reply says (notes section 4)."""
    ev, a1, a2 = p.ev, p.assistant_id(1), p.assistant_id(2)
    tool = ev.new_part_id()
    cmd = {"command": "echo hi"}
    p.emit(
        ev.user(p.message_id),
        ev.status("busy"),
        ev.assistant(a1, p.message_id),
        ev.step_start(a1),
        ev.tool(a1, tool, "bash", "call_1", status="running", input=cmd, time={"start": 1}),
        ev.permission("per_1", a1, "call_1", "echo hi"),
    )
    reply = (await p.wait_request("POST", "/permission/per_1/reply")).body
    p.emit(ev.event("permission.replied", requestID="per_1", reply=reply["reply"]))
    if reply["reply"] != "reject":
        p.emit(ev.tool(a1, tool, "bash", "call_1", status="completed", input=cmd, output="hi\n"))
    else:
        feedback = reply.get("message")
        error = REJECTED if feedback is None else REJECTED[:-1] + f" with the following feedback: {feedback}"
        p.emit(ev.tool(a1, tool, "bash", "call_1", status="error", input=cmd, error=error))
    p.emit(ev.assistant(a1, p.message_id, completed=True, finish="tool-calls", tokens=tokens(5)))
    if reply["reply"] == "reject" and "message" not in reply:
        p.emit(ev.idle())  # a plain reject stops the turn
        return
    p.emit(ev.status("busy"), ev.answer(a2, p.message_id, ["done"], tokens=tokens(6)), ev.idle())


QUESTIONS = [
    {
        "question": "Which color?",
        "header": "Color",
        "options": [{"label": "red", "description": "warm"}, {"label": "blue", "description": "cool"}],
        "multiple": False,
    }
]


async def question_script(p: Prompt) -> None:
    ev, a1, a2 = p.ev, p.assistant_id(1), p.assistant_id(2)
    tool = ev.new_part_id()
    args = {"questions": QUESTIONS}
    p.emit(
        ev.user(p.message_id),
        ev.status("busy"),
        ev.assistant(a1, p.message_id),
        ev.tool(a1, tool, "question", "call_q", status="running", input=args, time={"start": 1}),
        ev.question("que_1", a1, "call_q", QUESTIONS),
    )
    call = await p.server.wait_for(lambda c: c.path.startswith("/question/que_1/"))
    if call.path.endswith("/reply"):
        answers = call.body["answers"]
        p.emit(
            ev.event("question.replied", requestID="que_1", answers=answers),
            ev.tool(
                a1, tool, "question", "call_q", status="completed", input=args, output=f"answered {answers}"
            ),
            ev.assistant(a1, p.message_id, completed=True, finish="tool-calls", tokens=tokens(3)),
            ev.status("busy"),
            ev.answer(a2, p.message_id, [f"You chose {answers[0][0]}"], tokens=tokens(4)),
            ev.idle(),
        )
    else:
        p.emit(
            ev.event("question.rejected", requestID="que_1"),
            ev.tool(
                a1,
                tool,
                "question",
                "call_q",
                status="error",
                input=args,
                error="The user dismissed this question",
            ),
            ev.assistant(a1, p.message_id, completed=True, finish="tool-calls", tokens=tokens(3)),
            ev.idle(),
        )
