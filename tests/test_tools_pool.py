"""ToolServerPool: one running tool server per tool set, shared by leases, stopped with the last."""

from __future__ import annotations

import asyncio

import pytest

from opencode_wrapper.errors import OpenCodeConfigError
from opencode_wrapper.tools import ToolServerPool, merge_mcp, shared_pool, tool


def add(a: int) -> int:
    """Add one."""
    return a + 1


def sub(a: int) -> int:
    """Subtract one."""
    return a - 1


async def test_leases_of_one_tool_set_share_a_server_until_the_last_ends() -> None:
    pool = ToolServerPool()
    async with pool.lease([add]) as first:
        async with pool.lease([add]) as second, pool.lease([tool(add)]) as third:
            assert first is second is third and first.running
        assert first.running  # the outer lease still holds it
        async with pool.lease([add, sub]) as other, pool.lease([tool(name="plus")(add)]) as renamed:
            assert len({id(first), id(other), id(renamed)}) == 3
            assert len(pool.servers) == 3
    assert not first.running and not other.running and pool.servers == []


async def test_concurrent_leases_start_one_server() -> None:
    pool = ToolServerPool()
    servers = await asyncio.gather(*(pool.acquire([add]) for _ in range(5)))
    assert len({id(s) for s in servers}) == 1
    for server in servers:
        await pool.release(server)
    assert not servers[0].running
    with pytest.raises(ValueError, match="not acquired from this pool"):
        await pool.release(servers[0])


async def test_keep_idle_keeps_servers_until_aclose() -> None:
    pool = ToolServerPool(keep_idle=True, progress_interval_s=None)
    async with pool.lease([add]) as first:
        url = first.url
    async with pool.lease([add]) as again:
        assert again is first and again.url == url and again.running
    await pool.aclose()
    assert not first.running and pool.servers == []


async def test_bad_options_and_tools_are_refused_before_any_start() -> None:
    with pytest.raises(OpenCodeConfigError, match="max_threads"):
        ToolServerPool(max_threads=0)
    with pytest.raises(OpenCodeConfigError, match="free ports"):
        ToolServerPool(port=8080)
    pool = ToolServerPool()
    with pytest.raises(OpenCodeConfigError, match=r"Invalid tool name .<lambda>."):
        await pool.acquire([lambda x: x])
    assert pool.servers == []


async def test_the_shared_pool_is_per_event_loop_and_merge_mcp_adds_the_entry() -> None:
    assert shared_pool() is shared_pool()
    async with shared_pool().lease([add]) as server:
        merged = merge_mcp({"other": {"type": "remote", "url": "http://x"}}, server, "py")
        assert merged["py"] == server.mcp_entry() and merged["other"]["url"] == "http://x"
        assert merge_mcp(None, server) == server.mcp_config("py")
        with pytest.raises(OpenCodeConfigError, match="already has a server named 'py'"):
            merge_mcp(merged, server, "py")
