"""Many agents at once: the seed vs our run mode vs ``run_many`` vs a bare HTTP client.

N tasks, each one ``bash`` tool call plus an answer on the offline model (prompt
``[[bash: echo task-<i>]]``, the built-in directive rules of ``opencode_wrapper.testing``; the
answer must contain ``bash: task-<i>``), in two workloads:

* ``own``: every task in its own fresh ``git init``-ed workspace (the issue's workload);
* ``shared``: all tasks in one fresh workspace.

Ways (each a separate child process, a "driver", so nothing mixes):

* ``seed``: PyPI ``py-opencode-wrapper==0.3.8`` (installed by this script into
  ``.bench/seed-venv``, idempotent), defaults, ``asyncio.gather(client.async_run(...))``;
* ``run``: our run mode, ``asyncio.gather(AsyncOpenCodeClient().async_run(...))``, defaults;
* ``many``: ``run_many(tasks, run_cfg=...)`` with defaults; ``many-lean``: with ``lean=True``;
* ``bare``: a perfect minimal client, no library code: one ``opencode serve`` started by hand
  (private XDG dirs, ``OPENCODE_CONFIG_CONTENT``, basic auth), every task at once over plain
  httpx on one event loop (``POST /session?directory=`` then the synchronous
  ``POST /session/{id}/message``), with no connection cap, so all N sessions run at the same time
  (a thread pool such as ``asyncio.to_thread``'s would silently run at most
  ``min(32, CPUs + 4)`` of them). Its config dir already holds the plugin SDK opencode would
  otherwise npm-install into a new one, as a returning user's does (``BENCH_UNSEEDED_BARE=1``
  measures it without; an unseeded server also hangs for minutes on SIGTERM);
* ``bare-knobs``: ``bare`` plus exactly the opencode settings the lean profile turns: snapshot
  off, title generation off (``snapshot: false``, ``agent.title.disable: true``), no file watcher
  (``OPENCODE_EXPERIMENTAL_DISABLE_FILEWATCHER=1``), no models.dev fetch
  (``OPENCODE_DISABLE_MODELS_FETCH=1``), an empty catalog file (``OPENCODE_MODELS_PATH``). The
  script checks that ``opencode_wrapper._lean`` still turns exactly these and says so.

One offline model process (``OfflineModelProcess``) serves every way; its own CPU and memory are
not counted (it does compete for the same cores). For each way it measures, from this process:

* wall time: driver start to driver exit (includes the interpreter start-up and, for ``many`` /
  ``bare``, starting the servers); the driver's own "batch" time is shown too;
* CPU time: user + system of the whole driver tree, as the delta of
  ``getrusage(RUSAGE_CHILDREN)`` around waiting the driver (this script is a child subreaper, so
  orphans re-parent to it and are reaped, or reported as left behind and killed);
* peak memory: the largest sum of RSS of the driver and all its descendants, sampled with psutil
  every 100 ms (shared pages count once per process, as RSS does).

``--rounds R`` repeats every way R times, interleaved (the order rotates every round) so that the
load of a shared machine hits every way alike; the tables then show medians, and every ratio is
the median of the per-round ratios. It prints a table per workload, the issue's goals with
PASS/FAIL, the machine and the load average before, per way and after. Every process it starts
is ended by PID (drivers with their process groups); leftovers are reported as bugs.

Goals (``own`` workload): ``run_many`` defaults at least 4x faster than the seed and no heavier
than ``bare`` (16 tasks); ``many-lean`` no slower and no heavier than ``bare-knobs`` (16 and 100
tasks); at 100 tasks, ``many-lean`` within 20 s and 1.5 GB.

Run it after ``make setup``::

    .venv/bin/python benchmarks/parallel.py                       # 16 tasks, every way
    .venv/bin/python benchmarks/parallel.py --tasks 100 --workloads own   # without seed and run
    .venv/bin/python benchmarks/parallel.py --ways many-lean,bare-knobs --rounds 3
    .venv/bin/python benchmarks/parallel.py --json .bench/parallel.json

The seed way needs PyPI (or a configured index) the first time. 16 tasks take a few minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# Only the standard library at module level: the ``seed`` driver runs this file with the seed
# venv's Python, which has neither psutil nor this repository's package.

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent
SEED_VERSION = "0.3.8"
SEED_VENV = REPO_ROOT / ".bench" / "seed-venv"
WAYS = ("seed", "run", "many", "many-lean", "bare", "bare-knobs")
#: The ways run by default beyond 16 tasks (the seed and run mode start a process per task).
WAYS_MANY_TASKS = ("many", "many-lean", "bare", "bare-knobs")
WORKLOADS = ("own", "shared")
MODEL = "offline/scripted"
TASK_TIMEOUT_S = 600.0
DRIVER_TIMEOUT_S = 1800.0
RESULT_PREFIX = "BENCH-RESULT "

#: The opencode settings the lean profile turns (the issue's "bare with knobs"), besides the
#: empty catalog file (``OPENCODE_MODELS_PATH``), which the bare-knobs driver writes itself.
KNOBS_CONFIG: dict[str, Any] = {"snapshot": False, "agent": {"title": {"disable": True}}}
KNOBS_ENV: dict[str, str] = {
    "OPENCODE_EXPERIMENTAL_DISABLE_FILEWATCHER": "1",
    "OPENCODE_DISABLE_MODELS_FETCH": "1",
}
MODELS_PATH_ENV = "OPENCODE_MODELS_PATH"

# The goals.
SEED_SPEEDUP_GOAL = 4.0
HUNDRED_TASKS_WALL_S = 20.0
HUNDRED_TASKS_BYTES = 1.5 * 10**9


def prompt(i: int) -> str:
    return f"[[bash: echo task-{i}]]"


def expected(i: int) -> str:
    """What the answer must contain: the offline model reports the tool result back."""
    return f"bash: task-{i}"


# --- drivers (run in a child process) ----------------------------------------------------------------


def _check(i: int, text: str, ok: bool, error: object) -> dict[str, Any] | None:
    """``None`` when task ``i`` succeeded, else a failure record."""
    if ok and expected(i) in text:
        return None
    return {"task": i, "error": str(error)[:500] if error else f"unexpected answer: {text[:300]!r}"}


async def _drive_client(spec: dict[str, Any], *, seed: bool) -> list[dict[str, Any] | None]:
    """``asyncio.gather(client.async_run(...))`` with the seed's or our ``AsyncOpenCodeClient``."""
    from opencode_wrapper import AsyncOpenCodeClient, RunConfig

    cfg = RunConfig(model=spec["model"], config_overrides=spec["config_overrides"])
    client = AsyncOpenCodeClient(spec["binary"]) if seed else AsyncOpenCodeClient()
    results = await asyncio.gather(
        *(client.async_run(p, ws, run_cfg=cfg, timeout_s=spec["timeout_s"]) for p, ws in spec["tasks"]),
        return_exceptions=True,
    )
    failures: list[dict[str, Any] | None] = []
    for i, r in enumerate(results):
        if isinstance(r, BaseException):
            failures.append({"task": i, "error": f"{type(r).__name__}: {r}"[:500]})
            continue
        ok = bool(getattr(r, "ok", r.exit_code == 0))
        failures.append(_check(i, r.final_text, ok, getattr(r, "error", None)))
    return failures


