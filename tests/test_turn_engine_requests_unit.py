"""The turn engine against a fake server API: permission and question requests, structured output, sub-agents.

Same set-up as tests/test_turn_engine_unit.py: runs go through ``run_request(ServerBackend(fake))``, and
the fake server plays opencode 1.18.33's sequences (notes section 4 for the requests), waiting for
the engine's replies before going on.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from fakes.server_api import FakeServerAPI, Prompt, tokens
from fakes.turn_scripts import (
    QUESTIONS,
    REJECTED,
    kinds,
    permission_script,
    question_script,
    request,
    serving,
    text_turn,
)
from opencode_wrapper._model.event import Event
from opencode_wrapper._model.run_error import PermissionRejection
from opencode_wrapper._turn.callbacks import PermissionReply
from opencode_wrapper.backends.base import run_request
from opencode_wrapper.backends.server import ServerBackend
from opencode_wrapper.errors import (
    OpenCodeServerError,
)

pytestmark = pytest.mark.timeout(10)


@pytest.fixture
async def fake() -> AsyncIterator[FakeServerAPI]:
    async with serving() as server:
        yield server


@pytest.fixture
def ws(tmp_path: Path) -> str:
    return str(tmp_path)


@pytest.mark.parametrize(
    ("answer", "sent"),
    [
        ("once", {"reply": "once"}),
        ("always", {"reply": "always"}),
        (PermissionReply.once(), {"reply": "once"}),
        (
            PermissionReply.reject("Use the read tool instead."),
            {"reply": "reject", "message": "Use the read tool instead."},
        ),
    ],
)
async def test_permission_answered_by_the_callback(
    fake: FakeServerAPI, ws: str, answer: str | PermissionReply, sent: dict[str, str]
) -> None:
    asked: list[dict[str, Any]] = []

    async def on_permission(req: dict[str, Any]) -> str | PermissionReply:
        asked.append(req)
        return answer

    fake.scripts.append(permission_script)
    seen: list[Event] = []
    result = await run_request(
        ServerBackend(fake), request(ws, on_permission=on_permission, on_event=seen.append)
    )

    assert len(asked) == 1
    req = asked[0]
    assert (req["id"], req["permission"], req["patterns"], req["always"]) == (
        "per_1",
        "bash",
        ["echo hi"],
        ["echo *"],
    )
    assert req["sessionID"] == fake.prompts[0].session_id
    assert req["tool"] == {"messageID": fake.prompts[0].assistant_id(1), "callID": "call_1"}
    assert [c.body for c in fake.requests("POST", "/permission/per_1/reply")] == [sent]
    assert "permission" in kinds(seen)
    assert result.ok, result.error
    assert result.final_text == "done"
    if sent["reply"] == "reject":
        assert result.tool_calls[0].status == "error"
        assert result.permission_rejections == [
            PermissionRejection(permission="bash", pattern="echo hi", message="Use the read tool instead.")
        ]
    else:
        assert result.tool_calls[0].status == "completed"
        assert result.permission_rejections == []


async def test_a_plain_reject_stops_the_turn(fake: FakeServerAPI, ws: str) -> None:
    async def on_permission(req: dict[str, Any]) -> str:
        return "reject"

    fake.scripts.append(permission_script)
    result = await run_request(ServerBackend(fake), request(ws, on_permission=on_permission))
    assert [c.body for c in fake.requests("POST", "/permission/per_1/reply")] == [{"reply": "reject"}]
    assert result.error is not None and result.error.kind == "permission_rejected"
    assert result.permission_rejections == [PermissionRejection(permission="bash", pattern="echo hi")]
    assert result.tool_calls[0].error == REJECTED


async def test_without_a_callback_the_permission_is_rejected(fake: FakeServerAPI, ws: str) -> None:
    fake.scripts.append(permission_script)
    result = await run_request(ServerBackend(fake), request(ws))
    assert [c.body for c in fake.requests("POST", "/permission/per_1/reply")] == [{"reply": "reject"}]
    assert result.error is not None and result.error.kind == "permission_rejected"
    assert result.permission_rejections == [PermissionRejection(permission="bash", pattern="echo hi")]


async def _raises(req: dict[str, Any]) -> str:
    raise RuntimeError("the approver is down")


async def _nonsense(req: dict[str, Any]) -> str:
    return "maybe"


async def _never(req: dict[str, Any]) -> str:
    await asyncio.Event().wait()
    return "once"


@pytest.mark.parametrize(
    ("callback", "problem"),
    [
        (_raises, "on_permission raised RuntimeError: the approver is down"),
        (_nonsense, "got 'maybe'"),
        (_never, "on_permission did not answer within callback_timeout_s=0.05"),
    ],
)
async def test_a_failing_permission_callback_rejects_and_is_reported(
    fake: FakeServerAPI, ws: str, callback: Callable[[dict[str, Any]], Awaitable[str]], problem: str
) -> None:
    fake.scripts.append(permission_script)
    result = await run_request(
        ServerBackend(fake), request(ws, on_permission=callback, callback_timeout_s=0.05)
    )
    assert [c.body for c in fake.requests("POST", "/permission/per_1/reply")] == [{"reply": "reject"}]
    error = result.error
    assert error is not None and error.kind == "callback_error"
    assert problem in error.message and error.message.endswith("the request was rejected")
    assert error.detail["callback"] == "on_permission"
    assert error.detail["request"]["id"] == "per_1"
    assert result.permission_rejections == [PermissionRejection(permission="bash", pattern="echo hi")]


async def test_a_reply_the_server_fails_to_take_fails_the_turn(fake: FakeServerAPI, ws: str) -> None:
    # opencode would wait for the answer forever: the turn ends now, with the server's error.
    async def script(p: Prompt) -> None:
        ev, a1 = p.ev, p.assistant_id(1)
        p.emit(ev.user(p.message_id), ev.status("busy"), ev.assistant(a1, p.message_id))
        p.emit(ev.permission("per_1", a1, "call_1", "echo hi"))
        await p.wait_request("POST", "/permission/per_1/reply")

    async def on_permission(req: dict[str, Any]) -> str:
        return "once"

    fake.http_errors[("POST", "/permission/per_1/reply")] = 500
    fake.scripts.append(script)
    with pytest.raises(OpenCodeServerError) as caught:
        await run_request(ServerBackend(fake), request(ws, on_permission=on_permission))
    result = caught.value.result
    assert result is not None and result.error is not None
    assert (result.error.kind, result.error.status_code) == ("server_failure", 500)


# ----------------------------------------------------------------------------- questions


async def test_question_answered(fake: FakeServerAPI, ws: str) -> None:
    asked: list[dict[str, Any]] = []

    async def on_question(req: dict[str, Any]) -> list[list[str]] | None:
        asked.append(req)
        return [["blue"]]

    fake.scripts.append(question_script)
    seen: list[Event] = []
    result = await run_request(
        ServerBackend(fake), request(ws, on_question=on_question, on_event=seen.append)
    )
    assert [req["questions"] for req in asked] == [QUESTIONS]
    assert [c.body for c in fake.requests("POST", "/question/que_1/reply")] == [{"answers": [["blue"]]}]
    assert not fake.requests("POST", "/question/que_1/reject")
    assert "question" in kinds(seen)
    assert result.ok, result.error
    assert result.final_text == "You chose blue"


@pytest.mark.parametrize("answer", ["dismiss", "no callback", "wrong shape"])
async def test_question_dismissed(fake: FakeServerAPI, ws: str, answer: str) -> None:
    async def dismiss(req: dict[str, Any]) -> list[list[str]] | None:
        return None

    async def wrong(req: dict[str, Any]) -> list[list[str]] | None:
        return [["red"], ["blue"]]  # two answers to one question

    callback = {"dismiss": dismiss, "no callback": None, "wrong shape": wrong}[answer]
    fake.scripts.append(question_script)
    result = await run_request(ServerBackend(fake), request(ws, on_question=callback))
    reject = fake.requests("POST", "/question/que_1/reject")
    assert len(reject) == 1 and reject[0].body is None
    assert not fake.requests("POST", "/question/que_1/reply")
    assert result.error is not None
    if answer == "wrong shape":
        assert result.error.kind == "callback_error"
        assert "each of the 1 question(s), got 2 answer(s)" in result.error.message
    else:
        assert result.error.kind == "question_rejected"


# ----------------------------------------------------------------------------- sub-agents


async def test_sub_agent_events_reach_the_turn_but_do_not_count(fake: FakeServerAPI, ws: str) -> None:
    child = "ses_child000000001"
    asked: list[dict[str, Any]] = []

    async def on_permission(req: dict[str, Any]) -> str:
        asked.append(req)
        return "once"

    async def script(p: Prompt) -> None:
        ev, a1, a2 = p.ev, p.assistant_id(1), p.assistant_id(2)
        cev = fake.events(child)
        c_user, c_a1 = p.assistant_id(10), p.assistant_id(11)
        task = ev.new_part_id()
        args = {"description": "look around", "prompt": "list files", "subagent_type": "general"}
        p.emit(
            ev.user(p.message_id),
            ev.status("busy"),
            ev.assistant(a1, p.message_id),
            ev.step_start(a1),
            ev.tool(a1, task, "task", "call_t", status="running", input=args, time={"start": 1}),
            cev.created(parent_id=p.session_id),
            *cev.user(c_user, "list files"),
            cev.status("busy"),
            cev.assistant(c_a1, c_user),
            cev.permission("per_child", c_a1, "call_c", "ls"),
        )
        await p.wait_request("POST", "/permission/per_child/reply")
        p.emit(
            cev.answer(c_a1, c_user, ["child result"], tokens=tokens(1000), cost=5.0),
            cev.status("busy"),
            cev.idle(),  # the child's idle does not end our turn
            ev.tool(a1, task, "task", "call_t", status="completed", input=args, output="child result"),
            ev.step_finish(a1, "tool-calls", tokens=tokens(10)),
            ev.assistant(a1, p.message_id, completed=True, finish="tool-calls", tokens=tokens(10)),
            ev.status("busy"),
            ev.answer(a2, p.message_id, ["parent done"], tokens=tokens(20), cost=0.5),
            ev.status("busy"),
            ev.idle(),
        )

    fake.scripts.append(script)
    result = await run_request(ServerBackend(fake), request(ws, on_permission=on_permission))

    assert result.ok, result.error
    assert result.final_text == "parent done"
    assert result.token_usage.total == 30
    assert result.total_cost == pytest.approx(0.5)
    assert result.turns == 2
    assert result.tools == ["task"]
    assert any(ev.session_id == child and ev.kind == "text" for ev in result.events)
    assert [req["sessionID"] for req in asked] == [child]
    assert [c.body for c in fake.requests("POST", "/permission/per_child/reply")] == [{"reply": "once"}]


# ----------------------------------------------------------------------------- structured output

SCHEMA = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}


@pytest.mark.parametrize(
    ("produced", "error"),
    [
        ({"n": 3}, None),
        (
            {"n": "three"},
            "the structured output does not match output_schema: $.n: 'three' is not of type 'integer'",
        ),
        (None, "the model did not produce structured output"),
    ],
)
async def test_structured_output(fake: FakeServerAPI, ws: str, produced: Any, error: str | None) -> None:
    extra = {} if produced is None else {"structured": produced}
    fake.scripts.append(text_turn([""], **extra))
    result = await run_request(ServerBackend(fake), request(ws, output_schema=SCHEMA))
    body = fake.requests("POST", f"/session/{fake.prompts[0].session_id}/prompt_async")[0].body
    assert body["format"] == {"type": "json_schema", "schema": SCHEMA}
    if error is None:
        assert result.ok, result.error
        assert result.structured == {"n": 3}
    else:
        assert result.error is not None and result.error.kind == "structured_output"
        assert result.error.message == error
        assert result.structured is None
