"""Measure which parts of opencode's per-directory set-up a headless agent can switch off.

opencode sets up an *instance* for every new directory a server sees (project detection, a git
snapshot repository, plugins, file watcher, file index, skills, title generation...). This
script starts ONE ``opencode serve`` per configuration ("variant"), warms it up with one turn,
then runs N concurrent sessions, each in its own fresh git-initialised directory, with the
prompt ``[[bash: echo hi]]`` (the offline model calls ``bash`` once, then answers). For each run
it records:

* wall time of the N concurrent sessions (create + one synchronous prompt each);
* CPU time of the server process tree during those sessions (user + system, including reaped
  children such as the ``git`` processes of the snapshot repository);
* peak RSS of the server process tree (sampled every 50 ms);
* how many title-generation requests reached the model, and whether every answer arrived.

Variants run interleaved (round-robin, a different rotation every round) and are repeated, and
the report shows medians plus the median of per-round ratios against the baseline, because
the machine is shared and noisy. The load average at the start and end is printed too.

Usage (after ``make setup``)::

    .venv/bin/python benchmarks/lean_profile.py --tasks 8
    .venv/bin/python benchmarks/lean_profile.py --tasks 16 --rounds 5 --variants baseline,lean
    .venv/bin/python benchmarks/lean_profile.py --list

Every process this script starts is ended by its PID before it exits.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
from _measure import announced_url

from opencode_wrapper._lean import lean_run_config, seed_plugin_dependencies
from opencode_wrapper._proc.binary import OPENCODE_VERSION
from opencode_wrapper.config import _deep_merge
from opencode_wrapper.testing import OfflineModelServer

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_BINARY = REPO_ROOT / ".opencode" / OPENCODE_VERSION / "node_modules" / ".bin" / "opencode"
PROMPT = "[[bash: echo hi]]"
#: The offline model's answer after the bash tool result: "Tool results: bash: hi".
EXPECTED_ANSWER = "bash: hi"
USERNAME = "opencode"


@dataclass(frozen=True)
class Variant:
    """One server configuration: opencode config keys, env vars, and how sessions are created."""

    name: str
    description: str
    config: Mapping[str, Any] = field(default_factory=dict)
    #: Environment variables; ``{root}`` in a value becomes the run's temporary directory.
    env: Mapping[str, str] = field(default_factory=dict)
    #: Files written below the run's temporary directory before the server starts.
    files: Mapping[str, str] = field(default_factory=dict)
    #: Create each session with ``{"title": ...}`` (skips the title LLM call in server mode).
    session_title: bool = False
    #: Pre-seed the config dir so opencode's background ``npm install`` of its plugin SDK is a
    #: no-op (``seed_plugin_dependencies``). On for every variant but ``unseeded``: that install
    #: downloads from the npm registry for tens of seconds and would blur every other number.
    seed_config: bool = True
    #: Build config and env with ``opencode_wrapper._lean.lean_run_config`` (what the library ships).
    lean: bool = False


VARIANTS: tuple[Variant, ...] = (
    Variant("baseline", "library defaults (autoupdate off, share disabled, bash allowed), seeded config dir"),
    Variant(
        "unseeded",
        "baseline with a fresh config dir: opencode npm-installs @opencode-ai/plugin in the background",
        seed_config=False,
    ),
    Variant("snapshot_off", 'config {"snapshot": false}', config={"snapshot": False}),
    Variant(
        "title_agent_off",
        'config {"agent": {"title": {"disable": true}}}',
        config={"agent": {"title": {"disable": True}}},
    ),
    Variant("session_title", 'POST /session {"title": ...} (no config change)', session_title=True),
    Variant(
        "no_default_plugins",
        "env OPENCODE_DISABLE_DEFAULT_PLUGINS=1",
        env={"OPENCODE_DISABLE_DEFAULT_PLUGINS": "1"},
    ),
    Variant("pure", "env OPENCODE_PURE=1 (same as --pure)", env={"OPENCODE_PURE": "1"}),
    Variant(
        "no_filewatcher",
        "env OPENCODE_EXPERIMENTAL_DISABLE_FILEWATCHER=1",
        env={"OPENCODE_EXPERIMENTAL_DISABLE_FILEWATCHER": "1"},
    ),
    Variant("no_fff", "env OPENCODE_DISABLE_FFF=1 (no native file index)", env={"OPENCODE_DISABLE_FFF": "1"}),
    Variant(
        "no_models_fetch",
        "env OPENCODE_DISABLE_MODELS_FETCH=1",
        env={"OPENCODE_DISABLE_MODELS_FETCH": "1"},
    ),
    Variant(
        "no_external_skills",
        "env OPENCODE_DISABLE_EXTERNAL_SKILLS=1 OPENCODE_DISABLE_CLAUDE_CODE=1",
        env={"OPENCODE_DISABLE_EXTERNAL_SKILLS": "1", "OPENCODE_DISABLE_CLAUDE_CODE": "1"},
    ),
    Variant(
        "no_project_config",
        "env OPENCODE_DISABLE_PROJECT_CONFIG=1",
        env={"OPENCODE_DISABLE_PROJECT_CONFIG": "1"},
    ),
    Variant(
        "lsp_formatter_off",
        'config {"lsp": false, "formatter": false}',
        config={"lsp": False, "formatter": False},
    ),
    Variant(
        "enabled_providers",
        'config {"enabled_providers": ["offline"]} (only the provider in use)',
        config={"enabled_providers": ["offline"]},
    ),
    Variant(
        "models_path_empty",
        "env OPENCODE_MODELS_PATH=<file containing {}> (empty models.dev catalog)",
        env={"OPENCODE_MODELS_PATH": "{root}/models.json", "OPENCODE_DISABLE_MODELS_FETCH": "1"},
        files={"models.json": "{}"},
    ),
    Variant(
        "lean",
        "lean_run_config(): LEAN_CONFIG + LEAN_ENV (+ empty catalog: the model is declared in config)",
        lean=True,
    ),
    # Leave one knob of the lean profile out (the number it then loses is that knob's share once
    # the big catalog cost is gone) ...
    Variant("lean-snapshot_on", "lean, but snapshots on", config={"snapshot": True}, lean=True),
    Variant(
        "lean-title_on",
        "lean, but title generation on",
        config={"agent": {"title": {"disable": False}}},
        lean=True,
    ),
    Variant(
        "lean-watcher_on",
        "lean, but the file watcher on",
        env={"OPENCODE_EXPERIMENTAL_DISABLE_FILEWATCHER": "0"},
        lean=True,
    ),
    Variant(
        "lean-models_fetch_on",
        "lean, but the models.dev refresh on",
        env={"OPENCODE_DISABLE_MODELS_FETCH": "0"},
        lean=True,
    ),
    # ... or add one more knob to it.
    Variant("lean+no_fff", "lean + OPENCODE_DISABLE_FFF=1", env={"OPENCODE_DISABLE_FFF": "1"}, lean=True),
    Variant(
        "lean+no_default_plugins",
        "lean + OPENCODE_DISABLE_DEFAULT_PLUGINS=1",
        env={"OPENCODE_DISABLE_DEFAULT_PLUGINS": "1"},
        lean=True,
    ),
    Variant(
        "lean+no_external_skills",
        "lean + OPENCODE_DISABLE_EXTERNAL_SKILLS=1 OPENCODE_DISABLE_CLAUDE_CODE=1",
        env={"OPENCODE_DISABLE_EXTERNAL_SKILLS": "1", "OPENCODE_DISABLE_CLAUDE_CODE": "1"},
        lean=True,
    ),
    Variant(
        "lean+no_project_config",
        "lean + OPENCODE_DISABLE_PROJECT_CONFIG=1",
        env={"OPENCODE_DISABLE_PROJECT_CONFIG": "1"},
        lean=True,
    ),
    Variant("lean+session_title", 'lean + POST /session {"title": ...}', session_title=True, lean=True),
)
#: Run by default; the others (no effect expected from reading the code) only when named.
DEFAULT_VARIANTS = (
    "baseline",
    "unseeded",
    "snapshot_off",
    "title_agent_off",
    "session_title",
    "no_default_plugins",
    "no_filewatcher",
    "no_fff",
    "no_models_fetch",
    "no_external_skills",
    "no_project_config",
    "enabled_providers",
    "models_path_empty",
    "lean",
)
VARIANTS_BY_NAME = {v.name: v for v in VARIANTS}


@dataclass
class RunRecord:
    """The measurements of one variant in one round."""

    variant: str
    round: int
    tasks: int
    ok: int
    wall_s: float
    cpu_s: float
    peak_rss_mb: float
    startup_s: float
    warmup_s: float
    title_requests: int
    chat_requests: int
    snapshot_repos: int
    threads_after: int
    inotify_fds_after: int
    load_before: float
    load_after: float
    task_latencies_s: list[float]
    errors: list[str]


# --- processes ------------------------------------------------------------------------------------


def _tree(proc: psutil.Process) -> list[psutil.Process]:
    try:
        return [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return []


def _tree_rss(proc: psutil.Process) -> int:
    total = 0
    for p in _tree(proc):
        with contextlib.suppress(psutil.Error):
            total += p.memory_info().rss
    return total


def _cpu_seconds(proc: psutil.Process) -> float:
    """User + system CPU of ``proc`` plus its reaped children, plus its live descendants."""
    total = 0.0
    try:
        t = proc.cpu_times()
        total += float(t.user + t.system + t.children_user + t.children_system)
        descendants = proc.children(recursive=True)
    except psutil.Error:
        return total
    for child in descendants:
        with contextlib.suppress(psutil.Error):
            c = child.cpu_times()
            total += float(c.user + c.system)
    return total


def _inotify_fds(pid: int) -> int:
    count = 0
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                if os.readlink(f"/proc/{pid}/fd/{fd}") == "anon_inode:inotify":
                    count += 1
    return count


class RssSampler:
    """Samples the RSS of a process tree on a thread; remembers the peak and every PID seen."""

    def __init__(self, proc: psutil.Process, interval_s: float = 0.05) -> None:
        self.proc = proc
        self.interval_s = interval_s
        self.peak = 0
        self.seen: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for p in _tree(self.proc):
                self.seen.add(p.pid)
            self.peak = max(self.peak, _tree_rss(self.proc))
            self._stop.wait(self.interval_s)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


class ServeProcess:
    """One ``opencode serve`` with private XDG dirs, basic auth and its own process group."""

    def __init__(
        self, binary: Path, root: Path, config: Mapping[str, Any], env: Mapping[str, str], *, seed: bool
    ) -> None:
        self.root = root
        self.password = secrets.token_urlsafe(16)
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("OPENCODE")}
        for name in ("DATA", "CONFIG", "CACHE", "STATE"):
            path = root / "xdg" / name.lower()
            path.mkdir(parents=True)
            full_env[f"XDG_{name}_HOME"] = str(path)
        if seed:
            seed_plugin_dependencies(root / "xdg" / "config" / "opencode")
        full_env["OPENCODE_SERVER_PASSWORD"] = self.password
        full_env["OPENCODE_DISABLE_AUTOUPDATE"] = "1"  # the library's default
        full_env["OPENCODE_CONFIG_CONTENT"] = json.dumps(config)
        full_env.update(env)
        self.stderr_path = root / "serve.stderr"
        self._stderr = self.stderr_path.open("wb")
        self.started = time.monotonic()
        self.popen = subprocess.Popen(
            [str(binary), "serve", "--hostname", "127.0.0.1", "--port", "0"],
            cwd=root,
            env=full_env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            start_new_session=True,
        )
        self.proc = psutil.Process(self.popen.pid)
        self.url = ""
        self.startup_s = 0.0
        self.seen_pids: set[int] = {self.popen.pid}

    def wait_for_url(self, timeout_s: float = 60.0) -> str:
        """Read stdout until the ``listening on`` line."""
        self.url = announced_url(self.popen, self.stderr_path, timeout_s)
        self.startup_s = time.monotonic() - self.started
        return self.url

    @property
    def auth(self) -> tuple[str, str]:
        return (USERNAME, self.password)

    def stop(self) -> None:
        """Dispose (kills tool processes), SIGTERM, then SIGKILL by PID; also every descendant seen."""
        if self.url and self.popen.poll() is None:
            with contextlib.suppress(httpx.HTTPError):
                httpx.post(f"{self.url}/global/dispose", auth=self.auth, timeout=10)
        for p in _tree(self.proc):
            self.seen_pids.add(p.pid)
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(5)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        if self.popen.stdout is not None:
            self.popen.stdout.close()
        self._stderr.close()
        kill_pids(self.seen_pids - {self.popen.pid}, self.root)


def kill_pids(pids: set[int], root: Path) -> None:
    """SIGKILL the still-running processes among ``pids`` whose cwd is inside ``root``.

    The cwd check guards against PID reuse: every process our server started runs in one of
    our temporary directories.
    """
    prefix = str(root.resolve())
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            p = psutil.Process(pid)
            if p.status() != psutil.STATUS_ZOMBIE and p.cwd().startswith(prefix):
                p.kill()


# --- one measured run -------------------------------------------------------------------------------


def make_workspace(path: Path, *, commit: bool) -> Path:
    """A scratch git repository like the test suite's (``git init`` + README)."""
    path.mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(path)], check=True)
    (path / "README.md").write_text("# scratch workspace\n", encoding="utf-8")
    if commit:
        git = ["git", "-C", str(path), "-c", "user.name=bench", "-c", "user.email=bench@localhost"]
        subprocess.run([*git, "add", "README.md"], check=True)
        subprocess.run([*git, "commit", "-q", "-m", "init"], check=True)
    return path


