"""Cancellation storm: runs cancelled at random moments, in run mode and on warm servers.

Moments come from a seeded ``random.Random`` (``OCW_RELIABILITY_SEED``): some at a random time
after the start (before opencode exists, while it boots, while the model answers), some while the
bash tool runs ``sleep 60.NNNN`` (a process in its own session, the classic orphan), and on warm
servers some while a permission request waits for a callback that never answers. Afterwards
nothing of ours may be left: no opencode/bash/sleep process (found by tag and marker, orphans
included), no temp dir, no open file descriptor beyond the baseline, no pending asyncio task.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from opencode_wrapper import AsyncOpenCodeClient
from opencode_wrapper.server import OpenCodeServer
from opencode_wrapper.testing import OfflineModelProcess
from reliability._support import (
    FAST,
    SEED,
    apoll,
    scaled,
    summary,
    tagged_processes,
)
from reliability.conftest import Reliability

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(scaled(240, 2400))]

# How long a cancelled call may take to return (it ends the whole tree first).
END_BUDGET_S = 10.0
# How long a run may take to reach its `sleep 60`: at full scale, next to another worker's 32
# parallel runs (load average 80 on 2 cores), booting opencode took more than 120 s.
BOOT_S = 300.0


async def _cancel(task: asyncio.Future[Any]) -> tuple[float, BaseException | Any]:
    """Cancel ``task``; return (seconds until it returned, what it returned or raised)."""
    started = time.monotonic()
    task.cancel()
    outcome = (await asyncio.gather(task, return_exceptions=True))[0]
    return time.monotonic() - started, outcome


async def _consume(stream: Any) -> None:
    async for _ in stream:
        pass


def _sleep_running(marker: str) -> bool:
    return bool(tagged_processes(None, [marker]))


async def test_cancellation_storm_run_mode(opencode_binary: str, workspace: Path, rel: Reliability) -> None:
    count = scaled(6, 50)
    rng = random.Random(SEED)
    plans = [
        {
            "moment": rng.choice(["random", "random", "in_sleep"]),
            "api": rng.choice(["async_run", "async_stream"]),
            "delay": rng.uniform(0.0, 3.5),
            "extra": rng.uniform(0.0, 0.5),
        }
        for _ in range(count)
    ]
    with OfflineModelProcess() as model:  # its sockets live in another process: our fd count stays ours
        cfg = model.run_config(permission={"bash": "allow"})
        client = AsyncOpenCodeClient(opencode_binary)
        client.resolved_binary()  # the one-time version check, before the baseline
        markers = [rel.marker(i) for i in range(count)]
        left = rel.leftovers(markers, exclude=[model.pid])
        left.baseline()
        limit = asyncio.Semaphore(scaled(6, 6))
        end_times: list[float] = []
        phases: Counter[str] = Counter()

        async def one(index: int) -> None:
            plan, marker = plans[index], markers[index]
            prompt = f"[[bash: {marker}]]"
            async with limit:
                if plan["api"] == "async_run":
                    coro: Any = client.async_run(prompt, workspace, run_cfg=cfg, timeout_s=300)
                else:
                    coro = _consume(client.async_stream(prompt, workspace, run_cfg=cfg, timeout_s=300))
                task = asyncio.ensure_future(coro)
                if plan["moment"] == "in_sleep":
                    assert await apoll(lambda: _sleep_running(marker), timeout_s=BOOT_S), (
                        "sleep never started"
                    )
                    await asyncio.sleep(plan["extra"])  # the injected moment, inside `sleep 60`
                else:
                    await asyncio.sleep(plan["delay"])  # the injected random moment
                spawned = bool(tagged_processes(rel.tag))
                phases["in_sleep" if _sleep_running(marker) else "running" if spawned else "not_spawned"] += 1
                assert not task.done(), f"run {index} ended before it was cancelled: {task}"
                took, outcome = await _cancel(task)
            assert isinstance(outcome, asyncio.CancelledError), f"run {index}: {outcome!r}"
            end_times.append(took)
            assert not _sleep_running(marker), f"run {index}: its sleep survived the cancellation"

        await asyncio.gather(*(one(i) for i in range(count)))
        counts = await left.settle()
    rel.figures.update(
        fault="cancellation storm",
        mode="run",
        injected=count,
        phases=dict(phases),
        left_behind=counts,
        left_total=sum(counts.values()),
        detect_s=summary(end_times),
        settle_s=round(left.settle_s, 3),
    )
    assert counts == {"processes": 0, "temp_dirs": 0, "fds": 0, "tasks": 0}, left.explain()
    assert max(end_times) < END_BUDGET_S


async def test_cancellation_storm_warm_servers(
    opencode_binary: str, workspace: Path, rel: Reliability
) -> None:
    count = scaled(8, 50)
    rng = random.Random(SEED + 1)
    kinds = ["run_random", "run_sleep", "session_random", "session_sleep", "session_permission"]
    plans = [
        {"kind": kinds[i % len(kinds)] if i < len(kinds) else rng.choice(kinds), "delay": rng.uniform(0, 1.5)}
        for i in range(count)
    ]
    with OfflineModelProcess() as model:
        allow = model.run_config(permission={"bash": "allow"}, config_overrides=FAST)
        ask = model.run_config(permission={"bash": "ask"}, config_overrides=FAST)
        markers = [rel.marker(i) for i in range(count)]
        left = rel.leftovers(markers, exclude=[model.pid])
        client = AsyncOpenCodeClient(opencode_binary, warm_servers=True, max_servers=1)
        client.resolved_binary()
        left.baseline()
        end_times: list[float] = []
        phases: Counter[str] = Counter()
        asked: dict[int, asyncio.Event] = {i: asyncio.Event() for i in range(count)}

        def never_answers(index: int) -> Any:
            async def callback(request: dict[str, Any]) -> str:
                asked[index].set()
                await asyncio.Event().wait()  # a human who never comes back
                return "once"

            return callback

        async def approve(request: dict[str, Any]) -> str:
            return "once"

        async with client, OpenCodeServer(binary=opencode_binary, run_cfg=ask, cwd=workspace) as server:
            # Warm both servers up (first prompts boot an instance per directory).
            assert (await client.async_run("[[say: warm]]", workspace, run_cfg=allow, timeout_s=120)).ok
            async with server.session(workspace) as s:
                assert (await s.send("[[say: warm]]", timeout_s=120)).ok
            limit = asyncio.Semaphore(4)

            async def one(index: int) -> None:
                plan, marker = plans[index], markers[index]
                kind = plan["kind"]
                async with limit:
                    if kind.startswith("run_"):
                        prompt = f"[[bash: {marker}]]"
                        task = asyncio.ensure_future(
                            client.async_run(prompt, workspace, run_cfg=allow, timeout_s=300)
                        )
                        await _moment(kind, plan, marker, asked[index])
                        took, outcome = await _cancel(task)
                    else:
                        callback = never_answers(index) if kind == "session_permission" else approve
                        async with server.session(workspace, on_permission=callback) as session:
                            task = asyncio.ensure_future(session.send(f"[[bash: {marker}]]", timeout_s=300))
                            await _moment(kind, plan, marker, asked[index])
                            assert not task.done(), f"{kind} {index} ended early: {task}"
                            took, outcome = await _cancel(task)
                phases[kind] += 1
                assert isinstance(outcome, asyncio.CancelledError), f"{kind} {index}: {outcome!r}"
                end_times.append(took)
                gone = await apoll(lambda: not _sleep_running(marker), timeout_s=10)
                assert gone, f"{kind} {index}: its sleep survived the cancellation"

            await asyncio.gather(*(one(i) for i in range(count)))
            # The warm servers survived the storm and still answer.
            after = await client.async_run("[[say: still here]]", workspace, run_cfg=allow, timeout_s=120)
            async with server.session(workspace) as s:
                again = await s.send("[[say: me too]]", timeout_s=120)
            assert after.final_text == "still here" and again.final_text == "me too"
        counts = await left.settle()
    rel.figures.update(
        fault="cancellation storm",
        mode="warm server",
        injected=count,
        phases=dict(phases),
        left_behind=counts,
        left_total=sum(counts.values()),
        detect_s=summary(end_times),
        settle_s=round(left.settle_s, 3),
    )
    assert counts == {"processes": 0, "temp_dirs": 0, "fds": 0, "tasks": 0}, left.explain()
    assert max(end_times) < END_BUDGET_S


async def _moment(kind: str, plan: dict[str, Any], marker: str, asked: asyncio.Event) -> None:
    """Wait for the injected moment of ``kind``."""
    if kind.endswith("_sleep"):
        assert await apoll(lambda: _sleep_running(marker), timeout_s=BOOT_S), "sleep never started"
    elif kind == "session_permission":
        await asyncio.wait_for(asked.wait(), 120)
    await asyncio.sleep(plan["delay"] if kind.endswith("_random") else plan["delay"] / 5)


# ----------------------------------------------------------------------------- the race, made exact
#
# Before Python 3.12, ``asyncio.wait_for`` swallows a cancellation that arrives in the same loop
# iteration as the awaited result: it returns the result, and the cancelled caller carries on.
# In the storm above that showed as a cancelled warm-server run that went on for the full
# ``sleep 60`` and returned a result. These tests make that moment exact instead of random.

FAKE_OPENCODE = """#!{python}
import json, sys, time
if sys.argv[1:2] == ["--version"]:
    print("1.18.33")
    sys.exit(0)
