"""Tracing without opencode: the run watcher driven by scripted events of both transports, the batch
span, the switches, and what it costs when nothing can record.

Event shapes are those opencode 1.18.33 sends (see tests/fakes/activity.py); times are chosen so
that each span's start and end can be checked against the part times it must come from.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace import SpanKind, StatusCode

from _tracing_support import Traced, attrs, traced_with
from opencode_wrapper import tracing
from opencode_wrapper._model.fold import Fold
from opencode_wrapper.backends.base import Backend
from opencode_wrapper.backends.handle import RunHandle
from opencode_wrapper.backends.request import RunRequest
from opencode_wrapper.backends.watch import watchers_for
from opencode_wrapper.batch import Task, run_many
from opencode_wrapper.config import RunConfig
from opencode_wrapper.errors import OpenCodeConfigError
from opencode_wrapper.events import Event, as_event
from opencode_wrapper.results import RunError, RunResult

SESSION = "ses_7f3aa1b2cffeQm2Xr0zK1Lp9Tq"
MS = 1_000_000  # ns
MODEL = RunConfig(model="offline/scripted")


@pytest.fixture
def traced() -> Iterator[Traced]:
    yield from traced_with()


@pytest.fixture
def request_(tmp_path: Path) -> RunRequest:
    return RunRequest.create("List the files.", tmp_path, run_cfg=MODEL)


class Idle(RunHandle):
    """A handle that is never run: the tests call its watchers' hooks themselves."""

    def __init__(self, request: RunRequest, backend: str = "run") -> None:
        super().__init__(request)
        self.backend = backend
        self._fold = Fold()

    async def _produce(self) -> None:
        return None

    def _partial(self) -> RunResult:
        return RunResult()


def drive(
    handle: RunHandle, events: list[dict[str, Any]], error: RunError | None = None
) -> tuple[RunResult, list[Event]]:
    """Tell the run's watchers its start, each event (folded first, as a handle does) and its end."""
    (watcher,) = watchers_for(handle.request)
    watcher.started(handle)
    fold = Fold()
    typed = []
    for raw in events:
        event = as_event(raw)
        fold.add(event)
        typed.append(event)
        watcher.event(handle, event)
    result = RunResult.from_fold(fold, exit_code=0)
    if error is not None:
        result.error = error
    watcher.finished(handle, result)
    return result, typed


# ----------------------------------------------------------------------------- scripted activities

# ms; the run starts before its events, as a real one does (a day ahead: the module is imported
# when the suite is collected, maybe many minutes before a test runs)
T0 = time.time_ns() // MS + 86_400_000
TOKENS_1 = {"total": 30, "input": 25, "output": 5, "reasoning": 0, "cache": {"write": 0, "read": 0}}
TOKENS_2 = {"total": 40, "input": 12, "output": 6, "reasoning": 2, "cache": {"write": 4, "read": 16}}


def _part(kind: str, pid: str, message: str, **rest: Any) -> dict[str, Any]:
    return {"id": pid, "messageID": message, "sessionID": SESSION, "type": kind, **rest}


def _tool(tool: str, call: str, pid: str, state: dict[str, Any]) -> dict[str, Any]:
    return _part("tool", pid, "msg_1", tool=tool, callID=call, state=state)


def _done(inputs: dict[str, Any], start: int, end: int, **rest: Any) -> dict[str, Any]:
    return {"input": inputs, "time": {"start": T0 + start, "end": T0 + end}, **rest}


BASH_DONE = _done({"command": "ls"}, 10, 15, status="completed", output="a.txt\n", title="ls")
READ_FAILED = _done({"filePath": "/nope"}, 16, 17, status="error", error="File not found: /nope")


def _finish(message: str, reason: str, tokens: dict[str, Any], cost: float) -> dict[str, Any]:
    return _part("step-finish", f"prt_{message}_f", message, reason=reason, tokens=tokens, cost=cost)


