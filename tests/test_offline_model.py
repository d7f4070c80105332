"""Unit tests of ``opencode_wrapper.testing``: the offline model, over real HTTP with httpx."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from opencode_wrapper.config import RunConfig
from opencode_wrapper.testing import (
    MODEL,
    Completion,
    Match,
    OfflineModelProcess,
    OfflineModelServer,
    RecordedRequest,
    Reply,
    Rule,
    RuleLike,
    ToolCall,
    Usage,
    parse_directives,
    reply_from_json,
)

TITLE_SYSTEM = "You are a title generator. You output ONLY a thread title. Nothing else.\n\n<task>…</task>"


# --- helpers ----------------------------------------------------------------------------------


def user(content: Any) -> dict[str, Any]:
    return {"role": "user", "content": content}


def chat_body(*messages: dict[str, Any], stream: bool = True, **extra: Any) -> dict[str, Any]:
    return {"model": "scripted", "stream": stream, "messages": list(messages), **extra}


def title_body(prompt: str) -> dict[str, Any]:
    # The shape opencode 1.18.33 sends (measured): system prompt, a fixed user line, then the prompt.
    return chat_body(
        {"role": "system", "content": TITLE_SYSTEM},
        user("Generate a title for this conversation:\n"),
        user(prompt),
    )


def tool_turn(prompt: str, *calls: tuple[str, str, str]) -> list[dict[str, Any]]:
    """A conversation ending with tool results: ``calls`` are (call id, tool name, output)."""
    assistant = {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {"id": cid, "type": "function", "function": {"name": name, "arguments": "{}"}}
            for cid, name, _ in calls
        ],
    }
    results = [{"role": "tool", "tool_call_id": cid, "content": out} for cid, _, out in calls]
    return [user(prompt), assistant, *results]


class Stream:
    """A parsed SSE answer."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.raw = response.text
        frames = [f for f in self.raw.split("\n\n") if f]
        assert all(f.startswith("data: ") for f in frames), self.raw
        payloads = [f[len("data: ") :] for f in frames]
        self.done = bool(payloads) and payloads[-1] == "[DONE]"
        self.chunks = [json.loads(p) for p in payloads if p != "[DONE]"]

    def deltas(self, key: str) -> list[Any]:
        return [
            c["choices"][0]["delta"][key]
            for c in self.chunks
            if c["choices"] and key in c["choices"][0]["delta"]
        ]

    @property
    def text(self) -> str:
        return "".join(self.deltas("content"))

    @property
    def reasoning(self) -> str:
        return "".join(self.deltas("reasoning_content"))

    @property
    def tool_calls(self) -> list[dict[str, Any]]:
        return [call for calls in self.deltas("tool_calls") for call in calls]

    @property
    def finish_reasons(self) -> list[str]:
        return [
            c["choices"][0]["finish_reason"]
            for c in self.chunks
            if c["choices"] and c["choices"][0]["finish_reason"]
        ]

    @property
    def usage(self) -> dict[str, Any] | None:
        usages = [c["usage"] for c in self.chunks if c.get("usage")]
        return usages[-1] if usages else None


# One shared client: creating one per request costs ~50 ms (SSL context), which adds up.
HTTP = httpx.Client(timeout=10.0)


def post(server: OfflineModelServer, body: dict[str, Any], **kwargs: Any) -> httpx.Response:
    return HTTP.post(f"{server.url}/chat/completions", json=body, **kwargs)


def ask(server: OfflineModelServer, *messages: dict[str, Any]) -> Stream:
    response = post(server, chat_body(*messages))
    assert response.status_code == 200, response.text
    return Stream(response)


def say(server: OfflineModelServer, prompt: str) -> Stream:
    return ask(server, user(prompt))


@pytest.fixture
def server() -> Iterator[OfflineModelServer]:
    with OfflineModelServer() as s:
        yield s


# --- reply kinds -------------------------------------------------------------------------------


def test_text_is_streamed_in_chunks_of_the_configured_size_and_ends_with_done() -> None:
    with OfflineModelServer(script=[Reply.text("hello brave new world", chunk_size=5)]) as s:
        stream = say(s, "hi")
    assert stream.response.headers["content-type"] == "text/event-stream"
    assert stream.deltas("content") == ["hello", " brav", "e new", " worl", "d"]
    assert stream.chunks[0]["choices"][0]["delta"] == {"role": "assistant"}
    assert stream.chunks[0]["object"] == "chat.completion.chunk"
    assert stream.finish_reasons == ["stop"]
    assert stream.done and stream.raw.endswith("data: [DONE]\n\n")


