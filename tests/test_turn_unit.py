"""The turn state machine, result aggregation and structured-output checks, on made-up events.

The event sequences are the ones opencode 1.18.33 really produces (see the project notes, §3.5-3.6),
including its quirks: idle twice, idle late, idle never.
"""

from __future__ import annotations

import re
import time
from typing import Any

import pytest

from opencode_wrapper._turn.callbacks import (
    PermissionReply,
    check_callback,
    read_answers,
    read_permission_reply,
)
from opencode_wrapper._turn.structured import structured_spec
from opencode_wrapper._turn.tracker import TurnTracker, format_message_id, new_message_id
from opencode_wrapper.errors import OpenCodeConfigError
from opencode_wrapper.events import Event, make_event
from opencode_wrapper.results import aggregate_server_result

SID = "ses_test"
MID = "msg_000000000002AAAAAAAAAAAAAA"
OLD = "msg_000000000001AAAAAAAAAAAAAA"


# ----------------------------------------------------------------------------- event builders


def ev(kind: str, **props: Any) -> Event:
    props.setdefault("sessionID", SID)
    return make_event({"type": kind, "properties": props})


def user(mid: str = MID) -> Event:
    return ev("message.updated", info={"id": mid, "role": "user", "sessionID": SID})


def assistant(aid: str, *, parent: str = MID, done: bool = False, error: Any = None, **info: Any) -> Event:
    body: dict[str, Any] = {"id": aid, "role": "assistant", "parentID": parent, "sessionID": SID, "time": {}}
    if done:
        body["time"] = {"created": 1, "completed": 2}
    if error is not None:
        body["error"] = error
    body.update(info)
    return ev("message.updated", info=body)


def status(kind: str) -> Event:
    return ev("session.status", status={"type": kind})


def idle() -> list[Event]:
    return [status("idle"), ev("session.idle")]


def error(name: str, message: str, **data: Any) -> Event:
    return ev("session.error", error={"name": name, "data": {"message": message, **data}})


def part(pid: str, mid: str, kind: str, **fields: Any) -> Event:
    return ev(
        "message.part.updated", part={"id": pid, "messageID": mid, "sessionID": SID, "type": kind, **fields}
    )


def run(events: list[Event]) -> TurnTracker:
    tracker = TurnTracker(SID, MID)
    for event in events:
        tracker.feed(event)
    return tracker


def finished_at(events: list[Event]) -> int | None:
    """Index of the event after which the tracker says the turn is over."""
    tracker = TurnTracker(SID, MID)
    for index, event in enumerate(events):
        tracker.feed(event)
        if tracker.finished:
            return index
    return None


# ----------------------------------------------------------------------------- end of turn


def test_normal_turn_ends_at_idle() -> None:
    events = [
        user(),
        status("busy"),
        assistant("msg_a1"),
        part("prt_1", "msg_a1", "text", text="hi"),
        assistant("msg_a1", done=True, finish="stop"),
        status("busy"),
        *idle(),
    ]
    assert finished_at(events) == len(events) - 2  # the status idle; session.idle is redundant


def test_stale_idle_of_previous_turn_is_ignored() -> None:
    # The previous turn's idle arrives after we sent our prompt but before opencode stored it.
    events = [*idle(), status("idle"), user(), status("busy"), assistant("msg_a1")]
    assert finished_at(events) is None
    tracker = run([*events, assistant("msg_a1", done=True), *idle()])
    assert tracker.finished


def test_idle_right_after_our_message_without_busy_does_not_end() -> None:
    # A late idle that lands after our message was stored but before the loop started.
    assert finished_at([user(), *idle()]) is None
    assert finished_at([user(), *idle(), status("busy"), assistant("msg_a1", done=True), *idle()]) == 5