def run_mode_events() -> list[dict[str, Any]]:
    """Two steps as ``opencode run`` prints them: step 1's ``step_start`` line comes 10 ms after its
    first tool began (as measured), its tools arrive once each, at their end."""

    def line(kind: str, at: int, **rest: Any) -> dict[str, Any]:
        return {"type": kind, "timestamp": T0 + at, "sessionID": SESSION, **rest}

    return [
        line("step_start", 20, part=_part("step-start", "prt_s1", "msg_1")),
        line("tool_use", 21, part=_tool("bash", "call_1", "prt_t1", BASH_DONE)),
        line("tool_use", 22, part=_tool("read", "call_2", "prt_t2", READ_FAILED)),
        line("step_finish", 30, part=_finish("msg_1", "tool-calls", TOKENS_1, 0.25)),
        line("step_start", 40, part=_part("step-start", "prt_s2", "msg_2")),
        line(
            "text",
            46,
            part=_part(
                "text", "prt_x2", "msg_2", text="Found a.txt.", time={"start": T0 + 38, "end": T0 + 45}
            ),
        ),
        line("step_finish", 50, part=_finish("msg_2", "stop", TOKENS_2, 0.5)),
    ]


def _server(kind: str, at: int | None = None, **props: Any) -> dict[str, Any]:
    properties: dict[str, Any] = {"sessionID": SESSION, **props}
    if at is not None:
        properties["time"] = T0 + at
    return {"id": "evt_1", "type": kind, "properties": properties}


def _assistant(message: str, tokens: dict[str, Any], cost: float) -> dict[str, Any]:
    info = {"id": message, "sessionID": SESSION, "role": "assistant", "modelID": "scripted-v2"}
    return _server("message.updated", info={**info, "providerID": "offline", "tokens": tokens, "cost": cost})


def server_events() -> list[dict[str, Any]]:
    """The same two steps on a server: each call is pending, running, then completed or error."""

    def updated(at: int, part: dict[str, Any]) -> dict[str, Any]:
        return _server("message.part.updated", at, part=part)

    running = {"status": "running", "input": {"command": "ls"}, "time": {"start": T0 + 10}}
    return [
        _assistant("msg_1", {"input": 0, "output": 0}, 0),
        updated(3, _part("step-start", "prt_s1", "msg_1")),
        updated(5, _tool("bash", "call_1", "prt_t1", {"status": "pending", "input": {}, "raw": ""})),
        updated(10, _tool("bash", "call_1", "prt_t1", running)),
        updated(12, _tool("bash", "call_1", "prt_t1", running)),
        updated(15, _tool("bash", "call_1", "prt_t1", BASH_DONE)),
        updated(16, _tool("read", "call_2", "prt_t2", {"status": "pending", "input": {}, "raw": ""})),
        updated(17, _tool("read", "call_2", "prt_t2", READ_FAILED)),
        updated(30, _finish("msg_1", "tool-calls", TOKENS_1, 0.25)),
        _assistant("msg_1", TOKENS_1, 0.25),
        _assistant("msg_2", {"input": 0, "output": 0}, 0),
        updated(40, _part("step-start", "prt_s2", "msg_2")),
        _server("message.part.delta", messageID="msg_2", partID="prt_x2", field="text", delta="Found "),
        updated(
            45, _part("text", "prt_x2", "msg_2", text="Found a.txt.", time={"start": T0 + 41, "end": T0 + 45})
        ),
        updated(50, _finish("msg_2", "stop", TOKENS_2, 0.5)),
        _assistant("msg_2", TOKENS_2, 0.5),
        _server("session.status", status={"type": "idle"}),
    ]


def _ns(ms_after_t0: int) -> int:
    return (T0 + ms_after_t0) * MS


EXPECTED_TREE = (
    "invoke_agent build",
    (
        ("chat scripted", (("execute_tool bash", ()), ("execute_tool read", ()))),
        ("chat scripted", ()),
    ),
)


