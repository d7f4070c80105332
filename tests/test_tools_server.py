"""The tool server driven by the ``mcp`` package's own client (and by raw HTTP where it must)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from opencode_wrapper.errors import OpenCodeConfigError
from opencode_wrapper.tools import Tool, ToolCallRecord, ToolServer, tool

PROTOCOL = "2025-06-18"  # the handshake era opencode's TypeScript client speaks


@contextlib.asynccontextmanager
async def connect(server: ToolServer, *, mode: str = "legacy") -> AsyncIterator[Client]:
    async with (
        httpx2.AsyncClient(headers=server.headers) as http,
        Client(streamable_http_client(server.url, http_client=http), mode=mode) as client,
    ):
        yield client


def other_tasks() -> list[asyncio.Task[Any]]:
    return [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]


def tool_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("opencode-tool")]


@tool
async def add(a: int, b: int = 2) -> int:
    """Add two numbers."""
    return a + b


@tool
def fail(reason: str) -> str:
    """Always raises."""
    raise ValueError(f"cannot: {reason}")


@tool
def leave(code: int) -> None:
    """Calls sys.exit."""
    raise SystemExit(code)


@tool
def describe(p: dict[str, int]) -> dict[str, Any]:
    """Returns a JSON value."""
    return {"keys": sorted(p), "total": sum(p.values())}


class Gate:
    """A long-running async tool whose start and end the test can see and steer."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.release = asyncio.Event()
        self.cancelled = asyncio.Event()
        self.tool: Tool = tool(name="wait")(self.wait)

    async def wait(self, label: str = "") -> str:
        """Wait until released."""
        self.started.set()
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        return f"released {label}".strip()


# ----------------------------------------------------------------------------- calls


async def test_list_and_call_success_error_and_bad_arguments() -> None:
    async with ToolServer([add, fail, describe, leave]) as server, connect(server) as client:
        listed = await client.list_tools()
        ok = await client.call_tool("add", {"a": 40})
        coerced = await client.call_tool("add", {"a": "1", "b": "1"})
        raised = await client.call_tool("fail", {"reason": "no"})
        bad = await client.call_tool("add", {"a": "one", "c": 1})
        as_json = await client.call_tool("describe", {"p": {"b": 2, "a": 1}})
        unknown = await client.call_tool("nope", {})
        exited = await client.call_tool("leave", {"code": 3})
        still_up = await client.call_tool("add", {"a": 0})
    assert [t.name for t in listed.tools] == ["add", "fail", "describe", "leave"]
    assert listed.tools[0].description == "Add two numbers."
    assert listed.tools[0].input_schema == add.input_schema
    assert (ok.is_error, ok.content[0].text) == (False, "42")  # type: ignore[union-attr]
    assert coerced.content[0].text == "2"  # type: ignore[union-attr]
    assert (raised.is_error, raised.content[0].text) == (True, "ValueError: cannot: no")  # type: ignore[union-attr]
    assert bad.is_error
    assert bad.content[0].text == (  # type: ignore[union-attr]
        "Invalid arguments for tool 'add': a: Input should be a valid integer, unable to parse string as an "
        "integer (got 'one'); c: Extra inputs are not permitted (got 1)"
    )
    assert json.loads(as_json.content[0].text) == {"keys": ["a", "b"], "total": 3}  # type: ignore[union-attr]
    assert unknown.is_error and "Unknown tool 'nope'" in unknown.content[0].text  # type: ignore[union-attr]
    assert exited.is_error and exited.content[0].text == "SystemExit: 3"  # type: ignore[union-attr]
    assert still_up.content[0].text == "2"  # type: ignore[union-attr]
    calls = server.calls
    assert [(c.tool, c.outcome) for c in calls] == [
        ("add", "ok"),
        ("add", "ok"),
        ("fail", "error"),
        ("add", "invalid_arguments"),
        ("describe", "ok"),
        ("nope", "unknown_tool"),
        ("leave", "error"),
        ("add", "ok"),
    ]
    assert calls[0].arguments == {"a": 40} and calls[0].output == "42" and calls[0].duration_s >= 0
    assert isinstance(calls[2].exception, ValueError) and calls[2].error == "ValueError: cannot: no"
    assert calls[0].session_id and len({c.session_id for c in calls}) == 1


async def test_the_modern_protocol_client_works_too() -> None:
    async with ToolServer([add]) as server, connect(server, mode="auto") as client:
        result = await client.call_tool("add", {"a": 1})
    assert result.content[0].text == "3"  # type: ignore[union-attr]


async def test_a_plain_function_runs_in_a_worker_thread() -> None:
    seen: list[str] = []

    @tool
    def where() -> str:
        """Which thread runs me."""
        seen.append(threading.current_thread().name)
        return "ok"

    async with ToolServer([where]) as server, connect(server) as client:
        await client.call_tool("where", {})
    assert seen[0].startswith("opencode-tool") and seen[0] != threading.main_thread().name