def test_server_wide_chunk_size_applies_to_replies_without_one() -> None:
    with OfflineModelServer(script=["abcdefg"], chunk_size=3) as s:
        assert say(s, "x").deltas("content") == ["abc", "def", "g"]


def test_stream_false_returns_one_json_completion() -> None:
    with OfflineModelServer(script=[Reply.text("plain answer", reasoning="why")]) as s:
        response = post(s, chat_body(user("hi"), stream=False))
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"] == {
        "role": "assistant",
        "content": "plain answer",
        "reasoning_content": "why",
    }
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"] == {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12}


def test_several_tool_calls_in_one_step() -> None:
    reply = Reply.tool_calls(
        ("read", {"filePath": "/tmp/a.txt"}),
        ToolCall("StructuredOutput", {"answer": "forty-two", "nested": {"ü": [1, 2]}}, id="call_custom"),
    )
    with OfflineModelServer(script=[reply]) as s:
        stream = say(s, "go")
    calls = stream.tool_calls
    assert [c["index"] for c in calls] == [0, 1]
    assert [c["function"]["name"] for c in calls] == ["read", "StructuredOutput"]
    assert json.loads(calls[0]["function"]["arguments"]) == {"filePath": "/tmp/a.txt"}
    assert json.loads(calls[1]["function"]["arguments"]) == {"answer": "forty-two", "nested": {"ü": [1, 2]}}
    assert calls[1]["id"] == "call_custom" and calls[0]["id"].startswith("call_")
    assert stream.finish_reasons == ["tool_calls"]
    assert stream.text == ""


def test_tool_call_arguments_given_as_a_string_are_sent_verbatim() -> None:
    with OfflineModelServer(script=[Reply.tool_call("edit", '{"broken": ')]) as s:
        assert say(s, "x").tool_calls[0]["function"]["arguments"] == '{"broken": '


def test_question_tool_call_with_its_schema() -> None:
    questions = {
        "questions": [
            {
                "question": "Which color?",
                "header": "Color",
                "options": [{"label": "red", "description": "warm"}],
            }
        ]
    }
    with OfflineModelServer(script=[Reply.tool_call("question", questions)]) as s:
        call = say(s, "ask me").tool_calls[0]
    assert call["function"]["name"] == "question"
    assert json.loads(call["function"]["arguments"]) == questions


def test_reasoning_is_streamed_before_the_text() -> None:
    with OfflineModelServer(script=[Reply.text("answer", reasoning="thinking hard", chunk_size=4)]) as s:
        stream = say(s, "hi")
    kinds = [next(iter(c["choices"][0]["delta"]), "finish") for c in stream.chunks if c["choices"]]
    assert kinds == ["role"] + ["reasoning_content"] * 4 + ["content"] * 2 + ["finish"]
    assert stream.reasoning == "thinking hard"
    assert stream.text == "answer"


def test_default_usage_counts_words_and_can_be_overridden() -> None:
    script = [
        Reply.text("one two  three\nfour"),
        Reply.bash("ls"),
        Reply.text(
            "x", usage=Usage(prompt_tokens=123, completion_tokens=45, reasoning_tokens=6, cached_tokens=7)
        ),
    ]
    with OfflineModelServer(script=script) as s:
        usages = [say(s, "q").usage for _ in script]
    assert usages[0] == {"prompt_tokens": 10, "completion_tokens": 4, "total_tokens": 14}
    assert usages[1] == {"prompt_tokens": 10, "completion_tokens": 1, "total_tokens": 11}  # min 1
    assert usages[2] == {
        "prompt_tokens": 123,
        "completion_tokens": 45,
        "total_tokens": 168,
        "completion_tokens_details": {"reasoning_tokens": 6},
        "prompt_tokens_details": {"cached_tokens": 7},
    }


def test_usage_is_the_last_chunk_before_done_with_no_choices() -> None:
    with OfflineModelServer(script=["hi"]) as s:
        stream = say(s, "q")
    assert stream.chunks[-1]["choices"] == [] and "usage" in stream.chunks[-1]


@pytest.mark.parametrize(
    ("status", "type_", "code"),
    [
        (401, "invalid_request_error", "invalid_api_key"),
        (429, "rate_limit_error", "rate_limit_exceeded"),
        (500, "server_error", "server_error"),
    ],
)
def test_http_errors_have_an_openai_style_body(status: int, type_: str, code: str) -> None:
    with OfflineModelServer(script=[Reply.error(status)]) as s:
        response = post(s, chat_body(user("x")))
    assert response.status_code == status
    assert response.json() == {
        "error": {"message": f"offline model: scripted {status} error", "type": type_, "code": code}
    }


