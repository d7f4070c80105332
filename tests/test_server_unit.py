"""The transport and the event bus against a tiny fake ``opencode serve`` (no binary needed).

The fake speaks just enough HTTP: ``GET /global/event`` streams the SSE frames a test pushes, other
routes answer from a table. It checks basic auth like opencode does.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from opencode_wrapper import _http as _transport
from opencode_wrapper._http import ServerHTTPError, Transport
from opencode_wrapper.errors import OpenCodeServerError
from opencode_wrapper.events import make_event
from opencode_wrapper.server import OpenCodeServer

PASSWORD = "s3cret-fake"


class FakeServer:
    def __init__(self) -> None:
        self.frames: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.routes: dict[tuple[str, str], tuple[int, Any]] = {
            ("GET", "/global/health"): (200, {"healthy": True, "version": "1.18.33"})
        }
        self.requests: list[tuple[str, str, dict[str, str], bytes]] = []
        self.silent = False
        self._server: asyncio.Server | None = None
        self.url = ""

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        await self.frames.put(None)

    def push(self, payload: dict[str, Any], directory: str = "/ws") -> None:
        frame = {"directory": directory, "payload": payload}
        self.frames.put_nowait(f"data: {json.dumps(frame)}\n\n".encode())

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode().split("\r\n")
            method, target, _ = lines[0].split(" ", 2)
            headers = {
                k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)
            }
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            path = target.split("?", 1)[0]
            self.requests.append((method, target, headers, body))
            expected = "Basic " + base64.b64encode(f"opencode:{PASSWORD}".encode()).decode()
            if headers.get("authorization") != expected:
                writer.write(b'HTTP/1.1 401 Unauthorized\r\nwww-authenticate: Basic realm="Secure Area"\r\n')
                writer.write(b"content-length: 0\r\nconnection: close\r\n\r\n")
            elif (method, path) == ("GET", "/global/event"):
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n"
                )
                connected = {"payload": {"type": "server.connected", "properties": {}}}
                writer.write(f"data: {json.dumps(connected)}\n\n".encode())
                while not self.silent:
                    frame = await self.frames.get()
                    if frame is None:
                        break
                    writer.write(frame)
                    await writer.drain()
                while self.silent:
                    await asyncio.sleep(0.05)
            else:
                status, payload = self.routes.get((method, path), (404, {"name": "NotFoundError"}))
                data = json.dumps(payload).encode()
                writer.write(f"HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n".encode())
                writer.write(f"content-length: {len(data)}\r\nconnection: close\r\n\r\n".encode() + data)
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


@pytest_asyncio.fixture
async def fake() -> AsyncIterator[FakeServer]:
    server = FakeServer()
    await server.start()
    yield server
    await server.stop()


def event(kind: str, session_id: str, **props: Any) -> dict[str, Any]:
    return {"id": "evt_1", "type": kind, "properties": {"sessionID": session_id, **props}}


# ----------------------------------------------------------------------------- transport


async def test_requests_are_authenticated_and_errors_are_clear(fake: FakeServer) -> None:
    fake.routes[("GET", "/session/status")] = (200, {"ses_a": {"type": "busy"}})
    fake.routes[("POST", "/session/ses_x/abort")] = (
        500,
        {"name": "UnknownError", "data": {"message": "boom"}},
    )
    transport = Transport(fake.url, username="opencode", password=PASSWORD)
    try:
        assert await transport.request("GET", "/session/status", params={"directory": "/w s"}) == {
            "ses_a": {"type": "busy"}
        }
        assert fake.requests[-1][1] == "/session/status?directory=%2Fw+s"
        with pytest.raises(ServerHTTPError) as caught:
            await transport.request("POST", "/session/ses_x/abort", json_body={"a": 1})
        assert caught.value.status_code == 500 and "boom" in str(caught.value)
        assert json.loads(fake.requests[-1][3]) == {"a": 1}
    finally:
        await transport.aclose()
    anonymous = Transport(fake.url, username="opencode", password="wrong")
    try:
        with pytest.raises(ServerHTTPError, match=r"401 \(wrong or missing credentials\)") as caught:
            await anonymous.request("GET", "/session/status")
        assert "wrong" not in caught.value.body
    finally:
        await anonymous.aclose()


async def test_unreachable_server() -> None:
    transport = Transport("http://127.0.0.1:9", username="opencode", password="x")
    try:
        with pytest.raises(OpenCodeServerError, match="could not reach"):
            await transport.request("GET", "/global/health")
    finally:
        await transport.aclose()


async def test_event_stream_unwraps_payloads_and_skips_sync_duplicates(fake: FakeServer) -> None:
    transport = Transport(fake.url, username="opencode", password=PASSWORD)
    fake.push(event("session.idle", "ses_a"))
    fake.push({"type": "sync", "syncEvent": {"type": "session.updated.1"}})
    fake.frames.put_nowait(b"data: not json\n\n")
    fake.push(event("session.status", "ses_a", status={"type": "idle"}))
    fake.frames.put_nowait(None)
    try:
        seen = [payload["type"] async for payload in transport.global_events()]
    finally:
        await transport.aclose()
    assert seen == ["server.connected", "session.idle", "session.status"]


async def test_a_silent_event_stream_counts_as_broken(
    fake: FakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_transport, "EVENT_READ_TIMEOUT_S", 0.5)
    transport = Transport(fake.url, username="opencode", password=PASSWORD)
    fake.silent = True
    try:
        with pytest.raises(OpenCodeServerError, match="silent"):
            async for _ in transport.global_events():
                pass
    finally:
        fake.silent = False
        await transport.aclose()


# ----------------------------------------------------------------------------- the bus


async def test_events_are_routed_by_session_and_sub_agent(fake: FakeServer) -> None:
    async with OpenCodeServer.attach(fake.url, password=PASSWORD) as server:
        a, b = server.subscribe("ses_a"), server.subscribe("ses_b")
        fake.push(event("session.status", "ses_a", status={"type": "busy"}))
        fake.push(event("session.status", "ses_b", status={"type": "busy"}))
        fake.push(event("session.status", "ses_unknown", status={"type": "busy"}))
        fake.push(event("session.created", "ses_child", info={"id": "ses_child", "parentID": "ses_a"}))
        fake.push(event("permission.asked", "ses_child", id="per_1"))
        fake.push({"type": "server.heartbeat", "properties": {}})
        got_a = [await a.get(5) for _ in range(4)]
        got_b = [await b.get(5) for _ in range(2)]
        assert [(e.type, e.session_id) for e in got_a if e] == [
            ("session.status", "ses_a"),
            ("session.created", "ses_child"),
            ("permission.asked", "ses_child"),
            ("server.heartbeat", None),
        ]
        assert [(e.type, e.session_id) for e in got_b if e] == [
            ("session.status", "ses_b"),
            ("server.heartbeat", None),
        ]
        assert await a.get(0.05) is None and await b.get(0.05) is None
        server.unsubscribe(a)
        server.unsubscribe(b)


async def test_a_broken_stream_fails_every_waiter_quickly(fake: FakeServer) -> None:
    server = OpenCodeServer.attach(fake.url, password=PASSWORD)
    await server.start()
    subs = [server.subscribe(f"ses_{i}") for i in range(5)]
    fake.push(event("session.idle", "ses_0"))
    first = await subs[0].get(5)
    assert first is not None and first.type == "session.idle"
    broke_at = time.monotonic()
    fake.frames.put_nowait(None)  # the server ends the stream
    for sub in subs:
        with pytest.raises(OpenCodeServerError, match="closed its event stream"):
            await sub.get(5)
    assert time.monotonic() - broke_at < 2
    assert not server.alive
    with pytest.raises(OpenCodeServerError):
        server.subscribe("ses_new")
    await server.aclose()


async def test_the_password_is_scrubbed_from_events(fake: FakeServer) -> None:
    async with OpenCodeServer.attach(fake.url, password=PASSWORD) as server:
        sub = server.subscribe("ses_a")
        fake.push(event("message.part.updated", "ses_a", part={"type": "tool", "output": f"PW={PASSWORD}\n"}))
        got = await sub.get(5)
        assert got is not None and got.properties["part"]["output"] == "PW=***\n"
        server.unsubscribe(sub)


async def test_attach_with_wrong_password_is_refused(fake: FakeServer) -> None:
    with pytest.raises(ServerHTTPError) as caught:
        async with OpenCodeServer.attach(fake.url, password="nope"):
            pass
    assert caught.value.status_code == 401


def test_repr_hides_the_password() -> None:
    server = OpenCodeServer.attach("http://127.0.0.1:1", password=PASSWORD)
    assert PASSWORD not in repr(server) and "password=***" in repr(server)
    assert server._scrub(f"oops {PASSWORD} leaked") == "oops *** leaked"


def test_typed_events_from_the_bus() -> None:
    ev = make_event(
        event("message.part.updated", "ses_a", part={"id": "prt_1", "type": "text", "text": "hi"})
    )
    assert ev.part is not None and ev.part.text == "hi" and ev.session_id == "ses_a"


@pytest.mark.parametrize(
    ("health", "fragment"),
    [
        (
            (200, {"healthy": True, "version": "2.1.0"}),
            r"opencode 2\.1\.0 .* is not supported.*>=1\.18\.0, <2\.0\.0",
        ),
        ((404, {"name": "NotFoundError"}), r"no GET /global/health route .* not an opencode 1\.x server"),
        ((200, {"healthy": True}), r"did not say its version"),
    ],
)
async def test_an_unsupported_server_api_is_refused_at_start(
    fake: FakeServer, health: tuple[int, Any], fragment: str
) -> None:
    from opencode_wrapper.errors import OpenCodeVersionError

    fake.routes[("GET", "/global/health")] = health
    server = OpenCodeServer.attach(fake.url, password=PASSWORD)
    with pytest.raises(OpenCodeVersionError, match=fragment) as refused:
        async with server:
            pass
    assert refused.value.supported == ">=1.18.0, <2.0.0"
    assert not any(path.startswith("/global/event") for _, path, _, _ in fake.requests)  # refused first
