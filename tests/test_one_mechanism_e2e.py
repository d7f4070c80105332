"""One run mechanism, end to end: every entry point on every backend, the same events and outcomes.

Real opencode, the offline model. Each failure is produced once per entry point and must come out
the same way (raised as the same exception class with the same error kind, or returned), as the
README's failure-policy table says.
"""

from __future__ import annotations

import pickle
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from opencode_wrapper import (
    AsyncOpenCodeClient,
    Event,
    OpenCodeProcessError,
    OpenCodeServer,
    OpenCodeSession,
    OpenCodeTimeoutError,
    RunConfig,
    RunResult,
    ServerPool,
    Task,
    run_many,
)
from opencode_wrapper.testing import OfflineModelServer

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def model() -> Any:
    with OfflineModelServer() as server:
        yield server


@pytest.fixture
def cfg(model: OfflineModelServer) -> RunConfig:
    return model.run_config().merged_with(RunConfig(permission={"bash": "allow"}))


@pytest_asyncio.fixture
async def server(cfg: RunConfig) -> AsyncIterator[OpenCodeServer]:
    async with OpenCodeServer(run_cfg=cfg) as started:
        yield started


def _summary(events: list[Event]) -> tuple[list[str], list[tuple[str | None, str | None]]]:
    """What one consumer reads from either transport: finished texts, finished tool calls."""
    texts = [ev.text or "" for ev in events if ev.kind == "text"]
    tools = [
        (ev.tool.name, ev.tool.output)
        for ev in events
        if ev.kind == "tool" and ev.tool is not None and ev.tool.status in ("completed", "error")
    ]
    return texts, tools


async def test_one_consumer_reads_run_mode_and_a_warm_stream_alike(cfg: RunConfig, workspace: Path) -> None:
    prompt = "[[bash: echo same-everywhere]]"
    run_mode = [ev async for ev in AsyncOpenCodeClient().async_stream(prompt, workspace, run_cfg=cfg)]
    async with AsyncOpenCodeClient(warm_servers=True) as warm:
        streamed = [ev async for ev in warm.async_stream(prompt, workspace, run_cfg=cfg)]
    assert (
        _summary(run_mode)
        == _summary(streamed)
        == (
            ["Tool results: bash: same-everywhere"],
            [("bash", "same-everywhere\n")],
        )
    )
    # The warm stream is a server's: text deltas come before the finished text, and runs stay dicts.
    assert any(ev.kind == "text_delta" for ev in streamed)
    assert not any(ev.kind == "text_delta" for ev in run_mode)
    assert all(isinstance(ev, dict) for ev in run_mode + streamed)


async def test_a_run_handle_from_the_client_iterates_waits_and_never_raises(
    cfg: RunConfig, workspace: Path
) -> None:
    client = AsyncOpenCodeClient()
    async with client.start("[[say: from a handle]]", workspace, run_cfg=cfg) as run:
        kinds = [ev.kind async for ev in run]
    assert run.result.ok and run.result.final_text == "from a handle"
    assert kinds[0] == "step_start" and "text" in kinds and kinds[-1] == "step_finish"
    failed = await client.start("[[error: 401]]", workspace, run_cfg=cfg).wait()
    assert failed.error is not None and (failed.error.kind, failed.error.status_code) == ("api_error", 401)
    with pytest.raises(OpenCodeProcessError) as raised:
        failed.raise_for_error()
    assert raised.value.result is failed and not raised.value.retryable


EntryPoint = Callable[[str], Awaitable[RunResult]]


@pytest.mark.parametrize(
    "entry",
    [
        "async_run",
        "async_stream",
        "warm_async_run",
        "warm_async_stream",
        "server_run",
        "pool_run",
        "send",
        "stream",
    ],
)
async def test_a_provider_error_is_raised_the_same_way_by_every_entry_point(
    entry: str, cfg: RunConfig, server: OpenCodeServer, workspace: Path
) -> None:
    async def drain(events: AsyncIterator[Event]) -> None:
        async for _ in events:
            pass

    prompt = "[[error: 401]]"
    with pytest.raises(OpenCodeProcessError) as raised:
        if entry == "async_run":
            await AsyncOpenCodeClient().async_run(prompt, workspace, run_cfg=cfg)
        elif entry == "async_stream":
            await drain(AsyncOpenCodeClient().async_stream(prompt, workspace, run_cfg=cfg))
        elif entry.startswith("warm_"):
            async with AsyncOpenCodeClient(warm_servers=True) as warm:
                if entry == "warm_async_run":
                    await warm.async_run(prompt, workspace, run_cfg=cfg)
                else:
                    await drain(warm.async_stream(prompt, workspace, run_cfg=cfg))
        elif entry == "server_run":
            await server.run(prompt, workspace)
        elif entry == "pool_run":
            async with ServerPool() as pool:
                await pool.run(prompt, workspace, run_cfg=cfg)
        else:
            async with server.session(workspace) as session:
                if entry == "send":
                    await session.send(prompt)
                else:
                    await drain(session.stream(prompt))
    result = raised.value.result
    assert result is not None and result.error is not None
    assert (result.error.kind, result.error.status_code, result.error.raised) == ("api_error", 401, True)
    assert pickle.loads(pickle.dumps(raised.value)).result.error.status_code == 401


