"""Sharing tool servers: one running :class:`ToolServer` per set of tools, while anyone uses it.

This is what ``RunConfig(python_tools=[...])`` needs from every backend: a run, a session or a
warm ``opencode serve`` leases the server for its tools, puts :func:`merge_mcp` of it into the
opencode config, and releases it when done. Runs with the same tools share one server (and so
one port and token: warm servers keyed by their config can be shared too).
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from opencode_wrapper._mcp._definition import Tool, as_tools, check_server_name
from opencode_wrapper._mcp._server import ToolServer
from opencode_wrapper.errors import OpenCodeConfigError

ToolKey = tuple[tuple[str, str, int], ...]


def tools_key(tools: Iterable[Tool]) -> ToolKey:
    """Equal for the same functions under the same names and descriptions, in the same order."""
    return tuple((t.name, t.description, id(t.fn)) for t in tools)


@dataclass
class _Entry:
    server: ToolServer
    tools: tuple[Tool, ...]  # keeps the functions alive, so the ids in the key stay theirs
    users: int = 0


class ToolServerPool:
    """Running tool servers, one per distinct tool set, counted by lease.

    ``async with pool.lease(tools) as server:`` gives a started :class:`ToolServer` serving
    ``tools``; leases of the same set (at once or nested) share one server, which stops when its
    last lease ends, unless ``keep_idle`` (then at :meth:`aclose`). A pool belongs to one event
    loop; :func:`shared_pool` gives the running loop's own.

    Args:
        keep_idle: keep a server running after its last lease, for the next one.
        server_options: keyword arguments of every :class:`ToolServer` the pool starts.
    """

    def __init__(self, *, keep_idle: bool = False, **server_options: Any) -> None:
        if "port" in server_options:
            raise OpenCodeConfigError("a ToolServerPool starts its servers on free ports: do not pass port=")
        ToolServer([], **server_options)  # refuse bad options now, before any lease
        self._keep_idle = keep_idle
        self._options = server_options
        self._entries: dict[ToolKey, _Entry] = {}
        self._lock = asyncio.Lock()

    @property
    def servers(self) -> list[ToolServer]:
        """The running servers."""
        return [entry.server for entry in self._entries.values()]

    async def acquire(self, tools: Iterable[Tool | Callable[..., Any]]) -> ToolServer:
        """A started server for ``tools`` (one more user); pair with :meth:`release`."""
        resolved = as_tools(tools)
        key = tools_key(resolved)
        async with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                server = ToolServer(resolved, **self._options)
                await server.start()
                entry = self._entries[key] = _Entry(server, resolved)
            entry.users += 1
            return entry.server

    async def release(self, server: ToolServer) -> None:
        """One user less; the last one stops the server (unless ``keep_idle``)."""
        async with self._lock:
            key = next((k for k, e in self._entries.items() if e.server is server), None)
            if key is None:
                raise ValueError("this server was not acquired from this pool (or was already released)")
            entry = self._entries[key]
            entry.users -= 1
            if entry.users == 0 and not self._keep_idle:
                del self._entries[key]
                await server.stop()

    @contextlib.asynccontextmanager
    async def lease(self, tools: Iterable[Tool | Callable[..., Any]]) -> AsyncIterator[ToolServer]:
        """``acquire`` on entry, ``release`` on exit."""
        server = await self.acquire(tools)
        try:
            yield server
        finally:
            await self.release(server)

    async def aclose(self) -> None:
        """Stop every server, leased or not."""
        async with self._lock:
            entries, self._entries = list(self._entries.values()), {}
            for entry in entries:
                await entry.server.stop()


_SHARED: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, ToolServerPool] = weakref.WeakKeyDictionary()


def shared_pool() -> ToolServerPool:
    """The running event loop's pool (default options: servers stop with their last lease)."""
    loop = asyncio.get_running_loop()
    pool = _SHARED.get(loop)
    if pool is None:
        pool = _SHARED[loop] = ToolServerPool()
    return pool


def merge_mcp(mcp: Mapping[str, Any] | None, server: ToolServer, name: str = "py") -> dict[str, Any]:
    """``mcp`` (a ``RunConfig.mcp`` value) plus ``server`` under ``name``.

    Raises:
        OpenCodeConfigError: ``mcp`` already has a server called ``name``.
    """
    check_server_name(name)
    if mcp is not None and name in mcp:
        raise OpenCodeConfigError(
            f"RunConfig.mcp already has a server named {name!r}, the name given to the python_tools "
            "server; rename one of them"
        )
    return {**(mcp or {}), **server.mcp_config(name)}