async def _drive_many(spec: dict[str, Any], *, lean: bool) -> list[dict[str, Any] | None]:
    from opencode_wrapper import RunConfig, Task, run_many

    cfg = RunConfig(model=spec["model"], config_overrides=spec["config_overrides"])
    tasks = [Task(p, ws, timeout_s=spec["timeout_s"]) for p, ws in spec["tasks"]]
    outcomes = await (run_many(tasks, run_cfg=cfg, lean=True) if lean else run_many(tasks, run_cfg=cfg))
    failures: list[dict[str, Any] | None] = []
    for i, o in enumerate(outcomes):
        text = o.result.final_text if o.result is not None else ""
        error = o.error or (f"{type(o.exception).__name__}: {o.exception}" if o.exception else None)
        failures.append(_check(i, text, o.ok, error))
    return failures


async def _drive_bare(spec: dict[str, Any], *, knobs: bool) -> list[dict[str, Any] | None]:
    """Every task at once on one hand-started ``opencode serve``, over plain httpx (no cap)."""
    import httpx
    from _measure import BareServe, message_text

    provider, model_id = spec["model"].split("/", 1)
    config = dict(spec["config_overrides"])
    server = BareServe(Path(spec["binary"]), config)
    if knobs:
        server.config = {**config, **KNOBS_CONFIG}
        catalog = server.root / "models-empty.json"
        catalog.write_text("{}\n", encoding="utf-8")
        server.extra_env = {**KNOBS_ENV, MODELS_PATH_ENV: str(catalog)}
    with server:
        # No connection cap and no pool timeout: all N prompts are in flight at once.
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
        timeout = httpx.Timeout(spec["timeout_s"], pool=None)
        async with httpx.AsyncClient(
            base_url=server.url, auth=server.auth, timeout=timeout, limits=limits, trust_env=False
        ) as http:

            async def one(i: int, text: str, ws: str) -> dict[str, Any] | None:
                try:
                    r = await http.post("/session", params={"directory": ws}, json={})
                    r.raise_for_status()
                    sid = r.json()["id"]
                    body = {
                        "parts": [{"type": "text", "text": text}],
                        "model": {"providerID": provider, "modelID": model_id},
                    }
                    r = await http.post(f"/session/{sid}/message", params={"directory": ws}, json=body)
                    r.raise_for_status()
                    data = r.json()
                except (httpx.HTTPError, ValueError, KeyError) as exc:
                    return {"task": i, "error": f"{type(exc).__name__}: {exc}"[:500]}
                info = data.get("info", {}) if isinstance(data, dict) else {}
                return _check(i, message_text(data), not info.get("error"), info.get("error"))

            return list(await asyncio.gather(*(one(i, p, ws) for i, (p, ws) in enumerate(spec["tasks"]))))


