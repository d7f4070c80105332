"""Unit tests of the offline model's fault injection (``fail``, ``inject``, ``Fault``), over real HTTP."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import httpx
import pytest

from opencode_wrapper.errors import OpenCodeConfigError
from opencode_wrapper.testing import (
    Fault,
    OfflineModelProcess,
    OfflineModelServer,
    Reply,
    UnconsumedModelSteps,
    fault_from_json,
)

TITLE_SYSTEM = "You are a title generator. You output ONLY a thread title. Nothing else."
HTTP = httpx.Client(timeout=10.0)


def user(content: Any) -> dict[str, Any]:
    return {"role": "user", "content": content}


def body(prompt: str, *, title: bool = False) -> dict[str, Any]:
    messages = [user(prompt)]
    if title:
        messages = [{"role": "system", "content": TITLE_SYSTEM}, user("Generate a title:\n"), user(prompt)]
    return {"model": "scripted", "stream": True, "messages": messages}


def post(url: str, prompt: str, *, title: bool = False) -> httpx.Response:
    return HTTP.post(f"{url}/chat/completions", json=body(prompt, title=title))


def text_of(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    chunks = [json.loads(f[6:]) for f in response.text.split("\n\n") if f.startswith("data: {")]
    return "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])


def test_fail_once_then_the_script_answers_as_if_nothing_happened() -> None:
    with OfflineModelServer(script=["first answer"], strict=True) as model:
        fault = model.fail(500)
        failed = post(model.url, "hello")
        retried = post(model.url, "hello")
        chats = model.chat_requests
        model.assert_complete()
    assert failed.status_code == 500
    assert failed.json()["error"]["code"] == "server_error"
    assert text_of(retried) == "first answer"  # the fault consumed no script entry
    assert fault.served == [chats[0]] and model.faulted_requests == [chats[0]]
    assert (fault.remaining, fault.exhausted) == (0, True)
    assert model.faults == [fault]


def test_times_counts_requests_and_none_means_always() -> None:
    with OfflineModelServer() as model:
        model.fail(503, times=2, message="overloaded")
        statuses = [post(model.url, "x").status_code for _ in range(3)]
    assert statuses == [503, 503, 200]
    with OfflineModelServer() as model:
        always = model.fail(429, times=None)
        assert [post(model.url, "x").status_code for _ in range(4)] == [429] * 4
        model.assert_complete()  # an unlimited fault is never "unused"
    assert (always.remaining, always.exhausted, len(always.served)) == (None, False, 4)


def test_error_message_is_sent_in_the_body() -> None:
    with OfflineModelServer() as model:
        model.fail(502, message="bad gateway today")
        response = post(model.url, "x")
    assert response.json()["error"]["message"] == "bad gateway today"


def test_chat_faults_skip_title_requests_and_title_faults_hit_only_them() -> None:
    with OfflineModelServer() as model:
        chat_fault = model.fail(500)
        title_fault = model.fail(500, route="title")
        assert post(model.url, "t", title=True).status_code == 500
        assert text_of(post(model.url, "t", title=True)) == "Offline session"
        assert post(model.url, "c").status_code == 500
        assert text_of(post(model.url, "c")) == "You said: c"
    assert [r.is_title_request for r in title_fault.served] == [True]
    assert [r.is_title_request for r in chat_fault.served] == [False]
    assert [r.index for r in model.faulted_requests] == [0, 2]


def test_match_restricts_a_fault_to_some_requests() -> None:
    with OfflineModelServer() as model:
        fault = model.fail(500, match=r"flaky")
        assert post(model.url, "steady").status_code == 200
        assert post(model.url, "a flaky one").status_code == 500
        assert post(model.url, "a flaky one").status_code == 200
    assert [r.last_user_text for r in fault.served] == ["a flaky one"]


def test_inject_cuts_the_stream_once_then_answers_normally() -> None:
    with OfflineModelServer(script=["whole answer"]) as model:
        fault = model.inject(Reply.cut("partial answer", after_chunks=1, chunk_size=4))
        cut = post(model.url, "x")
        whole = post(model.url, "x")
    assert cut.status_code == 200
    assert "data: [DONE]" not in cut.text and '"content": "part"' in cut.text
    assert '"content": "ial "' not in cut.text
    assert text_of(whole) == "whole answer"
    assert len(fault.served) == 1


def test_models_route_fails_then_lists_the_model() -> None:
    with OfflineModelServer() as model:
        fault = model.fail(500, route="models")
        failed = HTTP.get(f"{model.url}/models")
        listed = HTTP.get(f"{model.url}/models")
        chat = post(model.url, "x")
    assert failed.status_code == 500
    assert [m["id"] for m in listed.json()["data"]] == ["scripted"]
    assert chat.status_code == 200
    assert [r.path for r in fault.served] == ["/v1/models"]


def test_a_cut_on_the_models_route_closes_the_connection_without_an_answer() -> None:
    with OfflineModelServer() as model:
        model.inject(Reply.cut("ignored"), route="models")
        with pytest.raises(httpx.RemoteProtocolError):
            HTTP.get(f"{model.url}/models")
        assert HTTP.get(f"{model.url}/models").status_code == 200


def test_a_hung_fault_is_released_by_stop() -> None:
    model = OfflineModelServer().start()
    model.inject(Reply.hang())
    outcome: list[BaseException] = []

    def call() -> None:
        try:
            post(model.url, "x")
        except httpx.HTTPError as exc:
            outcome.append(exc)

    caller = threading.Thread(target=call)
    caller.start()
    model.wait_for_chat_requests(1)
    started = time.monotonic()
    model.stop()
    caller.join(10)
    assert not caller.is_alive() and len(outcome) == 1
    assert time.monotonic() - started < 2


def test_a_fault_with_uses_left_fails_assert_complete() -> None:
    with OfflineModelServer(script=["a"]) as model:
        model.fail(500, times=2)
        post(model.url, "x")
        with pytest.raises(UnconsumedModelSteps) as caught:
            model.assert_complete()
    assert caught.value.descriptions == [
        "script entry 1 of 1: text 'a'",
        "fault HTTP 500 error on route 'chat' (served 1 of 2)",
    ]


def test_concurrent_requests_share_a_single_use_fault() -> None:
    with OfflineModelServer() as model:
        fault = model.fail(500, times=1)
        barrier = threading.Barrier(6)
        statuses: list[int] = []

        def call() -> None:
            barrier.wait()
            statuses.append(post(model.url, "x").status_code)

        threads = [threading.Thread(target=call) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
    assert sorted(statuses) == [200] * 5 + [500]
    assert len(fault.served) == 1


def test_faults_given_to_the_constructor_and_in_json() -> None:
    with OfflineModelServer(faults=[Fault(Reply.error(418), times=1)]) as model:
        assert post(model.url, "x").status_code == 418
        assert post(model.url, "x").status_code == 200
    data = {
        "faults": [
            {"status": 500, "message": "boom", "times": 2},
            {"reply": {"text": "partial", "cut_after": 1}, "route": "chat", "match": "cut me"},
            {"status": 503, "route": "models", "times": None},
        ]
    }
    with OfflineModelServer.from_json(data) as model:
        assert [post(model.url, "x").status_code for _ in range(3)] == [500, 500, 200]
        assert "[DONE]" not in post(model.url, "cut me").text
        assert [HTTP.get(f"{model.url}/models").status_code for _ in range(2)] == [503, 503]
        assert post(model.url, "cut me").text.endswith("data: [DONE]\n\n")


def test_the_process_form_takes_faults_from_json() -> None:
    with OfflineModelProcess(rules={"faults": [{"status": 500}], "script": ["after the fault"]}) as model:
        assert post(model.url, "x").status_code == 500
        assert text_of(post(model.url, "x")) == "after the fault"
        report = model.report()
    assert report["faulted"] == ["request #0: last user message 'x'"]
    assert report["unused"] == []


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda m: m.fail(200), r"status must be an HTTP error status \(an int in 400..599\), got 200"),
        (lambda m: m.fail("500"), r"got '500'"),
        (lambda m: m.fail(500, times=0), r"times must be an int >= 1 or None \(always\), got 0"),
        (lambda m: m.fail(500, times=True), r"got True"),
        (
            lambda m: m.fail(500, route="chats"),
            r"route must be one of \['chat', 'title', 'models'\], got 'chats'",
        ),
        (lambda m: m.inject(Reply.text("hi"), route="models"), r"on route 'models' must be an error"),
        (lambda m: m.inject(42), r"expected a reply"),
        (lambda m: m.inject("x", match=42), r"expected a regex or a callable"),
    ],
)
def test_bad_fault_arguments_are_config_errors(call: Any, message: str) -> None:
    model = OfflineModelServer()  # never started: the error comes first
    with pytest.raises(OpenCodeConfigError, match=message):
        call(model)
    assert model.faults == []


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"status": 500, "reply": "x"}, r"has 'status' \(and optional 'message'\) or 'reply'"),
        ({"route": "chat"}, r"has 'status'"),
        ({"status": 500, "when": 1}, r"has 'status'"),
        ({"reply": "x", "message": "m"}, r"'message' goes with 'status'"),
        ({"status": 99}, r"status must be an HTTP error status"),
        ({"reply": {"bogus": 1}}, r"unknown keys \['bogus'\]"),
        ("500", r"a fault is a JSON object"),
    ],
)
def test_bad_fault_json_is_a_config_error(data: Any, message: str) -> None:
    with pytest.raises(OpenCodeConfigError, match=message):
        fault_from_json(data)


def test_faults_that_are_not_fault_objects_or_lists_are_config_errors() -> None:
    with pytest.raises(OpenCodeConfigError, match="faults must be Fault objects"):
        OfflineModelServer(faults=[{"status": 500}])  # type: ignore[list-item]
    with pytest.raises(OpenCodeConfigError, match="'faults' must be a JSON list, got dict"):
        OfflineModelServer.from_json({"faults": {"status": 500}})
