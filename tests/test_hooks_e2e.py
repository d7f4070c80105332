"""Tool hooks end to end: ``Hooks(before_tool=..., after_tool=..., on_turn_end=...)`` on the real opencode.

``before_tool`` works on warm backends only: the wrapper asks opencode to ask permission for the
matched tools and answers for the hook. The offline model calls the tools the prompt names
(``[[tool: py_add {"a": 1}]]``, ``[[bash: echo hi]]``) and quotes the tool results back, so a final
text that quotes a refusal's message shows the model read it and went on.

Most tests open a session on one shared server, started as the docs say
(``OpenCodeServer(run_cfg=hooks.server_config(cfg))``) with hooks whose matchers cover those of
every session on it. The others start the backend they are about: a warm client, an owned
session, ``run_many``, run mode.
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from opencode_wrapper import (
    AsyncOpenCodeClient,
    Hooks,
    OpenCodeServer,
    OpenCodeSession,
    RunConfig,
    RunResult,
    Task,
    ToolUse,
    run_many,
)
from opencode_wrapper.errors import OpenCodeConfigError
from opencode_wrapper.events import ToolCall
from opencode_wrapper.testing import OfflineModelServer
from opencode_wrapper.tools import shared_pool

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

FAST = {"snapshot": False, "agent": {"title": {"disable": True}}}
TIMEOUT_S = 150.0
REFUSED = "The user rejected permission to use this specific tool call"

added: list[int] = []


def add(a: int, b: int = 2) -> int:
    """Add two integers."""
    added.append(a)
    return a + b


async def _allow(use: ToolUse) -> bool:
    return True


def _starts_with_b(name: str) -> bool:
    return name.startswith("b")


# The shared server asks for every tool these match; a session's hooks may match any of them.
SERVER_HOOKS = Hooks(before_tool=[("py_add", _allow), ("py_*", _allow), (_starts_with_b, _allow)])


def _repo(path: Path) -> Path:
    path.mkdir()
    subprocess.run(["git", "init", "-q", str(path)], check=True)
    (path / "README.md").write_text("# scratch workspace\n", encoding="utf-8")
    return path


def config(model: OfflineModelServer, **fields: Any) -> RunConfig:
    return model.run_config(python_tools=[add], config_overrides=FAST, **fields)


@pytest.fixture(scope="module")
def model() -> Iterator[OfflineModelServer]:
    with OfflineModelServer() as server:
        yield server


@pytest.fixture(scope="module")
def space(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _repo(tmp_path_factory.mktemp("hooks") / "ws")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def shared(
    model: OfflineModelServer, opencode_binary: str, space: Path
) -> AsyncIterator[OpenCodeServer]:
    cfg = SERVER_HOOKS.server_config(config(model))
    async with OpenCodeServer(binary=opencode_binary, run_cfg=cfg, cwd=space) as server:
        (tool_server,) = shared_pool().servers
        yield server
    assert not tool_server.running
    assert shared_pool().servers == []


@pytest_asyncio.fixture(autouse=True, loop_scope="module")
async def no_tool_server_left() -> AsyncIterator[None]:
    """A test leaves the shared pool as it found it (the shared server's tool server at most)."""
    before = list(shared_pool().servers)
    added.clear()
    yield
    assert shared_pool().servers == before


class Recorder:
    """Hooks that note what they saw, in order."""

    def __init__(self) -> None:
        self.log: list[tuple[str, str]] = []
        self.uses: list[ToolUse] = []
        self.finished: list[ToolCall] = []
        self.results: list[RunResult] = []

    def before(self, label: str, answer: bool | str | None) -> Any:
        async def hook(use: ToolUse) -> bool | str | None:
            self.log.append((label, use.name))
            self.uses.append(use)
            return answer

        return hook

    async def after(self, call: ToolCall) -> None:
        self.log.append(("after", call.name or ""))
        self.finished.append(call)

    async def turn_end(self, result: RunResult) -> None:
        self.results.append(result)


def recording_binary(tmp_path: Path, opencode_binary: str) -> tuple[str, Path]:
    """An opencode that logs each start to a file, then runs the real one."""
    log = tmp_path / "spawned.log"
    script = tmp_path / "opencode"
    script.write_text(f'#!/bin/sh\necho "$*" >> "{log}"\nexec "{opencode_binary}" "$@"\n', encoding="utf-8")
    script.chmod(0o755)
    return str(script), log


# ---------------------------------------------------------------------------------- before_tool


async def test_hooks_that_allow_let_the_tool_run(shared: OpenCodeServer, space: Path) -> None:
    seen = Recorder()
    hooks = Hooks(before_tool=[("py_add", seen.before("true", True)), ("py_add", seen.before("none", None))])
    async with shared.session(space, hooks=hooks) as session:
        result = await session.send('[[tool: py_add {"a": 1}]]', timeout_s=TIMEOUT_S)
    assert result.ok, result.error
    assert result.final_text == "Tool results: py_add: 3"
    assert seen.log == [("true", "py_add"), ("none", "py_add")]  # every matching hook, in order
    (call,) = result.tool_calls
    use = seen.uses[0]
    assert (use.name, use.input, use.permission, use.patterns) == ("py_add", {"a": 1}, "py_add", ("*",))
    assert use.call_id == call.call_id and use.request["permission"] == "py_add"
    assert added == [1]


async def test_a_hook_that_denies_stops_the_turn_like_a_refused_permission(
    shared: OpenCodeServer, space: Path
) -> None:
    seen = Recorder()
    hooks = Hooks(before_tool=[("py_add", seen.before("deny", False))])
    async with shared.session(space, hooks=hooks) as session:
        result = await session.send('[[tool: py_add {"a": 1}]]', timeout_s=TIMEOUT_S)
        after = await session.send("[[say: still here]]", timeout_s=TIMEOUT_S)
    assert result.error is not None and result.error.kind == "permission_rejected"
    (call,) = result.tool_calls
    assert call.status == "error" and call.error == f"{REFUSED}."
    assert [(r.permission, r.message) for r in result.permission_rejections] == [("py_add", None)]
    assert result.final_text == ""  # the model was not called again
    assert added == []
    assert after.ok and after.final_text == "still here"  # the session is usable


async def test_a_hook_that_denies_with_a_message_lets_the_model_read_it_and_go_on(
    shared: OpenCodeServer, space: Path
) -> None:
    seen = Recorder()
    hooks = Hooks(before_tool=[("py_add", seen.before("message", "Adding is closed today."))])
    async with shared.session(space, hooks=hooks) as session:
        result = await session.send('[[tool: py_add {"a": 1}]]', timeout_s=TIMEOUT_S)
    assert result.ok, result.error
    expected = f"{REFUSED} with the following feedback: Adding is closed today."
    (call,) = result.tool_calls
    assert (call.status, call.error) == ("error", expected)
    assert result.final_text == f"Tool results: py_add: {expected}"  # the model was called again
    assert [r.message for r in result.permission_rejections] == ["Adding is closed today."]
    assert added == []


async def test_glob_and_callable_matchers_pick_their_tools(shared: OpenCodeServer, space: Path) -> None:
    seen = Recorder()
    hooks = Hooks(
        before_tool=[("py_*", seen.before("glob", None)), (_starts_with_b, seen.before("callable", True))]
    )
    async with shared.session(space, hooks=hooks) as session:
        result = await session.send('[[tool: py_add {"a": 4}]] [[bash: echo hi]]', timeout_s=TIMEOUT_S)
    assert result.ok, result.error
    assert result.final_text == "Tool results: py_add: 6\nbash: hi"
    assert sorted(seen.log) == [("callable", "bash"), ("glob", "py_add")]
    bash = next(use for use in seen.uses if use.name == "bash")
    assert (bash.permission, bash.patterns) == ("bash", ("echo hi",))


async def test_a_hook_that_raises_denies_the_call_and_reports_a_callback_error(
    shared: OpenCodeServer, space: Path
) -> None:
    async def broken(use: ToolUse) -> bool:
        raise LookupError("no policy for " + use.name)

    async with shared.session(space, hooks=Hooks(before_tool=[("py_add", broken)])) as session:
        result = await session.send('[[tool: py_add {"a": 1}]]', timeout_s=TIMEOUT_S)
    assert result.error is not None and result.error.kind == "callback_error"
    assert result.error.message == (
        "before_tool raised LookupError: no policy for py_add; the request was rejected"
    )
    assert result.error.detail["callback"] == "before_tool"
    (call,) = result.tool_calls
    assert call.status == "error" and added == []


async def test_a_shared_server_that_does_not_ask_refuses_the_session(
    shared: OpenCodeServer, space: Path
) -> None:
    hooks = Hooks(before_tool=[("webfetch", _allow)])  # the shared server does not ask for webfetch
    with pytest.raises(OpenCodeConfigError) as refused:
        shared.session(space, hooks=hooks)
    assert "OpenCodeServer(run_cfg=hooks.server_config(cfg))" in str(refused.value)


# ---------------------------------------------------------------------------------- your own permission map


async def test_a_tool_your_permission_map_denies_is_never_offered(
    model: OfflineModelServer, opencode_binary: str, workspace: Path
) -> None:
    seen = Recorder()
    start = len(model.chat_requests)
    async with AsyncOpenCodeClient(opencode_binary, warm_servers=True, max_servers=1) as client:
        result = await client.async_run(
            '[[tool: py_add {"a": 1}]]',
            workspace,
            run_cfg=config(model, permission={"bash": "deny"}),
            hooks=Hooks(before_tool=[seen.before("every tool", True)]),
            timeout_s=TIMEOUT_S,
        )
    assert result.ok and result.final_text == "Tool results: py_add: 3"
    offered = [name for request in model.chat_requests[start:] for name in request.tool_names]
    assert "py_add" in offered and "read" in offered and "bash" not in offered
    assert seen.log == [("every tool", "py_add")]


async def test_ask_in_your_permission_map_goes_to_on_permission_after_the_hooks(
    model: OfflineModelServer, opencode_binary: str, workspace: Path
) -> None:
    order: list[str] = []

    async def hook(use: ToolUse) -> bool:
        order.append(f"hook {use.patterns[0]}")
        return use.patterns != ("echo no",)

    async def on_permission(request: dict[str, Any]) -> str:
        order.append(f"on_permission {request['patterns'][0]}")
        return "once"

    options: dict[str, Any] = {
        "run_cfg": config(model, permission={"bash": "ask"}),
        "hooks": Hooks(before_tool=[("bash", hook)]),
        "on_permission": on_permission,
        "timeout_s": TIMEOUT_S,
    }
    async with AsyncOpenCodeClient(opencode_binary, warm_servers=True, max_servers=1) as client:
        allowed = await client.async_run("[[bash: echo yes]]", workspace, **options)
        denied = await client.async_run("[[bash: echo no]]", workspace, **options)
    assert allowed.ok and allowed.final_text == "Tool results: bash: yes"
    assert denied.error is not None and denied.error.kind == "permission_rejected"
    assert order == ["hook echo yes", "on_permission echo yes", "hook echo no"]  # a denial ends it


# ---------------------------------------------------------------------------------- every backend


async def test_a_warm_client_runs_every_kind_of_hook(
    model: OfflineModelServer, opencode_binary: str, workspace: Path
) -> None:
    seen = Recorder()
    hooks = Hooks(
        before_tool=[("bash", seen.before("before", "No shell, please."))],
        after_tool=[seen.after],
        on_turn_end=[seen.turn_end],
    )
    async with AsyncOpenCodeClient(opencode_binary, warm_servers=True, max_servers=1) as client:
        result = await client.async_run(
            '[[tool: py_add {"a": 1}]] [[bash: echo hi]]',
            workspace,
            run_cfg=config(model),
            hooks=hooks,
            timeout_s=TIMEOUT_S,
        )
    assert result.ok, result.error
    refusal = f"{REFUSED} with the following feedback: No shell, please."
    assert result.final_text == f"Tool results: py_add: 3\nbash: {refusal}"
    # The two calls run side by side: only bash's own order is fixed.
    assert sorted(seen.log) == [("after", "bash"), ("after", "py_add"), ("before", "bash")]
    assert seen.log.index(("before", "bash")) < seen.log.index(("after", "bash"))
    by_name = {call.name: call for call in seen.finished}
    assert (by_name["py_add"].status, by_name["py_add"].output) == ("completed", "3")
    assert by_name["py_add"].duration_s is not None and by_name["py_add"].duration_s >= 0
    assert (by_name["bash"].status, by_name["bash"].error) == ("error", refusal)
    assert len(seen.results) == 1 and seen.results[0] is result


async def test_a_session_runs_every_kind_of_hook_on_each_turn(
    model: OfflineModelServer, opencode_binary: str, workspace: Path
) -> None:
    seen = Recorder()
    hooks = Hooks(
        before_tool=[("py_*", seen.before("before", None))],
        after_tool=[("py_*", seen.after)],  # a matcher here too: bash is not seen
        on_turn_end=[seen.turn_end],
    )
    client = AsyncOpenCodeClient(opencode_binary)
    async with OpenCodeSession(client, workspace, run_cfg=config(model), hooks=hooks) as session:
        first = await session.send('[[tool: py_add {"a": 1}]] [[bash: echo hi]]', timeout_s=TIMEOUT_S)
        second = await session.send('[[tool: py_add {"a": 2}]]', timeout_s=TIMEOUT_S)
    assert first.ok and second.ok, (first.error, second.error)
    assert seen.log == [("before", "py_add"), ("after", "py_add")] * 2
    assert [(c.status, c.output) for c in seen.finished] == [("completed", "3"), ("completed", "4")]
    assert all(c.duration_s is not None and c.duration_s >= 0 for c in seen.finished)
    assert len(seen.results) == 2 and seen.results[0] is first and seen.results[1] is second
    assert added == [1, 2]


async def test_run_many_runs_the_hooks_of_every_task(
    model: OfflineModelServer, opencode_binary: str, make_workspace: Any
) -> None:
    seen = Recorder()

    async def no_task_1(use: ToolUse) -> str | None:
        seen.log.append(("before", use.patterns[0]))
        return "Task 1 may not echo." if use.patterns == ("echo task-1",) else None

    hooks = Hooks(before_tool=[("bash", no_task_1)], after_tool=[seen.after], on_turn_end=[seen.turn_end])
    tasks = [Task(f"[[bash: echo task-{i}]]", make_workspace(f"ws{i}")) for i in range(3)]
    outcomes = await run_many(
        tasks, run_cfg=config(model), hooks=hooks, binary=opencode_binary, max_servers=1, concurrency=3
    )
    results = [o.result for o in outcomes]
    assert [o.ok for o in outcomes] == [True, True, True]
    assert [r.final_text for r in results if r] == [
        "Tool results: bash: task-0",
        f"Tool results: bash: {REFUSED} with the following feedback: Task 1 may not echo.",
        "Tool results: bash: task-2",
    ]
    assert sorted(seen.log) == [("after", "bash")] * 3 + [("before", f"echo task-{i}") for i in range(3)]
    assert sorted(str(c.status) for c in seen.finished) == ["completed", "completed", "error"]
    assert sorted(map(id, seen.results)) == sorted(map(id, results))


async def test_run_mode_runs_after_tool_and_on_turn_end(
    model: OfflineModelServer, opencode_binary: str, workspace: Path
) -> None:
    seen = Recorder()
    hooks = Hooks(after_tool=[seen.after], on_turn_end=[seen.turn_end])
    result = await AsyncOpenCodeClient(opencode_binary, startup_delay_s=0).async_run(
        '[[bash: echo hi]] [[tool: py_add {"a": 1}]]',
        workspace,
        run_cfg=config(model),
        hooks=hooks,
        timeout_s=TIMEOUT_S,
    )
    assert result.ok, result.error
    assert sorted((c.name, c.status, c.output) for c in seen.finished) == [
        ("bash", "completed", "hi\n"),
        ("py_add", "completed", "3"),
    ]
    assert all(c.duration_s is not None and c.duration_s >= 0 for c in seen.finished)
    assert len(seen.results) == 1 and seen.results[0] is result


@pytest.mark.parametrize("entry", ["async_run", "run_many"])
async def test_run_mode_refuses_before_tool_before_anything_starts(
    entry: str, opencode_binary: str, workspace: Path, tmp_path: Path
) -> None:
    binary, spawned = recording_binary(tmp_path, opencode_binary)
    hooks = Hooks(before_tool=[_allow])
    with pytest.raises(OpenCodeConfigError) as refused:
        if entry == "async_run":
            await AsyncOpenCodeClient(binary).async_run("hi", workspace, hooks=hooks)
        else:
            await run_many([("hi", workspace)], backend="run", binary=binary, hooks=hooks)
    message = str(refused.value)
    assert "Hooks(before_tool=...)" in message and "AsyncOpenCodeClient(warm_servers=True)" in message
    assert not spawned.exists(), spawned.read_text()  # not even `opencode --version` ran


async def test_denying_one_of_parallel_calls_does_not_refuse_the_others(
    opencode_binary: str, space: Path
) -> None:
    # opencode rejects every pending request of a session when one is rejected: the wrapper holds a
    # rejection until the other calls of the step are decided.
    from opencode_wrapper.testing import Reply

    echo_asked, refusal_decided = asyncio.Event(), asyncio.Event()
    both_pending: list[bool] = []

    async def policy(use: ToolUse) -> bool | str:
        if str(use.input.get("command")).startswith("rm"):
            # Refuse only once the other call's request is waiting too: the case where opencode
            # would reject it along with this one.
            both_pending.append(await _within(echo_asked.wait(), 30))
            refusal_decided.set()
            return "No deleting; the other command is fine."
        echo_asked.set()
        await refusal_decided.wait()  # still undecided when the refusal is decided
        return True

    both = Reply.tool_calls(
        ("bash", {"command": "rm -rf nothing", "description": "delete"}),
        ("bash", {"command": "echo parallel-ok", "description": "echo"}),
    )
    hooks = Hooks(before_tool=[("bash", policy)])
    with OfflineModelServer(script=[both, "Both handled."]) as scripted:
        async with AsyncOpenCodeClient(opencode_binary, warm_servers=True) as warm:
            result = await warm.async_run("two at once", space, run_cfg=scripted.run_config(), hooks=hooks)
    assert both_pending == [True], "opencode asked for the two calls one after the other"
    assert result.ok, result.error
    by_command = {str(call.input.get("command")): call for call in result.tool_calls}
    assert by_command["echo parallel-ok"].status == "completed"
    assert by_command["echo parallel-ok"].output == "parallel-ok\n"
    refused = by_command["rm -rf nothing"]
    assert refused.status == "error" and "No deleting" in (refused.error or "")
    assert result.final_text == "Both handled."


async def _within(waiting: Any, seconds: float) -> bool:
    try:
        await asyncio.wait_for(waiting, seconds)
    except asyncio.TimeoutError:
        return False
    return True