def check_two_step_attributes(
    spans: Any, result: RunResult, request: RunRequest, backend: str
) -> list[ReadableSpan]:
    agent = spans.one("invoke_agent build")
    assert spans.shape(agent) == EXPECTED_TREE
    assert agent.kind is SpanKind.CLIENT
    a = attrs(agent)
    assert a["gen_ai.operation.name"] == "invoke_agent"
    assert (a["gen_ai.agent.name"], a["gen_ai.provider.name"], a["gen_ai.request.model"]) == (
        "build",
        "offline",
        "scripted",
    )
    assert (a["gen_ai.conversation.id"], a["opencode.backend"]) == (SESSION, backend)
    assert a["opencode.workspace"] == request.workspace
    # Input tokens count the cached ones (opencode's "input" leaves them out): 25 + 12 + 16 + 4.
    assert (a["gen_ai.usage.input_tokens"], a["gen_ai.usage.output_tokens"]) == (57, 11)
    assert a["gen_ai.usage.cache_read.input_tokens"] == 16
    assert a["gen_ai.usage.reasoning.output_tokens"] == 2
    assert a["opencode.cost"] == pytest.approx(0.75) == result.total_cost
    assert a["opencode.steps"] == 2
    assert tuple(a["gen_ai.response.finish_reasons"]) == ("tool-calls", "stop")
    assert agent.status.status_code is StatusCode.UNSET
    step1, step2 = spans.children(agent)
    assert step1.kind is SpanKind.CLIENT
    assert attrs(step1)["gen_ai.operation.name"] == "chat"
    assert (
        attrs(step1)["gen_ai.usage.input_tokens"],
        attrs(step1)["gen_ai.usage.output_tokens"],
    ) == (
        25,
        5,
    )
    assert tuple(attrs(step1)["gen_ai.response.finish_reasons"]) == ("tool-calls",)
    assert attrs(step1)["opencode.cost"] == 0.25
    assert attrs(step2)["gen_ai.usage.input_tokens"] == 32
    assert tuple(attrs(step2)["gen_ai.response.finish_reasons"]) == ("stop",)
    bash, read = spans.children(step1)
    assert bash.kind is SpanKind.INTERNAL
    assert {
        "gen_ai.operation.name": "execute_tool",
        "gen_ai.tool.name": "bash",
        "gen_ai.tool.call.id": "call_1",
        "gen_ai.agent.name": "build",
        "opencode.tool.status": "completed",
        "opencode.tool.title": "ls",
    }.items() <= dict(attrs(bash)).items()
    assert attrs(bash)["opencode.tool.duration_s"] == pytest.approx(0.005)
    assert bash.status.status_code is StatusCode.UNSET
    assert "gen_ai.tool.call.arguments" not in attrs(bash)  # content is opt-in
    assert attrs(read)["gen_ai.tool.call.id"] == "call_2"
    assert read.status.status_code is StatusCode.ERROR
    assert read.status.description == "File not found: /nope"
    assert attrs(read)["error.type"] == "tool_error"
    return [agent, step1, step2, bash, read]


# ----------------------------------------------------------------------------- run watcher


def test_a_two_step_tool_run_in_run_mode(traced: Traced, request_: RunRequest) -> None:
    result, _ = drive(Idle(request_, "run"), run_mode_events())
    agent, step1, step2, bash, read = check_two_step_attributes(traced.spans(), result, request_, "run")
    # A tool span has the part's own times; a step starts at its earliest known time (its tool
    # began before its step_start line was printed) and ends at its step_finish line.
    assert (bash.start_time, bash.end_time) == (_ns(10), _ns(15))
    assert (read.start_time, read.end_time) == (_ns(16), _ns(17))
    assert (step1.start_time, step1.end_time) == (_ns(10), _ns(30))
    assert (step2.start_time, step2.end_time) == (_ns(38), _ns(50))
    assert agent.start_time is not None and agent.end_time is not None
    assert agent.start_time < _ns(10) and agent.end_time >= _ns(50)
    assert "gen_ai.response.model" not in attrs(step1)  # run mode does not say


def test_a_two_step_tool_run_on_a_server_is_one_span_per_call(traced: Traced, request_: RunRequest) -> None:
    result, events = drive(Idle(request_, "server"), server_events())
    assert sum(1 for ev in events if ev.kind == "tool") == 6  # bash: 4 updates, read: 2
    agent, step1, step2, bash, _ = check_two_step_attributes(traced.spans(), result, request_, "server")
    assert len(traced.spans().named("execute_tool bash")) == 1
    assert (bash.start_time, bash.end_time) == (_ns(10), _ns(15))
    assert (step1.start_time, step1.end_time) == (_ns(3), _ns(30))
    assert (step2.start_time, step2.end_time) == (_ns(40), _ns(50))
    # The server names the model that answered.
    assert attrs(step2)["gen_ai.response.model"] == "scripted-v2"
    assert attrs(agent)["gen_ai.response.model"] == "scripted-v2"