def test_double_idle_after_abort_waits_for_the_aborted_message() -> None:
    aborted = {"name": "MessageAbortedError", "data": {"message": "Aborted"}}
    events = [
        user(),
        status("busy"),
        assistant("msg_a1"),
        part("prt_t", "msg_a1", "tool", tool="bash", state={"status": "running"}),
        error("MessageAbortedError", "Aborted"),
        *idle(),  # first idle: the assistant message is not final yet
        part("prt_t", "msg_a1", "tool", tool="bash", state={"status": "completed", "output": "aborted"}),
        assistant("msg_a1", done=True, error=aborted),
        *idle(),  # second idle
    ]
    end = finished_at(events)
    assert end == 8  # at the final assistant update, not at the first idle
    result = aggregate_server_result(events=list(events), session_id=SID, user_message_id=MID)
    assert result.error is not None and result.error.kind == "aborted"


def test_model_error_then_second_idle() -> None:
    api = {"name": "APIError", "data": {"message": "bad key", "statusCode": 401, "isRetryable": False}}
    events = [
        user(),
        status("busy"),
        assistant("msg_a1"),
        error("APIError", "bad key", statusCode=401),
        *idle(),
        assistant("msg_a1", done=True, error=api),
        *idle(),
    ]
    assert finished_at(events) == 6
    result = aggregate_server_result(events=list(events), session_id=SID, user_message_id=MID)
    assert result.error is not None
    assert (result.error.kind, result.error.status_code) == ("api_error", 401)


def test_unknown_model_has_no_assistant_message() -> None:
    events = [user(), status("busy"), error("UnknownError", "Model not found: fake/nope."), *idle()]
    assert finished_at(events) == 3
    result = aggregate_server_result(events=list(events), session_id=SID, user_message_id=MID)
    assert result.error is not None and result.error.kind == "session_error"
    assert "Model not found" in result.error.message


def test_refused_prompt_never_stored_ends_when_the_server_says_so() -> None:
    # Unknown agent: two session.error, no message, no idle at all.
    tracker = run(
        [
            error("UnknownError", 'Agent not found: "nope". Available agents: build, plan'),
            error("UnknownError", "UnknownError: UnknownError\n    at <anonymous> (chunk.js:1:2)"),
        ]
    )
    assert tracker.refused and not tracker.finished
    tracker.message_exists(False)
    assert tracker.finished
    refusal = tracker.refusal()
    assert refusal is not None and refusal.message.startswith("Agent not found")


def test_stale_error_before_our_message_is_not_a_refusal_when_the_message_exists() -> None:
    tracker = run([error("UnknownError", "UnknownError: UnknownError\n    at x (y:1:1)")])
    assert tracker.refused
    tracker.message_exists(True)
    assert not tracker.refused and not tracker.finished
    for event in [status("busy"), assistant("msg_a1", done=True), *idle()]:
        tracker.feed(event)
    assert tracker.finished


def test_missing_idle_is_caught_by_the_status_check() -> None:
    tracker = run([user(), status("busy"), assistant("msg_a1", done=True, finish="stop")])
    assert not tracker.finished
    tracker.server_idle()
    assert tracker.finished


def test_status_check_does_not_end_a_turn_that_has_not_run() -> None:
    tracker = run([user()])
    tracker.server_idle()
    assert not tracker.finished
    tracker = run([user(), status("busy"), assistant("msg_a1")])  # still streaming
    tracker.server_idle()
    assert not tracker.finished


def test_a_stored_prompt_that_never_runs_ends_at_the_second_status_check() -> None:
    tracker = run([user()])
    tracker.server_idle()
    tracker.feed(status("busy"))  # it did start: the count starts again
    tracker.server_idle()
    assert not tracker.finished
    tracker = run([user()])
    tracker.server_idle()
    tracker.server_idle()
    assert tracker.finished


def test_an_abort_before_the_loop_started_ends_without_busy() -> None:
    # Measured: abort sent while opencode set the prompt up -> stored message, then idle, no busy.
    events = [user(), *idle()]
    assert finished_at(events) is None
    tracker = TurnTracker(SID, MID)
    tracker.abort_requested = True
    for event in events:
        tracker.feed(event)
    assert tracker.finished
    tracker = TurnTracker(SID, MID)
    tracker.abort_requested = True
    tracker.feed(user())
    tracker.server_idle()
    assert tracker.finished


