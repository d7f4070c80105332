"""``RunConfig(python_tools=[...])`` end to end: the real opencode calling plain Python functions.

The library serves the functions itself (one leased tool server per tool set, from
``opencode_wrapper.tools.shared_pool()``); the model sees them as ``py_<name>``. The offline model
calls them when the prompt says ``[[tool: py_add {"a": 1}]]`` and quotes the results back
(``Tool results: py_add: 3``), so a final text that quotes a result shows the model saw it.

Each test starts the one opencode process (or warm server) it is about, and afterwards no tool
server, worker thread or process may be left: the shared pool must be empty.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from opencode_wrapper import (
    AsyncOpenCodeClient,
    OpenCodeServer,
    OpenCodeSession,
    RunConfig,
    Task,
    run_many,
)
from opencode_wrapper.errors import OpenCodeConfigError, OpenCodeTimeoutError
from opencode_wrapper.testing import OfflineModelServer
from opencode_wrapper.tools import ToolServer, shared_pool

pytestmark = pytest.mark.e2e

# No snapshots, no title requests: fewer model calls and git work per run.
FAST = {"snapshot": False, "agent": {"title": {"disable": True}}}
TIMEOUT_S = 150.0
# The timeout of the turn that must time out while the tool runs: long enough for a warm session
# (its MCP connection already made by the turn before) to reach the call on a loaded machine.
TURN_TIMEOUT_S = 10.0

calls: list[tuple[str, dict[str, Any]]] = []


def add(a: int, b: int = 2) -> int:
    """Add two integers."""
    calls.append(("add", {"a": a, "b": b}))
    return a + b


async def explode(reason: str) -> str:
    """Always fails."""
    calls.append(("explode", {"reason": reason}))
    raise RuntimeError(f"cannot {reason}")


class Hold:
    """An async tool that waits until it is cancelled (and says so)."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.cancelled = asyncio.Event()

    async def hold(self, label: str) -> str:
        """Waits forever."""
        calls.append(("hold", {"label": label}))
        self.started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        return "never"


@pytest.fixture(scope="module")
def model() -> Iterator[OfflineModelServer]:
    with OfflineModelServer() as server:
        yield server


@pytest.fixture(autouse=True)
def fresh_calls() -> None:
    calls.clear()


@pytest_asyncio.fixture(autouse=True)
async def nothing_left() -> AsyncIterator[None]:
    """After the test: no tool server in the shared pool and no tool worker thread alive."""
    yield
    assert shared_pool().servers == []
    assert [t.name for t in threading.enumerate() if t.name.startswith("opencode-tool")] == []


def config(model: OfflineModelServer, *tools: Callable[..., Any]) -> RunConfig:
    return model.run_config(python_tools=list(tools), config_overrides=FAST)


def recording_binary(tmp_path: Path, opencode_binary: str) -> tuple[str, Path]:
    """An opencode that logs each start to a file, then runs the real one."""
    log = tmp_path / "spawned.log"
    script = tmp_path / "opencode"
    script.write_text(f'#!/bin/sh\necho "$*" >> "{log}"\nexec "{opencode_binary}" "$@"\n', encoding="utf-8")
    script.chmod(0o755)
    return str(script), log


async def test_run_mode_calls_the_function(
    model: OfflineModelServer, opencode_binary: str, workspace: Path
) -> None:
    client = AsyncOpenCodeClient(opencode_binary, startup_delay_s=0)
    result = await client.async_run(
        '[[tool: py_add {"a": 1}]]', workspace, run_cfg=config(model, add), timeout_s=TIMEOUT_S
    )
    assert result.ok, result.error
    (call,) = result.tool_calls
    assert (call.name, call.status, call.output) == ("py_add", "completed", "3")
    assert result.final_text == "Tool results: py_add: 3"
    assert calls == [("add", {"a": 1, "b": 2})]  # validated first: the default filled in


