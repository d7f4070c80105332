"""A warm server killed with SIGKILL mid-turn, and its event stream cut while it lives.

Both with ``run_many`` on a :class:`ServerPool` of one server: several tasks wait on a model that
never answers, the fault is injected, and

* every waiting task fails in under 2 s with an :class:`OpenCodeServerError` that says what
  happened (``exited unexpectedly (killed by signal 9)`` / ``event stream``);
* the next task gets a fresh server (another PID) and succeeds;
* nothing is left: the dead or cut-off server's tree is ended, its temp dirs removed.

The stream cut goes through :class:`CuttableProxy`, a TCP proxy between the wrapper and the real
``opencode serve`` that drops only the ``GET /global/event`` connection: the server itself stays
healthy, the wrapper alone must notice.
"""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psutil
import pytest

from opencode_wrapper import OpenCodeServerError
from opencode_wrapper._server import base as server_module
from opencode_wrapper.batch import Progress, Task, run_many
from opencode_wrapper.pool import ServerPool
from opencode_wrapper.testing import OfflineModelProcess
from reliability._fakes import CuttableProxy
from reliability._support import FAST, apoll, scaled, summary
from reliability.conftest import Reliability

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(scaled(240, 1200))]

BUDGET_S = 2.0
WAITING = 3  # tasks waiting on the server when the fault hits


def _opencode_of(pool: ServerPool) -> psutil.Process:
    (server,) = pool.servers
    assert server.pid is not None
    (child,) = psutil.Process(server.pid).children()
    return child


async def _fault_round(
    pool: ServerPool,
    workspace: Path,
    cfg: Any,
    inject: Any,
) -> dict[str, Any]:
    """WAITING hanging tasks, the fault, then one task that must succeed on a fresh server."""
    finished_at: dict[int, float] = {}

    def progress(p: Progress) -> None:
        if p.last is not None:
            finished_at.setdefault(p.last.index, time.monotonic())

    tasks = [Task(f"[[hang]] waiting {i}", workspace, timeout_s=120) for i in range(WAITING)]
    tasks.append(Task("[[say: after the fault]]", workspace, timeout_s=120))
    injected: dict[str, Any] = {}

    async def injector() -> None:
        # Wait until every waiting task is inside its turn (its session is busy on the server).
        await _wait_busy(pool, workspace, WAITING)
        injected["old_pid"] = pool.servers[0].pid
        injected["at"] = time.monotonic()
        inject(pool)

    hit = asyncio.ensure_future(injector())
    # concurrency=WAITING: the last task starts only when a waiting one has failed.
    outcomes = await run_many(tasks, pool=pool, run_cfg=cfg, concurrency=WAITING, on_progress=progress)
    await hit
    detect = [finished_at[i] - injected["at"] for i in range(WAITING)]
    for outcome in outcomes[:WAITING]:
        assert isinstance(outcome.exception, OpenCodeServerError), outcome
        assert outcome.result is not None and not outcome.result.ok
    last = outcomes[-1]
    assert last.ok and last.result is not None, last
    assert last.result.final_text == "after the fault"
    assert pool.servers and pool.servers[0].pid != injected["old_pid"], "the next task needs a fresh server"
    return {"detect": detect, "errors": [str(o.exception) for o in outcomes[:WAITING]]}


async def _wait_busy(pool: ServerPool, workspace: Path, count: int) -> None:
    async def busy() -> int:
        if not pool.servers:
            return 0
        server = pool.servers[0]
        try:
            status = await server.request("GET", "/session/status", params={"directory": str(workspace)})
        except Exception:
            return 0
        return sum(1 for s in (status or {}).values() if isinstance(s, dict) and s.get("type") == "busy")

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if await busy() >= count:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the waiting tasks never became busy")


async def test_server_sigkill_mid_turn(opencode_binary: str, workspace: Path, rel: Reliability) -> None:
    rounds = scaled(1, 5)
    with OfflineModelProcess() as model:
        cfg = model.run_config(config_overrides=FAST)
        left = rel.leftovers(exclude=[model.pid])
        left.baseline()
        detect: list[float] = []
        messages: list[str] = []

        def kill(pool: ServerPool) -> None:
            _opencode_of(pool).send_signal(signal.SIGKILL)

        async with ServerPool(binary=opencode_binary, max_servers=1) as pool:
            for _ in range(rounds):
                found = await _fault_round(pool, workspace, cfg, kill)
                detect += found["detect"]
                messages += found["errors"]
        counts = await left.settle()
    rel.figures.update(
        fault="server SIGKILL mid-turn",
        mode="run_many on a warm server",
        injected=rounds,
        waiting_calls=rounds * WAITING,
        left_behind=counts,
        left_total=sum(counts.values()),
        detect_s=summary(detect),
        settle_s=round(left.settle_s, 3),
    )
    assert all("exited unexpectedly" in m and "signal 9" in m for m in messages), messages
    assert max(detect) < BUDGET_S, detect
    assert counts == {"processes": 0, "temp_dirs": 0, "fds": 0, "tasks": 0}, left.explain()


async def test_event_stream_cut_mid_turn(
    opencode_binary: str, workspace: Path, rel: Reliability, monkeypatch: pytest.MonkeyPatch
) -> None:
    rounds = scaled(1, 5)
    proxies: list[CuttableProxy] = []
    real_transport = server_module.Transport

    def through_a_proxy(base_url: str, **kwargs: Any) -> Any:
        parts = urlsplit(base_url)
        proxy = CuttableProxy(parts.hostname or "127.0.0.1", parts.port or 80)
        proxies.append(proxy)
        return real_transport(proxy.url, **kwargs)

    monkeypatch.setattr(server_module, "Transport", through_a_proxy)
    with OfflineModelProcess() as model:
        cfg = model.run_config(config_overrides=FAST)
        left = rel.leftovers(exclude=[model.pid])
        left.baseline()
        detect: list[float] = []
        messages: list[str] = []
        server_pids: list[int] = []

        def cut(pool: ServerPool) -> None:
            server_pids.append(_opencode_of(pool).pid)
            # The event stream's connection: its first request may be the start's version check
            # (GET /global/health), then kept alive for GET /global/event.
            assert proxies[-1].cut(b"GET /global/") == 1

        try:
            async with ServerPool(binary=opencode_binary, max_servers=1) as pool:
                for _ in range(rounds):
                    found = await _fault_round(pool, workspace, cfg, cut)
                    detect += found["detect"]
                    messages += found["errors"]
                    # The cut-off server was healthy; the pool retired it and ended its tree.
                    assert await apoll(lambda: not psutil.pid_exists(server_pids[-1]), timeout_s=10)
        finally:
            for proxy in proxies:
                proxy.close()
        counts = await left.settle()
    rel.figures.update(
        fault="event stream cut mid-turn",
        mode="run_many on a warm server",
        injected=rounds,
        waiting_calls=rounds * WAITING,
        left_behind=counts,
        left_total=sum(counts.values()),
        detect_s=summary(detect),
        settle_s=round(left.settle_s, 3),
    )
    assert all("event stream" in m for m in messages), messages
    assert max(detect) < BUDGET_S, detect
    assert counts == {"processes": 0, "temp_dirs": 0, "fds": 0, "tasks": 0}, left.explain()