def test_error_message_type_and_code_can_be_set() -> None:
    with OfflineModelServer(script=[Reply.error(503, "overloaded", type="t", code="c")]) as s:
        response = post(s, chat_body(user("x")))
    assert (response.status_code, response.json()) == (
        503,
        {"error": {"message": "overloaded", "type": "t", "code": "c"}},
    )


def test_delayed_reply_waits_before_answering() -> None:
    with OfflineModelServer(script=[Reply.delayed(0.4, "late"), Reply.delayed(0.4, Reply.error(401))]) as s:
        started = time.monotonic()
        assert say(s, "x").text == "late"
        middle = time.monotonic()
        assert post(s, chat_body(user("x"))).status_code == 401
        ended = time.monotonic()
    assert middle - started >= 0.4
    assert ended - middle >= 0.4


def test_hang_never_answers_and_stop_returns_promptly() -> None:
    server = OfflineModelServer(script=[Reply.hang(), Reply.hang()]).start()
    try:
        # The first request gets no answer at all within its read timeout.
        with pytest.raises(httpx.ReadTimeout):
            post(server, chat_body(user("x")), timeout=httpx.Timeout(5.0, read=0.5))
        # The second is still open when the server stops: stop() must not wait for it.
        outcome: list[BaseException] = []

        def hang() -> None:
            try:
                post(server, chat_body(user("y")), timeout=30.0)
            except BaseException as exc:
                outcome.append(exc)

        thread = threading.Thread(target=hang)
        thread.start()
        server.wait_for_chat_requests(2)
    finally:
        started = time.monotonic()
        server.stop()
        took = time.monotonic() - started
    thread.join(5)
    assert took < 1.0, f"stop() took {took:.3f} s with a hung request"
    assert not thread.is_alive()
    assert len(outcome) == 1 and isinstance(outcome[0], httpx.RemoteProtocolError)


def test_stop_is_prompt_during_a_long_delay_and_a_slow_stream() -> None:
    slow = Completion(text="a" * 100, chunk_size=1, chunk_delay=0.5)
    server = OfflineModelServer(rules=[("slow", slow), ("late", Reply.delayed(60, "x"))]).start()
    threads = [threading.Thread(target=_post_ignoring_errors, args=(server, p)) for p in ("slow", "late")]
    for t in threads:
        t.start()
    server.wait_for_chat_requests(2)
    started = time.monotonic()
    server.stop()
    took = time.monotonic() - started
    for t in threads:
        t.join(5)
    assert took < 1.0, f"stop() took {took:.3f} s"
    assert not any(t.is_alive() for t in threads)


def _post_ignoring_errors(server: OfflineModelServer, prompt: str) -> None:
    with contextlib.suppress(httpx.HTTPError):
        post(server, chat_body(user(prompt)), timeout=30)


def test_cut_stream_stops_mid_answer_without_done() -> None:
    with OfflineModelServer(script=[Reply.cut("abcdefghij", after_chunks=2, chunk_size=3)]) as s:
        stream = say(s, "x")
    assert stream.text == "abcdef"
    assert stream.finish_reasons == []
    assert stream.usage is None
    assert not stream.done and "[DONE]" not in stream.raw


def test_cut_non_streamed_answer_is_a_truncated_body() -> None:
    with OfflineModelServer(script=[Reply.cut("abcdefghij")]) as s, pytest.raises(httpx.RemoteProtocolError):
        post(s, chat_body(user("x"), stream=False))


def test_computed_reply_is_built_from_the_request() -> None:
    def reply(request: RecordedRequest) -> Completion:
        return Reply.text(f"{len(request.messages)} messages, last: {request.last_user_text.upper()}")

    with OfflineModelServer(script=[Reply.compute(reply), Reply.compute(lambda r: Reply.error(401))]) as s:
        assert ask(s, user("first"), {"role": "assistant", "content": "ok"}, user("second")).text == (
            "3 messages, last: SECOND"
        )
        assert post(s, chat_body(user("x"))).status_code == 401


