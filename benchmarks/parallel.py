"""Many agents at once: the seed vs our run mode vs ``run_many`` vs bare HTTP (issue 4, "Benchmark").

N tasks, each one ``bash`` tool call plus an answer on the offline model (prompt
``[[bash: echo task-<i>]]``, the built-in directive rules of
``opencode_wrapper.testing``; the answer must contain ``bash: task-<i>``), in two workloads:

* ``own``: every task in its own fresh ``git init``-ed workspace;
* ``shared``: all tasks in one fresh workspace.

Ways (each a separate child process, a "driver", so nothing mixes):

* ``seed``: PyPI ``py-opencode-wrapper==0.3.8`` (installed by this script into
  ``.bench/seed-venv``, idempotent), defaults, ``asyncio.gather(client.async_run(...))``;
* ``run``: our run mode, ``asyncio.gather(AsyncOpenCodeClient().async_run(...))``, defaults;
* ``many``: ``run_many(tasks, run_cfg=...)`` with defaults; ``many-lean``: with ``lean=True``;
* ``bare``: one ``opencode serve`` started by hand (private XDG dirs, ``OPENCODE_CONFIG_CONTENT``,
  basic auth) and N concurrent sessions over plain httpx (``POST /session`` + sync
  ``POST /session/{id}/message``): the naive limit. Its config dir already holds the plugin SDK
  opencode would otherwise npm-install into a new one, as a returning user's does
  (``BENCH_UNSEEDED_BARE=1`` measures it without: 16 tasks in one workspace took 33.0 s instead
  of 21.3 s).

One offline model process (``OfflineModelProcess``) serves every way; its own CPU and memory are
not counted. For each way it measures, from this (parent) process:

* wall time: driver start to driver exit (includes the interpreter start-up and, for ``many`` /
  ``bare``, starting the servers); the driver's own "batch" time is shown too;
* CPU time: user + system of the whole driver tree, as the delta of
  ``getrusage(RUSAGE_CHILDREN)`` around waiting the driver. Every process in the tree is
  waited for by its parent, so its time is accumulated upwards; this script also makes itself a
  child subreaper (``PR_SET_CHILD_SUBREAPER``), so orphans re-parent to it and are reaped (or
  reported as left behind and killed) — nothing escapes the count;
* peak memory: the largest sum of RSS of the driver and all its descendants, sampled with psutil
  every 100 ms (shared pages count once per process, as RSS does).

It prints a table per workload, ratios against the seed and against bare, the issue's targets
with PASS/FAIL, the machine and its load average before and after. Every process it starts is
ended by PID (drivers with their process groups); leftovers are reported as bugs.

Run it after ``make test``'s set-up (``make setup``)::

    .venv/bin/python benchmarks/parallel.py                       # 16 tasks, everything
    .venv/bin/python benchmarks/parallel.py --tasks 8 --workloads own --ways many,many-lean,bare
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
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# Only the standard library at module level: the ``seed`` driver runs this file with the seed
# venv's Python, which has neither psutil nor this repository's package.

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent
SEED_VERSION = "0.3.8"
SEED_VENV = REPO_ROOT / ".bench" / "seed-venv"
WAYS = ("seed", "run", "many", "many-lean", "bare")
WORKLOADS = ("own", "shared")
MODEL = "offline/scripted"
TASK_TIMEOUT_S = 600.0
DRIVER_TIMEOUT_S = 1800.0
RESULT_PREFIX = "BENCH-RESULT "


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


async def _drive_bare(spec: dict[str, Any]) -> list[dict[str, Any] | None]:
    import httpx
    from _measure import BareServe, message_text

    provider, model_id = spec["model"].split("/", 1)
    with BareServe(Path(spec["binary"]), spec["config_overrides"]) as server:
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
        async with httpx.AsyncClient(
            base_url=server.url, auth=server.auth, timeout=spec["timeout_s"], limits=limits
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
        elif way == "bare":
            failures = asyncio.run(_drive_bare(spec))
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
    ok: int = 0
    wall_s: float = float("nan")
    batch_s: float = float("nan")
    cpu_s: float = float("nan")
    peak_bytes: int = 0
    peak_procs: int = 0
    failures: list[dict[str, Any]] = field(default_factory=list)
    fatal: str | None = None
    leftovers: list[str] = field(default_factory=list)
    stderr_tail: str = ""

    @property
    def all_ok(self) -> bool:
        return self.ok == self.tasks and self.fatal is None


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
    for line in out.decode("utf-8", "replace").splitlines():
        if line.startswith(RESULT_PREFIX):
            summary = json.loads(line[len(RESULT_PREFIX) :])
            row.ok, row.failures, row.fatal = summary["ok"], summary["failures"], summary["fatal"]
            row.batch_s = summary["batch_s"]
    if not any(line.startswith(RESULT_PREFIX) for line in out.decode("utf-8", "replace").splitlines()):
        row.fatal = f"driver exited with code {popen.returncode} without a summary"
    return row


def _fmt_ratio(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}x"


def _speedup(rows: dict[str, Row], way: str, base: str) -> float | None:
    a, b = rows.get(way), rows.get(base)
    if a is None or b is None or not (a.all_ok and b.all_ok):
        return None
    return b.wall_s / a.wall_s


def _mem_lower(rows: dict[str, Row], way: str, base: str) -> float | None:
    a, b = rows.get(way), rows.get(base)
    if a is None or b is None or not (a.all_ok and b.all_ok) or not a.peak_bytes:
        return None
    return b.peak_bytes / a.peak_bytes


def print_table(workload: str, rows: dict[str, Row]) -> list[str]:
    title = {"own": "every task in its own workspace", "shared": "all tasks in one workspace"}[workload]
    n = next(iter(rows.values())).tasks
    lines = [
        f"### Workload `{workload}`: {n} tasks, {title}",
        "",
        "| way | ok | wall s | batch s | CPU s | peak RSS | procs | faster than seed | mem lower than seed"
        " | faster than bare |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for way, r in rows.items():
        lines.append(
            f"| {way} | {r.ok}/{r.tasks}{'' if r.fatal is None else ' (fatal)'}"
            f" | {r.wall_s:.1f} | {r.batch_s:.1f}"
            f" | {r.cpu_s:.1f} | {r.peak_bytes / 2**20:,.0f} MB | {r.peak_procs}"
            f" | {_fmt_ratio(_speedup(rows, way, 'seed'))} | {_fmt_ratio(_mem_lower(rows, way, 'seed'))}"
            f" | {_fmt_ratio(_speedup(rows, way, 'bare'))} |"
        )
    return lines


def targets(results: dict[str, dict[str, Row]]) -> list[str]:
    own, shared = results.get("own", {}), results.get("shared", {})
    # The (c) is run_many "with defaults and with the lean profile": both are checked.
    checks: list[tuple[str, float | None, float]] = []
    for way in ("many", "many-lean"):
        checks += [
            (f"one workspace: {way} >= 8x faster than seed", _speedup(shared, way, "seed"), 8.0),
            (f"own workspaces: {way} >= 4x faster than seed", _speedup(own, way, "seed"), 4.0),
            (f"own workspaces: memory of {way} >= 4x lower than seed", _mem_lower(own, way, "seed"), 4.0),
            (f"one workspace: memory of {way} >= 4x lower than seed", _mem_lower(shared, way, "seed"), 4.0),
        ]
    checks += [
        ("own workspaces: many-lean >= 1.3x faster than bare", _speedup(own, "many-lean", "bare"), 1.3),
        ("own workspaces: run no slower than seed", _speedup(own, "run", "seed"), 1.0),
        ("one workspace: run no slower than seed", _speedup(shared, "run", "seed"), 1.0),
    ]
    lines = ["| target | measured | result |", "|---|---|---|"]
    for name, value, goal in checks:
        if value is None:
            lines.append(f"| {name} | n/a (way not run or not all tasks ok) | N/A |")
        else:
            lines.append(f"| {name} | {value:.2f}x | {'PASS' if value >= goal else 'FAIL'} |")
    return lines


def parent_main(args: argparse.Namespace) -> int:
    import _measure as m

    from opencode_wrapper.testing import OfflineModelProcess

    ways = [w.strip() for w in args.ways.split(",") if w.strip()]
    workloads = [w.strip() for w in args.workloads.split(",") if w.strip()]
    for w in ways:
        if w not in WAYS:
            raise SystemExit(f"unknown way {w!r}; choose from {', '.join(WAYS)}")
    for w in workloads:
        if w not in WORKLOADS:
            raise SystemExit(f"unknown workload {w!r}; choose from {', '.join(WORKLOADS)}")
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
    print(f"load average before: {m.load_str(machine['load'])}")
    print(f"CPU time: getrusage(RUSAGE_CHILDREN) deltas; subreaper: {subreaper}. Peak RSS: psutil, 100 ms.")
    sys.stdout.flush()
    results: dict[str, dict[str, Row]] = {}
    scratch = Path(tempfile.mkdtemp(prefix="bench-parallel-"))
    try:
        with OfflineModelProcess() as model:
            config_overrides = model.run_config().config_overrides
            for workload in workloads:
                results[workload] = {}
                for way in ways:
                    root = scratch / workload / way
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
                    print(f"[{workload}] {way}: running ...", file=sys.stderr, flush=True)
                    row = run_driver(way, workload, spec, python, scratch, model.pid)
                    results[workload][way] = row
                    status = "ok" if row.all_ok else "FAILED"
                    print(
                        f"[{workload}] {way}: {status} {row.ok}/{row.tasks}, {row.wall_s:.1f} s,"
                        f" CPU {row.cpu_s:.1f} s, peak {row.peak_bytes / 2**20:,.0f} MB"
                        f" (load {os.getloadavg()[0]:.2f})",
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
    out += ["", "### Targets (issue 4)", "", *targets(results)]
    problems: list[str] = []
    for rows in results.values():
        for r in rows.values():
            if r.fatal:
                problems.append(f"- {r.workload}/{r.way}: fatal: {r.fatal}")
            for f in r.failures:
                problems.append(f"- {r.workload}/{r.way}: task {f['task']}: {f['error']}")
            if r.leftovers:
                problems.append(f"- {r.workload}/{r.way}: processes left behind (killed): {r.leftovers}")
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
            "results": {w: {k: asdict(r) for k, r in rows.items()} for w, rows in results.items()},
        }
        Path(args.json).write_text(json.dumps(payload, indent=2), encoding="utf-8")
    return 0 if all(r.all_ok for rows in results.values() for r in rows.values()) else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--tasks", type=int, default=16, help="tasks per workload (default 16)")
    parser.add_argument("--workloads", default="own,shared", help="own,shared (default both)")
    parser.add_argument("--ways", default=",".join(WAYS), help=f"subset of {','.join(WAYS)} (default all)")
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