async def test_run_many_reports_the_same_failure_as_an_outcome(cfg: RunConfig, workspace: Path) -> None:
    for backend in ("run", "server"):
        [bad, good] = await run_many(
            [Task("[[error: 401]]", workspace), Task("[[say: fine]]", workspace)],
            run_cfg=cfg,
            backend=backend,
        )
        assert good.ok and good.result is not None and good.result.final_text == "fine"
        assert isinstance(bad.exception, OpenCodeProcessError)
        assert bad.error is not None and (bad.error.kind, bad.error.status_code) == ("api_error", 401)


async def test_a_timeout_is_raised_with_the_partial_result_on_every_backend(
    cfg: RunConfig, server: OpenCodeServer, workspace: Path
) -> None:
    prompt = "[[say: started]] [[hang]]"
    async with AsyncOpenCodeClient(warm_servers=True) as warm:
        for run in (
            lambda: AsyncOpenCodeClient().async_run(prompt, workspace, run_cfg=cfg, timeout_s=3),
            lambda: warm.async_run(prompt, workspace, run_cfg=cfg, timeout_s=3),
            lambda: server.run(prompt, workspace, timeout_s=3),
        ):
            with pytest.raises(OpenCodeTimeoutError) as raised:
                await run()
            assert raised.value.timeout_s == 3
            result = raised.value.result
            assert result is not None and result.error is not None and result.error.kind == "timeout"


async def test_a_refused_option_is_refused_before_anything_starts(
    cfg: RunConfig, server: OpenCodeServer, workspace: Path
) -> None:
    from opencode_wrapper import OpenCodeConfigError

    async def approve(request: dict[str, Any]) -> str:
        return "once"

    with pytest.raises(OpenCodeConfigError, match="on_permission cannot be honoured by the run-mode backend"):
        await AsyncOpenCodeClient().async_run("hi", workspace, run_cfg=cfg, on_permission=approve)
    with pytest.raises(OpenCodeConfigError, match="cli_kwargs"):
        await server.run("hi", workspace, run_cfg=RunConfig(cli_kwargs={"thinking": True}))
    with pytest.raises(OpenCodeConfigError, match=r"\['permission'\]"):
        await server.run("hi", workspace, run_cfg=RunConfig(permission={"bash": "deny"}))
    async with server.session(workspace) as session:
        with pytest.raises(OpenCodeConfigError, match=r"\['mcp'\]"):
            await session.send(
                "hi", run_cfg=RunConfig(mcp={"x": {"type": "remote", "url": "http://127.0.0.1:1"}})
            )
        assert (await session.send("[[say: still usable]]")).final_text == "still usable"


async def test_warm_callbacks_and_structured_output_in_a_one_shot_run(
    cfg: RunConfig, workspace: Path
) -> None:
    asked: list[str] = []

    async def approve(request: dict[str, Any]) -> str:
        asked.append(str(request.get("permission")))
        return "once"

    ask_cfg = cfg.merged_with(RunConfig(permission={"bash": "ask"}))
    async with AsyncOpenCodeClient(warm_servers=True) as warm:
        result = await warm.async_run(
            "[[bash: echo approved]]", workspace, run_cfg=ask_cfg, on_permission=approve
        )
        structured = await warm.async_run(
            '[[tool: StructuredOutput {"answer": "yes"}]]',
            workspace,
            run_cfg=cfg,
            output_schema={
                "type": "object",
                "properties": {"answer": {"type": "string"}},
                "required": ["answer"],
            },
        )
    assert asked == ["bash"] and result.ok and result.final_text == "Tool results: bash: approved"
    assert structured.ok and structured.structured == {"answer": "yes"}


async def test_a_seed_style_session_works_on_the_mechanism(cfg: RunConfig, workspace: Path) -> None:
    async with OpenCodeSession(AsyncOpenCodeClient(), workspace, run_cfg=cfg) as session:
        first = await session.send("My name is Bob.")
        second = await session.send("[[say: Bob]]")
    assert first.ok and "My name is Bob." in first.final_text
    assert second.ok and second.final_text == "Bob" and second.session_id == first.session_id