def test_a_failing_reply_callable_or_matcher_gives_500_and_is_kept_in_errors() -> None:
    def boom(request: RecordedRequest) -> str:
        raise ValueError("boom")

    def bad_matcher(request: RecordedRequest) -> bool:
        raise KeyError("matcher")

    with OfflineModelServer(script=[Reply.compute(boom)], rules=[(bad_matcher, "never")]) as s:
        first, second = post(s, chat_body(user("x"))), post(s, chat_body(user("y")))
        assert (first.status_code, second.status_code) == (500, 500)
        assert "ValueError('boom')" in first.json()["error"]["message"]
        assert "KeyError('matcher')" in second.json()["error"]["message"]
        assert [repr(e) for e in s.errors] == ["ValueError('boom')", "KeyError('matcher')"]


# --- choosing replies ----------------------------------------------------------------------------


def test_script_is_consumed_in_order_then_falls_back_to_the_default() -> None:
    with OfflineModelServer(script=["first", Reply.text("second")], default="fallback") as s:
        assert s.script_remaining == 2
        assert [say(s, "q").text for _ in range(4)] == ["first", "second", "fallback", "fallback"]
        assert s.script_remaining == 0
        s.enqueue("third")
        assert say(s, "q").text == "third"


def test_rules_first_match_wins() -> None:
    rules: list[RuleLike] = [
        Rule(r"deploy", "rule one"),
        (r"deploy|build", "rule two"),
        Rule(Match.where(lambda r: "tools" in r.tool_names), "rule three"),
    ]
    with OfflineModelServer(rules=rules) as s:
        assert say(s, "please deploy").text == "rule one"
        assert say(s, "please build").text == "rule two"
        tools = [{"type": "function", "function": {"name": "tools", "parameters": {}}}]
        assert post(s, chat_body(user("x"), tools=tools)).text.count("rule three") == 1
        assert say(s, "nothing matches").text == "You said: nothing matches"
        s.add_rule(Match.user_text("(?i)NOTHING"), "added later")
        assert say(s, "nothing matches").text == "added later"


def test_user_text_rules_only_fire_on_a_new_user_turn() -> None:
    # After the tool ran, the last user text still says "list": matching it again would loop forever.
    with OfflineModelServer(rules=[("list", Reply.bash("ls"))]) as s:
        assert say(s, "list files").tool_calls[0]["function"]["name"] == "bash"
        after = ask(s, *tool_turn("list files", ("c1", "bash", "a.txt\n")))
    assert after.tool_calls == []
    assert after.text == "Tool results: bash: a.txt"


def test_tool_result_matcher_optionally_checks_the_tool_name() -> None:
    rules = [(Match.tool_result("read"), "read done"), (Match.tool_result(), "some tool done")]
    with OfflineModelServer(rules=rules) as s:
        assert ask(s, *tool_turn("x", ("c1", "read", "content"))).text == "read done"
        assert ask(s, *tool_turn("x", ("c1", "bash", "out"))).text == "some tool done"
        assert say(s, "no tool").text == "You said: no tool"


def test_title_requests_are_auto_answered_and_never_consume_the_script() -> None:
    with OfflineModelServer(script=["scripted answer"], rules=[("", "rule answer")]) as s:
        assert ask(s, *title_body("hello")["messages"]).text == "Offline session"
        assert s.script_remaining == 1
        assert say(s, "hello").text == "scripted answer"
        assert ask(s, *title_body("again")["messages"]).text == "Offline session"
        assert say(s, "hello").text == "rule answer"


def test_title_text_can_be_changed_or_routed_to_rules() -> None:
    with OfflineModelServer(title="Custom title") as s:
        assert ask(s, *title_body("[[error: 401]]")["messages"]).text == "Custom title"
    with OfflineModelServer(title=None, rules=[(Match.title_request(), "From a rule")]) as s:
        assert ask(s, *title_body("x")["messages"]).text == "From a rule"
    with OfflineModelServer(title=None, script=["scripted title"]) as s:
        assert ask(s, *title_body("x")["messages"]).text == "scripted title"


def test_order_is_title_then_script_then_rules_then_builtin_then_default() -> None:
    with OfflineModelServer(script=["script"], rules=[("rule", "rule")], default="default") as s:
        assert ask(s, *title_body("rule")["messages"]).text == "Offline session"
        assert say(s, "rule [[say: builtin]]").text == "script"
        assert say(s, "rule [[say: builtin]]").text == "rule"
        assert say(s, "[[say: builtin]]").text == "builtin"
        assert say(s, "plain").text == "default"
    with OfflineModelServer(builtin_rules=False) as s:
        stream = say(s, "[[bash: ls]] hi")
        assert (stream.tool_calls, stream.text) == ([], "You said: hi")


# --- built-in directives ----------------------------------------------------------------------------