async def test_many_sessions_call_at_once() -> None:
    arrived: list[str] = []
    everyone = asyncio.Event()

    @tool
    async def meet(who: str) -> str:
        """Returns once both callers are inside."""
        arrived.append(who)
        if len(arrived) == 2:
            everyone.set()
        await everyone.wait()
        return f"met {who}"

    async with ToolServer([meet]) as server, connect(server) as one, connect(server) as two:
        first, second = await asyncio.wait_for(
            asyncio.gather(one.call_tool("meet", {"who": "a"}), two.call_tool("meet", {"who": "b"})), 30
        )
    assert (first.content[0].text, second.content[0].text) == ("met a", "met b")  # type: ignore[union-attr]
    assert len({c.session_id for c in server.calls}) == 2


async def test_long_calls_send_progress_that_keeps_them_alive() -> None:
    release = asyncio.Event()
    progress: list[float] = []

    @tool
    async def long() -> str:
        """Runs until the test has seen progress."""
        await release.wait()
        return "done"

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append(value)
        if len(progress) == 3:
            release.set()

    async with ToolServer([long], progress_interval_s=0.05) as server, connect(server) as client:
        result = await asyncio.wait_for(client.call_tool("long", {}, progress_callback=on_progress), 30)
    assert result.content[0].text == "done"  # type: ignore[union-attr]
    assert progress[:3] == [1.0, 2.0, 3.0]


async def test_on_call_sees_every_record_and_a_failing_callback_is_contained() -> None:
    records: list[ToolCallRecord] = []

    def on_call(record: ToolCallRecord) -> None:
        records.append(record)
        raise RuntimeError("callback bug")

    async with ToolServer([add], on_call=on_call, max_recorded_calls=1) as server, connect(server) as client:
        first = await client.call_tool("add", {"a": 1})
        second = await client.call_tool("add", {"a": 2})
    assert (first.content[0].text, second.content[0].text) == ("3", "4")  # type: ignore[union-attr]
    assert [r.output for r in records] == ["3", "4"]
    assert [r.output for r in server.calls] == ["4"]  # the record keeps the newest max_recorded_calls


# ----------------------------------------------------------------------------- HTTP and auth


async def test_requests_without_the_token_get_401() -> None:
    async with ToolServer([add]) as server, httpx.AsyncClient() as http:
        body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
        none = await http.post(server.url, json=body)
        wrong = await http.post(server.url, json=body, headers={"Authorization": "Bearer " + "x" * 43})
        basic = await http.post(server.url, json=body, auth=("user", server.token))
        other_path = await http.get(server.url.replace("/mcp", "/other"), headers=server.headers)
        async with connect(server) as client:  # the right token works
            ok = await client.call_tool("add", {"a": 0})
    for response in (none, wrong, basic):
        assert response.status_code == 401
        assert response.headers["www-authenticate"].startswith("Bearer")
    assert other_path.status_code == 404
    assert ok.content[0].text == "2"  # type: ignore[union-attr]
    assert server.calls and all(c.tool == "add" for c in server.calls)


async def test_a_foreign_host_header_is_refused() -> None:
    async with ToolServer([add]) as server, httpx.AsyncClient(headers=server.headers) as http:
        response = await http.post(
            server.url,
            json={"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}},
            headers={"Host": "evil.example:80", "Accept": "application/json, text/event-stream"},
        )
    assert response.status_code == 421  # DNS-rebinding protection of the mcp SDK


# ----------------------------------------------------------------------------- cancellation


async def test_an_mcp_cancellation_cancels_the_coroutine() -> None:
    gate = Gate()
    async with ToolServer([gate.tool]) as server, connect(server) as client:
        call = asyncio.create_task(client.call_tool("wait", {"label": "x"}))
        await asyncio.wait_for(gate.started.wait(), 30)
        call.cancel()  # the mcp client sends notifications/cancelled
        await asyncio.wait_for(gate.cancelled.wait(), 30)
        with pytest.raises(asyncio.CancelledError):
            await call
        gate.release.set()
        after = await client.call_tool("wait", {"label": "y"})
    assert after.content[0].text == "released y"  # type: ignore[union-attr]
    cancelled = server.calls[0]
    assert (cancelled.outcome, cancelled.error) == ("cancelled", "cancelled by the client")


async def _open_session(http: httpx.AsyncClient, server: ToolServer) -> dict[str, str]:
    headers = {**server.headers, "Accept": "application/json, text/event-stream"}
    init = await http.post(
        server.url,
        headers=headers,
        json={
            "jsonrpc": "2.0",
            "id": 0,
            "method": "initialize",
            "params": {
                "protocolVersion": PROTOCOL,
                "capabilities": {},
                "clientInfo": {"name": "t", "version": "0"},
            },
        },
    )
    assert init.status_code == 200, init.text
    headers |= {"mcp-session-id": init.headers["mcp-session-id"], "mcp-protocol-version": PROTOCOL}
    done = await http.post(
        server.url, headers=headers, json={"jsonrpc": "2.0", "method": "notifications/initialized"}
    )
    assert done.status_code == 202
    return headers


async def test_a_client_that_disconnects_mid_call_cancels_it() -> None:
    gate = Gate()
    async with ToolServer([gate.tool]) as server, httpx.AsyncClient(timeout=30) as http:
        headers = await _open_session(http, server)
        call = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "tools/call",
            "params": {"name": "wait", "arguments": {}},
        }
        async with http.stream("POST", server.url, headers=headers, json=call) as response:
            assert response.status_code == 200
            await asyncio.wait_for(gate.started.wait(), 30)
        # Leaving the block closed the response stream (the connection) before the answer came.
        await asyncio.wait_for(gate.cancelled.wait(), 30)
    assert [(c.outcome, c.error) for c in server.calls] == [("cancelled", "client disconnected")]


