"""The Ray engine end to end on a two-node cluster on this host, with the real opencode and the offline model.

One module-scoped cluster (``ray.cluster_utils.Cluster``: a head and two more nodes, ~15 s) and
one module-scoped engine on it (one agent per node, one warm server each, two sessions each).
One test removes the third node from under that engine; the others do not count on it (they
look at the live nodes). The actor-exit matrix starts agents of its own. At the end, the
engine's agents, their servers and every Ray process of the cluster must be gone. The suite's
autouse fixture fails any test that leaves a process under its ``tmp_path`` (the agents' tools
run in workspaces there).

``tests/_ray_driver.py`` is a driver in its own process, for the ways an agent ends with its
driver (``ray.shutdown()``, the driver SIGKILLed).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import pickle
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest
import pytest_asyncio
import ray
import ray.actor
import ray.cloudpickle
from ray.cluster_utils import Cluster

from _ray_support import (
    git_workspace,
    is_running_tool,
    names,
    ray_processes,
    sleeper_below,
    sleepers_in,
    still_alive,
    tree,
)
from conftest import processes_under
from opencode_wrapper._ray.agent import AgentOptions, NodeAgent
from opencode_wrapper._ray.engine import SERVER_MEMORY_BYTES, NodePlan, start_agent
from opencode_wrapper.backends.base import run_request
from opencode_wrapper.backends.request import RunRequest
from opencode_wrapper.batch import Budget, Task, TaskOutcome, iter_run_many, run_many
from opencode_wrapper.errors import OpenCodeError
from opencode_wrapper.events import Event
from opencode_wrapper.ray import RayEngine
from opencode_wrapper.results import Attempt, RunError
from opencode_wrapper.testing import OfflineModelServer

pytestmark = [pytest.mark.ray, pytest.mark.e2e, pytest.mark.timeout(300)]

TESTS_DIR = Path(__file__).resolve().parent
# The setup function and the agent subclass below are shipped to the nodes by value: the workers
# cannot import this test module.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


# ----------------------------------------------------------------------------- fixtures


@dataclass
class Nodes:
    """The nodes of the module's cluster: two that stay, and one that a test removes."""

    stable: list[str]
    doomed: Any  # ray._private.node.Node


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[tuple[Cluster, Nodes]]:
    with pytest.MonkeyPatch.context() as patch:
        # More nodes on this host need the head's token, or no token (Ray 2.60).
        patch.setenv("RAY_AUTH_MODE", "disabled")
        made = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
        try:
            second = made.add_node(num_cpus=1)
            doomed = made.add_node(num_cpus=1)
            made.wait_for_nodes()
            ray.init(address=made.address, log_to_driver=False)
            yield made, Nodes([made.head_node.node_id, second.node_id], doomed)
        finally:
            ray.shutdown()
            procs = ray_processes(made)
            made.shutdown()
            left = still_alive(procs, 15)
            assert not left, f"Ray processes of the cluster left running: {left}"


@pytest.fixture(scope="module")
def cluster(ray_cluster: tuple[Cluster, Nodes]) -> Cluster:
    return ray_cluster[0]


@pytest.fixture(scope="module")
def node_ids(ray_cluster: tuple[Cluster, Nodes]) -> list[str]:
    """The two nodes no test removes."""
    return ray_cluster[1].stable


@pytest.fixture(scope="module")
def model() -> Iterator[OfflineModelServer]:
    with OfflineModelServer() as server:
        yield server


def make_workspace_on_node(request: RunRequest) -> None:
    """The engine's ``setup``: a git repository marked with the node that made it."""
    path = Path(request.workspace)
    if path.name.startswith("unpreparable"):
        raise ValueError(f"cannot prepare {path.name}")
    if not path.exists():
        path.mkdir(parents=True)
        subprocess.run(["git", "init", "-q", str(path)], check=True)
        (path / "NODE").write_text(ray.get_runtime_context().get_node_id(), encoding="utf-8")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def engine(cluster: Cluster, opencode_binary: str) -> AsyncIterator[RayEngine]:
    made = RayEngine(
        cluster.address,
        sessions_per_node=2,
        servers_per_node=1,
        lean=True,
        setup=make_workspace_on_node,
        binary=opencode_binary,
    )
    async with made:
        yield made
        agents = [proc for node in made.nodes if node["alive"] for proc in tree(node["pid"])]
    left = still_alive(agents, 10)
    assert not left, f"left running after the engine closed: {left}"