def driver_main(spec_file: str) -> int:
    spec = json.loads(Path(spec_file).read_text(encoding="utf-8"))
    way = spec["way"]
    started = time.monotonic()
    try:
        if way in ("seed", "run"):
            failures = asyncio.run(_drive_client(spec, seed=way == "seed"))
        elif way in ("many", "many-lean"):
            failures = asyncio.run(_drive_many(spec, lean=way == "many-lean"))
        elif way in ("bare", "bare-knobs"):
            failures = asyncio.run(_drive_bare(spec, knobs=way == "bare-knobs"))
        else:
            raise ValueError(f"unknown way {way!r}")
        fatal = None
    except BaseException as exc:
        failures = []
        fatal = f"{type(exc).__name__}: {exc}"[:2000]
    found = [f for f in failures if f is not None]
    summary = {
        "way": way,
        "tasks": len(spec["tasks"]),
        "ok": len(failures) - len(found),
        "failures": found,
        "fatal": fatal,
        "batch_s": time.monotonic() - started,
    }
    print(RESULT_PREFIX + json.dumps(summary), flush=True)
    return 0


# --- the measuring parent ----------------------------------------------------------------------------


@dataclass
class Row:
    workload: str
    way: str
    tasks: int
    round: int = 0
    ok: int = 0
    wall_s: float = float("nan")
    batch_s: float = float("nan")
    cpu_s: float = float("nan")
    peak_bytes: int = 0
    peak_procs: int = 0
    load_1min: float = float("nan")
    failures: list[dict[str, Any]] = field(default_factory=list)
    fatal: str | None = None
    leftovers: list[str] = field(default_factory=list)
    stderr_tail: str = ""

    @property
    def all_ok(self) -> bool:
        return self.ok == self.tasks and self.fatal is None


