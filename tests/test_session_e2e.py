"""Sessions end to end: the real pinned opencode serve, driven by the offline model.

One server (and one offline model) serves the whole module, and its tests share two workspaces:
opencode boots an instance (plugins, snapshot repository...) per directory, which costs seconds
on the first prompt there. Every test opens its own sessions. The server's config asks for every
bash command (``permission.bash = ask``), so the callbacks are exercised; commands are unique per
test because an ``always`` answer lasts for the server's life. Git snapshots and title generation
are switched off: they cost seconds per turn on 2 cores and are not what is tested here
(``test_server_e2e`` runs opencode's defaults).
"""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import pytest_asyncio

from opencode_wrapper import (
    OpenCodeProcessError,
    OpenCodeServerError,
    OpenCodeTimeoutError,
    PermissionReply,
    RunConfig,
)
from opencode_wrapper.errors import OpenCodeConfigError
from opencode_wrapper.server import OpenCodeServer
from opencode_wrapper.testing import OfflineModelServer

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

# opencode config for faster turns: no git snapshot per step, no title request.
FAST = {"snapshot": False, "agent": {"title": {"disable": True}}}
QUESTION = {
    "questions": [
        {
            "question": "Which color?",
            "header": "Color",
            "options": [{"label": "red", "description": "warm"}, {"label": "blue", "description": "cool"}],
        }
    ]
}
SCHEMA = {
    "type": "object",
    "properties": {"answer": {"type": "string"}, "score": {"type": "integer"}},
    "required": ["answer", "score"],
}


@pytest.fixture(scope="module")
def model() -> Iterator[OfflineModelServer]:
    with OfflineModelServer() as server:
        yield server


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("sessions")


