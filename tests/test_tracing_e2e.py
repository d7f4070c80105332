"""Traces of real runs: the pinned opencode against the offline model, spans into memory.

One two-step tool run (``[[bash: ...]]``: step 1 calls bash, step 2 answers with its output) in run
mode and on a warm server, a failed run, two turns of a session, and a batch of three tasks, each
inside a span of the test's own (the caller's). The warm client (one ``opencode serve``) serves the
warm-server tests and the batch; git snapshots and title requests are off, as in test_session_e2e.
"""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import StatusCode

from _tracing_support import SpanTree, Traced, attrs, traced_with
from opencode_wrapper import AsyncOpenCodeClient, RunResult, Task, run_many
from opencode_wrapper.events import Event
from opencode_wrapper.server import OpenCodeServer
from opencode_wrapper.testing import OfflineModelServer

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

FAST = {"snapshot": False, "agent": {"title": {"disable": True}}}
TOOL_PROMPT = "Check [[bash: echo traced-output]]"
TREE = (
    "invoke_agent build",
    (("chat scripted", (("execute_tool bash", ()),)), ("chat scripted", ())),
)


@pytest.fixture(scope="module")
def model() -> Iterator[OfflineModelServer]:
    with OfflineModelServer() as server:
        yield server


def _repo(path: Path) -> Path:
    path.mkdir()
    subprocess.run(["git", "init", "-q", str(path)], check=True)
    (path / "README.md").write_text("# scratch workspace\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def space(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _repo(tmp_path_factory.mktemp("tracing") / "ws")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def warm(opencode_binary: str) -> AsyncIterator[AsyncOpenCodeClient]:
    async with AsyncOpenCodeClient(opencode_binary, startup_delay_s=0, warm_servers=True) as client:
        yield client


@pytest.fixture
def traced() -> Iterator[Traced]:
    yield from traced_with()


def _within(inner: ReadableSpan, outer: ReadableSpan) -> bool:
    assert None not in (inner.start_time, inner.end_time, outer.start_time, outer.end_time)
    return outer.start_time <= inner.start_time <= inner.end_time <= outer.end_time  # type: ignore[operator]


def check_tool_run(spans: SpanTree, result: RunResult, backend: str) -> ReadableSpan:
    """The span tree of the two-step tool run, checked against its result."""
    assert result.ok, result.error
    assert result.final_text == "Tool results: bash: traced-output"
    caller = spans.one("caller")
    (agent,) = spans.children(caller)
    assert spans.shape(agent) == TREE, spans.render()
    a = attrs(agent)
    assert (a["opencode.backend"], a["gen_ai.provider.name"], a["gen_ai.request.model"]) == (
        backend,
        "offline",
        "scripted",
    )
    assert a["gen_ai.conversation.id"] == result.session_id
    assert (
        (a["gen_ai.usage.input_tokens"], a["gen_ai.usage.output_tokens"])
        == (
            result.token_usage.input,
            result.token_usage.output,
        )
        == (20, 5)
    )  # the offline model: 10 prompt tokens a step, one completion token a word
    assert tuple(a["gen_ai.response.finish_reasons"]) == ("tool-calls", "stop")
    step1, step2 = spans.children(agent)
    (bash,) = spans.children(step1)
    (call,) = result.tool_calls
    assert attrs(bash)["gen_ai.tool.call.id"] == call.call_id
    assert attrs(bash)["opencode.tool.status"] == "completed"
    assert attrs(bash)["opencode.tool.duration_s"] == call.duration_s
    assert bash.end_time is not None and bash.start_time is not None
    assert (bash.end_time - bash.start_time) / 1e9 == pytest.approx(call.duration_s)
    assert _within(bash, step1) and _within(step1, agent) and _within(step2, agent)
    assert step1.end_time is not None and step2.start_time is not None
    assert step1.end_time <= step2.start_time
    assert all(s.status.status_code is StatusCode.UNSET for s in spans.all)
    return agent


async def test_a_tool_run_in_run_mode(
    traced: Traced, opencode_binary: str, space: Path, model: OfflineModelServer
) -> None:
    client = AsyncOpenCodeClient(opencode_binary, startup_delay_s=0)
    with traced.tracer.start_as_current_span("caller"):
        result = await client.async_run(TOOL_PROMPT, space, run_cfg=model.run_config(), timeout_s=120)
    check_tool_run(traced.spans(), result, "run")


async def test_a_tool_run_on_a_warm_server_is_one_span_per_call(
    traced: Traced, warm: AsyncOpenCodeClient, space: Path, model: OfflineModelServer
) -> None:
    events: list[Event] = []
    with traced.tracer.start_as_current_span("caller"):
        result = await warm.async_run(
            TOOL_PROMPT,
            space,
            run_cfg=model.run_config(config_overrides=FAST),
            timeout_s=120,
            on_event=events.append,
        )
    check_tool_run(traced.spans(), result, "pool")
    updates = [ev for ev in events if ev.kind == "tool"]
    assert len(updates) >= 3  # pending, running..., completed: one span
    assert {ev.tool.call_id for ev in updates if ev.tool} == {result.tool_calls[0].call_id}


async def test_a_failed_run_is_an_error_span(
    traced: Traced, warm: AsyncOpenCodeClient, space: Path, model: OfflineModelServer
) -> None:
    from opencode_wrapper import OpenCodeProcessError

    with traced.tracer.start_as_current_span("caller"), pytest.raises(OpenCodeProcessError):
        await warm.async_run(
            "Fail [[error: 401]]", space, run_cfg=model.run_config(config_overrides=FAST), timeout_s=120
        )
    agent = traced.spans().one("invoke_agent build")
    assert agent.status.status_code is StatusCode.ERROR
    assert (attrs(agent)["error.type"], attrs(agent)["opencode.error.status_code"]) == (
        "api_error",
        401,
    )
    assert attrs(agent)["opencode.error.retryable"] is False


async def test_a_batch_of_three_is_one_workflow_span_in_the_callers(
    traced: Traced,
    warm: AsyncOpenCodeClient,
    space: Path,
    model: OfflineModelServer,
) -> None:
    tasks = [Task(f"Say [[say: answer {i}]]", space) for i in range(3)]
    with traced.tracer.start_as_current_span("caller"):
        outcomes = await run_many(tasks, client=warm, run_cfg=model.run_config(config_overrides=FAST))
    assert [o.ok for o in outcomes] == [True] * 3, [o.error for o in outcomes]
    spans = traced.spans()
    (batch,) = spans.children(spans.one("caller"))
    assert batch.name == "invoke_workflow run_many"
    runs = spans.children(batch)
    assert [s.name for s in runs] == ["invoke_agent build"] * 3
    assert {attrs(s)["gen_ai.conversation.id"] for s in runs} == {
        o.result.session_id for o in outcomes if o.result
    }
    assert all(_within(run, batch) for run in runs)
    assert (attrs(batch)["opencode.batch.total"], attrs(batch)["opencode.batch.runs"]) == (3, 3)
    assert attrs(batch)["opencode.batch.output_tokens"] == sum(
        o.result.token_usage.output for o in outcomes if o.result
    )


async def test_each_turn_of_a_session_is_a_span_of_its_conversation(
    traced: Traced, opencode_binary: str, space: Path, model: OfflineModelServer
) -> None:
    async with (
        OpenCodeServer(binary=opencode_binary, run_cfg=model.run_config(config_overrides=FAST)) as server,
        server.session(space) as session,
    ):
        with traced.tracer.start_as_current_span("caller"):
            first = await session.send("Say [[say: first turn]]")
            second = await session.send(TOOL_PROMPT)
    assert first.final_text == "first turn"
    spans = traced.spans()
    turns = spans.children(spans.one("caller"))
    assert [s.name for s in turns] == ["invoke_agent build"] * 2
    assert {attrs(s)["gen_ai.conversation.id"] for s in turns} == {session.session_id}
    assert [attrs(s)["opencode.backend"] for s in turns] == ["server", "server"]
    assert spans.shape(turns[0]) == ("invoke_agent build", (("chat scripted", ()),))
    assert spans.shape(turns[1]) == TREE
    assert turns[0].end_time is not None and turns[1].start_time is not None
    assert turns[0].end_time <= turns[1].start_time
    assert attrs(turns[1])["gen_ai.usage.output_tokens"] == second.token_usage.output