sys.stdin.read()
for i in range(100000):
    event = {{"type": "text", "sessionID": "ses_fake", "part": {{"type": "text", "text": str(i)}}}}
    print(json.dumps(event), flush=True)
    time.sleep(0.01)
"""


async def test_a_cancel_that_meets_an_event_is_not_swallowed_in_run_mode(
    tmp_path: Path, workspace: Path, rel: Reliability, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    from opencode_wrapper.backends import process as client_module

    fake = tmp_path / "opencode"
    fake.write_text(FAKE_OPENCODE.format(python=sys.executable), encoding="utf-8")
    fake.chmod(0o755)
    consumer: asyncio.Task[Any] | None = None
    real_parse = client_module.parse_event_line
    seen = 0

    def parse_and_cancel(line: Any) -> Any:
        # Runs inside the stream's step that is about to deliver this event: the consumer's
        # cancellation and the event now arrive together.
        nonlocal seen
        seen += 1
        if seen == 5 and consumer is not None:
            consumer.cancel()
        return real_parse(line)

    monkeypatch.setattr(client_module, "parse_event_line", parse_and_cancel)
    client = AsyncOpenCodeClient(str(fake), startup_delay_s=0)
    received = 0

    async def consume() -> None:
        nonlocal received
        async for _ in client.async_stream("x", workspace, timeout_s=60):
            received += 1

    left = rel.leftovers()
    consumer = asyncio.ensure_future(consume())
    outcome = (await asyncio.gather(consumer, return_exceptions=True))[0]
    assert isinstance(outcome, asyncio.CancelledError), f"the cancellation was swallowed: {outcome!r}"
    assert received < 5
    counts = await left.settle()
    assert counts["processes"] == 0 and counts["temp_dirs"] == 0, left.explain()


async def test_a_cancel_that_meets_an_event_is_not_swallowed_in_a_session_turn() -> None:
    from opencode_wrapper._server.bus import Subscription as _Subscription
    from opencode_wrapper.events import make_event

    sub = _Subscription("ses_a")
    waiting = asyncio.ensure_future(sub.get(60))
    await asyncio.sleep(0)  # now waiting for an event
    sub.put(make_event({"type": "session.status", "properties": {"sessionID": "ses_a"}}))
    waiting.cancel()  # in the same loop iteration as the event
    outcome = (await asyncio.gather(waiting, return_exceptions=True))[0]
    assert isinstance(outcome, asyncio.CancelledError), f"the cancellation was swallowed: {outcome!r}"