async def test_stopping_cancels_calls_in_flight_and_waits_for_threads() -> None:
    gate = Gate()
    thread_started, thread_release, thread_done = threading.Event(), threading.Event(), threading.Event()

    @tool
    def blocking() -> str:
        """A plain function: cannot be interrupted."""
        thread_started.set()
        try:
            thread_release.wait(60)
        finally:
            thread_done.set()
        return "finished"

    before = set(other_tasks())
    server = ToolServer([gate.tool, blocking], shutdown_timeout_s=120)
    await server.start()
    async with connect(server) as client:
        calls = [asyncio.create_task(client.call_tool(name, {})) for name in ("wait", "blocking")]
        await asyncio.wait_for(gate.started.wait(), 30)
        await asyncio.to_thread(thread_started.wait, 30)
        stopping = asyncio.create_task(server.stop())
        await asyncio.wait_for(gate.cancelled.wait(), 30)
        assert not stopping.done()  # still waiting for the thread, which is blocked
        thread_release.set()
        await asyncio.wait_for(stopping, 30)
        assert thread_done.is_set()
        await asyncio.gather(*calls, return_exceptions=True)
    assert sorted((c.tool, c.outcome, c.error) for c in server.calls) == [
        ("blocking", "cancelled", "server stopped"),
        ("wait", "cancelled", "server stopped"),
    ]
    assert not server.running and tool_threads() == []
    assert [t for t in other_tasks() if t not in before] == []


async def test_stop_does_not_wait_forever_for_calls_that_will_not_end(
    caplog: pytest.LogCaptureFixture,
) -> None:
    started, release, ended = asyncio.Event(), asyncio.Event(), asyncio.Event()
    thread_started, thread_release = threading.Event(), threading.Event()

    @tool
    async def stubborn() -> str:
        """Shields itself from its cancellation and carries on."""
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            with anyio.CancelScope(shield=True):
                await release.wait()
            raise
        finally:
            ended.set()
        return "late"

    @tool
    def stuck() -> str:
        """A thread that will not finish soon."""
        thread_started.set()
        thread_release.wait(60)
        return "late"

    before = set(other_tasks())
    server = ToolServer([stubborn, stuck], shutdown_timeout_s=0.5)
    await server.start()
    async with connect(server) as client:
        calls = [asyncio.create_task(client.call_tool(name, {})) for name in ("stubborn", "stuck")]
        await asyncio.wait_for(started.wait(), 30)
        await asyncio.to_thread(thread_started.wait, 30)
        with caplog.at_level("WARNING", logger="opencode_wrapper.tools"):
            await asyncio.wait_for(server.stop(), 30)
        await asyncio.gather(*calls, return_exceptions=True)
    warnings = [r.getMessage() for r in caplog.records]
    # (the thread's call was cancelled: only its thread goes on)
    assert any("call(s) of stubborn did not end within 0.5 s" in w for w in warnings), warnings
    assert any("1 worker thread(s) still running a tool function" in w for w in warnings), warnings
    assert not ended.is_set() and not server.running
    # Once they do end, nothing of the server is left.
    release.set()
    thread_release.set()
    await asyncio.wait_for(ended.wait(), 30)
    leftover = [t for t in other_tasks() if t not in before]
    await asyncio.wait_for(asyncio.gather(*leftover, return_exceptions=True), 30)
    for thread in tool_threads():
        await asyncio.to_thread(thread.join, 30)
    assert tool_threads() == []


async def test_a_stopped_server_leaves_no_task_or_thread_and_can_start_again() -> None:
    before = set(other_tasks())
    server = ToolServer([add, fail])
    async with server, connect(server) as client:
        await client.call_tool("fail", {"reason": "x"})  # a worker thread ran
        first_url = server.url
    assert [t for t in other_tasks() if t not in before] == []
    assert tool_threads() == []
    async with server, connect(server) as client:
        again = await client.call_tool("add", {"a": 5})
    assert again.content[0].text == "7"  # type: ignore[union-attr]
    assert server.url != first_url or server.port > 0
    await server.stop()  # stopping twice is harmless


async def test_a_busy_port_is_a_config_error() -> None:
    async with ToolServer([add]) as first:
        with pytest.raises(OpenCodeConfigError, match=rf"Cannot listen on 127.0.0.1:{first.port}"):
            await ToolServer([add], port=first.port).start()