# ----------------------------------------------------------------------------- runs


@pytest.mark.asyncio(loop_scope="module")
async def test_tasks_finish_on_both_nodes_with_their_events_on_the_driver(
    engine: RayEngine, model: OfflineModelServer, node_ids: list[str], tmp_path: Path
) -> None:
    live = {n["node_id"] for n in engine.nodes if n["alive"]}
    assert set(node_ids) <= live and engine.capacity == 2 * len(live)
    seen: dict[int, list[str]] = {}
    tasks = [Task("[[bash: cat NODE]]", tmp_path / f"made-on-node-{i}", name=f"t{i}") for i in range(4)]
    tasks.append(Task("[[say: never]]", tmp_path / "unpreparable", name="bad"))
    outcomes = await run_many(
        tasks,
        engine=engine,
        run_cfg=model.run_config(),
        on_event=lambda index, event: seen.setdefault(index, []).append(event.kind),
    )
    good, bad = outcomes[:4], outcomes[4]
    assert [o.ok for o in good] == [True] * 4, [o.error for o in good]
    assert {o.node_id for o in good} == live, "every node ran tasks"
    for outcome in good:
        assert outcome.result is not None
        # setup made the workspace on the node that then ran the task there
        assert outcome.result.final_text == f"Tool results: bash: {outcome.node_id}"
        assert [(a.number, a.error) for a in outcome.attempts] == [(1, None)]
        assert {"tool", "step_finish", "text"} <= set(seen[outcome.index])
        assert [ev.kind for ev in outcome.result.events] == seen[outcome.index]
    assert isinstance(bad.exception, OpenCodeError) and not bad.ok
    assert "setup(" in str(bad.exception) and "ValueError: cannot prepare unpreparable" in str(bad.exception)
    assert all(node["load"] == 0 for node in engine.nodes)


@pytest.mark.asyncio(loop_scope="module")
async def test_a_single_run_with_a_log_file_through_the_engine(
    engine: RayEngine, model: OfflineModelServer, tmp_path: Path
) -> None:
    log = tmp_path / "run.jsonl"
    kinds: list[str] = []
    request = RunRequest.create(
        "[[say: one run]]",
        git_workspace(tmp_path / "ws"),
        run_cfg=model.run_config(),
        log_file=log,
        on_event=lambda event: kinds.append(event.kind),
        timeout_s=120,
    )
    result = await run_request(engine, request)
    assert result.final_text == "one run" and "text" in kinds
    logged = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(logged) == len(result.events) == len(kinds), "the driver wrote the log"


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize("stop", ["early_exit", "cancelled", "budget", "fail_fast"])
async def test_stopping_a_batch_stops_the_remote_agents(
    engine: RayEngine, model: OfflineModelServer, tmp_path: Path, stop: str
) -> None:
    """Three agents sleep in their bash tool; a fourth finishes (or fails) once all three do, and the
    batch is left (``break``), its consumer cancelled, or it is stopped by the budget or by
    fail_fast. Nothing may run on any node once that returned."""
    gate = git_workspace(tmp_path / "trigger")
    tasks = [
        Task("[[bash: sleep 300]]", git_workspace(tmp_path / f"long{i}"), name=f"long{i}") for i in (0, 1, 2)
    ]
    tasks.append(Task("[[bash: while [ ! -e GO ]; do sleep 0.05; done; echo go]]", gate, name="trigger"))
    sleeping: set[int] = set()
    all_sleeping = asyncio.Event()

    def on_event(index: int, event: Event) -> None:
        if index < 3 and is_running_tool(event):
            sleeping.add(index)
            if len(sleeping) == 3:
                all_sleeping.set()

    async def release() -> None:
        await all_sleeping.wait()
        await sleepers_in(tmp_path, 3)
        if stop == "fail_fast":
            model.fail(401, times=1)  # the trigger's next model call: a non-retried failure
        (gate / "GO").touch()

    releaser = asyncio.ensure_future(release())
    outcomes: list[TaskOutcome] = []
    first = asyncio.Event()
    started = time.monotonic()

    async def consume() -> None:
        batch = iter_run_many(
            tasks,
            engine=engine,
            run_cfg=model.run_config(),
            on_event=on_event,
            budget=Budget(max_tokens=1, abort_running=True) if stop == "budget" else None,
            fail_fast=stop == "fail_fast",
        )
        async with contextlib.aclosing(batch):
            async for outcome in batch:
                outcomes.append(outcome)
                first.set()
                if stop == "early_exit":
                    break

    consumer = asyncio.ensure_future(consume())
    if stop == "cancelled":
        await first.wait()
        consumer.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await consumer
    left = [f"{p.pid} {' '.join(p.cmdline())}" for p in processes_under(tmp_path)]
    assert not left, f"still running on the nodes after the batch: {left}"
    await releaser
    assert time.monotonic() - started < 120
    by_name = {o.task.name: o for o in outcomes}
    if stop in ("early_exit", "cancelled"):
        assert list(by_name) == ["trigger"] and by_name["trigger"].ok
    else:
        assert len(outcomes) == 4
        expected = {"budget": "budget_exhausted", "fail_fast": "cancelled"}[stop]
        for name in ("long0", "long1", "long2"):
            error = by_name[name].error
            assert error is not None and error.kind == expected, (name, error)
            assert by_name[name].node_id is not None
        trigger = by_name["trigger"].error
        assert (trigger is None) if stop == "budget" else (trigger is not None and trigger.status_code == 401)
    assert all(node["load"] == 0 for node in engine.nodes)


