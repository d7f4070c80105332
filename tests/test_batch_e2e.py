"""Many agents end to end: warm servers, run_many, the warm-server client backend, budgets."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from opencode_wrapper import AsyncOpenCodeClient, OpenCodeConfigError, RunConfig
from opencode_wrapper.batch import Budget, Progress, Task, iter_run_many, run_many
from opencode_wrapper.pool import ServerPool
from opencode_wrapper.testing import OfflineModelServer

pytestmark = pytest.mark.e2e


async def test_run_many_results_in_input_order_with_a_failure_captured(
    opencode_binary: str, make_workspace: object, offline_model: OfflineModelServer
) -> None:
    spaces = [make_workspace(f"w{i}") for i in range(3)]  # type: ignore[operator]
    prompts = ["[[bash: echo alpha]]", "[[error: 401]]", "[[bash: echo gamma]]", "[[say: delta]]"]
    seen: list[Progress] = []
    outcomes = await run_many(
        [Task(p, spaces[i % 3], timeout_s=120) for i, p in enumerate(prompts)],
        run_cfg=offline_model.run_config(),
        binary=opencode_binary,
        max_servers=1,
        on_progress=lambda progress: seen.append(progress),
    )
    assert [o.index for o in outcomes] == [0, 1, 2, 3]
    assert [o.ok for o in outcomes] == [True, False, True, True]
    assert "alpha" in outcomes[0].result.final_text  # type: ignore[union-attr]
    assert "gamma" in outcomes[2].result.final_text  # type: ignore[union-attr]
    assert outcomes[3].result.final_text == "delta"  # type: ignore[union-attr]
    failed = outcomes[1].error
    assert failed is not None and failed.kind == "api_error" and failed.status_code == 401
    assert seen[-1].finished == 4 and seen[-1].failed == 1
    assert seen[-1].usage.total == sum(o.result.token_usage.total for o in outcomes if o.result)


async def test_configs_decide_which_server_and_servers_are_reused(
    opencode_binary: str, workspace: Path, offline_model: OfflineModelServer
) -> None:
    allow = offline_model.run_config(permission={"bash": "allow"})
    deny = offline_model.run_config(permission={"bash": "deny"})
    async with ServerPool(binary=opencode_binary, max_servers=2) as pool:
        first = await pool.run("[[say: one]]", workspace, run_cfg=allow, timeout_s=120)
        server = pool.servers[0]
        second = await pool.run("[[say: two]]", workspace, run_cfg=allow.merged_with(RunConfig(agent="plan")))
        assert pool.servers == [server], "same server-global config: the same warm server"
        third = await pool.run("[[say: three]]", workspace, run_cfg=deny, timeout_s=120)
        assert len(pool.servers) == 2
        assert "bash" not in offline_model.chat_requests[-1].tool_names
        pids = [s.pid for s in pool.servers]
    assert [r.final_text for r in (first, second, third)] == ["one", "two", "three"]
    assert all(pid is not None for pid in pids)
    assert pool.servers == []


async def test_iter_run_many_yields_as_completed_and_budget_stops_new_tasks(
    opencode_binary: str, workspace: Path, offline_model: OfflineModelServer
) -> None:
    budget = Budget(max_tokens=1)
    order = []
    async for outcome in iter_run_many(
        [Task(f"[[say: t{i}]]", workspace) for i in range(3)],
        run_cfg=offline_model.run_config(),
        binary=opencode_binary,
        concurrency=1,
        budget=budget,
    ):
        order.append(outcome)
    assert [o.started for o in sorted(order, key=lambda o: o.index)] == [True, False, False]
    assert order[0].ok
    assert budget.usage.total == order[0].result.token_usage.total  # type: ignore[union-attr]
    skipped = [o for o in order if not o.started]
    assert all(o.error is not None and o.error.kind == "budget_exhausted" for o in skipped)


async def test_seed_style_gather_on_warm_servers(
    opencode_binary: str, make_workspace: object, offline_model: OfflineModelServer, tmp_path: Path
) -> None:
    spaces = [make_workspace(f"svc{i}") for i in range(3)]  # type: ignore[operator]
    client = AsyncOpenCodeClient(opencode_binary, warm_servers=True, max_servers=1)
    cfg = offline_model.run_config()
    log = tmp_path / "warm.jsonl"
    async with client:
        results = await asyncio.gather(
            *[
                client.async_run(f"[[bash: echo svc-{i}]]", ws, run_cfg=cfg, timeout_s=120)
                for i, ws in enumerate(spaces)
            ]
        )
        logged = await client.async_run(
            "[[say: logged]]", spaces[0], run_cfg=cfg, log_file=log, timeout_s=120
        )
        with pytest.raises(OpenCodeConfigError, match="cli_kwargs"):
            await client.async_run(
                "x", spaces[0], run_cfg=offline_model.run_config(cli_kwargs={"title": "t"})
            )
    assert [f"svc-{i}" in r.final_text for i, r in enumerate(results)] == [True, True, True]
    assert all(r.ok for r in results)
    assert logged.final_text == "logged"
    assert any(
        json.loads(line).get("type") == "message.part.updated" for line in log.read_text().splitlines()
    )
    with pytest.raises(OpenCodeConfigError, match="async with"):
        await client.async_run("x", spaces[0], run_cfg=cfg)


async def test_run_backend(opencode_binary: str, workspace: Path, offline_model: OfflineModelServer) -> None:
    outcomes = await run_many(
        [("[[say: via run mode]]", workspace)],
        run_cfg=offline_model.run_config(),
        backend="run",
        client=AsyncOpenCodeClient(opencode_binary, startup_delay_s=0),
    )
    assert outcomes[0].ok and outcomes[0].result is not None
    assert outcomes[0].result.final_text == "via run mode"
    assert outcomes[0].result.exit_code == 0