def test_bash_directives_become_tool_calls_in_one_step(server: OfflineModelServer) -> None:
    stream = say(server, "Run these: [[bash: echo hi]] and [[bash: ls -la | grep 'x]y']]")
    assert [json.loads(c["function"]["arguments"]) for c in stream.tool_calls] == [
        {"command": "echo hi", "description": "Run a command"},
        {"command": "ls -la | grep 'x]y'", "description": "Run a command"},
    ]
    assert [c["function"]["name"] for c in stream.tool_calls] == ["bash", "bash"]
    assert stream.finish_reasons == ["tool_calls"]
    assert stream.text == ""


def test_tool_directive_calls_any_tool_with_json_arguments(server: OfflineModelServer) -> None:
    args = {"todos": [{"content": "step ]] one", "status": "pending", "priority": "high"}]}
    stream = say(server, f"[[tool: todowrite {json.dumps(args)}]] [[tool: todoread]]")
    assert [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in stream.tool_calls] == [
        ("todowrite", args),
        ("todoread", {}),
    ]


def test_reason_and_say_directives(server: OfflineModelServer) -> None:
    stream = say(server, "[[reason: Let me think.]] [[say: The answer is 42.]]")
    assert stream.reasoning == "Let me think."
    assert stream.text == "The answer is 42."


def test_say_directive_can_span_lines(server: OfflineModelServer) -> None:
    assert say(server, "[[say: line one\nline two]]").text == "line one\nline two"


@pytest.mark.parametrize("status", [401, 429, 500])
def test_error_directive(server: OfflineModelServer, status: int) -> None:
    response = post(server, chat_body(user(f"fail please [[error: {status}]]")))
    assert response.status_code == status
    assert set(response.json()["error"]) == {"message", "type", "code"}


def test_sleep_directive_delays_the_normal_answer(server: OfflineModelServer) -> None:
    started = time.monotonic()
    stream = say(server, "[[sleep: 0.4]] hello")
    assert time.monotonic() - started >= 0.4
    assert stream.text == "You said: hello"


def test_hang_directive(server: OfflineModelServer) -> None:
    with pytest.raises(httpx.ReadTimeout):
        post(server, chat_body(user("[[hang]]")), timeout=httpx.Timeout(5.0, read=0.5))


def test_cut_directive_stops_after_the_first_chunk(server: OfflineModelServer) -> None:
    stream = say(server, "[[cut]] this answer is longer than one chunk")
    assert stream.text == "You said: this a"  # the first DEFAULT_CHUNK_SIZE (16) characters
    assert not stream.done and stream.finish_reasons == []


def test_directives_in_a_list_content_and_system_reminders_are_ignored(server: OfflineModelServer) -> None:
    content = [
        {"type": "text", "text": "[[say: from parts]]"},
        {"type": "text", "text": "<system-reminder>\nPlan mode [[error: 500]]\n</system-reminder>\n"},
    ]
    assert ask(server, user(content)).text == "from parts"
    assert server.chat_requests[-1].last_user_text == "[[say: from parts]]"


def test_directives_are_ignored_after_a_tool_result(server: OfflineModelServer) -> None:
    stream = ask(server, *tool_turn("[[bash: echo hi]]", ("call_1", "bash", "hi\n")))
    assert stream.tool_calls == []
    assert stream.text == "Tool results: bash: hi"


def test_tool_results_answer_quotes_every_result_truncated(server: OfflineModelServer) -> None:
    long_output = "x" * 2500 + "TAIL"
    stream = ask(server, *tool_turn("go", ("a", "bash", "first\n"), ("b", "read", long_output)))
    assert stream.text == "Tool results: bash: first\nread: " + "x" * 2000


def test_remember_answers_from_history(server: OfflineModelServer) -> None:
    history = [user("Hi! My name is Ada Lovelace."), {"role": "assistant", "content": "Hello"}]
    assert ask(server, *history, user("What is my name?")).text == "Your name is Ada Lovelace."
    assert say(server, "What is my name?").text == "You said: What is my name?"


def test_echo_is_the_default(server: OfflineModelServer) -> None:
    assert say(server, "  Hello there\n").text == "You said: Hello there"
    # A malformed directive is not a directive: it is echoed, which makes the typo visible.
    assert say(server, "[[error: abc]] [[nope: x]]").text == "You said: [[error: abc]] [[nope: x]]"
    # Directives are removed from the echo.
    assert say(server, "[[reason: r]] hi").text == "You said: hi"


