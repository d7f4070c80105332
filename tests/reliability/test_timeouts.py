"""Timeouts with a model that never answers: ``OpenCodeTimeoutError`` within timeout + 2 s, nothing left.

The offline model's ``[[hang]]`` holds the request open forever (no status line, no byte); a
``[[bash: sleep 60.NNNN]]`` variant times out inside a tool instead. Every entry point with a
``timeout_s`` is covered: ``async_run``, ``async_stream``, a session turn, a warm-server run
(``ServerPool.run``, what ``AsyncOpenCodeClient(warm_servers=True)`` uses) and ``run_many``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from opencode_wrapper import AsyncOpenCodeClient, OpenCodeTimeoutError
from opencode_wrapper.batch import Task, run_many
from opencode_wrapper.pool import ServerPool
from opencode_wrapper.testing import OfflineModelProcess
from reliability._support import FAST, scaled, summary
from reliability.conftest import Reliability

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(scaled(240, 900))]

# Run mode: long enough for opencode to boot and call the model on a busy 2-core machine.
RUN_TIMEOUT_S = 12.0
TURN_TIMEOUT_S = 3.0
BUDGET_S = 2.0


async def _expect_timeout(call: Callable[[], Awaitable[Any]], timeout_s: float) -> float:
    """Run ``call``; it must raise OpenCodeTimeoutError carrying a non-ok result. Return the overshoot."""
    started = time.monotonic()
    with pytest.raises(OpenCodeTimeoutError) as caught:
        await call()
    overshoot = time.monotonic() - started - timeout_s
    error = caught.value
    assert error.timeout_s == timeout_s
    assert error.result is not None and not error.result.ok
    assert error.result.error is not None and error.result.error.kind == "timeout"
    return overshoot


async def _consume(stream: Any) -> None:
    async for _ in stream:
        pass


async def test_a_model_that_never_answers_times_out_everywhere(
    opencode_binary: str, workspace: Path, rel: Reliability
) -> None:
    rounds = scaled(1, 5)
    overshoots: dict[str, list[float]] = {}
    with OfflineModelProcess() as model:
        allow = model.run_config(permission={"bash": "allow"}, config_overrides=FAST)
        client = AsyncOpenCodeClient(opencode_binary)
        client.resolved_binary()
        left = rel.leftovers(exclude=[model.pid])
        left.baseline()

        def note(name: str, value: float) -> None:
            overshoots.setdefault(name, []).append(value)

        for i in range(rounds):
            sleeper = rel.marker(i)
            # The three run-mode cases at once: each has its own process tree and clock.
            hang, stream, in_sleep = await asyncio.gather(
                _expect_timeout(
                    lambda: client.async_run("[[hang]]", workspace, run_cfg=allow, timeout_s=RUN_TIMEOUT_S),
                    RUN_TIMEOUT_S,
                ),
                _expect_timeout(
                    lambda: _consume(
                        client.async_stream("[[hang]]", workspace, run_cfg=allow, timeout_s=RUN_TIMEOUT_S)
                    ),
                    RUN_TIMEOUT_S,
                ),
                _expect_timeout(
                    lambda s=sleeper: client.async_run(
                        f"[[bash: {s}]]", workspace, run_cfg=allow, timeout_s=RUN_TIMEOUT_S
                    ),
                    RUN_TIMEOUT_S,
                ),
            )
            note("async_run hang", hang)
            note("async_stream hang", stream)
            note("async_run in sleep 60", in_sleep)
        # One warm server for every server-side entry point: a pool's server also serves a
        # session. On warm servers timeout_s bounds the run itself; a server's start is bounded by
        # its own startup_timeout_s (a cold pool's first tasks would otherwise pay for it).
        async with ServerPool(binary=opencode_binary, max_servers=1) as pool:
            assert (await pool.run("[[say: warm]]", workspace, run_cfg=allow, timeout_s=120)).ok
            (server,) = pool.servers
            async with server.session(workspace) as session:
                for i in range(rounds):
                    note(
                        "session turn hang",
                        await _expect_timeout(
                            lambda: session.send("[[hang]]", timeout_s=TURN_TIMEOUT_S), TURN_TIMEOUT_S
                        ),
                    )
                    note(
                        "session turn in sleep 60",
                        await _expect_timeout(
                            lambda i=i: session.send(
                                f"[[bash: {rel.marker(100 + i)}]]", timeout_s=TURN_TIMEOUT_S
                            ),
                            TURN_TIMEOUT_S,
                        ),
                    )
                    # The session is still usable after a timed-out turn.
                    assert (await session.send("[[say: next]]", timeout_s=120)).final_text == "next"
            # A warm one-shot run, and run_many tasks, on the same server.
            for _ in range(rounds):
                note(
                    "warm one-shot run hang",
                    await _expect_timeout(
                        lambda: pool.run("[[hang]]", workspace, run_cfg=allow, timeout_s=TURN_TIMEOUT_S),
                        TURN_TIMEOUT_S,
                    ),
                )
            outcomes = await run_many(
                [Task("[[hang]]", workspace, timeout_s=TURN_TIMEOUT_S) for _ in range(2 * rounds)],
                run_cfg=allow,
                pool=pool,
            )
            assert pool.servers == [server], "timeouts do not cost the warm server"
        for outcome in outcomes:
            assert isinstance(outcome.exception, OpenCodeTimeoutError), outcome
            assert outcome.result is not None and outcome.error is not None
            assert outcome.error.kind == "timeout"
            note("run_many task hang", outcome.elapsed_s - TURN_TIMEOUT_S)
        counts = await left.settle()
    worst = max(max(v) for v in overshoots.values())
    rel.figures.update(
        fault="model never answers (timeout)",
        mode="run + warm server + session + run_many",
        injected=sum(len(v) for v in overshoots.values()),
        left_behind=counts,
        left_total=sum(counts.values()),
        detect_s={"max": round(worst, 3), "by_entry": {k: summary(v) for k, v in overshoots.items()}},
        settle_s=round(left.settle_s, 3),
    )
    assert counts == {"processes": 0, "temp_dirs": 0, "fds": 0, "tasks": 0}, left.explain()
    for name, values in overshoots.items():
        assert max(values) < BUDGET_S, f"{name}: raised {max(values):.2f} s after the timeout"