def knobs_match_lean() -> str:
    """Whether the lean profile still turns exactly the bare-knobs settings (a line to print)."""
    from opencode_wrapper._lean import LEAN_CONFIG, LEAN_ENV
    from opencode_wrapper._lean import MODELS_PATH_ENV as lean_models_env

    same = LEAN_CONFIG == KNOBS_CONFIG and LEAN_ENV == KNOBS_ENV and lean_models_env == MODELS_PATH_ENV
    if same:
        return "bare-knobs: exactly the lean profile's settings (config, environment, empty catalog)"
    return (
        f"WARNING: the lean profile turns other settings than bare-knobs: LEAN_CONFIG={LEAN_CONFIG},"
        f" LEAN_ENV={LEAN_ENV}; bare-knobs: {KNOBS_CONFIG}, {KNOBS_ENV}"
    )


def ensure_seed_venv() -> Path:
    """``.bench/seed-venv`` with ``py-opencode-wrapper==0.3.8`` (created once; reused after)."""
    python = SEED_VENV / "bin" / "python"
    probe = "import importlib.metadata as m; print(m.version('py-opencode-wrapper'))"
    if python.exists():
        done = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, check=False)
        if done.returncode == 0 and done.stdout.strip() == SEED_VERSION:
            return python
        shutil.rmtree(SEED_VENV)
    print(f"installing the seed py-opencode-wrapper=={SEED_VERSION} into {SEED_VENV} ...", file=sys.stderr)
    SEED_VENV.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "venv", str(SEED_VENV)], check=True)
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, f"py-opencode-wrapper=={SEED_VERSION}"], check=True)
    return python