def test_events_of_other_sessions_and_turns_are_ignored() -> None:
    other = make_event(
        {"type": "session.status", "properties": {"sessionID": "ses_other", "status": {"type": "idle"}}}
    )
    tracker = run([user(), status("busy"), assistant("msg_old", parent=OLD), other])
    assert tracker.assistants == {}
    assert not tracker.finished


def test_coalesced_busy_again_after_idle_does_not_end() -> None:
    events = [user(), status("busy"), assistant("msg_a1", done=True), status("idle"), status("busy")]
    assert finished_at(events) == 3
    tracker = run(events)
    assert not tracker.finished  # busy again: a merged prompt is running


# ----------------------------------------------------------------------------- aggregation


def test_tokens_and_cost_count_once_per_message_and_only_this_turn() -> None:
    tokens = {"total": 15, "input": 10, "output": 5, "reasoning": 0, "cache": {"read": 1, "write": 2}}
    events = [
        assistant("msg_old", parent=OLD, done=True, tokens=tokens, cost=9.0),  # previous turn
        part("prt_old", "msg_old", "text", text="old answer"),
        user(),
        assistant("msg_a1", tokens={"total": 0}, cost=0),
        assistant("msg_a1", tokens=tokens, cost=0.5, finish="tool-calls"),
        assistant("msg_a1", done=True, tokens=tokens, cost=0.5, finish="tool-calls"),
        assistant("msg_a2", tokens=tokens, cost=0.25),
        assistant("msg_a2", done=True, tokens=tokens, cost=0.25, finish="stop"),
    ]
    result = aggregate_server_result(events=list(events), session_id=SID, user_message_id=MID)
    assert result.turns == 2
    assert result.token_usage.total == 30 and result.token_usage.cache_write == 4
    assert result.total_cost == pytest.approx(0.75)
    assert result.final_text == ""  # no text this turn: never the previous turn's text


def test_final_text_is_the_last_step_and_deltas_are_applied() -> None:
    events = [
        assistant("msg_a1", done=True, finish="tool-calls"),
        part("prt_1", "msg_a1", "text", text="thinking aloud"),
        part("prt_2", "msg_a1", "tool", tool="bash", callID="c1", state={"status": "pending"}),
        part(
            "prt_2",
            "msg_a1",
            "tool",
            tool="bash",
            callID="c1",
            state={"status": "completed", "output": "hi\n"},
        ),
        assistant("msg_a2"),
        part("prt_3", "msg_a2", "text", text=""),
        ev("message.part.delta", messageID="msg_a2", partID="prt_3", field="text", delta="Hello "),
        ev("message.part.delta", messageID="msg_a2", partID="prt_3", field="text", delta="world"),
    ]
    result = aggregate_server_result(events=list(events), session_id=SID, user_message_id=MID)
    assert result.final_text == "Hello world"
    assert len(result.tool_calls) == 1
    assert result.tool_calls[0]["state"]["status"] == "completed"
    assert result.error is None


def test_final_messages_override_events() -> None:
    events = [assistant("msg_a1"), part("prt_1", "msg_a1", "text", text="partial")]
    final = [
        {"info": {"id": "msg_a1", "role": "assistant", "parentID": MID, "tokens": {"total": 3}}, "parts": []},
    ]
    final[0]["parts"] = [{"id": "prt_1", "messageID": "msg_a1", "type": "text", "text": "complete"}]
    result = aggregate_server_result(
        events=list(events), session_id=SID, final_messages=final, user_message_id=MID
    )
    assert result.final_text == "complete"
    assert result.token_usage.total == 3


def test_seed_signature_without_message_id_uses_every_assistant_message() -> None:
    events = [assistant("msg_a1", done=True), part("prt_1", "msg_a1", "text", text="answer")]
    result = aggregate_server_result(events=[dict(e) for e in events], session_id=SID)
    assert result.final_text == "answer"
    assert result.exit_code == 0 and result.session_id == SID
    assert all(isinstance(e, Event) for e in result.events)


