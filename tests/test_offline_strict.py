"""Unit tests of the offline model's strict mode and ``assert_complete`` (real HTTP, no opencode)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from opencode_wrapper.errors import OpenCodeConfigError
from opencode_wrapper.testing import (
    REPORT_PATH,
    STRICT_ERROR_CODE,
    STRICT_STATUS,
    OfflineModelAssertionError,
    OfflineModelProcess,
    OfflineModelServer,
    Reply,
    ReplyLike,
    UnconsumedModelSteps,
    UnexpectedModelCall,
    describe_reply,
    describe_request,
)

TITLE_SYSTEM = "You are a title generator. You output ONLY a thread title. Nothing else."
HTTP = httpx.Client(timeout=10.0)


def user(content: Any) -> dict[str, Any]:
    return {"role": "user", "content": content}


def body(*messages: dict[str, Any], stream: bool = True) -> dict[str, Any]:
    return {"model": "scripted", "stream": stream, "messages": list(messages)}


def title_body(prompt: str) -> dict[str, Any]:
    return body(
        {"role": "system", "content": TITLE_SYSTEM},
        user("Generate a title for this conversation:\n"),
        user(prompt),
    )


def tool_turn(prompt: str, name: str, output: str) -> list[dict[str, Any]]:
    call = {"id": "call_1", "type": "function", "function": {"name": name, "arguments": "{}"}}
    return [
        user(prompt),
        {"role": "assistant", "content": "", "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": output},
    ]


def post(url: str, payload: dict[str, Any], **headers: str) -> httpx.Response:
    return HTTP.post(f"{url}/chat/completions", json=payload, headers=headers)


def text_of(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    chunks = [json.loads(f[6:]) for f in response.text.split("\n\n") if f.startswith("data: {")]
    return "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])


# --- strict answers -----------------------------------------------------------------------------


def test_an_unscripted_request_gets_a_400_and_is_recorded_as_unexpected() -> None:
    with OfflineModelServer(script=["scripted answer"], strict=True) as model:
        assert text_of(post(model.url, body(user("first")))) == "scripted answer"
        failed = post(model.url, body(user("please deploy now")), **{"x-session-id": "ses_42"})
        unexpected = model.unexpected_requests
        chats = model.chat_requests
    assert failed.status_code == STRICT_STATUS == 400
    error = failed.json()["error"]
    assert (error["type"], error["code"]) == ("invalid_request_error", STRICT_ERROR_CODE)
    assert error["message"].startswith("offline model (strict): unexpected chat request #1;")
    # The user's words stay out of what opencode reads (it pattern-matches provider messages).
    assert "deploy" not in error["message"]
    assert unexpected == [chats[1]]


def test_check_names_the_unexpected_request_and_is_an_assertion_error() -> None:
    with OfflineModelServer(strict=True) as model:
        model.check()  # nothing yet
        post(model.url, body(user("what now?")), **{"x-session-id": "ses_7"})
        with pytest.raises(UnexpectedModelCall) as caught:
            model.check()
    error = caught.value
    assert isinstance(error, AssertionError) and isinstance(error, OfflineModelAssertionError)
    assert error.descriptions == ["request #0 (session ses_7): last user message 'what now?'"]
    assert error.requests == model.unexpected_requests
    assert "request #0 (session ses_7): last user message 'what now?'" in str(error)
    assert "strict=False" in str(error)


def test_tool_results_nobody_scripted_are_named_by_tool_and_output() -> None:
    with OfflineModelServer(script=[Reply.bash("echo hi")], strict=True, builtin_rules=False) as model:
        post(model.url, body(user("run it")))
        assert post(model.url, body(*tool_turn("run it", "bash", "hi\n"))).status_code == 400
        with pytest.raises(UnexpectedModelCall) as caught:
            model.assert_complete()
    assert caught.value.descriptions == [
        "request #1: tool results bash: 'hi\\n' (after user message 'run it')"
    ]


def test_title_requests_are_answered_when_strict_and_never_unexpected() -> None:
    with OfflineModelServer(script=["the answer"], strict=True) as model:
        title = post(model.url, title_body("hello"))
        answer = post(model.url, body(user("hello")))
        model.assert_complete()
    assert text_of(title) == "Offline session"
    assert text_of(answer) == "the answer"  # the title did not consume the script


def test_with_title_none_an_unmatched_title_request_is_echoed_not_failed() -> None:
    with OfflineModelServer(strict=True, title=None) as model:
        response = post(model.url, title_body("hello"))
        model.assert_complete()
    assert text_of(response) == "You said: hello"


def test_builtin_rules_answer_directives_when_strict_unless_switched_off() -> None:
    with OfflineModelServer(strict=True) as model:
        assert text_of(post(model.url, body(user("[[say: steered]]")))) == "steered"
        assert text_of(post(model.url, body(*tool_turn("x", "bash", "out")))) == "Tool results: bash: out"
        model.assert_complete()
    with OfflineModelServer(strict=True, builtin_rules=False) as model:
        assert post(model.url, body(user("[[say: steered]]"))).status_code == 400
        assert len(model.unexpected_requests) == 1


def test_user_rules_answer_when_strict() -> None:
    with OfflineModelServer(rules=[(r"^ping$", "pong")], strict=True) as model:
        assert text_of(post(model.url, body(user("ping")))) == "pong"
        assert post(model.url, body(user("pang"))).status_code == 400
    assert [r.last_user_text for r in model.unexpected_requests] == ["pang"]


def test_non_strict_model_echoes_and_check_passes() -> None:
    with OfflineModelServer() as model:
        assert text_of(post(model.url, body(user("anything")))) == "You said: anything"
        model.check()
        model.assert_complete()
    assert model.unexpected_requests == []


# --- assert_complete ----------------------------------------------------------------------------


def test_assert_complete_lists_unused_script_entries_with_their_position() -> None:
    script: list[ReplyLike] = ["one", Reply.bash("ls -la"), Reply.error(429, "slow down"), Reply.hang()]
    with OfflineModelServer(script=script, strict=True) as model:
        post(model.url, body(user("a")))
        model.enqueue(Reply.text("late", reasoning="why"))
        model.check()  # leftovers are fine mid-test
        with pytest.raises(UnconsumedModelSteps) as caught:
            model.assert_complete()
    assert caught.value.descriptions == [
        'script entry 2 of 5: tool call bash {"command": "ls -la", "description": "Run a command"}',
        "script entry 3 of 5: HTTP 429 error 'slow down'",
        "script entry 4 of 5: hang (never answers)",
        "script entry 5 of 5: text 'late', reasoning 'why'",
    ]
    assert "4 scripted step(s) of the offline model were never used" in str(caught.value)


def test_assert_complete_checks_leftovers_without_strict_too() -> None:
    with OfflineModelServer(script=["used", "unused"]) as model:
        post(model.url, body(user("a")))
        with pytest.raises(UnconsumedModelSteps, match=r"script entry 2 of 2: text 'unused'"):
            model.assert_complete()
        post(model.url, body(user("b")))
        model.assert_complete()


def test_unexpected_requests_win_and_the_leftovers_are_listed_too() -> None:
    with OfflineModelServer(rules=[("^go$", "ok")], script=[], strict=True) as model:
        post(model.url, body(user("stop")))
        model.enqueue("never reached")
        with pytest.raises(UnexpectedModelCall) as caught:
            model.assert_complete()
    assert caught.value.unused == ["script entry 1 of 1: text 'never reached'"]
    assert "Also never used:\n  - script entry 1 of 1: text 'never reached'" in str(caught.value)


def test_clear_forgets_unexpected_requests() -> None:
    with OfflineModelServer(strict=True) as model:
        post(model.url, body(user("x")))
        model.clear()
        model.assert_complete()


def test_descriptions_cut_long_texts_and_name_other_replies() -> None:
    with OfflineModelServer(strict=True) as model:
        post(model.url, body(user("y" * 500)))
    (request,) = model.unexpected_requests
    assert describe_request(request) == f"request #0: last user message '{'y' * 200}…'"
    assert describe_reply(Reply.compute(len)) == "computed reply len"  # type: ignore[arg-type]
    assert describe_reply(Reply.cut("partial", after_chunks=2)) == "text 'partial', cut after 2 chunk(s)"
    assert describe_reply(Reply.text("")) == "empty completion"


def test_bad_strict_input_is_a_config_error() -> None:
    with pytest.raises(OpenCodeConfigError, match="takes no default reply"):
        OfflineModelServer(strict=True, default="fallback")
    with pytest.raises(OpenCodeConfigError, match="strict must be True or False, got 'yes'"):
        OfflineModelServer(strict="yes")  # type: ignore[arg-type]
    with pytest.raises(OpenCodeConfigError, match="strict must be True or False"):
        OfflineModelServer.from_json({"strict": 1})
    with pytest.raises(OpenCodeConfigError, match="strict must be True or False"):
        OfflineModelProcess(strict=None)  # type: ignore[arg-type]


def test_json_form_takes_strict() -> None:
    with OfflineModelServer.from_json({"strict": True, "script": ["only"]}) as model:
        assert text_of(post(model.url, body(user("a")))) == "only"
        assert post(model.url, body(user("b"))).status_code == 400
    assert model.strict and len(model.unexpected_requests) == 1


def test_report_route_is_json_and_not_recorded() -> None:
    with OfflineModelServer(strict=True) as model:
        post(model.url, body(user("hello")))
        model.enqueue("left")
        report = HTTP.get(f"http://127.0.0.1:{model.port}{REPORT_PATH}").json()
        recorded = len(model.requests)
    assert report == {
        "unexpected": ["request #0: last user message 'hello'"],
        "unused": ["script entry 1 of 1: text 'left'"],
        "faulted": [],
    }
    assert recorded == 1


# --- the process form ---------------------------------------------------------------------------


def test_process_strict_fails_unscripted_requests_and_reports_them(tmp_path: Path) -> None:
    rules = {"script": ["scripted"], "rules": [{"match": "^ping$", "reply": "pong"}]}
    with OfflineModelProcess(rules=rules, strict=True) as model:
        assert text_of(post(model.url, body(user("a")))) == "scripted"
        assert text_of(post(model.url, body(user("ping")))) == "pong"
        model.assert_complete()
        assert post(model.url, body(user("surprise"))).status_code == 400
        with pytest.raises(UnexpectedModelCall) as caught:
            model.check()
    assert caught.value.descriptions == ["request #2: last user message 'surprise'"]
    assert caught.value.requests == []


def test_process_reports_unused_script_entries_from_a_rules_file(tmp_path: Path) -> None:
    rules_file = tmp_path / "rules.json"
    rules_file.write_text(json.dumps({"script": ["one", "two"], "strict": True}))
    with OfflineModelProcess(rules_file=rules_file) as model:
        post(model.url, body(user("a")))
        with pytest.raises(UnconsumedModelSteps) as caught:
            model.assert_complete()
    assert caught.value.descriptions == ["script entry 2 of 2: text 'two'"]


def test_cli_strict_flag_applies_to_a_rules_list(tmp_path: Path) -> None:
    rules_file = tmp_path / "rules.json"
    rules_file.write_text(json.dumps([{"match": "^hi$", "reply": "hello"}]))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    child = subprocess.Popen(
        [sys.executable, "-m", "opencode_wrapper.testing", "--rules", str(rules_file), "--strict"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        assert child.stdout is not None
        url = child.stdout.readline().decode().split()[-1]
        assert text_of(post(url, body(user("hi")))) == "hello"
        assert post(url, body(user("other"))).status_code == 400
        child.send_signal(signal.SIGTERM)
        out, err = child.communicate(timeout=10)
    finally:
        if child.poll() is None:
            os.kill(child.pid, signal.SIGKILL)
            child.wait()
    assert (child.returncode, out, err) == (0, b"", b"")


def test_cli_strict_with_a_default_exits_2(tmp_path: Path) -> None:
    rules_file = tmp_path / "rules.json"
    rules_file.write_text(json.dumps({"default": "fallback"}))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    done = subprocess.run(
        [sys.executable, "-m", "opencode_wrapper.testing", "--rules", str(rules_file), "--strict"],
        capture_output=True,
        env=env,
        timeout=30,
    )
    assert done.returncode == 2
    assert b"takes no default reply" in done.stderr