def test_a_failed_run_marks_its_span_and_the_unfinished_step_and_tool(
    traced: Traced, request_: RunRequest
) -> None:
    events = run_mode_events()[:4]  # step 1 done
    events.append({"type": "step_start", "timestamp": T0 + 40, "sessionID": SESSION, "part": {}})
    timeout = RunError(kind="timeout", message="no result within timeout_s=5", detail={"timeout_s": 5})
    drive(Idle(request_), events, error=timeout)
    spans = traced.spans()
    agent = spans.one("invoke_agent build")
    assert agent.status.status_code is StatusCode.ERROR
    assert agent.status.description == "no result within timeout_s=5"
    assert attrs(agent)["error.type"] == "timeout"
    assert attrs(agent)["opencode.error.retryable"] is False
    step1, step2 = spans.children(agent)
    assert step1.status.status_code is StatusCode.UNSET  # it finished before the timeout
    assert step2.status.status_code is StatusCode.ERROR
    assert attrs(step2)["error.type"] == "timeout"
    assert "gen_ai.response.finish_reasons" not in attrs(step2)


def test_a_tool_call_still_running_at_the_end_is_written_as_failed(
    traced: Traced, request_: RunRequest
) -> None:
    events = server_events()[:4]  # bash is running
    api = RunError(kind="api_error", message="fake internal server error", status_code=500)
    drive(Idle(request_, "server"), events, error=api)
    spans = traced.spans()
    bash = spans.one("execute_tool bash")
    assert spans.parent(bash) is spans.one("chat scripted")
    assert bash.start_time == _ns(10)  # from its running state
    assert bash.status.status_code is StatusCode.ERROR
    assert (attrs(bash)["error.type"], attrs(bash)["opencode.error.status_code"]) == (
        "api_error",
        500,
    )
    assert attrs(bash)["opencode.error.retryable"] is True
    agent = spans.one("invoke_agent build")
    assert attrs(agent)["error.type"] == "api_error"


def test_a_step_that_never_finished_in_a_run_that_did_is_incomplete(
    traced: Traced, request_: RunRequest
) -> None:
    drive(Idle(request_), run_mode_events()[:3])  # no step_finish, no run error
    spans = traced.spans()
    step = spans.one("chat scripted")
    assert (step.status.status_code, attrs(step)["error.type"]) == (StatusCode.ERROR, "incomplete")
    assert spans.one("invoke_agent build").status.status_code is StatusCode.UNSET


def test_agent_model_and_provider_come_from_the_config_or_the_server(traced: Traced, tmp_path: Path) -> None:
    request = RunRequest.create(
        "hi", tmp_path, run_cfg=RunConfig(agent="plan")
    )  # no model: opencode's default
    drive(Idle(request, "server"), server_events())
    spans = traced.spans()
    agent = spans.one("invoke_agent plan")
    assert attrs(agent)["gen_ai.agent.name"] == "plan"
    assert "gen_ai.request.model" not in attrs(agent)
    assert attrs(agent)["gen_ai.provider.name"] == "offline"  # learnt from the server's messages
    assert [s.name for s in spans.children(agent)] == ["chat", "chat"]
    assert attrs(spans.one("execute_tool bash"))["gen_ai.agent.name"] == "plan"


def test_content_is_recorded_only_when_asked(
    traced: Traced, request_: RunRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    drive(Idle(request_), run_mode_events())
    assert "gen_ai.input.messages" not in attrs(traced.spans().one("invoke_agent build"))
    traced.exporter.clear()
    monkeypatch.setenv(tracing.CAPTURE_CONTENT_ENV, "true")
    drive(Idle(request_), run_mode_events())
    spans = traced.spans()
    bash = spans.one("execute_tool bash")
    assert attrs(bash)["gen_ai.tool.call.arguments"] == '{"command": "ls"}'
    assert attrs(bash)["gen_ai.tool.call.result"] == "a.txt\n"
    agent = attrs(spans.one("invoke_agent build"))
    assert "List the files." in str(agent["gen_ai.input.messages"])
    assert "Found a.txt." in str(agent["gen_ai.output.messages"])
    traced.exporter.clear()
    tracing.configure(capture_content=False)  # the explicit setting wins over the environment
    drive(Idle(request_), run_mode_events())
    assert "gen_ai.tool.call.arguments" not in attrs(traced.spans().one("execute_tool bash"))


def test_an_unsampled_run_records_nothing(request_: RunRequest) -> None:
    for traced in traced_with(ALWAYS_OFF):
        drive(Idle(request_), run_mode_events())
        assert traced.exporter.get_finished_spans() == ()


# ----------------------------------------------------------------------------- switches


def test_configure_switches_tracing_off_and_on(traced: Traced, request_: RunRequest) -> None:
    assert tracing.enabled()
    tracing.configure(enabled=False)
    assert not tracing.enabled()
    assert watchers_for(request_) == []
    tracing.configure(enabled=True)
    assert len(watchers_for(request_)) == 1


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"enabled": "yes"}, "enabled must be True, False or None, got 'yes'"),
        ({"capture_content": 1}, "capture_content must be True, False or None, got 1"),
        ({"tracer_provider": object()}, "tracer_provider must be an opentelemetry TracerProvider"),
    ],
)
def test_configure_refuses_bad_values(options: dict[str, Any], named: str) -> None:
    with pytest.raises(OpenCodeConfigError, match=named.replace("(", r"\(")):
        tracing.configure(**options)