async def run_task(client: httpx.AsyncClient, directory: Path, index: int, variant: Variant) -> float:
    """Create a session in ``directory`` and run one synchronous prompt; return its latency."""
    started = time.monotonic()
    params = {"directory": str(directory)}
    body: dict[str, Any] = {"title": f"lean-bench task {index}"} if variant.session_title else {}
    created = await client.post("/session", params=params, json=body)
    created.raise_for_status()
    session_id = created.json()["id"]
    reply = await client.post(
        f"/session/{session_id}/message",
        params=params,
        json={"parts": [{"type": "text", "text": PROMPT}]},
    )
    reply.raise_for_status()
    data = reply.json()
    info = data.get("info") or {}
    if info.get("error"):
        raise RuntimeError(f"assistant error: {info['error']}")
    text = "".join(p.get("text", "") for p in data.get("parts", []) if p.get("type") == "text")
    if EXPECTED_ANSWER not in text:
        raise RuntimeError(f"unexpected answer {text!r}")
    return time.monotonic() - started


async def measure(
    binary: Path,
    model: OfflineModelServer,
    variant: Variant,
    round_index: int,
    tasks: int,
    *,
    commit: bool,
    keep_dir: bool,
) -> RunRecord:
    """Start a server for ``variant``, warm it up, run ``tasks`` concurrent sessions, stop it."""
    root = Path(tempfile.mkdtemp(prefix=f"lean_{variant.name}_"))
    run_cfg = model.run_config(permission={"bash": "allow"})
    if variant.lean:
        run_cfg = lean_run_config(run_cfg)
    config = _deep_merge(run_cfg.build_opencode_config_dict(), {"model": run_cfg.model})
    config = _deep_merge(config, variant.config)
    load_before = os.getloadavg()[0]
    for relative, content in variant.files.items():
        (root / relative).write_text(content, encoding="utf-8")
    env = {name: value.replace("{root}", str(root)) for name, value in variant.env.items()}
    env = {**(run_cfg.extra_env or {}), **env}
    server = ServeProcess(binary, root, config, env, seed=variant.seed_config)
    errors: list[str] = []
    try:
        warm_dir = make_workspace(root / "warm", commit=commit)
        dirs = [make_workspace(root / f"ws{i:03d}", commit=commit) for i in range(tasks)]
        url = await asyncio.to_thread(server.wait_for_url)
        limits = httpx.Limits(max_connections=tasks + 4, max_keepalive_connections=tasks + 4)
        async with httpx.AsyncClient(
            base_url=url, auth=server.auth, timeout=httpx.Timeout(600.0), limits=limits
        ) as client:
            warm_started = time.monotonic()
            await run_task(client, warm_dir, -1, variant)
            warmup_s = time.monotonic() - warm_started
            first_request = len(model.requests)
            cpu_before = _cpu_seconds(server.proc)
            with RssSampler(server.proc) as sampler:
                started = time.monotonic()
                results = await asyncio.gather(
                    *(run_task(client, d, i, variant) for i, d in enumerate(dirs)), return_exceptions=True
                )
                wall_s = time.monotonic() - started
                cpu_s = _cpu_seconds(server.proc) - cpu_before
            server.seen_pids |= sampler.seen
            threads_after = server.proc.num_threads()
            inotify_after = _inotify_fds(server.proc.pid)
            await asyncio.sleep(0.5)  # a title request forked late still gets counted
            batch_requests = model.requests[first_request:]
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, Exception):
                raise result  # cancelled (Ctrl-C): stop, do not record
        latencies = [r for r in results if isinstance(r, float)]
        errors = [f"{type(r).__name__}: {r}" for r in results if isinstance(r, Exception)]
        snapshot_root = root / "xdg" / "data" / "opencode" / "snapshot"
        snapshot_repos = sum(1 for _ in snapshot_root.glob("*/*")) if snapshot_root.is_dir() else 0
        return RunRecord(
            variant=variant.name,
            round=round_index,
            tasks=tasks,
            ok=len(latencies),
            wall_s=wall_s,
            cpu_s=cpu_s,
            peak_rss_mb=sampler.peak / 2**20,
            startup_s=server.startup_s,
            warmup_s=warmup_s,
            title_requests=sum(1 for r in batch_requests if r.is_chat and r.is_title_request),
            chat_requests=sum(1 for r in batch_requests if r.is_chat and not r.is_title_request),
            snapshot_repos=snapshot_repos,
            threads_after=threads_after,
            inotify_fds_after=inotify_after,
            load_before=load_before,
            load_after=os.getloadavg()[0],
            task_latencies_s=latencies,
            errors=errors,
        )
    finally:
        await asyncio.to_thread(server.stop)
        if keep_dir:
            print(f"  kept {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)


# --- report ------------------------------------------------------------------------------------------


def _median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def summarize(
    records: Sequence[RunRecord], names: Sequence[str], reference: str = "baseline"
) -> list[dict[str, Any]]:
    """Per variant: medians, and the median of per-round ratios against ``reference``."""
    by_round_base = {r.round: r for r in records if r.variant == reference}
    rows = []
    for name in names:
        mine = [r for r in records if r.variant == name]
        if not mine:
            continue
        wall_ratio = [r.wall_s / by_round_base[r.round].wall_s for r in mine if r.round in by_round_base]
        cpu_ratio = [r.cpu_s / by_round_base[r.round].cpu_s for r in mine if r.round in by_round_base]
        rows.append(
            {
                "variant": name,
                "rounds": len(mine),
                "ok": f"{sum(r.ok for r in mine)}/{sum(r.tasks for r in mine)}",
                "wall_s": _median([r.wall_s for r in mine]),
                "wall_all": [round(r.wall_s, 2) for r in mine],
                "wall_vs_base": _median(wall_ratio),
                "cpu_s": _median([r.cpu_s for r in mine]),
                "cpu_vs_base": _median(cpu_ratio),
                "peak_rss_mb": _median([r.peak_rss_mb for r in mine]),
                "startup_s": _median([r.startup_s for r in mine]),
                "title_per_task": _median([r.title_requests / r.tasks for r in mine]),
                "chat_per_task": _median([r.chat_requests / r.tasks for r in mine]),
                "snapshot_repos": _median([float(r.snapshot_repos) for r in mine]),
                "threads": _median([float(r.threads_after) for r in mine]),
                "inotify": _median([float(r.inotify_fds_after) for r in mine]),
            }
        )
    return rows


def print_report(
    rows: Sequence[dict[str, Any]], records: Sequence[RunRecord], args: argparse.Namespace
) -> None:
    loads = [r.load_before for r in records] + [r.load_after for r in records]
    print()
    print(
        f"opencode {OPENCODE_VERSION}, {args.tasks} concurrent sessions each in its own directory, "
        f"{args.rounds} rounds, {os.cpu_count()} CPUs, ratios against {args.reference!r}; "
        "1-min load average during the runs: "
        f"median {_median(loads):.2f} (min {min(loads):.2f}, max {max(loads):.2f})"
    )
    header = (
        f"{'variant':<24} {'ok':>7} {'wall s':>7} {'x ref':>7} {'cpu s':>7} {'x ref':>7} "
        f"{'peak MB':>8} {'start s':>7} {'title/t':>7} {'snaps':>5} {'thr':>4} {'inot':>4}  wall per round"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        print(
            f"{row['variant']:<24} {row['ok']:>7} {row['wall_s']:>7.2f} {row['wall_vs_base']:>7.2f} "
            f"{row['cpu_s']:>7.2f} {row['cpu_vs_base']:>7.2f} {row['peak_rss_mb']:>8.0f} "
            f"{row['startup_s']:>7.2f} {row['title_per_task']:>7.2f} {row['snapshot_repos']:>5.0f} "
            f"{row['threads']:>4.0f} {row['inotify']:>4.0f}  {row['wall_all']}"
        )
    print(
        "\nwall: N concurrent sessions (create + sync prompt); cpu: server tree user+sys during them; "
        "x ref: median of per-round ratios to the reference; peak MB: sampled RSS of the server tree; "
        "title/t: title LLM calls per task; snaps: snapshot repos on disk; thr/inot: server threads "
        "and inotify fds after the batch."
    )
    failed = [r for r in records if r.errors]
    for r in failed:
        print(f"! {r.variant} round {r.round}: {len(r.errors)} failed: {r.errors[:2]}")


def _rotations(names: Sequence[str], rounds: int) -> Iterator[tuple[int, str]]:
    for round_index in range(rounds):
        shift = round_index % len(names)
        for name in [*names[shift:], *names[:shift]]:
            yield round_index, name


async def main_async(args: argparse.Namespace) -> int:
    names = (
        [n.strip() for n in args.variants.split(",") if n.strip()]
        if args.variants
        else list(DEFAULT_VARIANTS)
    )
    unknown = [n for n in names if n not in VARIANTS_BY_NAME]
    if unknown:
        print(f"unknown variants {unknown}; see --list", file=sys.stderr)
        return 2
    if args.reference not in VARIANTS_BY_NAME:
        print(f"unknown reference variant {args.reference!r}; see --list", file=sys.stderr)
        return 2
    if args.reference not in names:
        names.insert(0, args.reference)
    binary = Path(args.binary)
    if not binary.is_file():
        print(f"opencode binary not found at {binary}; run `make setup` or pass --binary", file=sys.stderr)
        return 2
    records: list[RunRecord] = []
    with OfflineModelServer() as model:
        total = len(names) * args.rounds
        for step, (round_index, name) in enumerate(_rotations(names, args.rounds), start=1):
            record = await measure(
                binary,
                model,
                VARIANTS_BY_NAME[name],
                round_index,
                args.tasks,
                commit=args.commit,
                keep_dir=args.keep,
            )
            records.append(record)
            print(
                f"[{step}/{total}] round {round_index} {name:<24} ok {record.ok}/{record.tasks} "
                f"wall {record.wall_s:6.2f}s cpu {record.cpu_s:6.2f}s peak {record.peak_rss_mb:5.0f}MB "
                f"title {record.title_requests} load {record.load_before:.2f}",
                file=sys.stderr,
                flush=True,
            )
    rows = summarize(records, names, args.reference)
    print_report(rows, records, args)
    if args.json:
        Path(args.json).write_text(
            json.dumps({"rows": rows, "records": [asdict(r) for r in records]}, indent=2), encoding="utf-8"
        )
    return 0 if all(r.ok == r.tasks for r in records) else 1


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--tasks", type=int, default=8, help="concurrent sessions per run (default 8)")
    parser.add_argument("--rounds", type=int, default=3, help="repetitions of every variant (default 3)")
    parser.add_argument(
        "--variants", default="", help="comma-separated variant names (default: the ones --list marks *)"
    )
    parser.add_argument(
        "--reference", default="baseline", help="variant the ratios are computed against (default baseline)"
    )
    parser.add_argument("--binary", default=os.environ.get("OPENCODE_BINARY", str(DEFAULT_BINARY)))
    parser.add_argument("--commit", action="store_true", help="give every workspace an initial commit")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directories (debugging)")
    parser.add_argument("--json", default="", help="also write every record to this JSON file")
    parser.add_argument("--list", action="store_true", help="list the variants and exit")
    args = parser.parse_args(argv)
    if args.tasks < 1 or args.rounds < 1:
        parser.error("--tasks and --rounds must be >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.list:
        for variant in VARIANTS:
            default = "*" if variant.name in DEFAULT_VARIANTS else " "
            print(f"{default} {variant.name:<20} {variant.description}")
        return 0
    try:
        return asyncio.run(main_async(args))
    except KeyboardInterrupt:
        print("interrupted; every server started was stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
