"""ServerPool sizing: how many servers one config spreads over, and when runs share one (no process)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from opencode_wrapper import OpenCodeConfigError, RunConfig
from opencode_wrapper.backends import pool as pool_module
from opencode_wrapper.backends.pool import ServerPool, _Slot, default_servers_per_config
from opencode_wrapper.backends.request import RunRequest


class _FakeServer:
    alive = True

    async def aclose(self) -> None:
        self.alive = False


def _fake_starts(pool: ServerPool, started: list[str]) -> None:
    """Make ``pool`` start a fake server (no process) instead of ``opencode serve``."""

    async def start(request: RunRequest, key: str) -> _Slot:
        slot = _Slot(server=_FakeServer(), key=key)  # type: ignore[arg-type]
        async with pool._changed:
            pool._starting.pop(key, None)
            pool._slots.append(slot)
            pool._changed.notify_all()
        started.append(key)
        return slot

    pool._start = start  # type: ignore[method-assign]


def _request(workspace: Path, permission: str = "allow") -> RunRequest:
    return RunRequest.create("hi", workspace, run_cfg=RunConfig(permission={"bash": permission}))


async def test_one_config_stays_on_its_servers_and_shares_them_past_sessions_per_server(
    tmp_path: Path,
) -> None:
    pool = ServerPool(max_servers=4, servers_per_config=1, sessions_per_server=2)
    started: list[str] = []
    _fake_starts(pool, started)
    slots = [await pool._acquire(_request(tmp_path)) for _ in range(5)]
    assert len(started) == 1, "one server per config, however busy"
    assert {id(s) for s in slots} == {id(slots[0])} and slots[0].load == 5
    assert pool.capacity == 2


async def test_another_config_still_gets_its_own_server(tmp_path: Path) -> None:
    pool = ServerPool(max_servers=2, servers_per_config=1)
    started: list[str] = []
    _fake_starts(pool, started)
    allow = await pool._acquire(_request(tmp_path, "allow"))
    deny = await pool._acquire(_request(tmp_path, "deny"))
    assert len(started) == 2 and allow is not deny


async def test_a_second_server_starts_once_the_first_is_full_if_allowed(tmp_path: Path) -> None:
    pool = ServerPool(max_servers=2, servers_per_config=2, sessions_per_server=2)
    started: list[str] = []
    _fake_starts(pool, started)
    slots = [await pool._acquire(_request(tmp_path)) for _ in range(3)]
    assert len(started) == 2 and [s.load for s in pool._slots] == [2, 1]
    await pool._release(slots[0])
    again = await pool._acquire(_request(tmp_path))
    assert len(started) == 2 and again.load == 2, "the least loaded server is reused"


async def test_an_explicit_max_servers_is_also_the_servers_of_one_config(tmp_path: Path) -> None:
    pool = ServerPool(max_servers=3, sessions_per_server=1)
    started: list[str] = []
    _fake_starts(pool, started)
    await asyncio.gather(*(pool._acquire(_request(tmp_path)) for _ in range(3)))
    assert len(started) == 3 and pool.capacity == 3


def test_default_servers_per_config_is_one_per_two_cpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pool_module, "default_max_servers", lambda: 8)
    for cpus, expected in ((1, 1), (2, 1), (3, 1), (4, 2), (16, 8)):
        monkeypatch.setattr(pool_module.os, "cpu_count", lambda cpus=cpus: cpus)
        assert default_servers_per_config() == expected
    monkeypatch.setattr(pool_module.os, "cpu_count", lambda: 2)
    assert ServerPool().capacity == 32


@pytest.mark.parametrize("bad", [0, -1, True, 1.5])
def test_servers_per_config_must_be_a_positive_int(bad: object) -> None:
    with pytest.raises(OpenCodeConfigError, match="servers_per_config must be an integer >= 1"):
        ServerPool(servers_per_config=bad)  # type: ignore[arg-type]