def run_driver(
    way: str, workload: str, spec: dict[str, Any], python: str, scratch: Path, model_pid: int
) -> Row:
    import _measure as m

    row = Row(workload=workload, way=way, tasks=len(spec["tasks"]))
    spec_file = scratch / f"{workload}-{way}.json"
    spec_file.write_text(json.dumps(spec), encoding="utf-8")
    stderr_path = scratch / f"{workload}-{way}.stderr"
    env = dict(os.environ, OPENCODE_BINARY=spec["binary"])
    m.reap_zombies()
    cpu_before = m.children_cpu_s()
    started = time.monotonic()
    with stderr_path.open("wb") as stderr:
        popen = subprocess.Popen(
            [python, str(Path(__file__).resolve()), "--driver", str(spec_file)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr,
            env=env,
            cwd=scratch,
            start_new_session=True,
        )
        try:
            with m.TreeSampler(popen.pid, 0.1) as sampler:
                out, _ = popen.communicate(timeout=DRIVER_TIMEOUT_S)
        except BaseException:
            m.kill_tree(popen.pid)
            popen.wait()
            raise
    row.wall_s = time.monotonic() - started
    row.load_1min = os.getloadavg()[0]
    row.peak_bytes, row.peak_procs = sampler.peak_bytes, sampler.peak_procs
    time.sleep(0.5)  # let orphans (if any) re-parent to us
    m.reap_zombies()
    left = m.leftover_children(exclude=[model_pid])
    row.leftovers = [m.describe(p) for p in left]
    for p in left:
        m.kill_tree(p.pid, grace_s=2)
    m.reap_zombies()
    row.cpu_s = m.children_cpu_s() - cpu_before
    row.stderr_tail = stderr_path.read_text(encoding="utf-8", errors="replace")[-1500:]
    lines = out.decode("utf-8", "replace").splitlines()
    for line in lines:
        if line.startswith(RESULT_PREFIX):
            summary = json.loads(line[len(RESULT_PREFIX) :])
            row.ok, row.failures, row.fatal = summary["ok"], summary["failures"], summary["fatal"]
            row.batch_s = summary["batch_s"]
    if not any(line.startswith(RESULT_PREFIX) for line in lines):
        row.fatal = f"driver exited with code {popen.returncode} without a summary"
    return row


# --- tables and goals --------------------------------------------------------------------------------

Rounds = dict[str, list[Row]]  # way -> one row per round


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _paired(rows: Rounds, way: str, base: str, value: Callable[[Row], float]) -> float | None:
    """Median over rounds of ``value(way) / value(base)``; ``None`` unless both were all ok."""
    ratios = [
        value(a) / value(b)
        for a, b in zip(rows.get(way, []), rows.get(base, []), strict=False)
        if a.all_ok and b.all_ok and value(b) > 0
    ]
    return _median(ratios) if ratios else None


def wall_ratio(rows: Rounds, way: str, base: str) -> float | None:
    """``way``'s wall time over ``base``'s (below 1: ``way`` is faster)."""
    return _paired(rows, way, base, lambda r: r.wall_s)


def mem_ratio(rows: Rounds, way: str, base: str) -> float | None:
    """``way``'s peak RSS over ``base``'s (below 1: ``way`` is lighter)."""
    return _paired(rows, way, base, lambda r: float(r.peak_bytes))


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def print_table(workload: str, rows: Rounds) -> list[str]:
    title = {"own": "every task in its own workspace", "shared": "all tasks in one workspace"}[workload]
    first = next(iter(rows.values()))
    rounds = max(len(r) for r in rows.values())
    what = "medians of " + str(rounds) + " interleaved rounds; ratios: medians of per-round ratios"
    lines = [
        f"### Workload `{workload}`: {first[0].tasks} tasks, {title}" + (f" ({what})" if rounds > 1 else ""),
        "",
        "| way | ok | wall s | batch s | CPU s | peak RSS | procs | load | seed wall ÷ wall"
        " | wall ÷ bare | mem ÷ bare | wall ÷ bare-knobs | mem ÷ bare-knobs |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for way, runs in rows.items():
        ok = sum(r.ok for r in runs)
        fatal = any(r.fatal for r in runs)
        seed = wall_ratio(rows, way, "seed")
        lines.append(
            f"| {way} | {ok}/{sum(r.tasks for r in runs)}{' (fatal)' if fatal else ''}"
            f" | {_median([r.wall_s for r in runs]):.1f} | {_median([r.batch_s for r in runs]):.1f}"
            f" | {_median([r.cpu_s for r in runs]):.1f}"
            f" | {_median([float(r.peak_bytes) for r in runs]) / 2**20:,.0f} MB"
            f" | {max(r.peak_procs for r in runs)} | {_median([r.load_1min for r in runs]):.1f}"
            f" | {'—' if seed is None else f'{1 / seed:.2f}x'}"
            f" | {_fmt(wall_ratio(rows, way, 'bare'))} | {_fmt(mem_ratio(rows, way, 'bare'))}"
            f" | {_fmt(wall_ratio(rows, way, 'bare-knobs'))} | {_fmt(mem_ratio(rows, way, 'bare-knobs'))} |"
        )
    return lines


def _absolute(rows: Rounds, way: str, value: Callable[[Row], float]) -> float | None:
    runs = [r for r in rows.get(way, []) if r.all_ok]
    if not runs or len(runs) != len(rows.get(way, [])):
        return None
    return _median([value(r) for r in runs])


def targets(results: dict[str, Rounds], tasks: int) -> list[str]:
    """The issue's goals on the ``own`` workload, each with its measured value and PASS/FAIL."""
    own = results.get("own", {})
    checks: list[tuple[str, float | None, str, bool | None]] = []

    def check(name: str, value: float | None, shown: str, passed: bool) -> None:
        checks.append((name, value, shown, None if value is None else passed))

    seed = wall_ratio(own, "many", "seed")
    check(
        f"run_many defaults >= {SEED_SPEEDUP_GOAL:g}x faster than the seed",
        seed,
        "" if seed is None else f"{1 / seed:.2f}x",
        seed is not None and 1 / seed >= SEED_SPEEDUP_GOAL,
    )
    for way, base, label in (("many", "bare", "run_many defaults"), ("many-lean", "bare-knobs", "lean")):
        if way == "many-lean":
            wall = wall_ratio(own, way, base)
            check(
                f"{label}: wall <= {base}",
                wall,
                "" if wall is None else f"{wall:.2f} of {base}",
                (wall or 0) <= 1,
            )
        mem = mem_ratio(own, way, base)
        check(
            f"{label}: peak RSS <= {base}",
            mem,
            "" if mem is None else f"{mem:.2f} of {base}",
            (mem or 0) <= 1,
        )
    if tasks == 100:
        wall_s = _absolute(own, "many-lean", lambda r: r.wall_s)
        check(
            f"100 tasks, lean: wall <= {HUNDRED_TASKS_WALL_S:g} s",
            wall_s,
            "" if wall_s is None else f"{wall_s:.1f} s",
            (wall_s or 0) <= HUNDRED_TASKS_WALL_S,
        )
        peak = _absolute(own, "many-lean", lambda r: float(r.peak_bytes))
        check(
            f"100 tasks, lean: peak RSS <= {HUNDRED_TASKS_BYTES / 1e9:g} GB",
            peak,
            "" if peak is None else f"{peak / 1e9:.2f} GB",
            (peak or 0) <= HUNDRED_TASKS_BYTES,
        )
    lines = [
        f"Workload `own`, {tasks} tasks (the issue states the first three at 16 tasks; the lean ones at 16"
        " and 100).",
        "",
        "| goal | measured | result |",
        "|---|---|---|",
    ]
    for name, _, shown, passed in checks:
        if passed is None:
            lines.append(f"| {name} | n/a (way not run, or not every task ok) | N/A |")
        else:
            lines.append(f"| {name} | {shown} | {'PASS' if passed else 'FAIL'} |")
    return lines


def _order(ways: list[str], round_no: int) -> list[str]:
    """The ways of round ``round_no``: rotated, so that each way runs early and late."""
    k = round_no % len(ways)
    return ways[k:] + ways[:k]


def parent_main(args: argparse.Namespace) -> int:
    import _measure as m

    from opencode_wrapper.testing import OfflineModelProcess

    default = WAYS if args.tasks <= 16 else WAYS_MANY_TASKS
    ways = [w.strip() for w in (args.ways or ",".join(default)).split(",") if w.strip()]
    workloads = [w.strip() for w in args.workloads.split(",") if w.strip()]
    for w in ways:
        if w not in WAYS:
            raise SystemExit(f"unknown way {w!r}; choose from {', '.join(WAYS)}")
    for w in workloads:
        if w not in WORKLOADS:
            raise SystemExit(f"unknown workload {w!r}; choose from {', '.join(WORKLOADS)}")
    if args.rounds < 1 or args.tasks < 1:
        raise SystemExit("--rounds and --tasks must be >= 1")
    binary = Path(args.binary) if args.binary else m.default_binary()
    if not binary.exists():
        raise SystemExit(f"opencode not found at {binary}: run `make setup` first")
    seed_python = str(ensure_seed_venv()) if "seed" in ways else ""
    # End cleanly (drivers' process groups, the model process, scratch dirs) on SIGTERM, and on
    # SIGINT even when started in the background of a shell that ignores it.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    signal.signal(signal.SIGINT, signal.default_int_handler)
    subreaper = m.become_subreaper()
    machine = m.machine_info()
    print(f"command: {m.command_line()}")
    print(
        f"machine: {machine['cores']} cores ({machine['cpu']}), {machine['ram_gb']} GB RAM"
        f" ({machine['available_gb']} GB available), {machine['os']}, Python {machine['python']}"
    )
    print(f"opencode: {binary}")
    print(knobs_match_lean())
    print(f"load average before: {m.load_str(machine['load'])}")
    print(f"CPU time: getrusage(RUSAGE_CHILDREN) deltas; subreaper: {subreaper}. Peak RSS: psutil, 100 ms.")
    sys.stdout.flush()
    results: dict[str, Rounds] = {w: {way: [] for way in ways} for w in workloads}
    scratch = Path(tempfile.mkdtemp(prefix="bench-parallel-"))
    try:
        with OfflineModelProcess() as model:
            config_overrides = model.run_config().config_overrides
            for round_no in range(args.rounds):
                for workload in workloads:
                    for way in _order(ways, round_no):
                        root = scratch / f"r{round_no}" / workload / way
                        if workload == "own":
                            spaces = [m.make_workspace(root / f"ws{i}") for i in range(args.tasks)]
                        else:
                            spaces = [m.make_workspace(root / "ws")] * args.tasks
                        spec = {
                            "way": way,
                            "binary": str(binary),
                            "model": MODEL,
                            "config_overrides": config_overrides,
                            "timeout_s": TASK_TIMEOUT_S,
                            "tasks": [[prompt(i), str(ws)] for i, ws in enumerate(spaces)],
                        }
                        python = seed_python if way == "seed" else sys.executable
                        label = f"[round {round_no + 1}/{args.rounds}] [{workload}] {way}"
                        print(f"{label}: running ...", file=sys.stderr, flush=True)
                        row = run_driver(way, workload, spec, python, scratch, model.pid)
                        row.round = round_no
                        results[workload][way].append(row)
                        shutil.rmtree(root, ignore_errors=True)
                        status = "ok" if row.all_ok else "FAILED"
                        print(
                            f"{label}: {status} {row.ok}/{row.tasks}, {row.wall_s:.1f} s,"
                            f" CPU {row.cpu_s:.1f} s, peak {row.peak_bytes / 2**20:,.0f} MB"
                            f" (load {row.load_1min:.2f})",
                            file=sys.stderr,
                            flush=True,
                        )
                        time.sleep(args.pause)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    load_after = os.getloadavg()
    out: list[str] = []
    for workload, rows in results.items():
        out += ["", *print_table(workload, rows)]
    if "own" in results:
        out += ["", "### Goals", "", *targets(results, args.tasks)]
    problems: list[str] = []
    for rows in results.values():
        for runs in rows.values():
            for r in runs:
                where = f"{r.workload}/{r.way} (round {r.round + 1})"
                if r.fatal:
                    problems.append(f"- {where}: fatal: {r.fatal}")
                for f in r.failures:
                    problems.append(f"- {where}: task {f['task']}: {f['error']}")
                if r.leftovers:
                    problems.append(f"- {where}: processes left behind (killed): {r.leftovers}")
                if not r.all_ok and r.stderr_tail.strip():
                    problems.append(f"  driver stderr tail:\n{r.stderr_tail}")
    out += ["", "### Failures and leftovers", "", *(problems or ["none"])]
    out += ["", f"load average after: {m.load_str(load_after)}"]
    print("\n".join(out))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "command": m.command_line(),
            "machine": machine,
            "load_after": load_after,
            "results": {
                w: {k: [asdict(r) for r in runs] for k, runs in rows.items()} for w, rows in results.items()
            },
        }
        Path(args.json).write_text(json.dumps(payload, indent=2), encoding="utf-8")
    return 0 if all(r.all_ok for rows in results.values() for runs in rows.values() for r in runs) else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--tasks", type=int, default=16, help="tasks per workload (default 16)")
    parser.add_argument("--workloads", default="own,shared", help="own,shared (default both)")
    parser.add_argument(
        "--ways",
        default=None,
        help=f"subset of {','.join(WAYS)} (default: all up to 16 tasks, else {','.join(WAYS_MANY_TASKS)})",
    )
    parser.add_argument("--rounds", type=int, default=1, help="interleaved rounds of every way (default 1)")
    parser.add_argument("--binary", default=None, help="opencode binary (default $OPENCODE_BINARY / pinned)")
    parser.add_argument("--pause", type=float, default=2.0, help="seconds to settle between ways")
    parser.add_argument("--json", default=None, help="also write the raw results to this JSON file")
    parser.add_argument("--driver", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.driver:
        return driver_main(args.driver)
    return parent_main(args)


if __name__ == "__main__":
    sys.exit(main())