def _repo(path: Path) -> Path:
    path.mkdir()
    subprocess.run(["git", "init", "-q", str(path)], check=True)
    (path / "README.md").write_text("# scratch workspace\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def spaces(root: Path) -> list[Path]:
    return [_repo(root / "ws-a"), _repo(root / "ws-b")]


@pytest.fixture
def workspace(spaces: list[Path]) -> Path:
    """The module's first workspace (shared: see the module docstring)."""
    return spaces[0]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def server(
    model: OfflineModelServer, opencode_binary: str, root: Path
) -> AsyncIterator[OpenCodeServer]:
    cfg = model.run_config(permission={"bash": "ask"}, config_overrides=FAST)
    async with OpenCodeServer(binary=opencode_binary, run_cfg=cfg, cwd=root) as srv:
        yield srv
    # Everything opencode started (tool commands, git snapshots) ended with it.
    assert processes_under(root) == []


def processes_under(root: Path) -> list[psutil.Process]:
    """Live processes whose working directory is inside ``root``."""
    found = []
    for proc in psutil.process_iter(["pid"]):
        try:
            cwd = proc.cwd()
            if (
                cwd == str(root) or cwd.startswith(f"{root}{os.sep}")
            ) and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except psutil.Error:
            continue
    return found


async def approve(request: dict[str, Any]) -> str:
    return "once"


def descendants(server: OpenCodeServer) -> list[psutil.Process]:
    assert server.pid is not None
    try:
        return psutil.Process(server.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


# ----------------------------------------------------------------------------- conversation


async def test_the_model_remembers_a_name_across_turns(server: OpenCodeServer, workspace: Path) -> None:
    async with server.session(workspace) as s:
        first = await s.send("My name is Bob.")
        second = await s.send("What is my name?")
    assert first.ok and first.final_text == "You said: My name is Bob."
    assert second.ok and second.final_text == "Your name is Bob."
    assert second.turns == 1 and second.session_id == s.session_id
    # Counted once per message: the offline model reports 10 input tokens and 1 word of output per word.
    assert second.token_usage.input == 10 and second.token_usage.output == 4


async def test_a_turn_without_text_does_not_return_the_previous_text(
    server: OpenCodeServer, workspace: Path
) -> None:
    async with server.session(workspace) as s:
        await s.send("[[say: first answer]]")
        result = await s.send("[[bash: echo only-a-tool]]", on_permission=None)
    assert result.final_text == ""
    assert result.error is not None and result.error.kind == "permission_rejected"


async def test_stream_yields_deltas_and_ends_with_the_turn(server: OpenCodeServer, workspace: Path) -> None:
    text = "streamed in several small chunks by the offline model"
    async with server.session(workspace) as s:
        stream = s.stream(f"[[say: {text}]]")
        events = [ev async for ev in stream]
        after = await s.send("[[say: next]]")
    deltas = [ev for ev in events if ev.type == "message.part.delta"]
    assert len(deltas) >= 3
    assert "".join(ev.properties["delta"] for ev in deltas) == text
    assert stream.result.final_text == text and stream.result.ok
    assert events[0].type == "message.updated" and events[0].properties["info"]["role"] == "user"
    assert events[-1].type in ("session.status", "session.idle", "message.updated")
    assert all(ev.session_id == s.session_id for ev in events)
    assert after.final_text == "next"


async def test_unknown_agent_and_model_raise_with_the_error_result(
    server: OpenCodeServer, workspace: Path
) -> None:
    # send() raises as the seed did (and async_run does) for opencode's own errors; the result rides along.
    async with server.session(workspace) as s:
        with pytest.raises(OpenCodeProcessError) as bad_agent:
            await asyncio.wait_for(s.send("hi", run_cfg=RunConfig(agent="nope")), 60)
        with pytest.raises(OpenCodeProcessError) as bad_model:
            await asyncio.wait_for(s.send("hi", run_cfg=RunConfig(model="offline/nope")), 60)
        after = await s.send("[[say: still fine]]")
    agent, model = bad_agent.value.result, bad_model.value.result
    assert agent is not None and model is not None
    assert agent.error is not None and agent.error.kind == "session_error"
    assert 'Agent not found: "nope"' in agent.error.message and "build" in agent.error.message
    assert model.error is not None and "Model not found: offline/nope" in model.error.message
    assert after.ok and after.final_text == "still fine"  # opencode would keep the bad model: we don't


async def test_per_turn_agent_and_model_error(server: OpenCodeServer, workspace: Path) -> None:
    async with server.session(workspace) as s:
        plan = await s.send("[[say: planned]]", run_cfg=RunConfig(agent="plan"))
        with pytest.raises(OpenCodeProcessError) as raised:
            await s.send("[[error: 401]]")
    assert plan.ok and plan.final_text == "planned"
    broken = raised.value.result
    assert broken is not None and broken.error is not None
    assert (broken.error.kind, broken.error.status_code) == ("api_error", 401)
    assert not raised.value.retryable  # a 401 does not pass by trying again


# ----------------------------------------------------------------------------- permissions


async def test_permission_once_runs_the_tool(server: OpenCodeServer, workspace: Path) -> None:
    asked: list[dict[str, Any]] = []

    async def once(request: dict[str, Any]) -> str:
        asked.append(request)
        return "once"

    async with server.session(workspace, on_permission=once) as s:
        result = await s.send("[[bash: echo hi-once]]")
    assert result.ok, result.error
    assert result.final_text == "Tool results: bash: hi-once"
    assert [r["permission"] for r in asked] == ["bash"] and asked[0]["patterns"] == ["echo hi-once"]
    assert result.tool_calls[0]["state"]["status"] == "completed"


async def test_permission_always_is_not_asked_again(server: OpenCodeServer, workspace: Path) -> None:
    asked: list[str] = []

    async def always(request: dict[str, Any]) -> PermissionReply:
        asked.append(request["patterns"][0])
        return PermissionReply.always()

    async with server.session(workspace, on_permission=always) as s:
        first = await s.send("[[bash: printf always-1]]")
        second = await s.send("[[bash: printf always-2]]")
    assert first.final_text == "Tool results: bash: always-1"
    assert second.final_text == "Tool results: bash: always-2"
    assert asked == ["printf always-1"]  # the 'printf *' rule now allows the second one


async def test_permission_reject_stops_the_turn(server: OpenCodeServer, workspace: Path) -> None:
    async def reject(request: dict[str, Any]) -> str:
        return "reject"

    async with server.session(workspace, on_permission=reject) as s:
        result = await s.send("[[bash: echo never-runs]]")
        default = await s.send("[[bash: echo no-callback]]", on_permission=None)
    for res, pattern in ((result, "echo never-runs"), (default, "echo no-callback")):
        assert res.error is not None and res.error.kind == "permission_rejected"
        assert [(r.permission, r.pattern) for r in res.permission_rejections] == [("bash", pattern)]
        assert res.turns == 1  # the model was not called again


async def test_permission_reject_with_a_message_continues_the_turn(
    server: OpenCodeServer, workspace: Path
) -> None:
    async def feedback(request: dict[str, Any]) -> PermissionReply:
        return PermissionReply.reject("Do not run bash; say OK instead.")

    async with server.session(workspace, on_permission=feedback) as s:
        result = await s.send("[[bash: echo with-feedback]]")
    assert result.ok, result.error
    assert result.turns == 2
    assert "with the following feedback: Do not run bash; say OK instead." in result.final_text
    assert result.permission_rejections[0].message == "Do not run bash; say OK instead."


async def test_a_callback_that_raises_rejects_and_is_reported(
    server: OpenCodeServer, workspace: Path
) -> None:
    async def broken(request: dict[str, Any]) -> str:
        raise RuntimeError("callback bug")

    async def nonsense(request: dict[str, Any]) -> str:
        return "maybe"

    async with server.session(workspace, on_permission=broken) as s:
        raised = await asyncio.wait_for(s.send("[[bash: echo raises]]"), 60)
        invalid = await asyncio.wait_for(s.send("[[bash: echo invalid]]", on_permission=nonsense), 60)
        after = await s.send("[[say: alive]]")
    assert raised.error is not None and raised.error.kind == "callback_error"
    assert "RuntimeError: callback bug" in raised.error.message
    assert raised.permission_rejections and raised.permission_rejections[0].pattern == "echo raises"
    assert invalid.error is not None and invalid.error.kind == "callback_error"
    assert "'maybe'" in invalid.error.message
    assert after.ok and after.final_text == "alive"


async def test_an_unanswered_request_is_rejected_at_its_deadline(
    server: OpenCodeServer, workspace: Path
) -> None:
    forever = asyncio.Event()

    async def never(request: dict[str, Any]) -> str:
        await forever.wait()
        return "once"

    async with server.session(workspace, on_permission=never, callback_timeout_s=1.0) as s:
        started = time.monotonic()
        result = await asyncio.wait_for(s.send("[[bash: echo too-late]]"), 60)
    assert result.error is not None and result.error.kind == "callback_error"
    assert "did not answer within callback_timeout_s=1.0" in result.error.message
    assert time.monotonic() - started < 30


# ----------------------------------------------------------------------------- questions


async def test_question_answered(server: OpenCodeServer, workspace: Path) -> None:
    seen: list[dict[str, Any]] = []

    async def answer(request: dict[str, Any]) -> list[list[str]]:
        seen.append(request)
        return [[q["options"][1]["label"]] for q in request["questions"]]

    async with server.session(workspace, on_question=answer) as s:
        result = await s.send(f"[[tool: question {json.dumps(QUESTION)}]]")
    assert result.ok, result.error
    assert seen[0]["questions"][0]["question"] == "Which color?"
    assert '"Which color?"="blue"' in result.final_text


async def test_question_rejected(server: OpenCodeServer, workspace: Path) -> None:
    async def dismiss(request: dict[str, Any]) -> None:
        return None

    async with server.session(workspace, on_question=dismiss) as s:
        dismissed = await s.send(f"[[tool: question {json.dumps(QUESTION)}]]")
        default = await s.send(f"[[tool: question {json.dumps(QUESTION)}]]", on_question=None)
    for res in (dismissed, default):
        assert res.error is not None and res.error.kind == "question_rejected"
        assert res.turns == 1


# ----------------------------------------------------------------------------- abort, timeout, cancel


async def test_abort_during_a_60s_command_kills_it(server: OpenCodeServer, workspace: Path) -> None:
    async with server.session(workspace, on_permission=approve) as s:
        stream = s.stream("[[bash: sleep 60]]")
        async for ev in stream:
            part = ev.part
            if part is not None and part.tool == "bash" and part.state.status == "running":
                break
        sleeper = await _wait_for_process(server, "sleep")
        started = time.monotonic()
        await s.abort()
        rest = [ev async for ev in stream]
        gone, _ = psutil.wait_procs([sleeper], timeout=10)
        aborted_s = time.monotonic() - started
        after = await s.send("[[say: usable again]]")
    assert rest, "the stream goes on until the aborted turn is over"
    assert gone, "the sleep command is still running after abort()"
    assert stream.result.error is not None and stream.result.error.kind == "aborted"
    assert aborted_s < 10
    assert after.ok and after.final_text == "usable again"


async def _wait_for_process(server: OpenCodeServer, name: str, timeout_s: float = 30) -> psutil.Process:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for proc in descendants(server):
            try:
                if proc.name() == name:
                    return proc
            except psutil.NoSuchProcess:
                continue
        await asyncio.sleep(0.05)
    raise AssertionError(f"no {name!r} process under the server")


async def test_abort_right_after_starting_a_turn(server: OpenCodeServer, workspace: Path) -> None:
    async with server.session(workspace) as s:
        for _ in range(2):  # before the prompt reaches opencode, and while it is being sent
            task = asyncio.ensure_future(s.send("[[hang]] abort race"))
            await asyncio.sleep(0)  # let the task start (no waiting on time)
            await s.abort()
            result = await asyncio.wait_for(task, 60)
            assert result.error is not None and result.error.kind == "aborted"
        after = await s.send("[[say: after the race]]")
    assert after.ok and after.final_text == "after the race"


async def test_timeout_aborts_and_raises_with_the_partial_result(
    server: OpenCodeServer, workspace: Path
) -> None:
    async with server.session(workspace) as s:
        with pytest.raises(OpenCodeTimeoutError) as caught:
            await s.send("[[hang]]", timeout_s=3)
        after = await s.send("[[say: after timeout]]")
    error = caught.value
    assert error.timeout_s == 3 and error.result is not None
    assert error.result.error is not None and error.result.error.kind == "timeout"
    assert error.result.session_id == s.session_id
    assert after.ok and after.final_text == "after timeout"


async def test_cancelling_the_task_aborts_the_turn(server: OpenCodeServer, workspace: Path) -> None:
    async with server.session(workspace) as s:
        stream = s.stream("[[hang]]")
        async for ev in stream:
            if ev.type == "session.status" and ev.properties["status"]["type"] == "busy":
                break
        await stream.aclose()  # leaves early: the turn is aborted
        task = asyncio.ensure_future(s.send("[[hang]] second"))
        while not (s._link and s._link.active and s._link.active.tracker.busy_after_user):  # type: ignore[attr-defined]
            await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        status = await server.request("GET", "/session/status", params={"directory": str(workspace)})
        after = await s.send("[[say: after cancel]]")
    assert s.session_id not in status  # the cancelled turn was aborted before CancelledError came
    assert after.ok and after.final_text == "after cancel"


# ----------------------------------------------------------------------------- files, structured output


async def test_files_are_attached(server: OpenCodeServer, model: OfflineModelServer, workspace: Path) -> None:
    notes = workspace / "notes.txt"
    notes.write_text("the secret word is pelican\n", encoding="utf-8")
    async with server.session(workspace) as s:
        result = await s.send("Read the attached file. [[say: read it]]", files=[notes, workspace])
        with pytest.raises(OpenCodeConfigError, match="does not exist"):
            await s.send("x", files=[workspace / "missing.txt"])
    assert result.ok, result.error
    sent = [r for r in model.chat_requests if "Read the attached file." in json.dumps(r.body)]
    assert sent and "the secret word is pelican" in json.dumps(sent[-1].body)


async def test_structured_output_valid_and_invalid(server: OpenCodeServer, workspace: Path) -> None:
    async with server.session(workspace) as s:
        good = await s.send(
            '[[tool: StructuredOutput {"answer": "forty-two", "score": 7}]]', output_schema=SCHEMA
        )
        bad = await s.send('[[tool: StructuredOutput {"answer": 42}]]', output_schema=SCHEMA)
        none = await s.send("[[say: plain text only]]", output_schema=SCHEMA)
        after = await s.send("[[say: after structured]]")
    assert good.ok, good.error
    assert good.structured == {"answer": "forty-two", "score": 7}
    assert bad.structured is None and bad.error is not None and bad.error.kind == "structured_output"
    assert "$.answer: 42 is not of type 'string'" in bad.error.message
    assert "'score' is a required property" in bad.error.message
    assert bad.error.detail["value"] == {"answer": 42}
    assert none.error is not None and none.error.kind == "structured_output"
    assert after.ok  # the session survives opencode's listing bug after a structured turn


async def test_structured_output_with_pydantic(server: OpenCodeServer, workspace: Path) -> None:
    pydantic = pytest.importorskip("pydantic")

    class Verdict(pydantic.BaseModel):  # type: ignore[name-defined,misc]
        answer: str
        score: int

    async with server.session(workspace) as s:
        result = await s.send(
            '[[tool: StructuredOutput {"answer": "yes", "score": 3}]]', output_schema=Verdict
        )
    assert isinstance(result.structured, Verdict) and result.structured.score == 3


# ----------------------------------------------------------------------------- sessions on one server


async def test_twenty_concurrent_sessions_never_share_events(
    server: OpenCodeServer, spaces: list[Path]
) -> None:
    async def one(index: int) -> tuple[str, Any]:
        async with server.session(spaces[index % len(spaces)]) as s:
            result = await s.send(f"[[say: answer-{index}]]")
            return s.session_id or "", result

    started = time.monotonic()
    outcomes = await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(20))), 170)
    elapsed = time.monotonic() - started
    ids = {sid for sid, _ in outcomes}
    assert len(ids) == 20
    for index, (sid, result) in enumerate(outcomes):
        assert result.ok, result.error
        assert result.final_text == f"answer-{index}"
        assert result.events and all(ev.session_id == sid for ev in result.events)
    print(f"20 concurrent sessions: {elapsed:.1f} s")


