"""1,000 tasks in 1,000 workspaces on one warm pool: is memory flat, and is any task lost?

Every task is one ``bash`` call plus an answer on the offline model (``[[bash: echo task-<i>]]``,
the answer must contain ``bash: task-<i>``), each in its own fresh git workspace, all through
one ``run_many`` on one ``ServerPool(lean=True)`` (its servers start once and serve every task).
opencode keeps every directory's instance for a server's whole life (upstream #33720, #47727);
the pool's servers release the instances of directories no run uses any more, so the memory of
the whole tree must stop growing once the pool is warm.

It samples, on a thread, the summed RSS of this process and all its descendants (the pool's
servers, their tools; not the offline model process, which is not ours to count) every
``--interval`` seconds, together with how many tasks had finished by then, and prints:

* the RSS at 10 %, 50 % and 100 % of the tasks, and the peak;
* the slope of RSS per finished task after warm-up: a least-squares line through the samples of
  the second half (tasks N/2 .. N), in KB per task (flat: |slope| well under the noise of a
  sample, e.g. below 100 KB/task, i.e. 100 MB over 1,000 tasks);
* the same for this Python process alone (our own state must not grow per task);
* lost tasks: tasks without an ok outcome whose answer has the expected text (must be 0);
* wall time, tasks per second, servers started, instances disposed, load averages.

Not part of ``make test`` (it takes several minutes on 2 cores)::

    .venv/bin/python benchmarks/thousand.py                   # 1,000 tasks
    .venv/bin/python benchmarks/thousand.py --tasks 200 --json .bench/thousand.json

Every process it starts is ended by PID; leftovers are reported (and killed) as bugs.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import _measure as m
import psutil

from opencode_wrapper import Task, run_many
from opencode_wrapper.batch import Progress
from opencode_wrapper.pool import ServerPool
from opencode_wrapper.testing import OfflineModelProcess

TASK_TIMEOUT_S = 600.0


def prompt(i: int) -> str:
    return f"[[bash: echo task-{i}]]"


def expected(i: int) -> str:
    return f"bash: task-{i}"


@dataclass
class Samples:
    """RSS samples of the tree and of this process, with the finished count at each."""

    times: list[float] = field(default_factory=list)
    tree: list[int] = field(default_factory=list)
    own: list[int] = field(default_factory=list)
    finished_at: list[float] = field(default_factory=list)  # completion times, in order

    def finished(self, t: float) -> int:
        return bisect.bisect_right(self.finished_at, t)


class Sampler:
    """Samples every ``interval_s`` on a thread until stopped."""

    def __init__(self, interval_s: float, exclude: list[int]) -> None:
        self.interval_s = interval_s
        self.exclude = exclude
        self.samples = Samples()
        self.me = psutil.Process()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            skip = set(self.exclude)
            for pid in self.exclude:
                with contextlib.suppress(psutil.Error):
                    skip.update(c.pid for c in psutil.Process(pid).children(recursive=True))
            procs = [p for p in m.tree(self.me) if p.pid not in skip]
            total = m.tree_rss(procs)
            own = self.me.memory_info().rss
            self.samples.times.append(time.monotonic())
            self.samples.tree.append(total)
            self.samples.own.append(own)
            self._stop.wait(self.interval_s)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of ``ys`` over ``xs`` (``nan`` with fewer than 2 distinct xs)."""
    n = len(xs)
    if n < 2:
        return float("nan")
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        return float("nan")
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx


def make_workspaces(root: Path, n: int) -> list[Path]:
    """``n`` fresh git workspaces: one ``git init``-ed template, copied (fast, no git per copy)."""
    template = m.make_workspace(root / "template")
    spaces = []
    for i in range(n):
        target = root / f"ws{i:04d}"
        shutil.copytree(template, target, symlinks=True)
        spaces.append(target)
    return spaces


async def drive(args: argparse.Namespace, spaces: list[Path], cfg: Any, samples: Samples) -> dict[str, Any]:
    def on_progress(progress: Progress) -> None:
        while len(samples.finished_at) < progress.finished:
            samples.finished_at.append(time.monotonic())

    tasks = [Task(prompt(i), ws, timeout_s=TASK_TIMEOUT_S) for i, ws in enumerate(spaces)]
    started = time.monotonic()
    async with ServerPool(binary=args.binary, lean=True) as pool:
        outcomes = await run_many(
            tasks, run_cfg=cfg, pool=pool, concurrency=args.concurrency, on_progress=on_progress
        )
        servers = len(pool.servers)
        disposed = sum(s.instances.disposed for s in pool.servers)
        capacity = pool.capacity
    wall = time.monotonic() - started
    lost = []
    for i, o in enumerate(outcomes):
        text = o.result.final_text if o.result is not None else ""
        if not (o.ok and expected(i) in text):
            error = o.error or (f"{type(o.exception).__name__}: {o.exception}" if o.exception else None)
            lost.append({"task": i, "error": str(error)[:300] if error else f"answer {text[:200]!r}"})
    return {
        "wall_s": wall,
        "outcomes": len(outcomes),
        "lost": lost,
        "servers": servers,
        "disposed": disposed,
        "capacity": capacity,
    }