# ----------------------------------------------------------------------------- losing a node


@pytest.mark.asyncio(loop_scope="module")
async def test_a_node_removed_mid_batch_has_its_tasks_rerun_elsewhere_and_leaves_nothing(
    engine: RayEngine,
    ray_cluster: tuple[Cluster, Nodes],
    model: OfflineModelServer,
    tmp_path: Path,
) -> None:
    cluster, nodes = ray_cluster
    doomed = nodes.doomed
    doomed_agent = next((n for n in engine.nodes if n["node_id"] == doomed.node_id and n["alive"]), None)
    assert doomed_agent is not None, "the engine has an agent on the node to remove"
    live = [n["node_id"] for n in engine.nodes if n["alive"]]
    spaces = [git_workspace(tmp_path / f"w{i}") for i in range(len(live) + 1)]
    tasks = [
        Task(f"[[bash: while [ ! -e GO ]; do sleep 0.05; done; echo task-{i}]]", ws, name=f"t{i}")
        for i, ws in enumerate(spaces)
    ]
    waiting: set[int] = set()
    all_waiting = asyncio.Event()

    def on_event(index: int, event: Event) -> None:
        if is_running_tool(event):
            waiting.add(index)
            if len(waiting) == len(tasks):
                all_waiting.set()

    batch = asyncio.ensure_future(
        run_many(tasks, engine=engine, run_cfg=model.run_config(), on_event=on_event)
    )
    await all_waiting.wait()
    raylet = doomed.all_processes["raylet"][0].process.pid
    ray_side = tree(raylet)  # Ray's own processes of the node (its raylet, agents, workers)
    # The agent's worker, supervisor, opencode and the tool's bash (its short sleeps come and go).
    ours = await sleeper_below(doomed_agent["pid"], "bash")
    removed = time.monotonic()
    await asyncio.to_thread(cluster.remove_node, doomed, False)
    # The figure is 2 s (measured: well under it on a quiet machine); the bound leaves room
    # for a loaded 2-core machine, and the time it took is in the message.
    left = still_alive(ours, 10)
    ours_gone_s = time.monotonic() - removed
    left_ray = still_alive(ray_side, 15)
    for ws in spaces:
        (ws / "GO").touch()
    outcomes = await batch
    assert not left, f"{ours_gone_s:.1f} s after the node was removed, still running: {left}"
    assert not left_ray, f"Ray processes of the removed node still running: {left_ray}"
    assert [o.ok for o in outcomes] == [True] * len(tasks), [o.error for o in outcomes]
    texts = [o.result.final_text for o in outcomes if o.result]
    assert texts == [f"Tool results: bash: task-{i}" for i in range(len(tasks))]
    rerun = [o for o in outcomes if o.attempts[0].node_id == doomed.node_id]
    assert rerun, "the removed node had tasks"
    for outcome in outcomes:
        if outcome in rerun:
            first, last = outcome.attempts
            assert first.error is not None and first.error.kind == "server_failure" and first.error.retryable
            assert last.error is None and last.node_id == outcome.node_id != doomed.node_id
        else:
            assert len(outcome.attempts) == 1 and outcome.node_id != doomed.node_id
    assert [n["alive"] for n in engine.nodes if n["node_id"] == doomed.node_id] == [False]
    assert engine.capacity == 2 * (len(live) - 1)


