"""Soak: N turns on one session and N one-shot runs on one warm server: memory and fds stay flat.

After every turn/run (and a ``gc.collect()``) the wrapper's figures are sampled: the Python heap
(``tracemalloc``: exact, no allocator noise), RSS, open file descriptors, live asyncio tasks, and
the opencode server's RSS. Slopes are least-squares fits over the samples after a warm-up (the
first 20 %: first-use caches of json/re/httpx/opencode fill there).

Thresholds, and why:

* Python heap: < 4 KiB per turn. The smallest thing a leaking turn would keep is its result
  (a trivial turn's events alone are tens of KB), its subscription, or its callback tasks:
  each well above 4 KiB.
* File descriptors: < 0.05 per turn, and at most 2 more at the end than after warm-up (httpx
  keeps up to 32 idle connections; a leak of one socket per turn would give a slope of 1).
* asyncio tasks: no growth (the servers' few background tasks live as long as the servers).
* RSS: asserted at full scale only (< 16 KiB per turn over 500 turns): at short scale one new
  256 KiB allocator arena is enough to fake a slope. Reported always.
* The opencode server's own RSS is reported, not asserted: it is opencode's (its caches and
  database grow with the sessions it has seen), not the wrapper's.
"""

from __future__ import annotations

import asyncio
import gc
import tracemalloc
import urllib.parse
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import psutil
import pytest

from opencode_wrapper import AsyncOpenCodeClient, RunResult
from opencode_wrapper.server import OpenCodeServer
from opencode_wrapper.testing import OfflineModelProcess
from reliability._support import FAST, FULL, open_fds, pending_tasks, rss, scaled, slope
from reliability.conftest import Reliability

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(scaled(240, 3600))]

KIB = 1024
HEAP_SLOPE_MAX = 4 * KIB
FD_SLOPE_MAX = 0.05
RSS_SLOPE_MAX = 16 * KIB


def _clear_bounded_caches() -> None:
    """Empty ``urllib.parse.urlsplit``'s LRU cache (128 entries, filled by httpx's cookie handling
    with every new ``/session/ses_...`` URL): bounded, not ours, but at short scale it would be
    most of the slope (measured: 2.5 KiB per run until it is full, 1 KiB after clearing)."""
    clear = getattr(urllib.parse.urlsplit, "cache_clear", None)
    if clear is not None:
        clear()


def _server_rss(server: OpenCodeServer) -> int:
    try:
        assert server.pid is not None
        return sum(p.memory_info().rss for p in psutil.Process(server.pid).children(recursive=True))
    except psutil.Error:
        return 0


async def _soak(
    count: int, step: Callable[[int], Awaitable[RunResult]], server: OpenCodeServer
) -> dict[str, Any]:
    samples: list[tuple[int, int, int, int, int, int]] = []
    for i in range(count):
        result = await step(i)
        assert result.ok and result.final_text == f"turn {i}", (i, result.error, result.final_text)
        del result
        await asyncio.sleep(0)  # let finished tasks' callbacks run
        _clear_bounded_caches()
        gc.collect()
        heap, _ = tracemalloc.get_traced_memory()
        samples.append((i, heap, rss(), open_fds(), len(pending_tasks()), _server_rss(server)))
    warm = max(2, count // 5)
    xs = [s[0] for s in samples[warm:]]

    def fit(column: int) -> float:
        return slope(xs, [s[column] for s in samples[warm:]])

    return {
        "turns": count,
        "heap_slope_b": round(fit(1), 1),
        "rss_slope_b": round(fit(2), 1),
        "fd_slope": round(fit(3), 4),
        "task_slope": round(fit(4), 4),
        "server_rss_slope_b": round(fit(5), 1),
        "fds_growth": samples[-1][3] - samples[warm][3],
        # The servers' own background tasks (event stream, stdout/stderr readers, watcher) live
        # as long as the servers: what counts is growth.
        "tasks_growth": samples[-1][4] - samples[warm][4],
        "heap_mb": [round(samples[warm][1] / 2**20, 2), round(samples[-1][1] / 2**20, 2)],
        "rss_mb": [round(samples[warm][2] / 2**20, 1), round(samples[-1][2] / 2**20, 1)],
        "server_rss_mb": [round(samples[warm][5] / 2**20, 1), round(samples[-1][5] / 2**20, 1)],
    }


async def test_soak_session_turns_and_warm_runs(
    opencode_binary: str, workspace: Path, rel: Reliability
) -> None:
    count = scaled(10, 500)
    with OfflineModelProcess() as model:
        cfg = model.run_config(config_overrides=FAST)
        left = rel.leftovers(exclude=[model.pid])
        left.baseline()
        tracemalloc.start()
        try:
            async with (
                OpenCodeServer(binary=opencode_binary, run_cfg=cfg, cwd=workspace) as server,
                AsyncOpenCodeClient(opencode_binary, warm_servers=True, max_servers=1) as warm,
            ):
                async with server.session(workspace) as session:
                    turns = await _soak(
                        count, lambda i: session.send(f"[[say: turn {i}]]", timeout_s=120), server
                    )
                assert await warm.async_run("[[say: warm]]", workspace, run_cfg=cfg, timeout_s=120)
                (pool_server,) = warm._pool.servers  # type: ignore[union-attr]
                runs = await _soak(
                    count,
                    lambda i: warm.async_run(f"[[say: turn {i}]]", workspace, run_cfg=cfg, timeout_s=120),
                    pool_server,
                )
        finally:
            tracemalloc.stop()
        counts = await left.settle()
    rel.figures.update(
        fault="soak",
        mode="session turns + one-shot runs on a warm server",
        injected=2 * count,
        slopes={"session": turns, "warm runs": runs},
        left_behind=counts,
        left_total=sum(counts.values()),
    )
    for name, fig in (("session turns", turns), ("warm runs", runs)):
        assert fig["heap_slope_b"] < HEAP_SLOPE_MAX, (name, fig)
        assert fig["fd_slope"] < FD_SLOPE_MAX and fig["fds_growth"] <= 2, (name, fig)
        assert fig["tasks_growth"] <= 0 and fig["task_slope"] <= 0, (name, fig)
        if FULL:
            assert fig["rss_slope_b"] < RSS_SLOPE_MAX, (name, fig)
    assert counts == {"processes": 0, "temp_dirs": 0, "fds": 0, "tasks": 0}, left.explain()
