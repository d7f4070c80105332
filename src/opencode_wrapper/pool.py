"""Warm servers for one-shot runs: ``ServerPool`` starts, shares, caps and ends ``opencode serve`` processes.

A run on a warm server skips opencode's ~2.4 s start-up and shares one process's memory with
the other runs on it. Runs whose server-global config (permission, mcp, instructions, provider
config, environment) is equal share servers; a different config gets its own.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterable
from dataclasses import dataclass

from opencode_wrapper._observers import EventCallback
from opencode_wrapper.config import RunConfig
from opencode_wrapper.errors import OpenCodeConfigError, OpenCodeError
from opencode_wrapper.events import RunResult
from opencode_wrapper.server import OpenCodeServer

__all__ = ["ServerPool", "default_max_servers"]

# Measured: one warm server holds ~0.7-0.8 GB after work, and runs are CPU-bound.
_SERVER_MEMORY_BYTES = 1_000_000_000


def default_max_servers() -> int:
    """One server per CPU, fewer if memory is short (about 1 GB per server)."""
    cpus = os.cpu_count() or 1
    try:
        available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return cpus
    return max(1, min(cpus, available // _SERVER_MEMORY_BYTES))


@dataclass
class _Slot:
    server: OpenCodeServer
    key: str
    load: int = 0


class ServerPool:
    """Lazily started, reused, capped warm servers; all ended by :meth:`aclose`.

    Args:
        binary: the opencode binary (as for :class:`AsyncOpenCodeClient`).
        max_servers: the most servers alive at once (default :func:`default_max_servers`).
        sessions_per_server: start another server for the same config once every one of them
            runs this many sessions (if ``max_servers`` allows).
        lean: start servers with the lean profile (see the README's "Lean profile").
        isolate_db: give each server a private data dir.

    Use as ``async with ServerPool() as pool: await pool.run(prompt, workspace)``.
    """

    def __init__(
        self,
        *,
        binary: str | os.PathLike[str] = "opencode",
        max_servers: int | None = None,
        sessions_per_server: int = 8,
        lean: bool = False,
        isolate_db: bool = True,
    ) -> None:
        for name, value in (("max_servers", max_servers), ("sessions_per_server", sessions_per_server)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise OpenCodeConfigError(f"{name} must be an integer >= 1, got {value!r}")
        self._binary = binary
        self._max_servers = max_servers or default_max_servers()
        self._per_server = sessions_per_server
        self._lean = lean
        self._isolate_db = isolate_db
        self._slots: list[_Slot] = []
        self._starting: dict[str, asyncio.Task[_Slot]] = {}
        self._retiring: set[asyncio.Task[None]] = set()
        self._changed = asyncio.Condition()
        self._closed = False

    def __repr__(self) -> str:
        return f"ServerPool(servers={len(self._slots)}, max_servers={self._max_servers}, lean={self._lean})"

    @property
    def servers(self) -> list[OpenCodeServer]:
        """The servers alive now."""
        return [slot.server for slot in self._slots]

    async def __aenter__(self) -> ServerPool:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def run(
        self,
        prompt: str,
        workspace: str | os.PathLike[str],
        *,
        run_cfg: RunConfig | None = None,
        timeout_s: float | None = None,
        log_file: str | os.PathLike[str] | None = None,
        log_exclude_types: Iterable[str] | None = None,
        on_event: EventCallback | None = None,
    ) -> RunResult:
        """One-shot run on a warm server; same result and errors as ``AsyncOpenCodeClient.async_run``.

        A fresh session is opened for the run and deleted after it; ``log_file`` gets the
        session's events as JSON lines as they arrive.
        """
        cfg = run_cfg or RunConfig()
        if cfg.cli_kwargs:
            raise OpenCodeConfigError(
                f"cli_kwargs {sorted(cfg.cli_kwargs)} are `opencode run` flags and cannot apply to a warm "
                "server; drop them or use run mode (AsyncOpenCodeClient without warm servers)"
            )
        slot = await self._acquire(cfg)
        try:
            return await slot.server.run(
                prompt,
                workspace,
                run_cfg=cfg,
                timeout_s=timeout_s,
                log_file=log_file,
                log_exclude_types=log_exclude_types,
                on_event=on_event,
            )
        finally:
            await self._release(slot)

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

    def _server_config(self, cfg: RunConfig) -> RunConfig:
        if not self._lean:
            return cfg
        from opencode_wrapper._lean import lean_run_config

        return lean_run_config(cfg)

    async def _acquire(self, cfg: RunConfig) -> _Slot:
        """Reserve a session slot on a server for ``cfg``, starting one if that is allowed."""
        key = cfg.server_key()
        async with self._changed:
            while True:
                if self._closed:
                    raise OpenCodeError("the ServerPool is closed")
                self._drop_dead()
                best = min((s for s in self._slots if s.key == key), key=lambda s: s.load, default=None)
                if best is not None and best.load < self._per_server:
                    best.load += 1
                    return best
                if key in self._starting:
                    await self._wait_unlocked(self._starting[key])
                    continue
                if len(self._slots) + len(self._starting) < self._max_servers:
                    self._starting[key] = asyncio.ensure_future(self._start(cfg, key))
                    await self._wait_unlocked(self._starting[key])
                    continue
                if best is not None:  # at the cap: share the least loaded server
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

    async def _start(self, cfg: RunConfig, key: str) -> _Slot:
        server = OpenCodeServer(
            binary=self._binary, run_cfg=self._server_config(cfg), isolate_db=self._isolate_db
        )
        try:
            await server.start()
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
