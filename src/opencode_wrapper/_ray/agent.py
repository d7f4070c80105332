"""``NodeAgent``: the async actor on each node that runs requests on that node's warm servers.

The driver streams one request to :meth:`NodeAgent.run` (a Ray streaming generator) and reads
back items of the :data:`Item` protocol. Nothing here decides about retries, budgets or
outcomes: that is the driver's (``_ray.handle``).

Process ownership: every opencode server of the agent's ``ServerPool`` runs under the package's
supervisor (``_proc/reaper.py``), a direct child of this actor's worker process. Ray's default is
to kill a worker's direct children when the worker exits, evidently with SIGKILL: the supervisor
died before it could end opencode and its tools, which were left running when the actor was
killed, exited, dropped, shut down with its driver or lost with its node (measured, Ray 2.60).
:data:`AGENT_RUNTIME_ENV` turns that off for this actor only; the supervisor then sees its
owner's death on its pipe and ends the whole tree (``tests/test_ray_cluster.py`` keeps that
matrix).

A blocking ``ray.get`` in an async actor blocks its event loop (ray#6936): this actor only awaits.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import os
import traceback
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import ray

from opencode_wrapper._aio import finish
from opencode_wrapper._model.event import Event
from opencode_wrapper._model.run_error import RunError
from opencode_wrapper.backends.pool import ServerPool
from opencode_wrapper.backends.request import RunRequest
from opencode_wrapper.errors import OpenCodeConfigError, OpenCodeError

__all__ = ["AGENT_RUNTIME_ENV", "AgentOptions", "Item", "NodeAgent", "SetupFunction"]

#: The node agent's runtime environment: Ray must leave its worker's children alone (see above).
AGENT_RUNTIME_ENV: dict[str, Any] = {"env_vars": {"RAY_kill_child_processes_on_worker_exit": "false"}}

#: ``setup(request)``: prepares a task's workspace on its node before the run (sync or async).
SetupFunction = Callable[[RunRequest], Any]

#: What :meth:`NodeAgent.run` yields, in order:
#:
#: * ``("events", [Event, ...])``: the run's events since the last item (batched: many server
#:   events arrive in bursts, and each item is one Ray object);
#: * then exactly one of ``("result", RunResult, stripped)`` (``stripped``: the result's
#:   ``events`` were left out, being exactly the events already sent) or ``("raise", exc)`` (an
#:   ``OpenCodeError`` that the driver's handle raises to its waiter: bad set-up on the node).
Item = tuple[Any, ...]


@dataclass(frozen=True)
class AgentOptions:
    """How a node agent runs: its pool's size and profile, and the task set-up."""

    binary: str
    max_servers: int
    sessions_per_server: int
    lean: bool
    setup: SetupFunction | None = None


class NodeAgent:
    """One per node; holds the node's :class:`ServerPool` (see the module docstring).

    Made a Ray actor by the engine (``ray.remote(NodeAgent).options(...)``) with
    :data:`AGENT_RUNTIME_ENV`, ``num_cpus=0`` and a ``memory=`` reservation for its servers.
    """

    def __init__(self, options: AgentOptions) -> None:
        self._options = options
        self._pool = ServerPool(
            binary=options.binary,
            max_servers=options.max_servers,
            sessions_per_server=options.sessions_per_server,
            lean=options.lean,
        )
        self._node_id = ray.get_runtime_context().get_node_id()

    async def info(self) -> dict[str, Any]:
        """Where the agent is: ``node_id``, ``pid`` (of its worker) and ``hostname``."""
        return {"node_id": self._node_id, "pid": os.getpid(), "hostname": os.uname().nodename}

    async def server_pids(self) -> list[int]:
        """The process ids of its servers alive now (for checks: their trees are the agent's)."""
        return [pid for pid in (server.pid for server in self._pool.servers) if pid is not None]

    async def aclose(self) -> None:
        """End every server of the pool (and every process they started)."""
        await self._pool.aclose()

    async def run(self, request: RunRequest) -> AsyncIterator[Item]:
        """Run ``request`` on this node's pool, yielding :data:`Item` s (a streaming generator).

        ``request`` has no ``on_event``/``log_file`` (the driver handles those) and no timeout
        (the driver ends the run, by ``ray.cancel``). When the driver cancels this generator, the
        run is ended (its turn aborted, its tools killed) before the cancellation completes.
        """
        failure = await self._prepare(request)
        if failure is not None:
            yield ("raise", failure)
            return
        pending: list[Event] = []
        arrived = asyncio.Event()

        def collect(event: Event) -> None:
            pending.append(event)
            arrived.set()

        try:
            handle = self._pool.open(dataclasses.replace(request, on_event=collect))
        except OpenCodeError as exc:
            yield ("raise", exc)
            return
        waiter = asyncio.ensure_future(handle.wait())
        sent = 0
        try:
            while True:
                wake = asyncio.ensure_future(arrived.wait())
                try:
                    await asyncio.wait({waiter, wake}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    wake.cancel()
                arrived.clear()
                if pending:
                    batch = pending[:]
                    pending.clear()
                    sent += len(batch)
                    yield ("events", batch)
                if waiter.done():
                    break
        finally:
            if not waiter.done():
                # Cancelled by the driver (ray.cancel) or the actor is going away: end the run here.
                handle.stop(RunError(kind="cancelled", message="the driver stopped the run"))
                await finish(asyncio.gather(waiter, return_exceptions=True))
        try:
            result = waiter.result()
        except OpenCodeError as exc:
            yield ("raise", exc)
            return
        if len(result.events) == sent:
            yield ("result", dataclasses.replace(result, events=[]), True)
        else:
            yield ("result", result, False)

    async def _prepare(self, request: RunRequest) -> OpenCodeError | None:
        """Run ``setup`` and check that the workspace (and attached files) exist on this node."""
        setup = self._options.setup
        if setup is not None:
            try:
                if inspect.iscoroutinefunction(setup):
                    await setup(request)
                else:
                    # A sync set-up (a git clone...) must not block the runs already on this node.
                    returned = await asyncio.to_thread(setup, request)
                    if inspect.isawaitable(returned):
                        await returned
            except Exception as exc:
                tail = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)[-3:])
                return OpenCodeError(
                    f"setup({request.workspace!r}) failed on node {self._node_id}: "
                    f"{type(exc).__name__}: {exc}\n{tail.rstrip()}"
                )
        return _missing_on_node(request, self._node_id, setup is not None)


def _missing_on_node(request: RunRequest, node_id: str, with_setup: bool) -> OpenCodeConfigError | None:
    """The error for a workspace or attached file that is not on this node (quick stat calls)."""
    if not os.path.isdir(request.workspace):
        hint = "setup= did not create it" if with_setup else "give RayEngine a setup= that makes it"
        return OpenCodeConfigError(
            f"workspace {request.workspace!r} does not exist on node {node_id} ({hint})"
        )
    missing = [path for path in request.files if not os.path.exists(path)]
    if missing:
        return OpenCodeConfigError(f"files {missing} do not exist on node {node_id}")
    return None
