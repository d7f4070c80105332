"""The session turn engine (``_turn/engine.py``) against a fake server API: no opencode process.

Runs go through the public-ish paths (``run_request(ServerBackend(...))``, a ``ServerBackend`` with
a ``SessionLink`` for session turns, ``backend.open(request)`` handles). The fake server
(tests/fakes/server_api.py) plays, for each prompt, the event sequences opencode 1.18.33 really
sends (project notes sections 3.4-3.6 and 4), with its quirks: late and double idle events,
errors before the prompt is stored, lost idle events. Permission and question requests,
structured output and sub-agent sessions: tests/test_turn_engine_requests_unit.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from fakes.server_api import FakeServerAPI, Prompt, tokens
from fakes.turn_scripts import (
    ABORTED,
    abort_script,
    idle_statuses,
    kinds,
    request,
    running_bash,
    serving,
    text_turn,
)
from opencode_wrapper._model.event import Event
from opencode_wrapper._turn import engine
from opencode_wrapper._turn.link import SessionLink
from opencode_wrapper.backends.base import run_request
from opencode_wrapper.backends.request import ONE_SHOT_TITLE
from opencode_wrapper.backends.server import ServerBackend
from opencode_wrapper.config import RunConfig
from opencode_wrapper.errors import (
    OpenCodeProcessError,
    OpenCodeServerError,
    OpenCodeTimeoutError,
)

pytestmark = pytest.mark.timeout(10)


@pytest.fixture
async def fake() -> AsyncIterator[FakeServerAPI]:
    async with serving() as server:
        yield server


@pytest.fixture
def ws(tmp_path: Path) -> str:
    return str(tmp_path)


# ----------------------------------------------------------------------------- plain turns


async def test_one_shot_text_turn(fake: FakeServerAPI, ws: str) -> None:
    fake.scripts.append(text_turn(["Hello ", "there"], total=15, cost=0.25))
    seen: list[Event] = []
    result = await run_request(ServerBackend(fake), request(ws, "say hello", on_event=seen.append))

    assert result.ok, result.error
    assert result.final_text == "Hello there"
    # The assistant message is re-sent whole twice (and its step-finish part has the same tokens):
    # counted once.
    assert (result.token_usage.total, result.token_usage.input, result.token_usage.output) == (15, 10, 5)
    assert result.total_cost == pytest.approx(0.25)
    assert result.turns == 1
    sid = fake.prompts[0].session_id
    assert result.session_id == sid

    # What a consumer sees: every event from our message on, typed; the turn ends at the idle status.
    assert seen == result.events
    assert (
        seen[0].type == "message.updated" and seen[0].properties["info"]["id"] == fake.prompts[0].message_id
    )
    assert kinds(seen) == [
        "status",
        "status",
        "step_start",
        "text_delta",
        "text_delta",
        "text",
        "step_finish",
        "status",
        "status",
    ]
    assert [ev.text for ev in seen if ev.kind in ("text_delta", "text")] == ["Hello ", "there", "Hello there"]
    assert seen[-1].type == "session.status" and seen[-1].properties["status"]["type"] == "idle"

    assert fake.routes() == [
        ("POST", "/session"),
        ("POST", f"/session/{sid}/prompt_async"),
        ("DELETE", f"/session/{sid}"),
    ]
    assert fake.calls[0].body == {"title": ONE_SHOT_TITLE}  # a titled session: no title request to the model
    mid = fake.prompts[0].message_id
    assert mid.startswith("msg_") and len(mid) == 30
    # No model, agent, tools or format unless asked for: opencode's defaults apply.
    assert fake.calls[1].body == {"messageID": mid, "parts": [{"type": "text", "text": "say hello"}]}
    assert all(call.params == {"directory": ws} for call in fake.calls)
    assert fake.sessions == {}  # deleted afterwards


async def test_iterating_the_handle_yields_the_events_of_the_result(fake: FakeServerAPI, ws: str) -> None:
    fake.scripts.append(text_turn(["a", "b"]))
    async with ServerBackend(fake).open(request(ws)) as handle:
        got = [ev async for ev in handle]
    assert got == handle.result.events
    assert kinds(got) == [
        "status",
        "status",
        "step_start",
        "text_delta",
        "text_delta",
        "text",
        "step_finish",
        "status",
        "status",
    ]
    assert handle.result.final_text == "ab"


async def test_tool_turn(fake: FakeServerAPI, ws: str) -> None:
    async def script(p: Prompt) -> None:
        ev, a1, a2 = p.ev, p.assistant_id(1), p.assistant_id(2)
        tool = ev.new_part_id()
        cmd = {"command": "echo hi"}
        p.emit(
            ev.user(p.message_id),
            ev.status("busy"),
            ev.assistant(a1, p.message_id),
            ev.step_start(a1),
            ev.tool(a1, tool, "bash", "call_1", status="pending", input={}, raw=""),
            ev.tool(a1, tool, "bash", "call_1", status="running", input=cmd, time={"start": 1}),
            ev.tool(
                a1,
                tool,
                "bash",
                "call_1",
                status="running",
                input=cmd,
                time={"start": 1},
                metadata={"output": ""},
            ),
            ev.tool(
                a1,
                tool,
                "bash",
                "call_1",
                status="completed",
                input=cmd,
                output="hi\n",
                title="echo hi",
                metadata={},
            ),
            ev.step_finish(a1, "tool-calls", tokens=tokens(20)),
            ev.assistant(a1, p.message_id, completed=True, finish="tool-calls", tokens=tokens(20), cost=0.1),
            ev.status("busy"),  # no idle between steps
            ev.answer(a2, p.message_id, ["It printed ", "hi"], tokens=tokens(30), cost=0.2),
            ev.status("busy"),
            ev.idle(),
        )

    fake.scripts.append(script)
    seen: list[Event] = []
    result = await run_request(ServerBackend(fake), request(ws, "run echo hi", on_event=seen.append))

    assert result.ok, result.error
    tool_events = [ev.tool for ev in seen if ev.kind == "tool"]
    assert [call.status for call in tool_events if call is not None] == [
        "pending",
        "running",
        "running",
        "completed",
    ]
    assert len(result.tool_calls) == 1
    call = result.tool_calls[0]
    assert (call.name, call.status, call.output, call.input) == (
        "bash",
        "completed",
        "hi\n",
        {"command": "echo hi"},
    )
    assert call.call_id == "call_1"
    assert result.tools == ["bash"]
    assert result.turns == 2
    assert result.token_usage.total == 50
    assert result.total_cost == pytest.approx(0.3)
    assert result.final_text == "It printed hi"  # the last step's text only


async def test_session_turns_ignore_the_previous_turns_late_events(fake: FakeServerAPI, ws: str) -> None:
    link = SessionLink(fake, ws)
    await link.open()
    backend = ServerBackend(fake, link=link)
    fake.scripts.append(text_turn(["first answer"], total=15, cost=1.0))

    async def second(p: Prompt) -> None:
        ev, old = p.ev, fake.prompts[0]
        old_a1 = old.assistant_id(1)
        late_a1 = ev.assistant(
            old_a1, old.message_id, completed=True, finish="stop", tokens=tokens(15), cost=1.0
        )
        p.emit(
            # The previous turn's tail, after our prompt was sent (notes 3.6.2): a stale idle and updates.
            ev.idle(),
            ev.status("idle"),
            ev.updated(),
            ev.event(
                "message.updated", info={"id": old.message_id, "role": "user", "sessionID": p.session_id}
            ),
            late_a1,
            ev.part(old_a1, ev.new_part_id(), "text", text="first answer", time={"start": 1, "end": 2}),
            *ev.user(p.message_id),
            late_a1,  # even after our message: it answers the previous prompt, not ours
            ev.status("busy"),
            ev.answer(p.assistant_id(1), p.message_id, ["second ", "answer"], tokens=tokens(7), cost=0.1),
            ev.status("busy"),
            ev.idle(),
        )

    fake.scripts.append(second)
    build = RunConfig(agent="build")
    first = await run_request(backend, request(ws, "one", run_cfg=build))
    result = await run_request(backend, request(ws, "two", run_cfg=build))

    assert first.ok and first.final_text == "first answer" and first.token_usage.total == 15
    assert result.ok, result.error
    assert result.final_text == "second answer"
    assert result.token_usage.total == 7
    assert result.total_cost == pytest.approx(0.1)
    assert result.turns == 1
    # Nothing from before our message reached the turn: the stale idles were not taken as its end.
    mid2 = fake.prompts[1].message_id
    assert result.events[0].properties["info"]["id"] == mid2
    assert idle_statuses(result.events) == 1
    assert result.session_id == first.session_id == link.session_id

    sid = link.id
    assert [c.body["agent"] for c in fake.requests("POST", f"/session/{sid}/prompt_async")] == [
        "build",
        "build",
    ]
    assert len(fake.requests("GET", "/agent")) == 1  # the known agents are remembered
    assert len(fake.requests("POST", "/session")) == 1  # both turns in the same session
    assert fake.calls[0].body == {}  # no title: opencode names the session
    await link.close()
    assert fake.routes()[-1] == ("DELETE", f"/session/{sid}")
    assert fake.sessions == {}


async def test_session_names_the_default_model_again_after_an_override(fake: FakeServerAPI, ws: str) -> None:
    # opencode keeps using a session's last model: after one prompt with a model, a prompt
    # without one must name the server's default explicitly.
    link = SessionLink(fake, ws)
    await link.open()
    backend = ServerBackend(fake, link=link)
    fake.config = {"model": "fake/default-model"}
    fake.scripts.extend([text_turn(["a"]), text_turn(["b"])])
    await run_request(backend, request(ws, "one", run_cfg=RunConfig(model="prov/m1")))
    await run_request(backend, request(ws, "two"))

    bodies = [c.body for c in fake.requests("POST", f"/session/{link.id}/prompt_async")]
    assert bodies[0]["model"] == {"providerID": "prov", "modelID": "m1"}
    assert bodies[1]["model"] == {"providerID": "fake", "modelID": "default-model"}
    assert len(fake.requests("GET", "/config")) == 1


# ----------------------------------------------------------------------------- abort, timeout, failure


async def test_handle_abort_follows_the_double_idle(fake: FakeServerAPI, ws: str) -> None:
    fake.scripts.append(abort_script())
    async with ServerBackend(fake).open(request(ws, "sleep")) as handle:
        async for ev in handle:
            if ev.kind == "tool" and ev.tool is not None and ev.tool.status == "running":
                break
        result = await handle.abort()

    assert result.error is not None and result.error.kind == "aborted"
    assert result.error.message == "the run was aborted"
    sid = fake.prompts[0].session_id
    assert len(fake.requests("POST", f"/session/{sid}/abort")) == 1
    # The first idle came before the aborted message was final: the turn was followed to the end.
    call = result.tool_calls[0]
    assert call.status == "completed" and "User aborted the command" in (call.output or "")
    assert result.turns == 1 and result.token_usage.total == 9
    assert fake.routes()[-1] == ("DELETE", f"/session/{sid}")


async def test_leaving_the_handle_early_aborts_the_turn(fake: FakeServerAPI, ws: str) -> None:
    fake.scripts.append(abort_script())
    async with ServerBackend(fake).open(request(ws, "sleep")) as handle:
        async for ev in handle:
            if ev.kind == "tool":
                break
    assert handle.done
    result = handle.result
    assert result.error is not None and result.error.kind == "aborted"
    assert "closed before it ended" in result.error.message
    sid = fake.prompts[0].session_id
    abort = fake.requests("POST", f"/session/{sid}/abort")
    assert len(abort) == 1
    assert abort[0].timeout_s == engine.ABORT_SETTLE_S
    assert result.tool_calls[0].status == "completed"  # followed to its end after the abort
    assert fake.routes()[-1] == ("DELETE", f"/session/{sid}")


async def test_closing_the_session_mid_turn_aborts_it(fake: FakeServerAPI, ws: str) -> None:
    link = SessionLink(fake, ws)
    await link.open()
    sid = link.id
    fake.scripts.append(abort_script())
    handle = ServerBackend(fake, link=link).open(request(ws, "sleep")).start()
    await fake.wait_request("POST", f"/session/{sid}/prompt_async")
    await link.close()
    result = await handle.wait()

    # Not stopped by the handle: the turn ended on its own, with opencode's abort error.
    assert result.error is not None and result.error.kind == "aborted"
    assert result.error.name == "MessageAbortedError"
    assert "User aborted the command" in (result.tool_calls[0].output or "")
    routes = fake.routes()
    assert routes.index(("POST", f"/session/{sid}/abort")) < routes.index(("DELETE", f"/session/{sid}"))


async def test_timeout_aborts_and_keeps_what_was_streamed(fake: FakeServerAPI, ws: str) -> None:
    async def script(p: Prompt) -> None:
        ev, a1 = p.ev, p.assistant_id(1)
        pid, opening = ev.text_start(a1)
        p.emit(
            ev.user(p.message_id),
            ev.status("busy"),
            ev.assistant(a1, p.message_id),
            ev.step_start(a1),
            opening,
            ev.delta(a1, pid, "partial "),
            ev.delta(a1, pid, "answer"),
        )
        await p.wait_request("POST", f"/session/{p.session_id}/abort")
        p.emit(
            ev.error("MessageAbortedError", "Aborted"),
            ev.assistant(a1, p.message_id, completed=True, error=ABORTED, tokens=tokens(4)),
            ev.idle(),
        )

    fake.scripts.append(script)
    with pytest.raises(OpenCodeTimeoutError) as caught:
        await run_request(ServerBackend(fake), request(ws, "write a lot", timeout_s=0.5))

    assert caught.value.timeout_s == pytest.approx(0.5)
    result = caught.value.result
    assert result is not None and result.error is not None and result.error.kind == "timeout"
    assert result.final_text == "partial answer"  # the deltas of a part never re-sent whole
    assert [ev.text for ev in result.events if ev.kind == "text_delta"] == ["partial ", "answer"]
    assert result.token_usage.total == 4
    sid = fake.prompts[0].session_id
    assert fake.routes()[-2:] == [("POST", f"/session/{sid}/abort"), ("DELETE", f"/session/{sid}")]


async def test_an_ignored_abort_is_followed_only_for_a_bounded_time(
    fake: FakeServerAPI, ws: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(engine, "ABORT_SETTLE_S", 0.1)

    async def script(p: Prompt) -> None:
        _, _, start = running_bash(p)
        p.emit(start)  # and never reacts to the abort

    fake.scripts.append(script)
    with pytest.raises(OpenCodeTimeoutError) as caught:
        await run_request(ServerBackend(fake), request(ws, "hang", timeout_s=0.5))
    result = caught.value.result
    assert result is not None and result.error is not None and result.error.kind == "timeout"
    assert result.tool_calls[0].status == "running"
    sid = fake.prompts[0].session_id
    assert [c.timeout_s for c in fake.requests("POST", f"/session/{sid}/abort")] == [0.1]
    assert fake.routes()[-1] == ("DELETE", f"/session/{sid}")


async def test_server_failure_mid_turn(fake: FakeServerAPI, ws: str) -> None:
    failure = OpenCodeServerError(
        exit_code=1,
        stderr="panic: out of memory\n",
        message="the opencode server exited unexpectedly (exit status 1)",
    )

    async def script(p: Prompt) -> None:
        ev, a1 = p.ev, p.assistant_id(1)
        pid, opening = ev.text_start(a1)
        p.emit(ev.user(p.message_id), ev.status("busy"), ev.assistant(a1, p.message_id), opening)
        p.emit(ev.delta(a1, pid, "half an answer"))
        fake.fail(failure)

    fake.scripts.append(script)
    with pytest.raises(OpenCodeServerError) as caught:
        await run_request(ServerBackend(fake), request(ws))
    result = caught.value.result
    assert result is not None and result.error is not None
    assert result.error.kind == "server_failure"
    assert result.error.message == "the opencode server exited unexpectedly (exit status 1)"
    assert result.error.retryable
    assert result.stderr == "panic: out of memory\n"
    assert result.final_text == "half an answer"  # the events queued before the failure were taken
    assert not fake.requests("DELETE")  # nothing more was asked of a dead server


# ----------------------------------------------------------------------------- refused prompts


async def test_an_unknown_agent_is_refused_without_prompting(fake: FakeServerAPI, ws: str) -> None:
    fake.agents = ["build", "plan"]
    with pytest.raises(OpenCodeProcessError) as caught:
        await run_request(ServerBackend(fake), request(ws, run_cfg=RunConfig(agent="nope")))
    assert not isinstance(caught.value, OpenCodeServerError)
    result = caught.value.result
    assert result is not None and result.error is not None
    assert result.error.kind == "session_error"
    assert result.error.message == 'Agent not found: "nope". Available agents: build, plan'
    sid = fake.requests("DELETE")[0].path.rsplit("/", 1)[1]
    assert fake.routes() == [("POST", "/session"), ("GET", "/agent"), ("DELETE", f"/session/{sid}")]


async def test_a_prompt_opencode_refuses_ends_with_its_error(
    fake: FakeServerAPI, ws: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(engine, "_REFUSAL_GRACE_S", 0.05)
    fake.store_prompts = False

    async def script(p: Prompt) -> None:
        ev = p.ev
        p.emit(
            ev.error("UnknownError", "UnknownError: boom\n    at prompt (src/session/prompt.ts:1:1)"),
            ev.error("UnknownError", "Model not found: fake/nope."),
        )  # and no idle, no message

    fake.scripts.append(script)
    seen: list[Event] = []
    with pytest.raises(OpenCodeProcessError) as caught:
        await run_request(ServerBackend(fake), request(ws, on_event=seen.append))
    result = caught.value.result
    assert result is not None and result.error is not None
    assert result.error.kind == "session_error"
    assert result.error.message == "Model not found: fake/nope."  # the telling one, not the stack trace
    assert kinds(seen) == ["error", "error"]
    p = fake.prompts[0]
    # Asked at once, then once more after the grace.
    assert len(fake.requests("GET", f"/session/{p.session_id}/message/{p.message_id}")) == 2


async def test_a_late_error_of_the_previous_turn_does_not_end_this_one(fake: FakeServerAPI, ws: str) -> None:
    inner = text_turn(["fine"])

    async def script(p: Prompt) -> None:
        p.emit(p.ev.error("APIError", "the previous turn's error", statusCode=401))
        await p.wait_request("GET", f"/session/{p.session_id}/message/{p.message_id}")
        await inner(p)

    fake.scripts.append(script)
    result = await run_request(ServerBackend(fake), request(ws))
    assert result.ok, result.error
    assert result.final_text == "fine"


async def test_a_lost_idle_is_caught_by_the_heartbeat_safety_net(fake: FakeServerAPI, ws: str) -> None:
    async def script(p: Prompt) -> None:
        ev = p.ev
        p.emit(
            ev.user(p.message_id),
            ev.status("busy"),
            ev.answer(p.assistant_id(1), p.message_id, ["made it"], tokens=tokens(3)),
        )  # the idle events are lost
        fake.status = {p.session_id: {"type": "busy"}}
        fake.heartbeat()
        await p.wait_request("GET", "/session/status")
        fake.status = {}  # idle sessions are absent
        fake.heartbeat()

    fake.scripts.append(script)
    result = await run_request(ServerBackend(fake), request(ws))
    assert result.ok, result.error
    assert result.final_text == "made it"
    # Still busy at the first heartbeat: only the second check ended the turn.
    assert len(fake.requests("GET", "/session/status")) == 2
    assert all(ev.type != "server.heartbeat" for ev in result.events)