def at_fraction(samples: Samples, series: list[int], fraction: float, n: int) -> int:
    """The first sample taken once ``fraction`` of the ``n`` tasks had finished."""
    goal = fraction * n
    for t, value in zip(samples.times, series, strict=True):
        if samples.finished(t) >= goal:
            return value
    return series[-1] if series else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--tasks", type=int, default=1000, help="tasks, each in its own workspace (default 1000)"
    )
    parser.add_argument("--concurrency", type=int, default=None, help="default: the pool's capacity")
    parser.add_argument(
        "--interval", type=float, default=0.5, help="seconds between RSS samples (default 0.5)"
    )
    parser.add_argument("--binary", default=None, help="opencode binary (default $OPENCODE_BINARY / pinned)")
    parser.add_argument("--json", default=None, help="also write the samples and results to this JSON file")
    args = parser.parse_args()
    if args.tasks < 2:
        raise SystemExit("--tasks must be >= 2")
    args.binary = str(Path(args.binary) if args.binary else m.default_binary())
    os.environ["OPENCODE_BINARY"] = args.binary
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    m.become_subreaper()
    machine = m.machine_info()
    print(f"command: {m.command_line()}")
    print(
        f"machine: {machine['cores']} cores ({machine['cpu']}), {machine['ram_gb']} GB RAM, "
        f"{machine['os']}, Python {machine['python']}"
    )
    print(f"load average before: {m.load_str(machine['load'])}", flush=True)
    scratch = Path(tempfile.mkdtemp(prefix="bench-thousand-"))
    try:
        spaces = make_workspaces(scratch, args.tasks)
        with OfflineModelProcess() as model, Sampler(args.interval, [model.pid]) as sampler:
            result = asyncio.run(drive(args, spaces, model.run_config(), sampler.samples))
            load_end = os.getloadavg()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    s = sampler.samples
    n = args.tasks
    half = [i for i, t in enumerate(s.times) if s.finished(t) >= n / 2 and s.finished(t) < n]
    xs = [float(s.finished(s.times[i])) for i in half]
    tree_slope = slope(xs, [float(s.tree[i]) for i in half])
    own_slope = slope(xs, [float(s.own[i]) for i in half])
    lost = result["lost"] + [{"task": i, "error": "no outcome"} for i in range(result["outcomes"], n)]
    lines = [
        "",
        f"| {n} tasks, lean pool | value |",
        "|---|---|",
        f"| wall | {result['wall_s']:.1f} s ({n / result['wall_s']:.2f} tasks/s) |",
        f"| servers / capacity | {result['servers']} / {result['capacity']} sessions |",
        f"| instances disposed | {result['disposed']} |",
        f"| tree RSS at 10 % / 50 % / 100 % of tasks | {m.mb(at_fraction(s, s.tree, 0.1, n))} /"
        f" {m.mb(at_fraction(s, s.tree, 0.5, n))} / {m.mb(at_fraction(s, s.tree, 1.0, n))} |",
        f"| tree RSS peak | {m.mb(max(s.tree, default=0))} |",
        f"| tree RSS slope, second half ({len(half)} samples) | {tree_slope / 1024:+.1f} KB/task |",
        f"| our process RSS at 50 % / 100 % | {m.mb(at_fraction(s, s.own, 0.5, n))} /"
        f" {m.mb(at_fraction(s, s.own, 1.0, n))} |",
        f"| our process RSS slope, second half | {own_slope / 1024:+.1f} KB/task |",
        f"| lost tasks | {len(lost)} |",
        "",
        f"load average at the end: {m.load_str(load_end)}",
    ]
    for item in lost[:20]:
        lines.append(f"- lost task {item['task']}: {item['error']}")
    time.sleep(0.5)
    m.reap_zombies()
    left = m.leftover_children(exclude=[])
    if left:
        lines.append("processes left behind (killed): " + "; ".join(m.describe(p) for p in left))
        for p in left:
            m.kill_tree(p.pid, grace_s=2)
    print("\n".join(lines))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "command": m.command_line(),
            "machine": machine,
            "result": {**result, "lost": lost},
            "tree_slope_bytes_per_task": tree_slope,
            "own_slope_bytes_per_task": own_slope,
            "samples": {
                "t": s.times,
                "finished": [s.finished(t) for t in s.times],
                "tree": s.tree,
                "own": s.own,
            },
        }
        Path(args.json).write_text(json.dumps(payload), encoding="utf-8")
    return 0 if not lost and not left else 1


if __name__ == "__main__":
    sys.exit(main())
