"""``ServerPool``: lazily started, shared, capped warm servers; a backend for one-shot runs.

A run on a warm server skips opencode's start-up and shares one process's memory with the other
runs on it. Runs whose server-global config (permission, mcp, instructions, provider config,
environment, data dir) is equal share servers; a different config gets its own. A server that
died is replaced by a fresh one for the next run; a server that fails to start is retried
(``max_retries`` of the run) before the run fails with ``server_failure``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

from opencode_wrapper._lean import lean_run_config, one_shot_run_config
from opencode_wrapper._model.outcome import RunResult
from opencode_wrapper._proc.environment import catalog_unused
from opencode_wrapper._server.base import ServerBase
from opencode_wrapper.backends.base import Backend, run_request
from opencode_wrapper.backends.handle import RunHandle
from opencode_wrapper.backends.request import RunOptions, RunRequest
from opencode_wrapper.backends.server import ServerRun, check_for_server
from opencode_wrapper.config import RunConfig
from opencode_wrapper.errors import OpenCodeConfigError, OpenCodeError, OpenCodeServerError

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["ServerPool", "default_max_servers", "default_servers_per_config"]

# Measured: one warm server holds ~0.7-0.8 GB after work, and runs are CPU-bound.
_SERVER_MEMORY_BYTES = 1_000_000_000
# Idle directories whose opencode instance a pool's server keeps (see ServerBase.idle_instances).
_IDLE_INSTANCES = 8
# Sessions one server takes before another server for the same config is started (if allowed).
# Measured (2 cores, lean, 100 tasks in their own workspaces, one server): 16 at once took
# 51.4 / 46.6 CPU-s and 0.96 / 0.97 GB in two rounds, 32 at once 45.1 / 44.7 CPU-s and
# 1.15 / 1.17 GB, 100 at once 44.8 / 47.9 CPU-s and 1.46 / 1.57 GB. A server whose sessions
# wait for a model uses no CPU meanwhile, so more of them keep it busy.
_SESSIONS_PER_SERVER = 32


def default_max_servers() -> int:
    """One server per CPU, fewer if memory is short (about 1 GB per server)."""
    cpus = os.cpu_count() or 1
    try:
        available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return cpus
    return max(1, min(cpus, available // _SERVER_MEMORY_BYTES))


def default_servers_per_config() -> int:
    """How many servers the runs of one configuration spread over: one per two CPUs (at least one).

    A server does its work on one event loop, so it keeps about one core busy; its tools, ``git``
    and this process take the other. A second server for the same runs costs a whole start-up and
    its own base memory, and on two cores it does not pay. Measured (2 cores, 16 tasks in their own
    workspaces, three interleaved rounds): lean, 1 server x 16 sessions instead of 2 x 8 took
    x0.72 CPU (14.8 / 13.5 / 11.7 CPU-s against 22.3 / 17.2 / 16.0) and x0.67 peak memory
    (610 / 684 / 704 MB against 975 / 1,041 / 986 MB); with defaults x0.81 CPU (38.4 / 32.7
    against 45.4 / 42.9 CPU-s) and x0.74 memory (1.75 / 1.53 GB against 2.22 / 2.20 GB). At 100
    tasks, lean, 1 x 16 against 2 x 16: x0.89 CPU and x0.56 memory (0.96 GB against 1.73 GB).
    """
    return max(1, min((os.cpu_count() or 1) // 2, default_max_servers()))


class _PoolKey(NamedTuple):
    """What servers are shared by: runs with equal keys may run on the same server."""

    server_key: str
    data_home: str | None
    isolated: bool
    without_catalog: bool


@dataclass
class _Slot:
    server: ServerBase
    key: _PoolKey
    load: int = 0


def _positive_int(value: object, name: str) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise OpenCodeConfigError(f"{name} must be an integer >= 1, got {value!r}")


class ServerPool(Backend):
    """Lazily started, reused, capped warm servers; all ended by :meth:`aclose`.

    Args:
        binary: the opencode binary (as for :class:`AsyncOpenCodeClient`).
        max_servers: the most servers alive at once, over all configs (default
            :func:`default_max_servers`).
        sessions_per_server: start another server for the same config once every one of them
            runs this many sessions (if ``servers_per_config`` and ``max_servers`` allow).
        servers_per_config: the most servers the runs of one config spread over (default:
            ``max_servers`` when you give it, else :func:`default_servers_per_config`). Once
            they are all that busy, runs share the least loaded one.
        lean: start servers with the lean profile (see the README's "Lean profile").
        isolate_db: give each server a private data dir.
        startup_concurrency: how many servers may start at the same moment.
        startup_delay_s: how long each start holds its slot.

    Use as ``async with ServerPool() as pool: await pool.run(prompt, workspace)``, or as the
    backend of ``run_many(tasks, pool=pool)``.
    """

    name = "pool"
    #: The class of the servers it starts (the public ``opencode_wrapper.ServerPool`` starts
    #: ``OpenCodeServer``s, so ``pool.servers[0].session(...)`` works).
    server_class: type[ServerBase] = ServerBase

    def __init__(
        self,
        *,
        binary: str | os.PathLike[str] = "opencode",
        max_servers: int | None = None,
        sessions_per_server: int = _SESSIONS_PER_SERVER,
        servers_per_config: int | None = None,
        lean: bool = False,
        isolate_db: bool = True,
        startup_concurrency: int | None = None,
        startup_delay_s: float = 0.0,
    ) -> None:
        _positive_int(max_servers, "max_servers")
        _positive_int(sessions_per_server, "sessions_per_server")
        _positive_int(servers_per_config, "servers_per_config")
        _positive_int(startup_concurrency, "startup_concurrency")
        self._binary = binary
        self._max_servers = max_servers or default_max_servers()
        self._per_server = sessions_per_server
        per_config = servers_per_config or (max_servers or default_servers_per_config())
        self._per_config = min(per_config, self._max_servers)
        self.lean = bool(lean)
        self._isolate_db = isolate_db
        self._startup = asyncio.Semaphore(startup_concurrency) if startup_concurrency else None
        self._startup_delay_s = float(startup_delay_s)
        self._slots: list[_Slot] = []
        self._starting: dict[_PoolKey, asyncio.Task[_Slot]] = {}
        self._retiring: set[asyncio.Task[None]] = set()
        self._changed = asyncio.Condition()
        self._closed = False

    def __repr__(self) -> str:
        return f"ServerPool(servers={len(self._slots)}, max_servers={self._max_servers}, lean={self.lean})"

    @property
    def servers(self) -> list[ServerBase]:
        """The servers alive now."""
        return [slot.server for slot in self._slots]

    @property
    def capacity(self) -> int:
        """Sessions one config gets before its runs share servers (``run_many``'s default concurrency)."""
        return self._per_config * self._per_server

    async def __aenter__(self) -> ServerPool:
        return self

    async def run(
        self, prompt: str, workspace: str | os.PathLike[str], **options: Unpack[RunOptions]
    ) -> RunResult:
        """One-shot run on a warm server; the same options, result and errors as ``async_run``.

        A fresh session is opened for the run and deleted after it.
        """
        return await run_request(self, RunRequest.create(prompt, workspace, **options))

    # ------------------------------------------------------------------ backend

    def check(self, request: RunRequest) -> None:
        check_for_server(request, self.name)
        if self._closed:
            raise OpenCodeError("the ServerPool is closed")

    def _handle(self, request: RunRequest) -> RunHandle:
        slot: _Slot | None = None

        async def acquire() -> ServerBase:
            nonlocal slot
            slot = await self._acquire_retrying(request)
            return slot.server

        async def release(_: ServerBase) -> None:
            if slot is not None:
                await self._release(slot)

        return ServerRun(request, acquire, release, backend=self.name)

    async def aclose(self) -> None:
        """End every server (running turns are aborted first). Safe to call twice."""
        self._closed = True
        for task in self._starting.values():
            task.cancel()
        await asyncio.gather(*self._starting.values(), return_exceptions=True)
        slots, self._slots = self._slots, []
        await asyncio.gather(
            *(slot.server.aclose() for slot in slots), *self._retiring, return_exceptions=True
        )

    # ------------------------------------------------------------------ internals

    def server_config(
        self, cfg: RunConfig, *, isolated: bool = False, empty_catalog: bool = False
    ) -> RunConfig:
        """The config a server for one-shot runs of ``cfg`` is started with (a pool serves only those:
        see ``one_shot_run_config`` for what that leaves out)."""
        return one_shot_run_config(
            lean_run_config(cfg) if self.lean else cfg, isolated=isolated, empty_catalog=empty_catalog
        )

    @staticmethod
    def _key(request: RunRequest) -> _PoolKey:
        # A server without the models catalog takes only runs that cannot use it (the model is
        # not part of the server key, and a workspace's project config may name other models).
        return _PoolKey(
            request.config.server_key(),
            request.data_home,
            request.isolation != "none",
            catalog_unused(request.config, request.workspace),
        )

    async def _acquire_retrying(self, request: RunRequest) -> _Slot:
        """A slot for ``request``; a server that fails to start is retried ``max_retries`` times."""
        for attempt in range(request.max_retries + 1):
            try:
                return await self._acquire(request)
            except OpenCodeServerError:
                if attempt == request.max_retries:
                    raise
                await asyncio.sleep(request.retry_delay_s)
        raise AssertionError("unreachable")

    async def _acquire(self, request: RunRequest) -> _Slot:
        """Reserve a session slot on a server for ``request``, starting one if that is allowed."""
        key = self._key(request)
        async with self._changed:
            while True:
                if self._closed:
                    raise OpenCodeError("the ServerPool is closed")
                self._drop_dead()
                mine = [s for s in self._slots if s.key == key]
                best = min(mine, key=lambda s: s.load, default=None)
                if best is not None and best.load < self._per_server:
                    best.load += 1
                    return best
                if key in self._starting:
                    await self._wait_unlocked(self._starting[key])
                    continue
                if (
                    len(mine) < self._per_config
                    and len(self._slots) + len(self._starting) < self._max_servers
                ):
                    self._starting[key] = asyncio.ensure_future(self._start(request, key))
                    await self._wait_unlocked(self._starting[key])
                    continue
                if best is not None:  # at a cap: share the least loaded server
                    best.load += 1
                    return best
                idle = next((s for s in self._slots if s.load == 0), None)
                if idle is not None:  # at the cap, no server for this config: retire an idle one
                    self._slots.remove(idle)
                    await idle.server.aclose()
                    continue
                await self._changed.wait()

    async def _wait_unlocked(self, starting: asyncio.Task[_Slot]) -> None:
        """Wait for a server start without holding the lock; raise its start-up error."""
        self._changed.release()
        try:
            await asyncio.shield(starting)
        finally:
            await self._changed.acquire()

    async def _start(self, request: RunRequest, key: _PoolKey) -> _Slot:
        server = self.server_class(
            binary=self._binary,
            run_cfg=self.server_config(
                request.config, isolated=key.isolated, empty_catalog=key.without_catalog
            ),
            isolate_db=self._isolate_db,
            data_home=request.data_home,
            idle_instances=_IDLE_INSTANCES,
        )
        try:
            async with self._startup if self._startup is not None else contextlib.nullcontext():
                await server.start()
                if self._startup_delay_s > 0:
                    await asyncio.sleep(self._startup_delay_s)
        except BaseException:
            await server.aclose()
            async with self._changed:
                self._starting.pop(key, None)
                self._changed.notify_all()
            raise
        slot = _Slot(server=server, key=key)
        async with self._changed:
            self._starting.pop(key, None)
            self._slots.append(slot)
            self._changed.notify_all()
        return slot

    async def _release(self, slot: _Slot) -> None:
        async with self._changed:
            slot.load -= 1
            self._changed.notify_all()

    def _drop_dead(self) -> None:
        """Forget servers that died (their waiting runs already failed); the next run starts a fresh one."""
        for slot in [s for s in self._slots if not s.server.alive]:
            self._slots.remove(slot)
            closing = asyncio.ensure_future(slot.server.aclose())
            self._retiring.add(closing)
            closing.add_done_callback(self._retiring.discard)
