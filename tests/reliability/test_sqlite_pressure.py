"""Parallel SQLite pressure: N concurrent runs sharing one data dir, N with private dirs: zero lost runs.

opencode keeps each run in a SQLite database under ``XDG_DATA_HOME``; issues upstream report
``database is locked`` / ``SQLITE_BUSY`` when several processes share one. Each run here does a
tool step (more writes than a plain answer) and must come back ``ok`` with its own answer, in its
own session; for the shared dir, every session and its messages must also be in the database.
The client keeps its defaults (start-up pacing, SQLite start-up retries), as users would.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import pytest

from opencode_wrapper import AsyncOpenCodeClient, RunResult
from opencode_wrapper.testing import OfflineModelProcess
from reliability._support import scaled, summary
from reliability.conftest import Reliability

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(scaled(240, 2400))]


async def _batch(
    client: AsyncOpenCodeClient, workspace: Path, cfg: object, count: int, label: str, data_home: Path | None
) -> tuple[list[RunResult | BaseException], list[float]]:
    times: list[float] = []

    async def one(index: int) -> RunResult:
        started = time.monotonic()
        try:
            return await client.async_run(
                f"[[bash: echo {label}-{index}-done]]",
                workspace,
                run_cfg=cfg,  # type: ignore[arg-type]
                timeout_s=600,
                data_home=data_home,
            )
        finally:
            times.append(time.monotonic() - started)

    results = await asyncio.gather(*(one(i) for i in range(count)), return_exceptions=True)
    return list(results), times


def _lost(results: list[RunResult | BaseException], label: str) -> list[str]:
    lost = []
    for index, result in enumerate(results):
        if isinstance(result, BaseException):
            lost.append(f"{label}-{index}: {type(result).__name__}: {str(result)[:300]}")
        elif not result.ok or f"{label}-{index}-done" not in result.final_text:
            lost.append(
                f"{label}-{index}: ok={result.ok} error={result.error} text={result.final_text[:80]!r}"
            )
    return lost


async def test_parallel_runs_on_shared_and_private_data_dirs(
    opencode_binary: str, workspace: Path, tmp_path: Path, rel: Reliability
) -> None:
    count = scaled(4, 32)
    shared = tmp_path / "shared-data"
    with OfflineModelProcess() as model:
        cfg = model.run_config(permission={"bash": "allow"})
        client = AsyncOpenCodeClient(opencode_binary)
        client.resolved_binary()
        left = rel.leftovers(exclude=[model.pid])
        left.baseline()
        shared_results, shared_times = await _batch(client, workspace, cfg, count, "shared", shared)
        private_results, private_times = await _batch(client, workspace, cfg, count, "private", None)
        counts = await left.settle()
    lost = _lost(shared_results, "shared") + _lost(private_results, "private")
    ok_shared = [r for r in shared_results if isinstance(r, RunResult)]
    sessions = {r.session_id for r in ok_shared}
    with sqlite3.connect(f"file:{shared / 'opencode' / 'opencode.db'}?mode=ro", uri=True) as db:
        stored = {
            sid: n
            for sid, n in db.execute(
                "SELECT session.id, COUNT(message.id) FROM session "
                "LEFT JOIN message ON message.session_id = session.id GROUP BY session.id"
            )
        }
    missing = [sid for sid in sessions if stored.get(sid, 0) < 3]  # user + tool step + answer
    rel.figures.update(
        fault="parallel SQLite pressure",
        mode=f"run: {count} shared data dir + {count} private",
        injected=2 * count,
        lost_runs=len(lost),
        missing_in_db=len(missing),
        left_behind=counts,
        left_total=sum(counts.values()),
        wall_s={"shared": summary(shared_times), "private": summary(private_times)},
    )
    assert lost == [], lost
    assert len(sessions) == count and None not in sessions, "every run has its own session"
    assert missing == [], f"sessions not (fully) in the shared database: {missing} of {stored}"
    assert counts == {"processes": 0, "temp_dirs": 0, "fds": 0, "tasks": 0}, left.explain()