def test_refused_permission_that_stopped_the_turn_is_the_error() -> None:
    rejected = "The user rejected permission to use this specific tool call."
    events = [
        assistant("msg_a1", done=True, finish="tool-calls"),
        part("prt_t", "msg_a1", "tool", tool="bash", state={"status": "error", "error": rejected}),
    ]
    result = aggregate_server_result(events=list(events), session_id=SID, user_message_id=MID)
    assert result.error is not None and result.error.kind == "permission_rejected"
    assert [r.permission for r in result.permission_rejections] == ["bash"]


def test_dismissed_question_that_stopped_the_turn_is_the_error() -> None:
    events = [
        assistant("msg_a1", done=True, finish="tool-calls"),
        part("prt_q", "msg_a1", "tool", tool="question", state={"status": "error", "error": "dismissed"}),
    ]
    result = aggregate_server_result(events=list(events), session_id=SID, user_message_id=MID)
    assert result.error is not None and result.error.kind == "question_rejected"


def test_sub_agent_events_are_kept_but_not_counted() -> None:
    child = make_event(
        {
            "type": "message.updated",
            "properties": {
                "sessionID": "ses_child",
                "info": {"id": "msg_c", "role": "assistant", "parentID": "msg_x", "tokens": {"total": 99}},
            },
        }
    )
    result = aggregate_server_result(events=[child], session_id=SID)
    assert result.events == [child] and result.turns == 0


# ----------------------------------------------------------------------------- message ids


def test_message_ids_have_opencodes_format_and_ascend() -> None:
    ids = [new_message_id() for _ in range(500)]
    assert all(re.fullmatch(r"msg_[0-9a-f]{12}[0-9A-Za-z]{14}", mid) for mid in ids)
    assert ids == sorted(ids) and len(set(ids)) == len(ids)


def test_message_ids_sort_with_the_servers_ids_of_the_same_time() -> None:
    # A real pair seen on opencode 1.18.33: the assistant id made right after our user id.
    ours = format_message_id(0x21EFA7DE3 * 0x1000 + 1)
    assert ours.startswith("msg_21efa7de3001")
    assert ours < "msg_21efa84600012l9piUm4mw0CtL"
    # And the clock-based ids are in the server's range right now (same clock, same format).
    now = new_message_id()
    assert f"msg_{(int(time.time() * 1000) * 0x1000) & 0xFFFFFFFFFFFF:012x}"[:12] <= now[:12]


# ----------------------------------------------------------------------------- structured output


SCHEMA = {
    "type": "object",
    "properties": {
        "answer": {"type": "string", "minLength": 1},
        "score": {"type": "integer", "minimum": 0, "maximum": 10},
        "tags": {"type": "array", "items": {"enum": ["a", "b"]}, "maxItems": 2},
        "extra": {"anyOf": [{"type": "null"}, {"$ref": "#/$defs/Point"}]},
    },
    "required": ["answer", "score"],
    "additionalProperties": False,
    "$defs": {"Point": {"type": "object", "properties": {"x": {"type": "number"}}, "required": ["x"]}},
}


@pytest.mark.parametrize(
    "value",
    [
        {"answer": "forty-two", "score": 7},
        {"answer": "x", "score": 0, "tags": ["a", "b"], "extra": None},
        {"answer": "x", "score": 10.0, "extra": {"x": 1.5}},
    ],
)
def test_schema_accepts(value: Any) -> None:
    assert structured_spec(SCHEMA).check(value) == (value, [])


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ({"answer": 42, "score": 7}, "$.answer: 42 is not of type 'string'"),
        ({"answer": "x"}, "$: 'score' is a required property"),
        ({"answer": "", "score": 1}, "should be non-empty"),
        ({"answer": "x", "score": 11}, "maximum"),
        ({"answer": "x", "score": 1.5}, "not of type 'integer'"),
        ({"answer": "x", "score": 1, "tags": ["c"]}, "is not one of"),
        ({"answer": "x", "score": 1, "other": 1}, "other"),
        ({"answer": "x", "score": 1, "extra": {"y": 1}}, "is not valid under any of the given schemas"),
        ([1, 2], "is not of type 'object'"),
    ],
)
def test_schema_rejects(value: Any, reason: str) -> None:
    checked, problems = structured_spec(SCHEMA).check(value)
    assert checked is None and any(reason in p for p in problems), problems