async def test_a_warm_client_calls_the_function(
    model: OfflineModelServer, opencode_binary: str, workspace: Path
) -> None:
    async with AsyncOpenCodeClient(opencode_binary, warm_servers=True, max_servers=1) as client:
        first = await client.async_run(
            '[[tool: py_add {"a": 5}]]', workspace, run_cfg=config(model, add), timeout_s=TIMEOUT_S
        )
        second = await client.async_run(
            '[[tool: py_add {"a": 6, "b": 4}]]', workspace, run_cfg=config(model, add), timeout_s=TIMEOUT_S
        )
        (tool_server,) = shared_pool().servers  # held by the warm server for its whole life
    assert first.ok and first.final_text == "Tool results: py_add: 7"
    assert second.ok and second.final_text == "Tool results: py_add: 10"
    assert calls == [("add", {"a": 5, "b": 2}), ("add", {"a": 6, "b": 4})]
    assert [c.outcome for c in tool_server.calls] == ["ok", "ok"]
    assert not tool_server.running


async def test_a_session_reports_a_raising_tool_to_the_model(
    model: OfflineModelServer, opencode_binary: str, workspace: Path
) -> None:
    client = AsyncOpenCodeClient(opencode_binary)
    async with OpenCodeSession(client, workspace, run_cfg=config(model, add, explode)) as session:
        failed = await session.send('[[tool: py_explode {"reason": "divide"}]]', timeout_s=TIMEOUT_S)
        after = await session.send('[[tool: py_add {"a": 2}]]', timeout_s=TIMEOUT_S)
    (call,) = failed.tool_calls
    assert (call.name, call.status, call.error) == ("py_explode", "error", "RuntimeError: cannot divide")
    assert failed.ok  # a failed tool is the model's business: it read the error and answered
    assert failed.final_text == "Tool results: py_explode: RuntimeError: cannot divide"
    assert after.ok and after.final_text == "Tool results: py_add: 4"
    assert calls == [("explode", {"reason": "divide"}), ("add", {"a": 2, "b": 2})]


async def test_bad_arguments_reach_the_model_and_the_function_does_not_run(
    model: OfflineModelServer, opencode_binary: str, workspace: Path
) -> None:
    async with (
        OpenCodeServer(binary=opencode_binary, run_cfg=config(model, add), cwd=workspace) as server,
        server.session(workspace) as session,
    ):
        bad = await session.send('[[tool: py_add {"a": "forty"}]]', timeout_s=TIMEOUT_S)
        coerced = await session.send('[[tool: py_add {"a": "40"}]]', timeout_s=TIMEOUT_S)
        (tool_server,) = shared_pool().servers
        records = list(tool_server.calls)
    (call,) = bad.tool_calls
    assert (call.name, call.status) == ("py_add", "error")
    assert call.error == (
        "Invalid arguments for tool 'add': a: Input should be a valid integer, unable to parse string as an "
        "integer (got 'forty')"
    )
    assert bad.final_text == f"Tool results: py_add: {call.error}"
    assert coerced.ok and coerced.final_text == "Tool results: py_add: 42"
    assert calls == [("add", {"a": 40, "b": 2})]  # once, with an int: never for the bad call
    assert [r.outcome for r in records] == ["invalid_arguments", "ok"]


async def test_an_async_tool_is_cancelled_when_the_turn_is_aborted_or_times_out(
    model: OfflineModelServer, opencode_binary: str, workspace: Path
) -> None:
    aborted_hold, timed_out_hold = Hold(), Hold()
    holds = {"aborted": aborted_hold, "timed out": timed_out_hold}

    async def hold(label: str) -> str:
        """Waits until cancelled."""
        return await holds[label].hold(label)

    async with (
        OpenCodeServer(binary=opencode_binary, run_cfg=config(model, hold, add), cwd=workspace) as server,
        server.session(workspace) as session,
    ):
        turn = asyncio.create_task(session.send('[[tool: py_hold {"label": "aborted"}]]'))
        await asyncio.wait_for(aborted_hold.started.wait(), TIMEOUT_S)
        await session.abort()
        await asyncio.wait_for(aborted_hold.cancelled.wait(), 30)
        aborted = await asyncio.wait_for(turn, 60)

        with pytest.raises(OpenCodeTimeoutError) as timed_out:
            await session.send('[[tool: py_hold {"label": "timed out"}]]', timeout_s=TURN_TIMEOUT_S)
        assert timed_out_hold.started.is_set(), "the turn timed out before the tool started"
        await asyncio.wait_for(timed_out_hold.cancelled.wait(), 30)

        after = await session.send('[[tool: py_add {"a": 1}]]', timeout_s=TIMEOUT_S)
        (tool_server,) = shared_pool().servers
        records = [(r.tool, r.arguments, r.outcome, r.error) for r in tool_server.calls]
    assert aborted.error is not None and aborted.error.kind == "aborted"
    result = timed_out.value.result
    assert result is not None and result.error is not None and result.error.kind == "timeout"
    assert after.ok and after.final_text == "Tool results: py_add: 3"  # the session goes on
    assert records == [
        ("hold", {"label": "aborted"}, "cancelled", "cancelled by the client"),
        ("hold", {"label": "timed out"}, "cancelled", "cancelled by the client"),
        ("add", {"a": 1}, "ok", None),
    ]


