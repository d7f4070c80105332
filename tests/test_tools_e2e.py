"""Python tools end to end: the real opencode (run mode and a warm server) calling a ToolServer.

The offline model calls tools named in the prompt (``[[tool: py_add {"a": 1}]]``) and quotes the
results back (``Tool results: py_add: 3``). One offline model and two tool servers serve the
module: ``py`` sends progress while a call runs, ``quiet`` does not; the opencode server's config
gives both a 2 s request timeout, so a long call survives only with the progress notifications.
The config is passed by hand (``RunConfig(mcp=server.mcp_config(...))``).
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from opencode_wrapper import AsyncOpenCodeClient, OpenCodeServer
from opencode_wrapper.testing import OfflineModelServer
from opencode_wrapper.tools import ToolServer, tool

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

FAST = {"snapshot": False, "agent": {"title": {"disable": True}}}
TIMEOUT_MS = 2000
seen: list[tuple[int, int]] = []


@tool
async def add(a: int, b: int = 2) -> int:
    """Add two numbers."""
    seen.append((a, b))
    return a + b


@tool
def fail(reason: str) -> str:
    """Always raises."""
    raise ValueError(f"cannot: {reason}")


@tool
async def slow(seconds: float) -> str:
    """Takes its time (longer than the client's request timeout)."""
    await asyncio.sleep(seconds)
    return f"slept {seconds:g}"


@tool
def guarded() -> str:
    """Runs only when the user allows it."""
    seen.append((-1, -1))
    return "ran"


class Gate:
    """A call the test holds open until it aborts the turn."""

    def __init__(self) -> None:
        self.tool = tool(name="hold")(self.hold)
        self.reset()

    def reset(self) -> None:
        self.started = asyncio.Event()
        self.cancelled = asyncio.Event()

    async def hold(self) -> str:
        """Waits until cancelled."""
        self.started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        return "never"


GATE = Gate()


def _repo(path: Path) -> Path:
    path.mkdir()
    subprocess.run(["git", "init", "-q", str(path)], check=True)
    (path / "README.md").write_text("# scratch workspace\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def model() -> Iterator[OfflineModelServer]:
    with OfflineModelServer() as server:
        yield server


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tools")


@pytest.fixture(scope="module")
def space(root: Path) -> Path:
    return _repo(root / "ws")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def tools() -> AsyncIterator[ToolServer]:
    async with ToolServer([add, fail, slow, guarded, GATE.tool], progress_interval_s=0.25) as server:
        yield server
    assert not server.running


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def quiet() -> AsyncIterator[ToolServer]:
    async with ToolServer([slow], progress_interval_s=None) as server:
        yield server


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def opencode(
    model: OfflineModelServer, tools: ToolServer, quiet: ToolServer, opencode_binary: str, root: Path
) -> AsyncIterator[OpenCodeServer]:
    mcp = {
        **tools.mcp_config("py", timeout_ms=TIMEOUT_MS),
        **quiet.mcp_config("quiet", timeout_ms=TIMEOUT_MS),
    }
    cfg = model.run_config(mcp=mcp, permission={"py_guarded": "ask"}, config_overrides=FAST)
    async with OpenCodeServer(binary=opencode_binary, run_cfg=cfg, cwd=root) as server:
        yield server


def calls_since(server: ToolServer, start: int) -> list[tuple[str, Any, str]]:
    return [(c.tool, c.arguments, c.outcome) for c in server.calls[start:]]


async def test_run_mode_calls_the_functions_and_reports_their_errors(
    model: OfflineModelServer, tools: ToolServer, opencode_binary: str, workspace: Path
) -> None:
    start, seen_before = len(tools.calls), len(seen)
    cfg = model.run_config(mcp=tools.mcp_config("py"), config_overrides=FAST)
    result = await AsyncOpenCodeClient(opencode_binary, startup_delay_s=0).async_run(
        '[[tool: py_add {"a": 1}]] [[tool: py_fail {"reason": "no"}]]', workspace, run_cfg=cfg, timeout_s=180
    )
    assert result.ok, result.error
    assert result.final_text == "Tool results: py_add: 3\npy_fail: ValueError: cannot: no"
    by_name = {call.name: call for call in result.tool_calls}
    assert (by_name["py_add"].status, by_name["py_add"].output) == ("completed", "3")
    assert (by_name["py_fail"].status, by_name["py_fail"].error) == ("error", "ValueError: cannot: no")
    assert seen[seen_before:] == [(1, 2)]  # validated: the default filled in
    assert sorted(calls_since(tools, start)) == [("add", {"a": 1}, "ok"), ("fail", {"reason": "no"}, "error")]


async def test_session_turns_validate_the_arguments_first(
    opencode: OpenCodeServer, tools: ToolServer, space: Path
) -> None:
    start, seen_before = len(tools.calls), len(seen)
    async with opencode.session(space) as s:
        coerced = await s.send('[[tool: py_add {"a": "40", "b": 2}]]')
        bad = await s.send('[[tool: py_add {"a": "forty"}]]')
    assert coerced.ok and coerced.final_text == "Tool results: py_add: 42"
    assert seen[seen_before:] == [(40, 2)]  # the function got ints, and ran once: not for the bad call
    (call,) = bad.tool_calls
    assert call.status == "error"
    assert call.error == (
        "Invalid arguments for tool 'add': a: Input should be a valid integer, unable to parse string as an "
        "integer (got 'forty')"
    )
    assert bad.final_text == f"Tool results: py_add: {call.error}"  # the model saw the error
    records = tools.calls[start:]
    assert [r.outcome for r in records] == ["ok", "invalid_arguments"]
    assert records[0].session_id == records[1].session_id  # one MCP session per opencode instance


async def test_aborting_the_turn_cancels_the_coroutine(
    opencode: OpenCodeServer, tools: ToolServer, space: Path
) -> None:
    GATE.reset()
    start = len(tools.calls)
    async with opencode.session(space) as s:
        turn = asyncio.create_task(s.send("[[tool: py_hold {}]]"))
        await asyncio.wait_for(GATE.started.wait(), 120)
        await s.abort()
        await asyncio.wait_for(GATE.cancelled.wait(), 30)
        aborted = await asyncio.wait_for(turn, 60)
        after = await s.send('[[tool: py_add {"a": 0}]]')
    assert aborted.error is not None and aborted.error.kind == "aborted"
    (record,) = [c for c in tools.calls[start:] if c.tool == "hold"]
    assert (record.outcome, record.error) == ("cancelled", "cancelled by the client")
    assert after.ok and after.final_text == "Tool results: py_add: 2"


async def test_cancelling_a_run_ends_opencode_and_so_the_call(
    model: OfflineModelServer, tools: ToolServer, opencode_binary: str, workspace: Path
) -> None:
    GATE.reset()
    start = len(tools.calls)
    cfg = model.run_config(mcp=tools.mcp_config("py"), config_overrides=FAST)
    client = AsyncOpenCodeClient(opencode_binary, startup_delay_s=0)
    run = asyncio.create_task(client.async_run("[[tool: py_hold {}]]", workspace, run_cfg=cfg, timeout_s=300))
    await asyncio.wait_for(GATE.started.wait(), 180)
    run.cancel()  # the client kills opencode: its connections to the tool server drop
    with pytest.raises(asyncio.CancelledError):
        await run
    await asyncio.wait_for(GATE.cancelled.wait(), 30)
    assert [(c.tool, c.outcome, c.error) for c in tools.calls[start:]] == [
        ("hold", "cancelled", "client disconnected")
    ]


async def test_progress_keeps_a_call_alive_past_the_request_timeout(
    opencode: OpenCodeServer, tools: ToolServer, quiet: ToolServer, space: Path
) -> None:
    seconds = 2 * TIMEOUT_MS / 1000
    async with opencode.session(space) as s:
        kept = await s.send(f'[[tool: py_slow {{"seconds": {seconds}}}]]')
        timed_out = await s.send(f'[[tool: quiet_slow {{"seconds": {seconds}}}]]')
    assert kept.ok and kept.final_text == f"Tool results: py_slow: slept {seconds:g}"
    (call,) = timed_out.tool_calls
    assert call.status == "error" and "timed out" in (call.error or "").lower()
    # opencode's client gave up and said so: the coroutine was cancelled, not left running.
    assert [(c.outcome, c.error) for c in quiet.calls] == [("cancelled", "cancelled by the client")]


async def test_a_permission_gates_the_function(opencode: OpenCodeServer, space: Path) -> None:
    asked: list[dict[str, Any]] = []

    async def reject(request: dict[str, Any]) -> str:
        asked.append(request)
        return "reject"

    seen_before = len(seen)
    async with opencode.session(space, on_permission=reject) as s:
        result = await s.send("[[tool: py_guarded {}]]")
    assert [(r["permission"], r["patterns"]) for r in asked] == [("py_guarded", ["*"])]
    assert result.error is not None and result.error.kind == "permission_rejected"
    assert seen[seen_before:] == []  # the function never ran
