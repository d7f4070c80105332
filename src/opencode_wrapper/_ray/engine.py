"""``RayEngine``: ``run_many`` (and any single run) on a Ray cluster, as one more :class:`Backend`.

The driver keeps everything that decides: the scheduling of ``run_many``, the ``Budget``,
progress, limits, the live view and the outcomes. Each node gets one async
:class:`~opencode_wrapper._ray.agent.NodeAgent` actor (pinned to it with node affinity, with a
``memory=`` reservation for its servers so Ray does not over-pack the node) holding that node's
``ServerPool``; each run is routed to the live agent with the most free sessions
(:mod:`~opencode_wrapper._ray.router`) and streamed back (:mod:`~opencode_wrapper._ray.handle`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from opencode_wrapper._aio import wait_within
from opencode_wrapper._ray.agent import AGENT_RUNTIME_ENV, AgentOptions, NodeAgent, SetupFunction
from opencode_wrapper._ray.handle import RayRun
from opencode_wrapper._ray.router import AgentSlot, Router
from opencode_wrapper.backends.base import Backend, refuse
from opencode_wrapper.backends.handle import RunHandle
from opencode_wrapper.backends.request import RunRequest
from opencode_wrapper.backends.server import check_for_server
from opencode_wrapper.errors import OpenCodeConfigError, OpenCodeError

__all__ = ["NodePlan", "RayEngine", "start_agent"]

_LOG = logging.getLogger("opencode_wrapper")

# Measured: one warm server holds ~0.7-0.8 GB after work (as ServerPool's default sizing).
SERVER_MEMORY_BYTES = 1_000_000_000
#: Sessions per server when ``sessions_per_node`` is not given (``ServerPool``'s default).
SESSIONS_PER_SERVER = 8
#: Control calls (info, close) an agent answers while its runs are in flight.
_CONTROL_CALLS = 8


def _positive_int(value: object, name: str) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise OpenCodeConfigError(f"{name} must be an integer >= 1 or None, got {value!r}")


@dataclass(frozen=True)
class NodePlan:
    """What one node gets: its agent's servers, sessions and memory reservation."""

    node_id: str
    servers: int
    sessions: int
    memory: int | None


