"""Fuzz (hypothesis): the event parser and the SSE path never raise an undocumented exception, never hang.

* ``parse_event_line`` is documented never to raise: random text and bytes, truncated real
  lines, random JSON shaped like events (with NaN/Infinity and huge numbers, which Python's json
  accepts) all give an :class:`Event`; every typed accessor works on it, and the result built from
  such events (``aggregate_run_result`` (with its diagnosis), ``run_result_fuzzy_text``) is built
  without an exception.
* The SSE path of a server (``Transport.global_events`` -> ``OpenCodeServer._run_bus`` ->
  dispatch to session subscriptions -> ``TurnTracker`` -> ``aggregate_server_result``) is fed
  random, truncated and malformed streams over a mock HTTP transport (the stream ends, or breaks
  with a network error). The only exception allowed out is :class:`OpenCodeServerError`; the bus
  must end, and every subscriber must be *told* (a waiting turn raises instead of hanging).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from opencode_wrapper import Event, OpenCodeServerError, aggregate_run_result, parse_event_line
from opencode_wrapper._http import Transport
from opencode_wrapper._turn.tracker import TurnTracker
from opencode_wrapper.results import aggregate_server_result, run_result_fuzzy_text
from opencode_wrapper.server import OpenCodeServer
from reliability._support import scaled

# 5000 examples of the SSE path take minutes on a busy 2-core machine: more than pytest's default.
pytestmark = pytest.mark.timeout(scaled(180, 1800))

EXAMPLES = scaled(150, 5000)
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,  # a hang is caught by the asyncio timeout below, with a clear message
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=True,  # the same examples every run (CI-stable); raise max_examples to dig deeper
)
HANG_S = 10.0

REAL_LINES = [
    '{"type":"step_start","timestamp":1795474381383,"sessionID":"ses_df56","part":{"id":"prt_1",'
    '"messageID":"msg_1","sessionID":"ses_df56","snapshot":"fe8a","type":"step-start"}}',
    '{"type":"text","timestamp":1795474381384,"sessionID":"ses_df56","part":{"id":"prt_2","messageID":"msg_1",'
    '"sessionID":"ses_df56","type":"text","text":"Hello","time":{"start":1,"end":2}}}',
    '{"type":"tool_use","timestamp":1,"sessionID":"ses_df56","part":{"type":"tool","tool":"bash","callID":"c1",'
    '"state":{"status":"completed","input":{"command":"echo hi"},"output":"hi\\n","metadata":{"exit":0}}}}',
    '{"type":"step_finish","timestamp":1,"sessionID":"ses_df56","part":{"reason":"stop","type":"step-finish",'
    '"tokens":{"total":15,"input":10,"output":5,"reasoning":0,"cache":{"write":0,"read":0}},"cost":0}}',
    '{"type":"error","timestamp":1,"sessionID":"ses_df56","error":{"name":"APIError","data":{"message":"boom",'
    '"statusCode":500,"isRetryable":true}}}',
    '{"type":"error","error":{"_tag":"BadRequest"}}',
]
KEYS = [
    "type", "part", "error", "state", "sessionID", "tokens", "cost", "text", "tool", "status", "output",
    "data", "statusCode", "message", "name", "_tag", "reason", "properties", "info", "parentID", "id",
    "messageID", "timestamp", "total", "input", "cache", "read", "write", "metadata", "time", "completed",
    "role", "field", "delta", "partID", "payload", "directory", "questions", "patterns", "structured",
]  # fmt: skip
TYPES = [
    "step_start", "text", "reasoning", "tool_use", "step_finish", "error", "session.status", "session.idle",
    "session.error", "session.created", "session.updated", "message.updated", "message.part.updated",
    "message.part.delta", "permission.asked", "question.asked", "server.heartbeat", "server.connected",
    "sync",
]  # fmt: skip
SESSIONS = ["ses_a", "ses_b", "ses_child"]

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
    | st.sampled_from(TYPES + SESSIONS + ["msg_x", "idle", "busy", "retry", "assistant", "user", "tool"])
)
shaped = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=6), inner, max_size=6)
    ),
    max_leaves=25,
)
events = st.fixed_dictionaries(
    {"type": st.sampled_from(TYPES) | st.text(max_size=8)},
    optional={
        "sessionID": st.sampled_from(SESSIONS) | st.text(max_size=5),
        "part": shaped,
        "error": shaped,
        "properties": st.dictionaries(st.sampled_from(KEYS), shaped, max_size=6),
        "timestamp": scalars,
    },
)


def _touch(event: Event) -> None:
    """Every typed accessor, as user code would call them."""
    _ = (event.type, event.timestamp, event.properties, event.session_id)
    part = event.part
    if part is not None:
        _ = (part.id, part.type, part.text, part.tool, part.call_id, part.message_id, part.session_id)
        _ = (part.reason, part.cost, part.tokens)
        state = part.state
        _ = (state.status, state.input, state.output, state.error, state.title, state.metadata)
    error = event.error
    if error is not None:
        _ = (error.name, error.data, error.message, error.status_code, error.is_retryable)


def _json_line(value: Any) -> str:
    return json.dumps(value, allow_nan=True)


lines = st.one_of(
    st.text(max_size=200),
    st.binary(max_size=200),
    events.map(_json_line),
    st.tuples(st.sampled_from(REAL_LINES), st.integers(0, 400)).map(lambda t: t[0][: t[1]]),
    st.tuples(events.map(_json_line), st.integers(0, 400)).map(lambda t: t[0][: t[1]]),
    st.sampled_from(
        [
            '{"a": ' + "1" * 5000 + "}",  # beyond Python's int-digits limit
            '{"type":"step_finish","part":{"tokens":{"total":Infinity,"input":NaN},"cost":-Infinity}}',
            '{"type":"step_finish","part":{"tokens":{"output":1e400,"cache":{"read":-1e999}}}}',
            "[" * 100_000,
            '{"type":"text","part":{"text":"\\ud800"}}',
            "\x00\xff\ufeff",
        ]
    ),
)


@FUZZ
@given(st.lists(lines, min_size=1, max_size=8), st.integers(-20, 300), st.text(max_size=100))
def test_parse_event_line_never_raises(raw: list[str | bytes], exit_code: int, stderr: str) -> None:
    parsed = []
    for line in raw:
        event = parse_event_line(line)
        assert isinstance(event, Event)
        _touch(event)
        json.dumps(event, allow_nan=True)
        parsed.append(event)
    texts = [r if isinstance(r, str) else r.decode("utf-8", "replace") for r in raw]
    result = aggregate_run_result(events=parsed, raw_stdout_lines=texts, exit_code=exit_code, stderr=stderr)
    run_result_fuzzy_text(result)
    repr(result)
    assert result.ok is (result.error is None)
    if exit_code != 0:
        assert not result.ok, "a non-zero exit is never success"


# ----------------------------------------------------------------------------- SSE


def _frame(payload: Any, wrap: bool) -> bytes:
    body = {"directory": "/ws", "project": "p", "payload": payload} if wrap else payload
    return b"data: " + json.dumps(body, allow_nan=True).encode() + b"\n\n"


def _created(session: str, parent: str) -> bytes:
    info = {"id": session, "sessionID": session, "parentID": parent}
    return _frame({"type": "session.created", "properties": {"sessionID": session, "info": info}}, True)


sse_pieces = st.one_of(
    st.binary(max_size=64),
    st.tuples(events, st.booleans()).map(lambda t: _frame(t[0], t[1])),
    st.tuples(shaped, st.booleans()).map(lambda t: _frame(t[0], t[1])),
    st.sampled_from(
        [
            b": heartbeat\n",
            b"event: message\n",
            b"id: 7\n",
            b"retry: 10\n",
            b"retry: x\n",
            b"data: [DONE]\n\n",
            b"\r\n",
            b"data:\n\n",
            b"data: {\n\n",
            b"data: " + b"1" * 5000 + b"\n\n",
            b"data: \xff\xfe\n\n",
            b"data: " + b"[" * 50_000 + b"\n\n",
            _frame({"type": "server.heartbeat", "properties": {}}, True),
            _frame(
                {"type": "session.created", "properties": {"info": {"id": "ses_child", "parentID": "ses_a"}}},
                True,
            ),
            _frame(
                {"type": "session.created", "properties": {"info": {"id": "ses_a", "parentID": "ses_child"}}},
                True,
            ),
            _frame(
                {"type": "session.status", "properties": {"sessionID": "ses_a", "status": {"type": "idle"}}},
                True,
            ),
        ]
    ),
)
endings = st.sampled_from(["eof", "read_error", "protocol_error"])


class _Body(httpx.AsyncByteStream):
    def __init__(self, data: bytes, cuts: list[int], ending: str) -> None:
        self._data = data
        self._cuts = sorted({c % (len(data) + 1) for c in cuts} | {len(data)})
        self._ending = ending

    async def __aiter__(self) -> AsyncIterator[bytes]:
        start = 0
        for cut in self._cuts:
            if cut > start:
                yield self._data[start:cut]
                start = cut
        if self._ending == "read_error":
            raise httpx.ReadError("connection reset by fuzz")
        if self._ending == "protocol_error":
            raise httpx.RemoteProtocolError("peer closed connection without sending complete message body")


async def _through_the_bus(data: bytes, cuts: list[int], ending: str) -> tuple[list[Event], int]:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200, headers={"content-type": "text/event-stream"}, stream=_Body(data, cuts, ending)
        )

    server = OpenCodeServer.attach("http://fuzz.invalid:1", password="pw")
    transport = Transport(server.url or "", username="opencode", password="pw")
    await transport.aclose()
    transport._client = httpx.AsyncClient(base_url=transport.base_url, transport=httpx.MockTransport(handler))
    server._transport = transport
    server._state = "running"
    server._failed = asyncio.Event()
    subs = [server.subscribe(sid) for sid in ("ses_a", "ses_b")]
    connected: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    try:
        await asyncio.wait_for(server._run_bus(connected), HANG_S)
        if connected.done():
            connected.exception()  # start() would read it; here it is only retrieved
        received: list[Event] = []
        told = 0
        for sub in subs:
            while True:
                try:
                    event = await sub.get(0.5)
                except OpenCodeServerError:
                    told += 1
                    break
                assert event is not None, "the stream ended but a subscriber was left waiting"
                received.append(event)
        return received, told
    finally:
        await transport.aclose()


@FUZZ
@given(st.lists(sse_pieces, max_size=12), st.lists(st.integers(0, 10_000), max_size=6), endings)
def test_sse_path_never_raises_or_hangs(pieces: list[bytes], cuts: list[int], ending: str) -> None:
    data = b"".join(pieces)
    received, told = asyncio.run(_through_the_bus(data, cuts, ending))
    assert told == 2, "every subscriber learns that the stream is gone"
    for session_id in ("ses_a", "ses_b"):
        tracker = TurnTracker(session_id, "msg_x")
        for event in received:
            _touch(event)
            tracker.feed(event)
        _ = (tracker.finished, tracker.refused, tracker.refusal())
        tracker.server_idle()
        tracker.message_exists(False)
        result = aggregate_server_result(
            events=[dict(e) for e in received], session_id=session_id, user_message_id="msg_x"
        )
        repr(result)
        aggregate_server_result(events=list(received), session_id=None)


@pytest.mark.parametrize("ending", ["eof", "read_error", "protocol_error"])
def test_an_empty_or_broken_stream_fails_the_waiters(ending: str) -> None:
    received, told = asyncio.run(_through_the_bus(b"", [], ending))
    assert received == [] and told == 2