def test_parse_directives_reports_positions() -> None:
    text = 'a [[bash: ls]] b [[tool: x {"k": 1}]] [[cut]]'
    found = parse_directives(text)
    assert [(d.name, d.argument) for d in found] == [("bash", "ls"), ("tool", "x"), ("cut", "")]
    assert found[1].tool_arguments == {"k": 1}
    assert [text[d.start : d.end] for d in found] == ["[[bash: ls]]", '[[tool: x {"k": 1}]]', "[[cut]]"]


# --- recording -------------------------------------------------------------------------------------


def test_requests_are_recorded_with_body_path_headers_and_helpers(server: OfflineModelServer) -> None:
    tools = [{"type": "function", "function": {"name": n, "parameters": {}}} for n in ("bash", "read")]
    before = time.time()
    post(server, title_body("the prompt"))
    post(
        server,
        chat_body({"role": "system", "content": "sys"}, user("the prompt"), tools=tools),
        headers={"X-Session-Id": "ses_1"},
    )
    HTTP.get(f"{server.url}/models")
    title, chat, models = server.requests
    assert title.is_title_request and not chat.is_title_request
    assert title.last_user_text == "the prompt"
    assert chat.path == "/v1/chat/completions" and chat.method == "POST" and chat.is_chat
    assert chat.body["tools"] == tools and json.loads(chat.raw_body) == chat.body
    assert chat.headers["x-session-id"] == "ses_1" and chat.session_id == "ses_1"
    assert chat.tool_names == ["bash", "read"]
    assert chat.messages[0] == {"role": "system", "content": "sys"}
    assert chat.system_text == "sys" and chat.model == "scripted" and chat.stream
    assert before <= chat.time <= time.time()
    assert [r.index for r in server.requests] == [0, 1, 2]
    assert models.method == "GET" and models.body is None
    assert server.chat_requests == [chat]
    server.clear()
    assert server.requests == [] and server.chat_requests == []


def test_tool_results_helper_finds_tool_names(server: OfflineModelServer) -> None:
    ask(server, *tool_turn("x", ("c1", "bash", "out1"), ("c2", "glob", "out2")))
    results = server.chat_requests[-1].tool_results
    assert [(r.name, r.call_id, r.output) for r in results] == [
        ("bash", "c1", "out1"),
        ("glob", "c2", "out2"),
    ]


def test_recording_is_thread_safe(server: OfflineModelServer) -> None:
    prompts = [f"prompt {i}" for i in range(24)]
    threads = [threading.Thread(target=say, args=(server, p)) for p in prompts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    recorded = server.chat_requests
    assert sorted(r.last_user_text for r in recorded) == sorted(prompts)
    assert sorted(r.index for r in recorded) == list(range(24))


def test_wait_for_chat_requests_times_out(server: OfflineModelServer) -> None:
    with pytest.raises(TimeoutError):
        server.wait_for_chat_requests(1, timeout=0.05)


# --- HTTP surface ---------------------------------------------------------------------------------


def test_models_endpoint_lists_the_model(server: OfflineModelServer) -> None:
    response = HTTP.get(f"{server.url}/models")
    assert response.json()["data"][0]["id"] == "scripted"


def test_unknown_paths_and_bad_json(server: OfflineModelServer) -> None:
    assert HTTP.get(f"{server.url}/nope").status_code == 404
    assert HTTP.post(f"{server.url}/completions", json={}).status_code == 404
    bad = HTTP.post(f"{server.url}/chat/completions", content=b"{not json")
    assert bad.status_code == 400 and "error" in bad.json()


def test_binds_loopback_with_an_ephemeral_port() -> None:
    with OfflineModelServer() as a, OfflineModelServer() as b:
        assert a.port != b.port and a.port > 0
        assert a.url == f"http://127.0.0.1:{a.port}/v1"
        freed = a.port
    assert not a.running
    # An explicit port is honoured (a port just freed by the server above).
    with OfflineModelServer(port=freed) as c:
        assert c.url == f"http://127.0.0.1:{freed}/v1"


def test_url_before_start_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="not running"):
        _ = OfflineModelServer().url


async def test_async_context_manager() -> None:
    async with OfflineModelServer(script=["async hi"]) as s:
        async with httpx.AsyncClient() as client:
            response = await client.post(f"{s.url}/chat/completions", json=chat_body(user("x")))
        assert Stream(response).text == "async hi"
    assert not s.running


# --- configuration --------------------------------------------------------------------------------


