"""Typed events, run results and their diagnosis, on the real event shapes of opencode 1.18.33."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from fakes import events as E
from opencode_wrapper import (
    DiagnosticEvent,
    ErrorEvent,
    Event,
    EventError,
    Part,
    ReasoningEvent,
    RunError,
    RunResult,
    StepFinishEvent,
    StepStartEvent,
    TextEvent,
    TokenUsage,
    ToolState,
    ToolUseEvent,
    aggregate_run_result,
    parse_event_line,
    run_result_fuzzy_text,
)
from opencode_wrapper._eventlog import EventLog
from opencode_wrapper._model.fold import parse_auto_rejections
from opencode_wrapper.errors import OpenCodeConfigError
from opencode_wrapper.events import make_event


def _aggregate(
    events: list[dict[str, Any]], *, exit_code: int | None = 0, stderr: str = "", raw: list[str] | None = None
) -> RunResult:
    lines = [E.line(ev) for ev in events] if raw is None else raw
    parsed = [parse_event_line(line) for line in lines]
    return aggregate_run_result(events=parsed, raw_stdout_lines=lines, exit_code=exit_code, stderr=stderr)


# ----------------------------------------------------------------------------- parse_event_line


@pytest.mark.parametrize(
    ("event", "cls"),
    [
        (E.step_start(), StepStartEvent),
        (E.text("hi"), TextEvent),
        (E.reasoning("thinking"), ReasoningEvent),
        (E.tool_use(), ToolUseEvent),
        (E.step_finish(), StepFinishEvent),
        (E.api_error(), ErrorEvent),
    ],
)
def test_each_run_event_type_gets_its_class_and_stays_an_equal_dict(event: dict[str, Any], cls: type) -> None:
    parsed = parse_event_line(E.line(event))
    assert type(parsed) is cls
    assert isinstance(parsed, dict)
    assert parsed == event
    assert json.loads(json.dumps(parsed)) == event
    assert parsed.type == event["type"]
    assert parsed.timestamp == event["timestamp"]
    assert parsed.session_id == E.SESSION


def test_text_event_accessors_and_seed_style_indexing() -> None:
    ev = parse_event_line(E.line(E.text('Hello "world"\nbye')))
    assert ev["part"]["text"] == 'Hello "world"\nbye'
    assert isinstance(ev.part, Part)
    assert ev.part.text == 'Hello "world"\nbye'
    assert ev.part.type == "text"
    assert ev.part.id == "prt_df5632d62001"
    assert ev.part.message_id == E.MESSAGE
    assert ev.part.session_id == E.SESSION
    assert ev.error is None


def test_tool_use_accessors() -> None:
    ev = parse_event_line(E.line(E.tool_use(command="ls -la", output="total 0\n")))
    part = ev.part
    assert part is not None
    assert part.tool == "bash"
    assert part.call_id == "call_1"
    assert isinstance(part.state, ToolState)
    assert part.state.status == "completed"
    assert part.state.input == {"command": "ls -la", "description": "echo"}
    assert part.state.output == "total 0\n"
    assert part.state.title == "ls -la"
    assert part.state.metadata == {"output": "total 0\n", "exit": 0, "truncated": False}
    assert part.state.error is None


def test_rejected_tool_use_state_has_the_error() -> None:
    ev = parse_event_line(E.line(E.tool_use(status="error")))
    assert ev.part is not None
    assert ev.part.state.status == "error"
    assert ev.part.state.error == E.REJECTED_MESSAGE
    assert ev.part.state.output is None


def test_step_finish_accessors() -> None:
    ev = parse_event_line(
        E.line(E.step_finish(reason="tool-calls", total=40, input=30, output=10, cost=0.125))
    )
    assert ev.part is not None
    assert ev.part.reason == "tool-calls"
    assert ev.part.cost == 0.125
    assert ev.part.tokens == {
        "total": 40,
        "input": 30,
        "output": 10,
        "reasoning": 0,
        "cache": {"write": 0, "read": 0},
    }


def test_api_error_accessors() -> None:
    ev = parse_event_line(E.line(E.api_error(500, "fake internal server error", retryable=True)))
    error = ev.error
    assert isinstance(error, EventError)
    assert error.name == "APIError"
    assert error.status_code == 500
    assert error.is_retryable is True
    assert error.message == "fake internal server error"
    assert ev.part is None


def test_unknown_error_and_tagged_error() -> None:
    unknown = parse_event_line(E.line(E.unknown_error()))
    assert unknown.error is not None
    assert unknown.error.name == "UnknownError"
    assert unknown.error.message == "Unexpected server error. Check server logs for details."
    assert unknown.error.status_code is None
    assert unknown.error.is_retryable is None
    tagged = parse_event_line(E.line(E.bad_request_error()))
    assert tagged.error is not None
    assert tagged.error.name == "BadRequest"
    assert tagged.error.message == "BadRequest"  # no data.message: the name is the best we have
    assert parse_event_line('{"type":"error","error":{}}').error.message == "unknown error"  # type: ignore[union-attr]


def test_bytes_lines_are_decoded_and_invalid_utf8_is_replaced() -> None:
    ev = parse_event_line(E.line(E.text("ünïcode ✓")).encode())
    assert isinstance(ev, TextEvent) and ev.part is not None and ev.part.text == "ünïcode ✓"
    broken = parse_event_line(b'{"type":"text","part":{"type":"text","text":"a\xffb"}}')
    assert isinstance(broken, TextEvent) and broken.part is not None and broken.part.text == "a\ufffdb"


def test_surrounding_whitespace_and_crlf_are_ignored() -> None:
    ev = parse_event_line("  " + E.line(E.step_start()) + "\r\n")
    assert isinstance(ev, StepStartEvent)


@pytest.mark.parametrize(
    ("line", "kind"),
    [
        ("", "empty_line"),
        ("   \t", "empty_line"),
        ("Error: Session not found", "json_decode_error"),
        ('{"type": "text", "part": ', "json_decode_error"),
        ("[" * 100_000 + "]" * 100_000, "json_decode_error"),  # RecursionError, not a crash
        ("[1, 2]", "non_object_json"),
        ('"a string"', "non_object_json"),
        ("42", "non_object_json"),
        ("null", "non_object_json"),
    ],
)
def test_lines_that_are_not_json_objects_become_diagnostics(line: str, kind: str) -> None:
    ev = parse_event_line(line)
    assert isinstance(ev, DiagnosticEvent)
    assert ev.type == "diagnostic"
    assert ev["kind"] == kind
    assert ev["raw"] == (line if kind == "empty_line" else line.strip())


def test_non_object_json_keeps_the_decoded_value() -> None:
    assert parse_event_line("[1, 2]")["value"] == [1, 2]


def test_unknown_and_odd_event_types_are_kept_unchanged() -> None:
    future = {"type": "snapshot_v3", "timestamp": 1, "sessionID": "ses_x", "extra": {"k": [1]}}
    ev = parse_event_line(json.dumps(future))
    assert type(ev) is Event and ev == future and ev.type == "snapshot_v3"
    assert parse_event_line('{"no_type": 1}').type == ""
    odd = parse_event_line('{"type": 5, "part": "not a dict", "error": 7, "timestamp": "x"}')
    assert type(odd) is Event
    assert odd.type == "" and odd.part is None and odd.error is None and odd.timestamp is None


def test_accessors_tolerate_wrong_field_types() -> None:
    ev = parse_event_line(
        json.dumps({"type": "tool_use", "part": {"text": 5, "cost": True, "tokens": [], "state": "running"}})
    )
    part = ev.part
    assert part is not None
    assert part.text is None
    assert part.cost is None  # a bool is not a cost
    assert part.tokens == {}
    assert part.state == {} and part.state.status is None and part.state.input == {}


def test_server_events_find_part_error_and_session_in_properties() -> None:
    part_updated = make_event(
        {
            "type": "message.part.updated",
            "properties": {"part": {"type": "text", "text": "hi", "sessionID": "ses_p"}},
        }
    )
    assert part_updated.part is not None and part_updated.part.text == "hi"
    assert part_updated.session_id == "ses_p"
    session_error = make_event(
        {
            "type": "session.error",
            "properties": {
                "sessionID": "ses_e",
                "error": {"name": "MessageAbortedError", "data": {"message": "x"}},
            },
        }
    )
    assert session_error.error is not None and session_error.error.name == "MessageAbortedError"
    assert session_error.session_id == "ses_e"
    message_updated = make_event({"type": "message.updated", "properties": {"info": {"sessionID": "ses_i"}}})
    assert message_updated.session_id == "ses_i"
    assert make_event({"type": "server.connected", "properties": {}}).session_id is None


# ----------------------------------------------------------------------------- aggregate_run_result


def test_successful_single_step_run() -> None:
    result = _aggregate(E.simple_turn("Hello from fake model. You said: Say hello"))
    assert result.ok and result.error is None
    assert result.final_text == "Hello from fake model. You said: Say hello"
    assert result.turns == 1
    assert result.session_id == E.SESSION
    assert result.exit_code == 0
    assert [type(ev) for ev in result.events] == [StepStartEvent, TextEvent, StepFinishEvent]
    assert result.raw_stdout_lines == [
        E.line(ev) for ev in E.simple_turn("Hello from fake model. You said: Say hello")
    ]


def test_final_text_is_the_text_of_the_last_step_only() -> None:
    events = [
        E.step_start(),
        E.text("Let me check with a tool."),
        E.tool_use(),
        E.step_finish(reason="tool-calls"),
        E.step_start(),
        E.text("The command printed "),
        E.text("hi-from-tool."),
        E.step_finish(),
    ]
    result = _aggregate(events)
    assert result.final_text == "The command printed hi-from-tool."
    assert result.texts == ["Let me check with a tool.", "The command printed ", "hi-from-tool."]
    assert result.turns == 2
    assert len(result.tool_calls) == 1
    assert result.tool_calls[0]["part"]["tool"] == "bash" and result.tool_calls[0]["type"] == "tool_use"


def test_a_last_step_without_text_gives_an_empty_final_text() -> None:
    # The answer is the last step's text: an earlier step's preamble is not the answer.
    events = [E.step_start(), E.text("I will run it."), E.tool_use(), E.step_finish(reason="tool-calls")]
    events += [E.step_start(), E.step_finish()]
    result = _aggregate(events)
    assert result.final_text == ""
    assert result.texts == ["I will run it."]
    assert run_result_fuzzy_text(result) == "I will run it."


def test_tokens_and_cost_are_exact_sums_over_steps() -> None:
    result = _aggregate(E.tool_turn())
    assert result.token_usage == TokenUsage(
        total=70, input=57, output=13, reasoning=0, cache_read=16, cache_write=0
    )
    assert result.total_cost == 0.75  # 0.25 + 0.5, exactly representable


def test_token_usage_ignores_missing_and_non_numeric_counts() -> None:
    usage = TokenUsage()
    usage.add(
        {"total": 10, "input": True, "output": "5", "reasoning": 2.0, "cache": {"read": 3, "write": None}}
    )
    usage.add({"cache": "nope"})
    assert usage == TokenUsage(total=10, input=0, output=0, reasoning=2, cache_read=3, cache_write=0)
    usage += TokenUsage(total=1, input=1, output=1, reasoning=1, cache_read=1, cache_write=1)
    assert usage == TokenUsage(total=11, input=1, output=1, reasoning=3, cache_read=4, cache_write=1)


def test_api_error_is_diagnosed_with_its_status_code() -> None:
    result = _aggregate([E.api_error(401, "Incorrect API key provided")], exit_code=1)
    assert not result.ok
    assert result.error is not None
    assert result.error.kind == "api_error"
    assert result.error.status_code == 401
    assert result.error.name == "APIError"
    assert result.error.message == "Incorrect API key provided"
    assert result.error.detail["data"]["statusCode"] == 401
    assert str(result.error) == "api_error (HTTP 401): Incorrect API key provided"


def test_error_without_status_is_an_error_event() -> None:
    result = _aggregate([E.unknown_error()], exit_code=1)
    assert result.error is not None
    assert result.error.kind == "error_event"
    assert result.error.name == "UnknownError"
    assert str(result.error) == "error_event: Unexpected server error. Check server logs for details."


def test_tagged_error_event() -> None:
    result = _aggregate([E.bad_request_error()], exit_code=1)
    assert (
        result.error is not None and result.error.kind == "error_event" and result.error.name == "BadRequest"
    )


def test_the_first_error_event_wins() -> None:
    result = _aggregate([E.api_error(429, "slow down"), E.unknown_error()], exit_code=1)
    assert result.error is not None and result.error.status_code == 429


def test_auto_rejected_permission_is_an_error_even_with_exit_0() -> None:
    events = [E.step_start(), E.tool_use(status="error"), E.step_finish(reason="tool-calls")]
    result = _aggregate(events, exit_code=0, stderr=E.ANSI_REJECT_BASH)
    assert not result.ok
    assert result.error is not None
    assert result.error.kind == "permission_rejected"
    assert "bash (echo hi-from-tool)" in result.error.message
    assert "\x1b" not in result.error.message
    assert [(r.permission, r.pattern) for r in result.permission_rejections] == [
        ("bash", "echo hi-from-tool")
    ]


def test_rejection_known_only_from_the_tool_event() -> None:
    events = [E.step_start(), E.tool_use(status="error"), E.step_finish(reason="tool-calls")]
    result = _aggregate(events, exit_code=0, stderr="")
    assert result.error is not None and result.error.kind == "permission_rejected"
    assert [(r.permission, r.message) for r in result.permission_rejections] == [("bash", E.REJECTED_MESSAGE)]


def test_a_rejection_the_run_recovered_from_is_not_an_error() -> None:
    events = [
        E.step_start(),
        E.tool_use(status="error"),
        E.step_finish(reason="tool-calls"),
        *E.simple_turn("ok"),
    ]
    result = _aggregate(events, exit_code=0)
    assert result.ok
    assert len(result.permission_rejections) == 1


def test_a_failed_tool_that_was_not_a_rejection_is_not_recorded_as_one() -> None:
    events = [E.step_start(), E.tool_use(status="error", error="File not found: /nonexistent/file.txt")]
    events += [E.step_finish(reason="tool-calls"), *E.simple_turn("The file does not exist.")]
    result = _aggregate(events)
    assert result.ok and result.permission_rejections == []


def test_parse_auto_rejections_from_ansi_stderr() -> None:
    stderr = (
        "some log line\n"
        + E.ANSI_REJECT_BASH
        + E.ANSI_REJECT_EXTERNAL
        + "! permission requested: broken line\n"
    )
    found = parse_auto_rejections(stderr)
    assert [(r.permission, r.pattern) for r in found] == [
        ("bash", "echo hi-from-tool"),
        ("external_directory", "/nonexistent/*"),
    ]


def test_nonzero_exit_without_events_uses_the_last_stderr_line_without_ansi() -> None:
    stderr = "\x1b[91m\x1b[1mError: \x1b[0mSession not found\n\n"
    result = _aggregate([], exit_code=1, stderr=stderr)
    assert result.error is not None
    assert result.error.kind == "process_exit"
    assert result.error.message == "opencode exited with 1: Error: Session not found"
    assert result.stderr == stderr


def test_nonzero_exit_with_empty_stderr() -> None:
    result = _aggregate(E.simple_turn(), exit_code=143)
    assert result.error is not None
    assert result.error.message == "opencode exited with 143: no error message"


def test_exit_0_after_a_tool_step_without_answer_is_an_error() -> None:
    result = _aggregate([E.step_start(), E.tool_use(), E.step_finish(reason="tool-calls")], exit_code=0)
    assert result.error is not None and result.error.kind == "process_exit"
    assert "without an answer" in result.error.message


def test_append_event_accepts_plain_dicts_and_types_them() -> None:
    result = RunResult()
    for ev in E.tool_turn("done"):
        result.append_event(json.loads(json.dumps(ev)))
    assert [type(ev) for ev in result.events] == [
        StepStartEvent,
        ToolUseEvent,
        StepFinishEvent,
        StepStartEvent,
        TextEvent,
        StepFinishEvent,
    ]
    assert result.final_text == "done" and result.turns == 2 and result.total_cost == 0.75


def test_diagnostic_lines_are_kept_in_the_result() -> None:
    raw = ["Warning: something", *[E.line(ev) for ev in E.simple_turn("fine")]]
    result = _aggregate([], raw=raw)
    assert isinstance(result.events[0], DiagnosticEvent)
    assert result.events[0]["raw"] == "Warning: something"
    assert result.final_text == "fine" and result.ok


def test_run_error_str() -> None:
    assert str(RunError(kind="timeout", message="too slow")) == "timeout: too slow"
    assert str(RunError(kind="api_error", message="x", status_code=500)) == "api_error (HTTP 500): x"


# ----------------------------------------------------------------------------- run_result_fuzzy_text


def test_fuzzy_text_prefers_final_text() -> None:
    assert run_result_fuzzy_text(_aggregate(E.simple_turn("  answer \n"))) == "answer"


def test_fuzzy_text_falls_back_to_event_texts_then_raw_stdout() -> None:
    # Cut off (e.g. by a timeout) right after a new step started: no final text yet.
    events = [E.step_start(), E.text("partial one"), E.tool_use(), E.step_finish(reason="tool-calls")]
    cut = _aggregate([*events, E.step_start()], exit_code=None)
    assert cut.final_text == ""
    assert run_result_fuzzy_text(cut) == "partial one"
    odd = RunResult(events=[make_event({"type": "custom", "message": "  note  "})])
    assert run_result_fuzzy_text(odd) == "note"
    raw_only = RunResult(
        events=[parse_event_line("plain text output")], raw_stdout_lines=["plain text output", " "]
    )
    assert run_result_fuzzy_text(raw_only) == "plain text output"
    assert run_result_fuzzy_text(RunResult()) == ""


# ----------------------------------------------------------------------------- EventLog


def test_event_log_writes_one_flushed_json_line_per_event(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    log = EventLog(path)
    events = [parse_event_line(E.line(ev)) for ev in E.simple_turn("ünïcode")]
    log.write(events[0])
    assert path.read_text(encoding="utf-8") == E.line(E.step_start()) + "\n"  # flushed at once
    for ev in events[1:]:
        log.write(ev)
    log.close()
    assert [json.loads(row) for row in path.read_text(encoding="utf-8").splitlines()] == events
    assert "ünïcode" in path.read_text(encoding="utf-8")
    log.write(events[0])  # after close: ignored, no exception
    assert len(path.read_text(encoding="utf-8").splitlines()) == 3


def test_event_log_excludes_types_and_is_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    log = EventLog(path, frozenset({"step_start", "step_finish"}))
    for ev in E.simple_turn("kept"):
        log.write(ev)
    log.close()
    rows = [json.loads(row) for row in path.read_text(encoding="utf-8").splitlines()]
    assert [row["type"] for row in rows] == ["text"]
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_event_log_truncates_and_tightens_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text("old content\n", encoding="utf-8")
    path.chmod(0o644)
    log = EventLog(path)
    log.write(E.step_start())
    log.close()
    assert path.read_text(encoding="utf-8") == E.line(E.step_start()) + "\n"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


@pytest.mark.parametrize("where", ["missing_dir", "directory"])
def test_event_log_that_cannot_be_opened_is_a_config_error(tmp_path: Path, where: str) -> None:
    path = tmp_path / "no" / "such" / "dir" / "log.jsonl" if where == "missing_dir" else tmp_path
    with pytest.raises(OpenCodeConfigError) as info:
        EventLog(path)
    assert str(path) in str(info.value)


def test_tools_lists_tool_names_from_run_and_server_shapes() -> None:
    from opencode_wrapper.events import RunResult

    result = RunResult(
        tool_calls=[
            {"type": "tool_use", "part": {"tool": "bash"}},  # run mode
            {"type": "tool", "tool": "read", "callID": "c1"},  # sessions
            {"type": "tool_use", "part": {}},  # no name: skipped
        ]
    )
    assert result.tools == ["bash", "read"]