class RayEngine(Backend):
    """Runs on a Ray cluster: one node agent per node, the decisions on the driver.

    Use as ``async with RayEngine(address=...) as engine: await run_many(tasks, engine=engine)``
    (or ``iter_run_many``, or ``opencode-wrapper batch --ray ADDRESS``). Every guarantee of one
    host holds: every task ends in an outcome; leaving the loop early, ``fail_fast`` and
    ``Budget(abort_running=True)`` stop the remote agents (``ray.cancel``) before the call returns;
    no process of ours is left on any node after :meth:`aclose`, after a node is lost, or after
    the driver is killed; a try whose node was lost is retried on another node
    (``outcome.attempts``, ``outcome.node_id``), never a run that failed on its own.

    Args:
        address: the cluster, as for ``ray.init``: ``"auto"`` (a cluster started on this machine
            with ``ray start``), ``"HOST:PORT"`` of its head, ``"ray://HOST:10001"``, or ``None``
            (``$RAY_ADDRESS``, else a new local Ray instance for this engine alone, stopped by
            :meth:`aclose`; starting it takes a few seconds, on the caller's thread, because
            Ray's processes die with the thread that started them). If this process is already
            connected (``ray.init`` was called), that connection is used and left open.
        sessions_per_node: runs each node takes at once (default: 8 per server). The sum over
            the nodes is ``run_many``'s default concurrency.
        servers_per_node: warm ``opencode serve`` processes per node (default: one per CPU of
            the node, fewer if its Ray ``memory`` resource has less than ~1 GB for each). Each
            agent reserves ~1 GB of the node's ``memory`` resource per server.
        lean: start the servers with the lean profile.
        max_attempts: tries of a run in all, when nodes are lost (>= 1; 1: never retry).
        setup: ``setup(request)``, called on the node before each run (sync, in a thread, or
            ``async def``) with the task's :class:`~opencode_wrapper.backends.request.RunRequest`
            (``request.prompt``, ``request.workspace``, ``request.config``...): it prepares
            ``request.workspace`` there, e.g. clones a repository. With it, workspaces need not
            exist on the driver (``local_workspaces`` is ``False``); the node checks that the
            workspace exists after ``setup``. It must be importable on the nodes (or defined in
            ``__main__``, which Ray ships by value). A sync ``setup`` that is running when its
            run is stopped finishes in its thread.
        binary: the opencode binary on the nodes (``"opencode"``: each node's
            ``$OPENCODE_BINARY``, ``PATH`` or per-user install).
        node_ids: the Ray node ids to use (default: every node alive when the engine starts).
        runtime_env: more of the agents' Ray runtime environment (its ``env_vars`` are merged;
            ``RAY_kill_child_processes_on_worker_exit`` stays ``false``).
        init_options: more keyword arguments of ``ray.init`` (default ``log_to_driver=False``:
            worker output would break the live view).
        start_timeout_s: how long each agent may take to be placed and start.

    Callbacks (``on_permission``, ``on_question``) cannot cross the cluster: runs with them are
    refused. ``on_event`` and ``log_file`` work as on one host (they run on the driver).
    """

    name = "ray"

    def __init__(
        self,
        address: str | None = None,
        *,
        sessions_per_node: int | None = None,
        servers_per_node: int | None = None,
        lean: bool = False,
        max_attempts: int = 2,
        setup: SetupFunction | None = None,
        binary: str = "opencode",
        node_ids: Sequence[str] | None = None,
        runtime_env: Mapping[str, Any] | None = None,
        init_options: Mapping[str, Any] | None = None,
        start_timeout_s: float = 120.0,
    ) -> None:
        if address is not None and (not isinstance(address, str) or not address.strip()):
            raise OpenCodeConfigError(f"address must be a non-empty string or None, got {address!r}")
        _positive_int(sessions_per_node, "sessions_per_node")
        _positive_int(servers_per_node, "servers_per_node")
        _positive_int(max_attempts, "max_attempts")
        if setup is not None and not callable(setup):
            raise OpenCodeConfigError(f"setup must be a callable taking the task's RunRequest, got {setup!r}")
        if not isinstance(binary, str) or not binary:
            raise OpenCodeConfigError(
                f"binary must be a non-empty string (a path on the nodes), got {binary!r}"
            )
        if node_ids is not None and (
            isinstance(node_ids, str) or not node_ids or not all(isinstance(n, str) for n in node_ids)
        ):
            raise OpenCodeConfigError(f"node_ids must be a non-empty list of Ray node ids, got {node_ids!r}")
        if runtime_env is not None and not isinstance(runtime_env, Mapping):
            raise OpenCodeConfigError(f"runtime_env must be a mapping or None, got {runtime_env!r}")
        if init_options is not None and not isinstance(init_options, Mapping):
            raise OpenCodeConfigError(f"init_options must be a mapping or None, got {init_options!r}")
        if (
            isinstance(start_timeout_s, bool)
            or not isinstance(start_timeout_s, (int, float))
            or not math.isfinite(start_timeout_s)
            or start_timeout_s <= 0
        ):
            raise OpenCodeConfigError(f"start_timeout_s must be a positive number, got {start_timeout_s!r}")
        self.address = address
        self.sessions_per_node = sessions_per_node
        self.servers_per_node = servers_per_node
        self.lean = bool(lean)
        self.max_attempts = max_attempts
        self.setup = setup
        self.binary = binary
        self.node_ids = list(node_ids) if node_ids is not None else None
        self._runtime_env = _merged_runtime_env(runtime_env)
        self._init_options = {"log_to_driver": False, **(init_options or {})}
        self._start_timeout_s = float(start_timeout_s)
        #: Workspaces are made on the nodes by ``setup``: ``run_many`` does not look for them here.
        self.local_workspaces = setup is None
        self._router = Router()
        self._starting: asyncio.Future[Router] | None = None
        self._owns_ray = False
        self._closed = False
        self._handles: weakref.WeakSet[RunHandle] = weakref.WeakSet()

    def __repr__(self) -> str:
        live = len(self._router.live)
        return f"RayEngine(address={self.address!r}, nodes={live}, capacity={self.capacity})"

    # ------------------------------------------------------------------ backend

    @property
    def capacity(self) -> int | None:
        """Runs the live nodes take at once (``None`` before :meth:`start`)."""
        return self._router.capacity if self._router.slots else None

    @property
    def nodes(self) -> list[dict[str, Any]]:
        """One entry per node agent: ``node_id``, ``capacity``, ``load``, ``alive`` and its ``info``."""
        return [
            {"node_id": s.node_id, "capacity": s.capacity, "load": s.load, "alive": s.alive, **s.info}
            for s in self._router.slots
        ]

    def check(self, request: RunRequest) -> None:
        check_for_server(request, self.name)
        for name in ("on_permission", "on_question"):
            if getattr(request, name) is not None:
                raise refuse(
                    self.name,
                    name,
                    "a callback cannot cross the cluster (it would run on a node, away from your "
                    "program); decide in RunConfig(permission={...}) instead",
                )
        if self._closed:
            raise OpenCodeError("the RayEngine is closed")

    def _handle(self, request: RunRequest) -> RunHandle:
        handle = RayRun(request, start=self._started, lose=self._lose, max_attempts=self.max_attempts)
        self._handles.add(handle)
        return handle

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> RayEngine:
        try:
            await self.start()
        except BaseException:
            await self.aclose()  # what did start (a local Ray instance, agents) ends here too
            raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def start(self) -> RayEngine:
        """Connect to the cluster and start one agent per node (runs do it on first use too).

        Raises:
            OpenCodeConfigError: a node of ``node_ids`` is not alive in the cluster.
            OpenCodeError: the engine is closed, or no agent could start.
        """
        await self._started()
        return self

    async def _started(self) -> Router:
        if self._closed:
            raise OpenCodeError("the RayEngine is closed")
        if self._starting is None:
            self._starting = asyncio.ensure_future(self._start())
        # Shielded: a run cancelled while the engine starts must not cancel the start of the others.
        return await asyncio.shield(self._starting)

    async def _start(self) -> Router:
        await self._connect()
        plans = self._plan(await asyncio.to_thread(ray.nodes))
        actors = [start_agent(plan, self._agent_options(plan), self._runtime_env) for plan in plans]
        infos = await asyncio.gather(
            *(wait_within(actor.info.remote(), self._start_timeout_s) for actor in actors),
            return_exceptions=True,
        )
        failed = []
        for plan, actor, info in zip(plans, actors, infos, strict=True):
            if isinstance(info, BaseException):
                with contextlib.suppress(Exception):
                    ray.kill(actor, no_restart=True)
                why = (
                    "not placed and started within start_timeout_s"
                    if isinstance(info, asyncio.TimeoutError)
                    else f"{type(info).__name__}: {info}"
                )
                failed.append(f"node {plan.node_id}: {why}")
                _LOG.warning("RayEngine: no agent on node %s: %s", plan.node_id, why)
                continue
            self._router.add(AgentSlot(plan.node_id, actor, plan.sessions, info=dict(info)))
        if not self._router.live:
            raise OpenCodeError(f"RayEngine: no node agent could start ({'; '.join(failed)})")
        return self._router

    def _agent_options(self, plan: NodePlan) -> AgentOptions:
        return AgentOptions(
            binary=self.binary,
            max_servers=plan.servers,
            sessions_per_server=max(1, math.ceil(plan.sessions / plan.servers)),
            lean=self.lean,
            setup=self.setup,
        )

    async def _connect(self) -> None:
        if ray.is_initialized():
            return
        kwargs: dict[str, Any] = dict(self._init_options)
        if self.address is None and "address" not in kwargs:
            # Ray may start a local instance here; its processes die with the thread that started
            # them (PR_SET_PDEATHSIG), so this call stays on the caller's thread.
            ray.init(**kwargs)
        else:
            kwargs.setdefault("address", self.address)
            await asyncio.to_thread(ray.init, **kwargs)
        self._owns_ray = True

    def _plan(self, nodes: list[dict[str, Any]]) -> list[NodePlan]:
        alive = {node["NodeID"]: node for node in nodes if node.get("Alive")}
        wanted = self.node_ids if self.node_ids is not None else list(alive)
        missing = [node_id for node_id in wanted if node_id not in alive]
        if missing:
            raise OpenCodeConfigError(
                f"node_ids {missing} are not alive nodes of the cluster; alive: {sorted(alive)}"
            )
        plans = []
        for node_id in wanted:
            resources = alive[node_id].get("Resources") or {}
            cpus = int(resources.get("CPU", 1)) or 1
            memory = int(resources.get("memory", 0))
            servers = self.servers_per_node or max(
                1, min(cpus, memory // SERVER_MEMORY_BYTES if memory else cpus)
            )
            sessions = self.sessions_per_node or servers * SESSIONS_PER_SERVER
            reserve = servers * SERVER_MEMORY_BYTES
            plans.append(NodePlan(node_id, servers, sessions, min(reserve, memory) if memory else None))
        return plans

    async def _lose(self, slot: AgentSlot, cause: BaseException | None) -> None:
        """Forget a lost agent and kill it (an unreachable one might otherwise go on running)."""
        if await self._router.lose(slot):
            _LOG.warning(
                "RayEngine: the agent on node %s was lost%s",
                slot.node_id,
                f" ({type(cause).__name__})" if cause is not None else "",
            )
            with contextlib.suppress(Exception):
                ray.kill(slot.actor, no_restart=True)

    async def aclose(self) -> None:
        """Stop the runs still going, close every agent's pool (its servers end), kill the agents.

        Disconnects from Ray if this engine connected (a local instance it started stops).
        Safe to call twice.
        """
        self._closed = True
        await asyncio.gather(*(handle.aclose() for handle in list(self._handles)), return_exceptions=True)
        if self._starting is not None:
            with contextlib.suppress(BaseException):
                await asyncio.shield(self._starting)
        slots = [slot for slot in self._router.slots if slot.alive]
        await asyncio.gather(
            *(wait_within(slot.actor.aclose.remote(), 120.0) for slot in slots), return_exceptions=True
        )
        for slot in slots:
            slot.alive = False
            with contextlib.suppress(Exception):
                ray.kill(slot.actor, no_restart=True)
        if self._owns_ray:
            self._owns_ray = False
            ray.shutdown()


def start_agent(
    plan: NodePlan,
    options: AgentOptions,
    runtime_env: Mapping[str, Any] = AGENT_RUNTIME_ENV,
    agent_class: type[NodeAgent] = NodeAgent,
) -> Any:
    """Create the node agent actor of ``plan`` (pinned to its node; not awaited: ``.info`` says when
    it is up). ``runtime_env`` must keep :data:`AGENT_RUNTIME_ENV`'s variable."""
    actor_class: Any = ray.remote(agent_class)  # Ray's stubs do not type actor options
    return actor_class.options(
        num_cpus=0,
        memory=plan.memory,
        max_restarts=0,
        max_task_retries=0,
        max_concurrency=plan.sessions + _CONTROL_CALLS,
        scheduling_strategy=NodeAffinitySchedulingStrategy(plan.node_id, soft=False),
        runtime_env=dict(runtime_env),
    ).remote(options)


def _merged_runtime_env(extra: Mapping[str, Any] | None) -> dict[str, Any]:
    merged: dict[str, Any] = dict(extra or {})
    env_vars = dict(merged.get("env_vars") or {})
    env_vars.update(AGENT_RUNTIME_ENV["env_vars"])
    merged["env_vars"] = env_vars
    return merged