async def test_run_many_tasks_share_one_tool_server(
    model: OfflineModelServer, opencode_binary: str, make_workspace: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[ToolServer] = []
    real_start = ToolServer.start

    async def counted_start(self: ToolServer) -> None:
        started.append(self)
        await real_start(self)

    monkeypatch.setattr(ToolServer, "start", counted_start)
    tasks = [Task(f'[[tool: py_add {{"a": {i}}}]]', make_workspace(f"ws{i}")) for i in range(3)]
    outcomes = await run_many(
        tasks, run_cfg=config(model, add), binary=opencode_binary, max_servers=1, concurrency=3
    )
    assert [o.ok for o in outcomes] == [True, True, True], [o.result and o.result.error for o in outcomes]
    assert [o.result.final_text for o in outcomes if o.result] == [
        "Tool results: py_add: 2",
        "Tool results: py_add: 3",
        "Tool results: py_add: 4",
    ]
    assert sorted(c[1]["a"] for c in calls) == [0, 1, 2]
    (tool_server,) = started  # one tool server for the three tasks
    assert sorted(r.arguments["a"] for r in tool_server.calls) == [0, 1, 2]
    assert not tool_server.running


def untyped(a):  # type: ignore[no-untyped-def]  # what a tool cannot be: its parameter has no type
    return a


BAD_TOOLS: dict[str, tuple[Any, str]] = {
    "not callable": ([42], "python_tools must contain functions (or @tool objects), got 42"),
    "not a list": (add, "python_tools must be a list of functions (or @tool objects), got function"),
    "untyped": ([untyped], "Parameter 'a' of tool 'untyped' has no type hint"),
    "bad name": ([lambda a: a], "Invalid tool name '<lambda>'"),
}


async def refused_at(entry: str, binary: str, workspace: Path, cfg: RunConfig) -> OpenCodeConfigError:
    with pytest.raises(OpenCodeConfigError) as refused:
        if entry == "run":
            await AsyncOpenCodeClient(binary).async_run("hi", workspace, run_cfg=cfg)
        elif entry == "warm client":
            async with AsyncOpenCodeClient(binary, warm_servers=True) as client:
                await client.async_run("hi", workspace, run_cfg=cfg)
        elif entry == "session":
            OpenCodeSession(AsyncOpenCodeClient(binary), workspace, run_cfg=cfg)
        elif entry == "server":
            OpenCodeServer(binary=binary, run_cfg=cfg)
        else:
            await run_many([("hi", workspace)], run_cfg=cfg, binary=binary)
    return refused.value


@pytest.mark.parametrize("bad", sorted(BAD_TOOLS))
async def test_tools_that_cannot_be_served_are_refused_before_anything_starts(
    bad: str, opencode_binary: str, workspace: Path, tmp_path: Path
) -> None:
    binary, spawned = recording_binary(tmp_path, opencode_binary)
    value, message = BAD_TOOLS[bad]
    error = await refused_at("run", binary, workspace, RunConfig(python_tools=value))
    assert message in str(error)
    assert not spawned.exists(), spawned.read_text()  # not even `opencode --version` ran


@pytest.mark.parametrize("entry", ["warm client", "session", "server", "run_many"])
async def test_every_entry_point_refuses_them_before_anything_starts(
    entry: str, opencode_binary: str, workspace: Path, tmp_path: Path
) -> None:
    binary, spawned = recording_binary(tmp_path, opencode_binary)
    error = await refused_at(entry, binary, workspace, RunConfig(python_tools=[add, untyped]))
    assert "Parameter 'a' of tool 'untyped' has no type hint" in str(error)
    assert not spawned.exists(), spawned.read_text()
