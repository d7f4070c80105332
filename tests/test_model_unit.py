"""The event model, the fold and RunError, on one agent activity described by both transports.

``fakes.activity`` describes the same turn as ``opencode run --format json`` lines and as
``opencode serve`` payloads; every test here reads them through the public API only.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable
from typing import Any

import pytest

from fakes import activity as A
from opencode_wrapper._model.event import classify
from opencode_wrapper._model.fold import Fold
from opencode_wrapper._model.outcome import raise_for_run
from opencode_wrapper._wire.server import ServerEventParser
from opencode_wrapper.errors import (
    OpenCodeCancelledError,
    OpenCodeProcessError,
    OpenCodeRunError,
    OpenCodeServerError,
    OpenCodeTimeoutError,
)
from opencode_wrapper.events import (
    Event,
    EventError,
    ReasoningEvent,
    RunError,
    RunResult,
    StepFinishEvent,
    StepStartEvent,
    TextEvent,
    TokenUsage,
    ToolCall,
    ToolUseEvent,
    aggregate_run_result,
    aggregate_server_result,
    as_event,
    parse_event_line,
    run_result_fuzzy_text,
)
from opencode_wrapper.results import ERROR_KINDS, exception_for


def run_stream() -> list[Event]:
    return [parse_event_line(line) for line in A.run_lines()]


def server_stream(payloads: Iterable[dict[str, Any]] | None = None) -> list[Event]:
    parser = ServerEventParser()
    return [parser.parse(p) for p in (A.server_payloads() if payloads is None else payloads)]


def summarize(events: Iterable[Event]) -> dict[str, Any]:
    """A consumer written once against the normalized view only."""
    texts: list[str] = []
    thoughts: list[str] = []
    tools: dict[str, tuple[str | None, str | None]] = {}
    usage = TokenUsage()
    cost = 0.0
    for ev in events:
        if ev.kind == "text":
            assert ev.text is not None
            texts.append(ev.text)
        elif ev.kind == "reasoning":
            assert ev.text is not None
            thoughts.append(ev.text)
        elif ev.kind == "tool":
            assert ev.tool is not None and ev.tool.call_id is not None
            tools[ev.tool.call_id] = (ev.tool.name, ev.tool.status)
        elif ev.kind == "step_finish":
            assert ev.tokens is not None and ev.cost is not None
            usage += ev.tokens
            cost += ev.cost
    return {"texts": texts, "thoughts": thoughts, "tools": list(tools.values()), "usage": usage, "cost": cost}


# ----------------------------------------------------------------------------- one event model


def test_run_mode_lines_get_their_kinds_and_classes() -> None:
    events = run_stream()
    assert [ev.kind for ev in events] == A.RUN_KINDS
    assert [type(ev) for ev in events] == [
        StepStartEvent, ToolUseEvent, ToolUseEvent, StepFinishEvent,
        StepStartEvent, ReasoningEvent, TextEvent, StepFinishEvent,
    ]  # fmt: skip


def test_server_payloads_get_their_kinds_from_one_parser() -> None:
    events = server_stream()
    assert [ev.kind for ev in events] == A.SERVER_KINDS
    assert all(type(ev) is Event and ev.is_server_event for ev in events)


def test_the_users_prompt_part_and_reasoning_deltas_are_other_only_with_the_streams_context() -> None:
    payloads = A.server_payloads()
    events = server_stream(payloads)
    prompt, reasoning_delta, text_delta = events[1], events[16], events[20]
    assert prompt.part is not None and prompt.part.text == A.PROMPT
    assert (prompt.kind, prompt.text) == ("other", None)
    assert (reasoning_delta.kind, reasoning_delta.text) == ("other", None)
    assert (text_delta.kind, text_delta.text) == ("text_delta", "Found a.txt ")
    # Judged alone, the same payloads look like the agent's text: the parser's context decides.
    assert classify(as_event(payloads[1])) == "text"
    assert classify(as_event(payloads[16])) == "text_delta"


def test_run_mode_normalized_view() -> None:
    step_start, bash, read, finish1, _, thought, text, finish2 = run_stream()
    assert (text.text, thought.text) == (A.ANSWER, A.THOUGHT)
    assert bash.tool is not None and read.tool is not None
    assert (bash.tool.name, bash.tool.call_id, bash.tool.status) == ("bash", "call_1", "completed")
    assert bash.tool.input == {"command": "ls", "description": "list"}
    assert (bash.tool.output, bash.tool.error) == (A.LS_OUTPUT, None)
    assert (read.tool.name, read.tool.call_id, read.tool.status) == ("read", "call_2", "error")
    assert (read.tool.input, read.tool.output, read.tool.error) == (
        {"filePath": "/nope.txt"},
        None,
        A.READ_ERROR,
    )
    assert finish1.tokens == TokenUsage(total=30, input=25, output=5)
    assert finish2.tokens == TokenUsage(
        total=40, input=32, output=6, reasoning=2, cache_read=16, cache_write=4
    )
    assert (finish1.cost, finish2.cost) == (A.STEP1_COST, A.STEP2_COST)
    # Each accessor answers only for its own kind.
    assert (step_start.text, step_start.tool, step_start.tokens, step_start.cost, step_start.error) == (
        None, None, None, None, None,
    )  # fmt: skip
    assert (bash.text, bash.tokens, bash.cost, text.tool, text.tokens, finish1.text, finish1.tool) == (
        None,
    ) * 7


def test_server_normalized_view() -> None:
    events = server_stream()
    pending, running, completed = (ev.tool for ev in events[5:8])
    assert pending is not None and running is not None and completed is not None
    assert [(c.name, c.call_id, c.status) for c in (pending, running, completed)] == [
        ("bash", "call_1", "pending"), ("bash", "call_1", "running"), ("bash", "call_1", "completed"),
    ]  # fmt: skip
    assert (pending.input, pending.output) == ({}, None)
    assert (running.input, running.output) == ({"command": "ls", "description": "list"}, None)
    assert (completed.output, completed.error, completed.duration_s) == (A.LS_OUTPUT, None, 0.002)
    failed = events[10].tool
    assert failed is not None
    assert (failed.name, failed.status, failed.error, failed.output) == ("read", "error", A.READ_ERROR, None)
    assert events[11].tokens == TokenUsage(total=30, input=25, output=5) and events[11].cost == A.STEP1_COST
    assert events[23].tokens == TokenUsage(
        total=40, input=32, output=6, reasoning=2, cache_read=16, cache_write=4
    )
    assert [ev.text for ev in events if ev.kind == "text_delta"] == ["Found a.txt ", "and b.txt."]
    assert (events[19].kind, events[19].text) == ("other", None)  # the text part's opening snapshot
    assert (events[22].text, events[18].text) == (A.ANSWER, A.THOUGHT)
    assert all(ev.error is None for ev in events)
    assert {ev.session_id for ev in events} == {A.SESSION}


def test_one_consumer_gives_the_same_summary_for_both_transports() -> None:
    expected = {
        "texts": [A.ANSWER],
        "thoughts": [A.THOUGHT],
        "tools": A.TOOLS,
        "usage": TokenUsage(**A.USAGE),
        "cost": A.COST,
    }
    assert summarize(run_stream()) == expected
    assert summarize(server_stream()) == expected


def test_error_events_read_the_same_in_both_transports() -> None:
    run_error = parse_event_line(json.dumps(A.run_error_event()))
    server_error = ServerEventParser().parse(A.session_error(500, "fake internal server error"))
    for ev in (run_error, server_error):
        assert ev.kind == "error"
        assert isinstance(ev.error, EventError)
        assert (ev.error.name, ev.error.status_code, ev.error.message) == (
            "APIError", 500, "fake internal server error",
        )  # fmt: skip
        assert (ev.text, ev.tool, ev.tokens, ev.cost) == (None, None, None, None)
    assert run_error.error is not None and run_error.error.is_retryable is True
    assert server_error.error is not None and server_error.error.is_retryable is False


def test_permission_question_and_status_kinds() -> None:
    parser = ServerEventParser()
    permission = parser.parse(A.permission_asked())
    question = parser.parse(A.question_asked())
    busy = parser.parse(A.server_event("session.status", status={"type": "retry", "attempt": 1}))
    idle = parser.parse(A.server_event("session.idle"))
    heartbeat = parser.parse({"id": "evt_1", "type": "server.heartbeat", "properties": {}})
    assert [ev.kind for ev in (permission, question, busy, idle, heartbeat)] == [
        "permission", "question", "status", "status", "other",
    ]  # fmt: skip
    assert permission.properties["permission"] == "bash"
    assert question.properties["questions"][0]["header"] == "Color"


@pytest.mark.parametrize("transport", ["run", "server"])
def test_events_stay_equal_to_the_dicts_opencode_sent(transport: str) -> None:
    sent = A.run_events() if transport == "run" else A.server_payloads()
    pristine = copy.deepcopy(sent)
    events = run_stream() if transport == "run" else server_stream(sent)
    for ev in events:
        ev.kind  # noqa: B018 - reading the normalized view must not change the dict
        ev.tool  # noqa: B018
    assert events == pristine
    assert [json.loads(json.dumps(ev)) for ev in events] == pristine
    assert sent == pristine  # parsing did not touch the caller's objects


# ----------------------------------------------------------------------------- results


def test_run_mode_result() -> None:
    result = aggregate_run_result(events=run_stream(), raw_stdout_lines=A.run_lines(), exit_code=0, stderr="")
    assert result.ok and result.error is None
    assert (result.final_text, result.turns, result.session_id) == (A.ANSWER, 2, A.SESSION)
    assert result.token_usage == TokenUsage(**A.USAGE) and result.total_cost == A.COST
    assert all(isinstance(call, ToolCall) for call in result.tool_calls)
    assert [(call.name, call.status) for call in result.tool_calls] == A.TOOLS
    bash = result.tool_calls[0]
    assert (bash["part"]["tool"], bash["part"]["state"]["output"], bash["part"]["callID"]) == (
        "bash", A.LS_OUTPUT, "call_1",
    )  # fmt: skip
    assert result.texts == [A.ANSWER] and result.tools == ["bash", "read"]


def test_run_mode_final_text_is_the_last_steps_text() -> None:
    events = A.run_events()
    early = copy.deepcopy(events[6])
    early["part"].update(id="prt_early", messageID=A.STEP1_MSG, text="Let me look.")
    events.insert(1, early)
    result = aggregate_run_result(events=events, raw_stdout_lines=[], exit_code=0, stderr="")
    assert result.final_text == A.ANSWER
    assert result.texts == ["Let me look.", A.ANSWER]
    without_answer = [ev for ev in events if ev["type"] != "text" or ev is early]
    assert (
        aggregate_run_result(events=without_answer, raw_stdout_lines=[], exit_code=0, stderr="").final_text
        == ""
    )


def test_server_result_counts_each_message_once_and_only_answers_to_our_message() -> None:
    noise = A.previous_turn_leftovers() + A.child_session_events()
    payloads = A.server_payloads()
    events = noise[:2] + payloads[:4] + noise[2:] + payloads[4:]
    result = aggregate_server_result(events=events, session_id=A.SESSION, user_message_id=A.USER_MSG)
    assert result.ok
    assert (result.final_text, result.turns) == (A.ANSWER, 2)
    assert result.token_usage == TokenUsage(**A.USAGE) and result.total_cost == A.COST
    assert len(result.events) == len(events)  # sub-agent and stale events are kept, not counted
    assert [ev.session_id for ev in result.events].count(A.CHILD_SESSION) == 2
    # Without our message id the previous turn's late answer would count: the id is what excludes it.
    loose = aggregate_server_result(events=events, session_id=A.SESSION)
    assert (loose.turns, loose.token_usage.total) == (3, 999 + 70)


def test_server_tool_calls_are_tool_calls_in_their_latest_state_read_the_seed_way() -> None:
    result = aggregate_server_result(
        events=A.server_payloads(), session_id=A.SESSION, user_message_id=A.USER_MSG
    )
    assert [type(call) for call in result.tool_calls] == [ToolCall, ToolCall]
    bash, read = result.tool_calls
    assert (bash["tool"], bash["callID"], bash["state"]["status"], bash["state"]["output"]) == (
        "bash", "call_1", "completed", A.LS_OUTPUT,
    )  # fmt: skip
    assert (read["tool"], read["callID"], read.status, read.error) == (
        "read",
        "call_2",
        "error",
        A.READ_ERROR,
    )
    assert result.tools == ["bash", "read"]


def test_deltas_are_applied_to_an_aborted_parts_snapshot() -> None:
    payloads = A.server_payloads()[:22]  # the text streamed, but its finished part never came
    aborted = A.server_event(
        "session.error", error={"name": "MessageAbortedError", "data": {"message": "Aborted"}}
    )
    result = aggregate_server_result(
        events=[*payloads, aborted], session_id=A.SESSION, user_message_id=A.USER_MSG
    )
    assert result.final_text == A.ANSWER
    assert result.error is not None and result.error.kind == "aborted"


def test_final_messages_are_preferred_over_the_events() -> None:
    payloads = A.server_payloads()[:20]  # step 2's text is only an empty opening snapshot here
    info = A.assistant_info(
        A.STEP2_MSG, tokens=A.STEP2_TOKENS, cost=A.STEP2_COST, finish="stop", completed=True
    )
    final_part = {
        **payloads[19]["properties"]["part"],
        "text": "the stored answer",
        "time": {"start": 1, "end": 2},
    }
    user_info = payloads[0]["properties"]["info"]
    messages = [
        {"info": user_info, "parts": [payloads[1]["properties"]["part"]]},
        {"info": info, "parts": [final_part]},
    ]
    before = aggregate_server_result(events=payloads, session_id=A.SESSION, user_message_id=A.USER_MSG)
    assert before.final_text == "" and before.token_usage.total == 30
    result = aggregate_server_result(
        events=payloads, session_id=A.SESSION, user_message_id=A.USER_MSG, final_messages=messages
    )
    assert result.final_text == "the stored answer"
    assert (result.token_usage.total, result.total_cost, result.turns) == (70, A.COST, 2)


def test_seed_shapes_text_content_deltas_and_top_level_step_finish() -> None:
    result = RunResult()
    result.append_event({"type": "text", "content": "hello"})
    assert (result.events[0].kind, result.events[0].text, result.final_text) == ("text", "hello", "hello")
    deltas = RunResult()
    for piece in ("Hel", "lo"):
        deltas.append_event({"type": "text", "delta": piece})
    assert [ev.kind for ev in deltas.events] == ["text_delta", "text_delta"]
    assert deltas.final_text == "Hello"
    flat = as_event({"type": "step_finish", "tokens": {"total": 7, "input": 5, "output": 2}, "cost": 0.125})
    assert (flat.kind, flat.tokens, flat.cost) == (
        "step_finish",
        TokenUsage(total=7, input=5, output=2),
        0.125,
    )
    deltas.append_event(flat)
    assert (deltas.turns, deltas.token_usage.total, deltas.total_cost) == (1, 7, 0.125)


def test_seed_assistant_content_list_via_fuzzy_text() -> None:
    ev = {
        "type": "assistant",
        "content": [{"type": "text", "text": "hello "}, {"type": "text", "text": "world"}],
    }
    assert run_result_fuzzy_text(RunResult(events=[as_event(ev)])) == "hello world"
    folded = aggregate_run_result(events=[ev], raw_stdout_lines=[json.dumps(ev)], exit_code=0, stderr="")
    assert folded.final_text == "hello world"
    assert run_result_fuzzy_text(RunResult(raw_stdout_lines=["  plain output  ", ""])) == "plain output"


def test_append_event_types_dicts_and_the_derived_fields_follow() -> None:
    result = RunResult()
    seen = []
    for ev in A.run_events():
        result.append_event(ev)
        seen.append((result.turns, result.token_usage.total, result.final_text))
    assert all(isinstance(ev, Event) for ev in result.events) and isinstance(result.events[6], TextEvent)
    assert seen[3] == (1, 30, "") and seen[6] == (1, 30, A.ANSWER) and seen[7] == (2, 70, A.ANSWER)
    assert [(c.name, c.status) for c in result.tool_calls] == A.TOOLS
    failed = RunResult(error=RunError(kind="aborted", message="stopped"))
    failed.append_event(A.run_events()[0])
    assert failed.error is not None and failed.error.kind == "aborted"  # an error already set stays


def test_fold_running_totals_as_events_arrive() -> None:
    fold = Fold()
    totals = []
    for ev in run_stream():
        fold.add(ev)
        totals.append((fold.usage.total, fold.cost, fold.steps))
    assert totals == [(0, 0, 0)] * 3 + [(30, 0.25, 1)] * 4 + [(70, 0.75, 2)]
    fold.usage.total = 10**6  # a copy: the fold's own count is not changed
    assert fold.usage == TokenUsage(**A.USAGE)

    server = Fold(session_id=A.SESSION, user_message_id=A.USER_MSG)
    assert not server.model_was_called
    seen = []
    for ev in server_stream():
        server.add(ev)
        seen.append((server.usage.total, server.cost, server.steps))
    assert seen[3] == (0, 0, 1) and seen[12] == (30, 0.25, 1) and seen[13] == (30, 0.25, 2)
    assert seen[24:] == [(70, 0.75, 2)] * 4  # the message re-sent whole counts once
    assert server.model_was_called


# ----------------------------------------------------------------------------- RunError


def test_run_error_kinds_are_validated() -> None:
    with pytest.raises(ValueError, match="'rate_limited' is not one of"):
        RunError(kind="rate_limited", message="x")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "retryable"),
    [
        ({"kind": "api_error", "status_code": 429}, True),
        ({"kind": "api_error", "status_code": 500}, True),
        ({"kind": "api_error", "status_code": 503}, True),
        ({"kind": "error_event", "status_code": 502}, True),
        ({"kind": "api_error", "name": "APIError"}, True),  # no status: the provider was unreachable
        ({"kind": "server_failure"}, True),
        ({"kind": "api_error", "status_code": 401}, False),
        ({"kind": "api_error", "status_code": 403}, False),
        ({"kind": "api_error", "status_code": 400}, False),
        ({"kind": "api_error", "name": "APIError", "detail": {"data": {"isRetryable": False}}}, False),
        ({"kind": "error_event", "name": "UnknownError"}, False),
        ({"kind": "session_error"}, False),
        ({"kind": "permission_rejected"}, False),
        ({"kind": "limit_exceeded"}, False),
        ({"kind": "budget_exhausted"}, False),
        ({"kind": "timeout"}, False),
        ({"kind": "api_error", "status_code": 500, "retryable": False}, False),  # explicit wins
        ({"kind": "process_exit", "retryable": True}, True),
    ],
)
def test_run_error_retryable_is_derived_unless_given(kwargs: dict[str, Any], retryable: bool) -> None:
    assert RunError(message="m", **kwargs).retryable is retryable


def test_from_event_error_reads_opencodes_error_object() -> None:
    ev = parse_event_line(json.dumps(A.run_error_event()))
    assert ev.error is not None
    error = RunError.from_event_error(ev.error)
    assert (error.kind, error.status_code, error.name, error.retryable) == (
        "api_error",
        500,
        "APIError",
        True,
    )
    assert str(error) == "api_error (HTTP 500): fake internal server error"
    unknown = RunError.from_event_error(EventError({"name": "UnknownError", "data": {"message": "boom"}}))
    assert (unknown.kind, unknown.retryable) == ("error_event", False)


RAISED = {
    "api_error", "error_event", "process_exit", "session_error", "server_failure", "timeout", "cancelled",
    "internal_error",
}  # fmt: skip
EXCEPTION_OF_KIND = {
    "timeout": OpenCodeTimeoutError,
    "cancelled": OpenCodeCancelledError,
    "server_failure": OpenCodeServerError,
    **dict.fromkeys(
        ["api_error", "error_event", "process_exit", "session_error", "internal_error"], OpenCodeProcessError
    ),
}


@pytest.mark.parametrize("kind", ERROR_KINDS)
def test_raised_and_the_exception_of_each_kind(kind: str) -> None:
    detail = {"timeout_s": 2.5} if kind == "timeout" else {}
    result = RunResult(
        events=run_stream(), final_text="partial", exit_code=1, stderr="boom\n",
        error=RunError(kind=kind, message="it went wrong", detail=detail),  # type: ignore[arg-type]
    )  # fmt: skip
    assert result.error is not None and result.error.raised is (kind in RAISED)
    with pytest.raises(OpenCodeRunError) as caught:
        result.raise_for_error()
    exc = caught.value
    assert type(exc) is EXCEPTION_OF_KIND.get(kind, OpenCodeRunError)
    assert exc.result is result and exc.error is result.error
    assert type(exception_for(result)) is type(exc)
    assert "it went wrong" in str(exc)
    if kind == "timeout":
        assert isinstance(exc, TimeoutError) and exc.timeout_s == 2.5  # type: ignore[attr-defined]
    if isinstance(exc, OpenCodeProcessError):
        exit_code = None if kind == "server_failure" else 1  # a server has no exit code of the run
        assert (exc.exit_code, exc.stderr, exc.events) == (exit_code, "boom\n", result.events)
    if kind in RAISED:
        with pytest.raises(type(exc)):
            raise_for_run(result)
    else:
        assert raise_for_run(result) is result


def test_an_ok_result_returns_itself() -> None:
    result = RunResult(final_text="done")
    assert result.raise_for_error() is result
    assert exception_for(result) is None