def test_provider_config_and_run_config(server: OfflineModelServer) -> None:
    assert server.provider_config() == {
        "provider": {
            "offline": {
                "npm": "@ai-sdk/openai-compatible",
                "name": "Offline scripted model",
                "options": {"baseURL": server.url, "apiKey": "offline"},
                "models": {"scripted": {"name": "scripted", "tool_call": True, "reasoning": True}},
            }
        }
    }
    cfg = server.run_config(
        agent="plan",
        permission={"bash": "allow"},
        config_overrides={"username": "me", "provider": {"offline": {"options": {"timeout": 5}}}},
    )
    assert isinstance(cfg, RunConfig)
    assert cfg.model == MODEL == "offline/scripted" and cfg.agent == "plan"
    built = cfg.build_opencode_config_dict()
    assert built["share"] == "disabled" and built["username"] == "me"
    assert built["permission"] == {"bash": "allow"}
    assert built["provider"]["offline"]["options"] == {
        "baseURL": server.url,
        "apiKey": "offline",
        "timeout": 5,
    }
    assert built["provider"]["offline"]["npm"] == "@ai-sdk/openai-compatible"


def test_pytest_fixtures(offline_model: OfflineModelServer, offline_run_config: RunConfig) -> None:
    assert offline_model.running
    assert offline_run_config.model == "offline/scripted"
    assert offline_run_config.build_opencode_config_dict()["provider"]["offline"]["options"]["baseURL"] == (
        offline_model.url
    )
    assert say(offline_model, "[[say: fixture works]]").text == "fixture works"


# --- JSON rules --------------------------------------------------------------------------------------

EVERY_KIND = {
    "title": "JSON title",
    "chunk_size": 4,
    "script": ["scripted first"],
    "default": {"text": "json default"},
    "rules": [
        {"match": "^text$", "reply": {"text": "hello there", "reasoning": "hmm", "chunk_size": 2}},
        {
            "match": {"user_text": "^tools$"},
            "reply": {"tool_calls": [{"name": "read", "arguments": {"filePath": "/x"}}], "bash": "echo hi"},
        },
        {"match": "^usage$", "reply": {"text": "u", "usage": {"prompt_tokens": 7, "completion_tokens": 3}}},
        {"match": "^error$", "reply": {"error": 429, "message": "slow down"}},
        {"match": "^hang$", "reply": {"hang": True}},
        {"match": "^cut$", "reply": {"text": "abcdefgh", "cut_after": 1}},
        {"match": "^delay$", "reply": {"text": "late", "delay": 0.3}},
        {"match": {"tool_result": "read"}, "reply": "read finished"},
        {"match": {"tool_result": True}, "reply": "some tool finished"},
        {"match": {"always": True}, "reply": "always"},
    ],
}


def test_json_rules_cover_every_reply_kind() -> None:
    with OfflineModelServer.from_json(EVERY_KIND) as s:
        assert ask(s, *title_body("x")["messages"]).text == "JSON title"
        assert say(s, "text").text == "scripted first"
        text = say(s, "text")
        assert (text.reasoning, text.text, text.deltas("content")[0]) == ("hmm", "hello there", "he")
        calls = say(s, "tools").tool_calls
        assert [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in calls] == [
            ("read", {"filePath": "/x"}),
            ("bash", {"command": "echo hi", "description": "Run a command"}),
        ]
        assert say(s, "usage").usage == {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}
        error = post(s, chat_body(user("error")))
        assert (error.status_code, error.json()["error"]["message"]) == (429, "slow down")
        with pytest.raises(httpx.ReadTimeout):
            post(s, chat_body(user("hang")), timeout=httpx.Timeout(5.0, read=0.3))
        cut = say(s, "cut")
        assert (cut.text, cut.done) == ("abcd", False)
        started = time.monotonic()
        assert say(s, "delay").text == "late" and time.monotonic() - started >= 0.3
        assert ask(s, *tool_turn("x", ("c", "read", "o"))).text == "read finished"
        assert ask(s, *tool_turn("x", ("c", "bash", "o"))).text == "some tool finished"
        assert say(s, "anything").text == "always"


def test_json_rules_list_form_keeps_the_builtin_rules() -> None:
    with OfflineModelServer.from_json([{"match": "hello", "reply": {"text": "Hi!"}}]) as s:
        assert say(s, "hello").text == "Hi!"
        assert say(s, "[[say: builtin]]").text == "builtin"