async def test_resume_a_session_by_id(server: OpenCodeServer, workspace: Path) -> None:
    async with server.session(workspace, delete_on_exit=False) as first:
        await first.send("My name is Alice.")
    async with server.session(workspace, session_id=first.session_id, delete_on_exit=True) as again:
        result = await again.send("What is my name?")
    assert again.session_id == first.session_id
    assert result.final_text == "Your name is Alice."
    with pytest.raises(OpenCodeConfigError, match="no session"):
        async with server.session(workspace, session_id=first.session_id):
            pass  # deleted on exit above


async def test_event_log(server: OpenCodeServer, spaces: list[Path], tmp_path: Path) -> None:
    workspace = spaces[1]
    log = tmp_path / "events.jsonl"
    async with server.session(workspace, log_file=log, log_exclude_types=["message.part.delta"]) as s:
        one = await s.send("[[say: logged one]]")
        two = await s.send("[[say: logged two]]")
    lines = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]
    assert stat.S_IMODE(os.stat(log).st_mode) == 0o600
    kept = [dict(ev) for ev in [*one.events, *two.events] if ev.type != "message.part.delta"]
    assert all(ev["type"] != "message.part.delta" for ev in lines)
    assert [ev for ev in lines if ev in kept] == kept  # every event of both turns, in order
    assert server._password is not None and server._password not in log.read_text(encoding="utf-8")