def test_every_keyword_is_checked_by_jsonschema() -> None:
    # The 0.4.0 built-in checker accepted keywords it did not know, such as patternProperties.
    schema = {"type": "object", "patternProperties": {"^n_": {"type": "integer"}}, "minProperties": 1}
    spec = structured_spec(schema)
    assert spec.check({"n_a": 1}) == ({"n_a": 1}, [])
    _, problems = spec.check({"n_a": "one"})
    assert problems == ["$.n_a: 'one' is not of type 'integer'"]
    _, problems = spec.check({})
    assert problems and "should be non-empty" in problems[0]


def test_an_invalid_schema_is_refused_before_anything_starts() -> None:
    with pytest.raises(OpenCodeConfigError, match="not a valid JSON schema"):
        structured_spec({"type": "object", "properties": {"a": {"type": "strng"}}})


def test_structured_spec_refuses_non_object_and_non_schema() -> None:
    with pytest.raises(OpenCodeConfigError, match="object"):
        structured_spec({"type": "array"})
    with pytest.raises(OpenCodeConfigError, match="JSON schema dict or a pydantic"):
        structured_spec("not a schema")
    with pytest.raises(OpenCodeConfigError, match="serialisable"):
        structured_spec({"type": "object", "default": {1, 2}})


def test_structured_spec_with_a_pydantic_like_class() -> None:
    class Answer:
        def __init__(self, answer: str) -> None:
            self.answer = answer

        @classmethod
        def model_json_schema(cls) -> dict[str, Any]:
            return {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}

        @classmethod
        def model_validate(cls, value: Any) -> Answer:
            if not isinstance(value, dict) or not isinstance(value.get("answer"), str):
                raise ValueError("answer must be a string")
            return cls(value["answer"])

    spec = structured_spec(Answer)
    good, problems = spec.check({"answer": "yes"})
    assert problems == [] and isinstance(good, Answer) and good.answer == "yes"
    bad, problems = spec.check({"answer": 1})
    assert bad is None and "answer must be a string" in problems[0]


# ----------------------------------------------------------------------------- callbacks


def test_permission_replies() -> None:
    assert read_permission_reply("once") == ("once", None)
    assert read_permission_reply(PermissionReply.always()) == ("always", None)
    assert read_permission_reply(PermissionReply.reject("use read")) == ("reject", "use read")
    for bad in ("maybe", None, 1, ("reject", "x")):
        with pytest.raises(ValueError, match="must return"):
            read_permission_reply(bad)
    with pytest.raises(OpenCodeConfigError):
        PermissionReply("once", "a message only goes with reject")
    with pytest.raises(OpenCodeConfigError):
        PermissionReply("sometimes")  # type: ignore[arg-type]


def test_question_answers() -> None:
    questions = [{"question": "a"}, {"question": "b"}]
    assert read_answers([["x"], ["y", "z"]], questions) == [["x"], ["y", "z"]]
    assert read_answers(None, questions) is None
    for bad in (["x", "y"], [["x"]], [[1], ["y"]], "x"):
        with pytest.raises(ValueError):
            read_answers(bad, questions)


def test_only_async_callbacks_are_accepted() -> None:
    async def good(request: dict[str, Any]) -> str:
        return "once"

    class AsyncCallable:
        async def __call__(self, request: dict[str, Any]) -> str:
            return "once"

    check_callback(None, "on_permission")
    check_callback(good, "on_permission")
    check_callback(AsyncCallable(), "on_permission")
    for bad in (lambda request: "once", print, "once", 3):
        with pytest.raises(OpenCodeConfigError, match="async"):
            check_callback(bad, "on_permission")