@pytest.mark.parametrize(
    "bad",
    [
        {"rules": [{"match": "x", "reply": {"txt": "typo"}}]},
        {"rules": [{"match": {"nope": 1}, "reply": "x"}]},
        {"rules": [{"reply": {"hang": True, "text": "x"}}]},
        {"rules": [{"reply": {"error": 500, "text": "x"}}]},
        {"unknown": 1},
        "not a list",
    ],
)
def test_json_rules_reject_mistakes(bad: Any) -> None:
    with pytest.raises(ValueError):
        OfflineModelServer.from_json(bad)


def test_reply_from_json_matches_the_python_factories() -> None:
    assert reply_from_json("hi") == Reply.text("hi")
    assert reply_from_json({"bash": "ls"}) == Reply.bash("ls")
    assert reply_from_json({"error": 401}) == Reply.error(401)
    assert reply_from_json({"hang": True}) == Reply.hang()
    assert reply_from_json({"text": "abc", "cut_after": 1}) == Reply.cut("abc")


# --- subprocess form ------------------------------------------------------------------------------------


def _pid_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_subprocess_serves_and_is_stopped_by_pid() -> None:
    rules = [{"match": "hello", "reply": {"text": "Hi from the child!"}}]
    with OfflineModelProcess(rules=rules) as model:
        pid, url = model.pid, model.url
        assert url == f"http://127.0.0.1:{model.port}/v1"
        response = HTTP.post(f"{url}/chat/completions", json=chat_body(user("hello")), timeout=10)
        assert Stream(response).text == "Hi from the child!"
        assert (
            model.run_config().build_opencode_config_dict()["provider"]["offline"]["options"]["baseURL"]
            == url
        )
        startup = model.startup_seconds
    assert startup is not None
    assert _pid_gone(pid), f"child {pid} still exists"
    with pytest.raises(httpx.ConnectError):
        HTTP.get(f"{url}/models")
    # Startup time is reported, not asserted (machines differ).
    assert startup > 0, f"subprocess startup took {startup:.3f} s"
    print(f"offline model subprocess started in {startup * 1000:.0f} ms")


def test_subprocess_prints_exactly_one_line_and_exits_0_on_sigterm_and_sigint(tmp_path: Path) -> None:
    rules_file = tmp_path / "rules.json"
    rules_file.write_text(json.dumps(EVERY_KIND))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    for sig in (signal.SIGTERM, signal.SIGINT):
        started = time.monotonic()
        child = subprocess.Popen(
            [sys.executable, "-m", "opencode_wrapper.testing", "--port", "0", "--rules", str(rules_file)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        try:
            assert child.stdout is not None
            line = child.stdout.readline().decode()
            took = time.monotonic() - started
            assert line.startswith("offline model listening on http://127.0.0.1:"), line
            assert line.endswith("/v1\n"), f"{line!r} (startup {took * 1000:.0f} ms)"
            url = line.split()[-1]
            assert Stream(
                HTTP.post(f"{url}/chat/completions", json=chat_body(user("x")), timeout=10)
            ).text == ("scripted first")
            child.send_signal(sig)
            out, err = child.communicate(timeout=10)
        finally:
            if child.poll() is None:
                os.kill(child.pid, signal.SIGKILL)
                child.wait()
        assert (child.returncode, out, err) == (0, b"", b""), f"{sig!r}: startup took {took * 1000:.0f} ms"


def test_subprocess_with_a_bad_rules_file_fails_clearly(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('[{"match": "x", "reply": {"txt": 1}}]')
    with pytest.raises(RuntimeError, match=r"(?s)status 2.*unknown keys \['txt'\]"):
        OfflineModelProcess(rules_file=bad).start()


async def test_subprocess_async_context_manager() -> None:
    async with OfflineModelProcess() as model:
        pid = model.pid
        async with httpx.AsyncClient() as client:
            response = await client.post(
                f"{model.url}/chat/completions", json=chat_body(user("[[say: child]]"))
            )
        assert Stream(response).text == "child"
    assert _pid_gone(pid)


# --- package surface ---------------------------------------------------------------------------------


def test_every_public_name_is_importable() -> None:
    import opencode_wrapper.testing as testing

    missing = [name for name in testing.__all__ if getattr(testing, name, None) is None]
    assert missing == []
    assert set(testing.__all__) <= set(dir(testing))


def test_the_pytest_plugin_imports_no_server_code() -> None:
    # The plugin is loaded by every pytest run: it must stay cheap (the server is imported by the fixture).
    code = (
        "import sys, opencode_wrapper.testing.pytest_plugin; "
        "print(sorted(m for m in sys.modules if m.startswith('opencode_wrapper.testing.')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['opencode_wrapper.testing.pytest_plugin']"