@pytest.mark.parametrize(
    ("options", "named"),
    [({"total": -1}, "total must be"), ({"total": True}, "total must be"), ({"name": " "}, "name must be")],
)
def test_batch_span_refuses_bad_values(options: dict[str, Any], named: str) -> None:
    with pytest.raises(OpenCodeConfigError, match=named):
        tracing.batch_span(**options)


def _python(code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=dict(os.environ)
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_importing_the_package_does_not_import_opentelemetry() -> None:
    code = (
        "import sys, opencode_wrapper; print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))"
    )
    assert _python(code) == "[]"


def test_without_the_api_nothing_is_traced_and_nothing_breaks(tmp_path: Path) -> None:
    code = f"""
import asyncio, sys
sys.modules["opentelemetry"] = None  # as if opentelemetry-api were not installed
from opencode_wrapper import tracing
from opencode_wrapper.backends.request import RunRequest
from opencode_wrapper.backends.watch import watchers_for

async def items():
    yield 1
    yield 2

async def main():
    with tracing.batch_span(total=2):
        pass
    async with tracing.batch_span():
        pass
    return [i async for i in tracing.batch_span().iterate(items())]

print(tracing.enabled(), watchers_for(RunRequest.create("hi", {str(tmp_path)!r})), asyncio.run(main()))
"""
    assert _python(code) == "False [] [1, 2]"


def test_with_the_api_and_no_provider_runs_get_no_watcher(tmp_path: Path) -> None:
    code = f"""
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opencode_wrapper import tracing
from opencode_wrapper.backends.request import RunRequest
from opencode_wrapper.backends.watch import watchers_for

request = RunRequest.create("hi", {str(tmp_path)!r})
before = (tracing.enabled(), len(watchers_for(request)))
trace.set_tracer_provider(TracerProvider())  # configured later: runs from now on are traced
print(before, (tracing.enabled(), len(watchers_for(request))))
"""
    assert _python(code) == "(False, 0) (True, 1)"


def test_a_disabled_sdk_means_no_watcher() -> None:
    code = """
import os
os.environ["OTEL_SDK_DISABLED"] = "true"
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opencode_wrapper import tracing
trace.set_tracer_provider(TracerProvider())
print(tracing.enabled())
"""
    assert _python(code) == "False"


# ----------------------------------------------------------------------------- context and batches


class FakeRun(RunHandle):
    """Plays its events from the run's own task (one loop turn apart), as a transport does."""

    backend = "fake"

    def __init__(self, request: RunRequest, events: list[dict[str, Any]]) -> None:
        super().__init__(request)
        self._events = events
        self._fold = Fold()

    async def _produce(self) -> None:
        for raw in self._events:
            await asyncio.sleep(0)
            event = as_event(raw)
            self._fold.add(event)
            self._emit(event)

    def _partial(self) -> RunResult:
        return RunResult.from_fold(self._fold, exit_code=0)


class FakeBackend(Backend):
    name = "fake"

    def __init__(self, events: list[dict[str, Any]]) -> None:
        self.events = events

    def check(self, request: RunRequest) -> None:
        return None

    def _handle(self, request: RunRequest) -> RunHandle:
        return FakeRun(request, self.events)


async def test_a_run_nests_under_the_span_current_where_it_starts(
    traced: Traced, request_: RunRequest
) -> None:
    backend = FakeBackend(run_mode_events())
    with traced.tracer.start_as_current_span("caller"):
        handle = backend.open(request_).start()
    # The caller's span has ended; the run goes on in its own task, under it.
    with traced.tracer.start_as_current_span("elsewhere"):
        await handle.wait()
    spans = traced.spans()
    assert spans.parent(spans.one("invoke_agent build")) is spans.one("caller")
    assert spans.children(spans.one("elsewhere")) == []


async def test_run_many_is_one_workflow_span_around_its_runs(traced: Traced, tmp_path: Path) -> None:
    tasks = [Task(f"task {i}", tmp_path) for i in range(3)]
    with traced.tracer.start_as_current_span("caller"):
        outcomes = await run_many(tasks, engine=FakeBackend(run_mode_events()), concurrency=2, run_cfg=MODEL)
    assert [o.ok for o in outcomes] == [True, True, True]
    spans = traced.spans()
    batch = spans.one("invoke_workflow run_many")
    assert spans.parent(batch) is spans.one("caller")
    assert batch.kind is SpanKind.INTERNAL
    runs = spans.children(batch)
    assert [s.name for s in runs] == ["invoke_agent build"] * 3
    assert all(spans.shape(run) == EXPECTED_TREE for run in runs)
    a = attrs(batch)
    assert (a["gen_ai.operation.name"], a["gen_ai.workflow.name"]) == ("invoke_workflow", "run_many")
    assert (a["opencode.batch.total"], a["opencode.batch.runs"], a["opencode.batch.failed"]) == (3, 3, 0)
    assert (a["opencode.batch.input_tokens"], a["opencode.batch.output_tokens"]) == (3 * 57, 3 * 11)
    assert a["opencode.batch.cost"] == pytest.approx(3 * 0.75)
    assert batch.status.status_code is StatusCode.UNSET
    assert batch.end_time is not None and all(
        run.end_time is not None and run.end_time <= batch.end_time for run in runs
    )


async def test_the_consumer_of_iter_run_many_keeps_its_own_context(traced: Traced, tmp_path: Path) -> None:
    from opencode_wrapper.batch import iter_run_many

    tasks = [Task(f"task {i}", tmp_path) for i in range(3)]
    with traced.tracer.start_as_current_span("caller"):
        async for _ in iter_run_many(tasks, engine=FakeBackend(run_mode_events()), concurrency=1):
            with traced.tracer.start_as_current_span("consumer"):
                pass
    spans = traced.spans()
    caller = spans.one("caller")
    assert {s.name for s in spans.children(caller)} == {"invoke_workflow run_many", "consumer"}
    assert all(spans.parent(s) is caller for s in spans.named("consumer"))
    assert len(spans.children(spans.one("invoke_workflow run_many"))) == 3


async def test_leaving_a_traced_iteration_early_ends_the_span_and_the_runs(traced: Traced) -> None:
    closed: list[str] = []

    async def outcomes() -> Any:
        try:
            for i in range(5):
                yield i
        finally:
            closed.append("items")

    with traced.tracer.start_as_current_span("caller"):
        iterator = tracing.batch_span(total=5).iterate(outcomes())
        async for item in iterator:
            if item == 1:
                break
        await iterator.aclose()  # type: ignore[attr-defined]
    assert closed == ["items"]
    batch = traced.spans().one("invoke_workflow run_many")
    assert batch.status.status_code is StatusCode.UNSET  # leaving early is not a failure


async def test_a_batch_block_nests_runs_started_in_other_tasks(traced: Traced, request_: RunRequest) -> None:
    backend = FakeBackend(run_mode_events())

    async def one() -> RunResult:
        async with backend.open(request_) as handle:
            return await handle.wait()

    with traced.tracer.start_as_current_span("caller"):
        async with tracing.batch_span(total=2, name="my_batch"):
            await asyncio.gather(one(), one())
        with pytest.raises(ValueError, match="boom"), tracing.batch_span(name="broken"):
            raise ValueError("boom")
    spans = traced.spans()
    batch = spans.one("invoke_workflow my_batch")
    assert spans.parent(batch) is spans.one("caller")
    assert [s.name for s in spans.children(batch)] == ["invoke_agent build"] * 2
    assert attrs(batch)["opencode.batch.runs"] == 2
    broken = spans.one("invoke_workflow broken")
    assert (broken.status.status_code, attrs(broken)["error.type"]) == (StatusCode.ERROR, "ValueError")
