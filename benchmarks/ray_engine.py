"""What the Ray engine itself costs: one node vs two nodes on one host, against no Ray at all.

The same batch three ways, each with the same number of warm servers in all (``--servers``,
default 2), so only the engine differs:

* ``local``: ``run_many`` on a ``ServerPool`` in this process (no Ray);
* ``ray-1``: a ``RayEngine`` on one node of a local cluster (all servers on that node);
* ``ray-2``: a ``RayEngine`` on two nodes of the same cluster (the servers split between them).

Each way first runs the batch once (its servers start: the "cold" time), then ``--rounds`` more
times ("warm", the median is shown). A second measure is the per-task latency with one task at a
time (``--latency-tasks``, median), which shows what routing a run through an actor and
streaming its events back adds to each task. It also prints the cluster's start-up (head, then the
second node), each engine's start (its agents placed and up) and the ratios.

The tasks are one ``bash`` tool call plus an answer on the offline model (``[[bash: echo task-i]]``,
in its own ``git init``-ed workspace), served by one ``OfflineModelProcess``. Two nodes on one host
share its cores, so ``ray-2`` is not expected to be faster here: the point is the overhead.

Run it after ``make setup``::

    .venv/bin/python benchmarks/ray_engine.py                   # 16 tasks, 2 warm rounds
    .venv/bin/python benchmarks/ray_engine.py --tasks 8 --rounds 1

Everything it starts is ended (the cluster by ``Cluster.shutdown()``, never ``ray stop``, which
would stop every Ray cluster of this host).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import ray
from _measure import default_binary, load_str, machine_info
from ray.cluster_utils import Cluster

from opencode_wrapper.backends.base import Backend
from opencode_wrapper.backends.pool import ServerPool
from opencode_wrapper.batch import Task, run_many
from opencode_wrapper.config import RunConfig
from opencode_wrapper.ray import RayEngine
from opencode_wrapper.testing import OfflineModelProcess


def workspaces(root: Path, count: int) -> list[Path]:
    made = []
    for i in range(count):
        path = root / f"ws{i}"
        path.mkdir(parents=True)
        subprocess.run(["git", "init", "-q", str(path)], check=True)
        made.append(path)
    return made


async def batch(backend: Backend, spaces: list[Path], cfg: RunConfig, concurrency: int) -> float:
    tasks = [Task(f"[[bash: echo task-{i}]]", ws, timeout_s=300) for i, ws in enumerate(spaces)]
    started = time.perf_counter()
    outcomes = await run_many(tasks, engine=backend, run_cfg=cfg, concurrency=concurrency)
    elapsed = time.perf_counter() - started
    bad = [
        o for o in outcomes if not o.ok or f"task-{o.index}" not in (o.result.final_text if o.result else "")
    ]
    if bad:
        raise SystemExit(f"{len(bad)} tasks failed, e.g. {bad[0].error}")
    return elapsed


async def latency(backend: Backend, spaces: list[Path], cfg: RunConfig) -> float:
    """Median wall time of one task alone (warm)."""
    times = []
    for ws in spaces:
        times.append(await batch(backend, [ws], cfg, 1))
    return statistics.median(times)


async def measure(
    name: str,
    make: Callable[[], Awaitable[Backend]],
    root: Path,
    args: argparse.Namespace,
    cfg: RunConfig,
) -> dict[str, Any]:
    started = time.perf_counter()
    backend = await make()
    start_s = time.perf_counter() - started
    try:
        spaces = workspaces(root / name, args.tasks)
        concurrency = args.tasks
        cold = await batch(backend, spaces, cfg, concurrency)
        warm = [await batch(backend, spaces, cfg, concurrency) for _ in range(args.rounds)]
        one = await latency(backend, spaces[: args.latency_tasks], cfg)
    finally:
        await backend.aclose()
    row = {"way": name, "start_s": start_s, "cold_s": cold, "warm_s": statistics.median(warm), "task_s": one}
    print(
        f"{name:7} start {start_s:6.2f} s   cold batch {cold:6.2f} s   warm batch {row['warm_s']:6.2f} s"
        f"   one task {one:5.2f} s",
        flush=True,
    )
    return row


async def main(args: argparse.Namespace) -> None:
    binary = str(default_binary())
    os.environ["OPENCODE_BINARY"] = binary
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a second node on one host (Ray 2.60)
    print(f"machine: {machine_info()}\nload before: {load_str()}", flush=True)
    t0 = time.perf_counter()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    head_s = time.perf_counter() - t0
    second = cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    cluster_s = time.perf_counter() - t0
    print(f"cluster: head {head_s:.1f} s, with the second node and the driver connected {cluster_s:.1f} s")
    head_id = cluster.head_node.node_id
    servers = args.servers
    try:
        with OfflineModelProcess() as model, tempfile.TemporaryDirectory(prefix="ocw-ray-bench-") as tmp:
            cfg = model.run_config()
            root = Path(tmp)

            async def local() -> Backend:
                return ServerPool(binary=binary, max_servers=servers, lean=True)

            async def one_node() -> Backend:
                return await RayEngine(
                    node_ids=[head_id], servers_per_node=servers, lean=True, binary=binary
                ).start()

            async def two_nodes() -> Backend:
                return await RayEngine(
                    node_ids=[head_id, second.node_id],
                    servers_per_node=max(1, servers // 2),
                    lean=True,
                    binary=binary,
                ).start()

            makers = {"local": local, "ray-1": one_node, "ray-2": two_nodes}
            rows = [await measure(way, makers[way], root, args, cfg) for way in args.ways]
    finally:
        ray.shutdown()
        cluster.shutdown()
    by = {row["way"]: row for row in rows}
    n = args.tasks
    print("\nratios (warm batch):")
    print(f"  ray-1 / local  {by['ray-1']['warm_s'] / by['local']['warm_s']:.2f}")
    print(f"  ray-2 / ray-1  {by['ray-2']['warm_s'] / by['ray-1']['warm_s']:.2f}")
    print("engine overhead:")
    print(
        f"  per task in a batch of {n}: "
        f"{(by['ray-1']['warm_s'] - by['local']['warm_s']) / n * 1000:+.0f} ms (ray-1 vs local)"
    )
    print(
        f"  one task alone: {(by['ray-1']['task_s'] - by['local']['task_s']) * 1000:+.0f} ms (ray-1 vs local)"
    )
    print(f"load after: {load_str()}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--servers", type=int, default=2, help="warm servers in all, for every way")
    parser.add_argument("--latency-tasks", type=int, default=5)
    parser.add_argument(
        "--ways",
        type=lambda text: text.split(","),
        default=["local", "ray-1", "ray-2"],
        help="the order to measure them in (all three are needed for the ratios)",
    )
    asyncio.run(main(parser.parse_args()))