async def test_password_never_shows(server: OpenCodeServer, workspace: Path, tmp_path: Path) -> None:
    password = server._password
    assert password
    assert password not in repr(server) and "password=***" in repr(server)
    log = tmp_path / "log.jsonl"
    async with server.session(workspace, on_permission=approve, log_file=log) as s:
        assert password not in repr(s)
        with pytest.raises(OpenCodeServerError) as caught:
            await server.request("GET", "/session/ses_doesnotexist")
        # opencode hands its environment (with the password) to the commands the agent runs.
        leak = await s.send("[[bash: env | grep OPENCODE_SERVER_PASSWORD]]")
    assert password not in str(caught.value)
    assert "OPENCODE_SERVER_PASSWORD=***" in leak.final_text
    assert password not in json.dumps(leak.events) and password not in log.read_text(encoding="utf-8")


async def test_send_outside_the_block_and_bad_arguments(server: OpenCodeServer, workspace: Path) -> None:
    session = server.session(workspace)
    with pytest.raises(RuntimeError, match="inside 'async with'"):
        await session.send("hi")

    def sync_callback(request: dict[str, Any]) -> str:
        return "once"

    with pytest.raises(OpenCodeConfigError, match="async"):
        server.session(workspace, on_permission=sync_callback)  # type: ignore[arg-type]
    async with server.session(workspace) as s:
        with pytest.raises(OpenCodeConfigError):
            await s.send("   ")
        with pytest.raises(OpenCodeConfigError, match="async"):
            await s.send("hi", on_question=sync_callback)  # type: ignore[arg-type]
        with pytest.raises(OpenCodeConfigError, match="output_schema"):
            await s.send("hi", output_schema=[1])