# ----------------------------------------------------------------------------- the actor-exit matrix


class ExitingAgent(NodeAgent):
    """A node agent that can end itself the way an actor's own code would."""

    async def exit(self) -> None:
        ray.actor.exit_actor()


IN_PROCESS_WAYS = ["ray.kill", "exit_actor()", "worker SIGKILL", "handle dropped"]
#: Ways that wait for the actor's running tasks (Ray ends it gracefully).
GRACEFUL_WAYS = ("exit_actor()", "handle dropped")
DRIVER_WAYS = ["ray.shutdown()", "driver SIGKILL"]


@pytest.mark.asyncio(loop_scope="module")
async def test_every_way_an_agent_ends_ends_opencode_and_its_tools(
    cluster: Cluster, model: OfflineModelServer, opencode_binary: str, node_ids: list[str], tmp_path: Path
) -> None:
    """The measured matrix (Ray 2.60 left opencode and its tools running in 4 of 6 ways an actor
    ends, and on node loss, until the agents kept their children): each way ends an agent whose
    bash tool sleeps (or, for the graceful ways, whose run has finished and left its warm server),
    and within 10 s nothing of its tree (worker, supervisor, opencode, tool) may remain. The other
    ways: the agent closing its pool (the engine fixture's teardown) and node loss (the test
    above)."""
    cfg = model.run_config()
    actors: dict[str, Any] = {}
    streams: dict[str, Any] = {}

    async def in_process(way: str, node_id: str, workspace: Path) -> list[psutil.Process]:
        options = AgentOptions(binary=opencode_binary, max_servers=1, sessions_per_server=1, lean=True)
        actors[way] = start_agent(
            NodePlan(node_id, 1, 1, SERVER_MEMORY_BYTES), options, agent_class=ExitingAgent
        )
        info = await actors[way].info.remote()
        if way in GRACEFUL_WAYS:
            # These end an actor once its running tasks are done: what must end then is its idle
            # warm server (and its supervisor), left by the finished run.
            request = RunRequest.create("[[say: idle]]", workspace, run_cfg=cfg)
            async for ref in actors[way].run.options(num_returns="streaming").remote(request):
                await ref
            procs = tree(info["pid"])
            assert len(procs) >= 3, f"no warm server below the agent: {names(procs)}"
            return procs
        request = RunRequest.create("[[bash: sleep 300]]", workspace, run_cfg=cfg)
        streams[way] = actors[way].run.options(num_returns="streaming").remote(request)
        async for ref in streams[way]:
            item = await ref
            if item[0] == "events" and any(is_running_tool(ev) for ev in item[1]):
                break
        return await sleeper_below(info["pid"])

    async def end_in_process(way: str, procs: list[psutil.Process]) -> None:
        actor = actors.pop(way)
        if way == "ray.kill":
            ray.kill(actor)
        elif way == "exit_actor()":
            with contextlib.suppress(Exception):
                await actor.exit.remote()
        elif way == "worker SIGKILL":
            procs[0].send_signal(signal.SIGKILL)
        elif way == "handle dropped":
            del actor
            gc.collect()

    config_path = tmp_path / "cfg.pickle"
    config_path.write_bytes(pickle.dumps(cfg))
    drivers: dict[str, subprocess.Popen[str]] = {}

    async def in_driver(way: str, node_id: str, workspace: Path) -> list[psutil.Process]:
        how = "shutdown" if way == "ray.shutdown()" else "killed"
        argv = [sys.executable, str(TESTS_DIR / "_ray_driver.py"), cluster.address, node_id]
        drivers[way] = proc = subprocess.Popen(
            [*argv, str(config_path), str(workspace), how],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        line = "?"
        while line and not line.startswith("AGENT "):  # Ray prints notices on stdout too
            line = await asyncio.to_thread(proc.stdout.readline)
        assert line, f"the driver of {way!r} ended early: {proc.wait()}"
        return await sleeper_below(json.loads(line.removeprefix("AGENT "))["agent_pid"])

    ways = IN_PROCESS_WAYS + DRIVER_WAYS
    starts = [
        (in_driver if way in DRIVER_WAYS else in_process)(
            way, node_ids[i % 2], git_workspace(tmp_path / f"way{i}")
        )
        for i, way in enumerate(ways)
    ]
    trees = dict(zip(ways, await asyncio.gather(*starts), strict=True))
    try:
        for way in IN_PROCESS_WAYS:
            await end_in_process(way, trees[way])
        for way in DRIVER_WAYS:
            proc = drivers[way]
            if way == "driver SIGKILL":
                proc.kill()
            else:
                assert proc.stdin is not None
                proc.stdin.write("end\n")
                proc.stdin.flush()
            await asyncio.to_thread(proc.wait, 60)
        left = {way: still_alive(procs, 10) for way, procs in trees.items()}
        assert left == {way: [] for way in ways}, left
    finally:
        for proc in drivers.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for actor in actors.values():
            ray.kill(actor)


# ----------------------------------------------------------------------------- the command line


@pytest.mark.asyncio(loop_scope="module")
async def test_batch_command_with_ray(cluster: Cluster, tmp_path: Path) -> None:
    git_workspace(tmp_path / "a")
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text(
        json.dumps({"name": "a", "prompt": "[[bash: echo from-a]]", "workspace": "a"}) + "\n",
        encoding="utf-8",
    )
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    command = ["batch", "--offline", str(tasks), "--ray", cluster.address, "--out", "results.jsonl"]
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "opencode_wrapper", *command],
        cwd=tmp_path,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    records = {r["name"]: r for r in map(json.loads, (tmp_path / "results.jsonl").read_text().splitlines())}
    assert {name: r["final_text"] for name, r in records.items()} == {"a": "Tool results: bash: from-a"}
    lines = done.stdout.splitlines()
    assert any(line.startswith("tool") and "echo from-a" in line for line in lines), "events reached the view"
    assert lines[-1].startswith("1 tasks: 1 ok, 0 failed")


# ----------------------------------------------------------------------------- values across Ray


@ray.remote(num_cpus=0)
def echo(value: Any) -> Any:
    """Unpickled in a worker process and pickled back, as the agents' items are."""
    return value


@pytest.mark.asyncio(loop_scope="module")
async def test_every_exception_and_an_outcome_cross_ray_intact(cluster: Cluster, tmp_path: Path) -> None:
    from test_errors_pickle import BUILDERS, describe, server_result

    built = {name: build(tmp_path) for name, build in BUILDERS.items()}
    outcome = TaskOutcome(
        index=3,
        task=Task("p", tmp_path, name="t"),
        result=server_result(RunError(kind="server_failure", message="node lost", retryable=True)),
        exception=built["OpenCodeServerError"],
        attempts=[Attempt(1, RunError(kind="server_failure", message="lost"), 1.5, "node-a"), Attempt(2)],
    )
    values: list[Any] = [*built.values(), outcome]
    back = await asyncio.gather(*(echo.remote(value) for value in values))
    for original, restored in zip(values, back, strict=True):
        assert type(restored) is type(original)
        assert describe(restored) == describe(original)
    assert back[-1].node_id is None and back[-1].attempts[0].node_id == "node-a"
