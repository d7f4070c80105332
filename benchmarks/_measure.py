"""Shared helpers of ``benchmarks/parallel.py`` and ``benchmarks/overhead.py``.

Process-tree measurement (peak RSS sampled with psutil, CPU time from ``getrusage``), machine
facts, scratch git workspaces, and a bare ``opencode serve`` started by hand (no library code),
which both scripts use as the naive baseline. Only the parent (measuring) process and the
``bare`` driver import this module; the ``seed`` driver runs in a venv without psutil.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import platform
import re
import resource
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

REPO_ROOT = Path(__file__).resolve().parent.parent
URL_RE = re.compile(r"listening on (http://\S+)")
USERNAME = "opencode"
#: Environment variables through which the user's own opencode set-up would leak into a run.
USER_CONFIG_ENV = ("OPENCODE_CONFIG", "OPENCODE_CONFIG_DIR", "OPENCODE_CONFIG_CONTENT", "OPENCODE_PERMISSION")


def default_binary() -> Path:
    """``$OPENCODE_BINARY``, else the pinned opencode that ``make setup`` installs."""
    env = os.environ.get("OPENCODE_BINARY")
    if env:
        return Path(env)
    from opencode_wrapper._proc.binary import OPENCODE_VERSION

    return REPO_ROOT / ".opencode" / OPENCODE_VERSION / "node_modules" / ".bin" / "opencode"


# --- machine -----------------------------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    """Cores, RAM, CPU model, OS, Python and the load average now."""
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cores": os.cpu_count() or 0,
        "cpu": model or platform.processor(),
        "ram_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "available_gb": round(psutil.virtual_memory().available / 2**30, 1),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "load": os.getloadavg(),
    }


def load_str(load: Sequence[float] | None = None) -> str:
    one, five, fifteen = os.getloadavg() if load is None else load
    return f"{one:.2f} / {five:.2f} / {fifteen:.2f} (1 / 5 / 15 min)"


# --- process trees -----------------------------------------------------------------------------------


def become_subreaper() -> bool:
    """Make orphaned descendants re-parent to this process (Linux ``PR_SET_CHILD_SUBREAPER``).

    Then nothing a driver starts can escape: an orphan becomes our child, so it is reaped (and
    its CPU time lands in ``RUSAGE_CHILDREN``) or, if still alive, found and killed by PID.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(36, 1, 0, 0, 0) == 0)  # PR_SET_CHILD_SUBREAPER = 36
    except (OSError, AttributeError):
        return False


def reap_zombies() -> int:
    """Reap every already-exited child (orphans adopted as subreaper); return how many."""
    count = 0
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return count
        if pid == 0:
            return count
        count += 1


def children_cpu_s() -> float:
    """User + system CPU seconds of all waited-for descendants of this process."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def tree(proc: psutil.Process) -> list[psutil.Process]:
    try:
        return [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return []


def tree_rss(procs: Sequence[psutil.Process]) -> int:
    """The summed RSS of ``procs``, counting a child that is still a copy of its parent once.

    opencode (Bun) starts every tool and ``git`` process by forking itself: until the child
    execs, it has the parent's command line and an RSS as large as the parent's, but its pages
    are the parent's (copy-on-write), so adding them would count the server twice. On a busy
    machine such a child lives long enough to be sampled, at random: it is left out of the sum.
    """
    cmdlines: dict[int, tuple[int, list[str]]] = {}
    for p in procs:
        with contextlib.suppress(psutil.Error):
            cmdlines[p.pid] = (p.ppid(), p.cmdline())
    total = 0
    for p in procs:
        ppid, cmdline = cmdlines.get(p.pid, (0, []))
        parent = cmdlines.get(ppid)
        if parent is not None and parent[1] == cmdline:
            continue
        with contextlib.suppress(psutil.Error):
            total += p.memory_info().rss
    return total


class TreeSampler:
    """Samples the summed RSS of a process and all its descendants on a thread; keeps the peak.

    ``exclude``: PIDs whose subtrees are left out (e.g. a model process started by the same
    parent). ``series``: every sample as ``(monotonic time, bytes)`` when ``keep_series``.
    """

    def __init__(
        self, pid: int, interval_s: float = 0.1, *, exclude: Iterable[int] = (), keep_series: bool = False
    ) -> None:
        self.proc = psutil.Process(pid)
        self.interval_s = interval_s
        self.exclude = set(exclude)
        self.keep_series = keep_series
        self.series: list[tuple[float, int]] = []
        self.peak_bytes = 0
        self.peak_procs = 0
        self.last_bytes = 0
        self.seen: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tree-sampler", daemon=True)

    def sample(self) -> int:
        skip = set(self.exclude)
        for pid in self.exclude:
            with contextlib.suppress(psutil.Error):
                skip.update(c.pid for c in psutil.Process(pid).children(recursive=True))
        procs = [p for p in tree(self.proc) if p.pid not in skip]
        self.seen.update(p.pid for p in procs)
        total = tree_rss(procs)
        self.last_bytes = total
        self.peak_bytes = max(self.peak_bytes, total)
        self.peak_procs = max(self.peak_procs, len(procs))
        if self.keep_series:
            self.series.append((time.monotonic(), total))
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval_s)

    def __enter__(self) -> TreeSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def kill_tree(pid: int, *, grace_s: float = 5.0) -> None:
    """SIGTERM the process group ``pid`` leads (and every descendant), then SIGKILL what is left."""
    procs = []
    with contextlib.suppress(psutil.Error):
        procs = tree(psutil.Process(pid))
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGTERM)
    for p in procs:
        with contextlib.suppress(psutil.Error):
            p.terminate()
    _, alive = psutil.wait_procs(procs, timeout=grace_s)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    for p in alive:
        with contextlib.suppress(psutil.Error):
            p.kill()


def leftover_children(exclude: Iterable[int]) -> list[psutil.Process]:
    """Live descendants of this process other than ``exclude`` (and their descendants)."""
    skip = set(exclude)
    for pid in list(skip):
        with contextlib.suppress(psutil.Error):
            skip.update(c.pid for c in psutil.Process(pid).children(recursive=True))
    try:
        mine = psutil.Process().children(recursive=True)
    except psutil.Error:
        return []
    return [p for p in mine if p.pid not in skip and p.status() != psutil.STATUS_ZOMBIE]


def describe(p: psutil.Process) -> str:
    try:
        return f"pid {p.pid}: {' '.join(p.cmdline())[:160]}"
    except psutil.Error:
        return f"pid {p.pid}"


# --- workspaces --------------------------------------------------------------------------------------


def make_workspace(path: Path) -> Path:
    """A fresh scratch git repository (``git init`` + an untracked README)."""
    path.mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(path)], check=True)
    (path / "README.md").write_text("# scratch workspace\n", encoding="utf-8")
    return path


def isolated_env(root: Path, config: Mapping[str, Any] | None = None) -> dict[str, str]:
    """``os.environ`` with private XDG dirs under ``root``, no user opencode config, autoupdate off."""
    env = {k: v for k, v in os.environ.items() if k not in USER_CONFIG_ENV}
    for name in ("DATA", "CONFIG", "CACHE", "STATE"):
        path = root / "xdg" / name.lower()
        path.mkdir(parents=True, exist_ok=True)
        env[f"XDG_{name}_HOME"] = str(path)
    env["OPENCODE_DISABLE_AUTOUPDATE"] = "1"
    if os.environ.get("BENCH_UNSEEDED_BARE") != "1":
        # A returning user's config dir already has the plugin SDK that opencode npm-installs
        # into a new one (tens of seconds): the bare baseline does not pay that either.
        from opencode_wrapper._lean import seed_plugin_dependencies

        seed_plugin_dependencies(root / "xdg" / "config" / "opencode")
    if config is not None:
        env["OPENCODE_CONFIG_CONTENT"] = json.dumps(config)
    return env


def announced_url(popen: subprocess.Popen[bytes], stderr_path: Path, timeout_s: float) -> str:
    """The URL of ``opencode serve``'s ``listening on`` line (read on a thread so it can time out)."""
    found: list[str] = []

    def read() -> None:
        assert popen.stdout is not None
        for raw in popen.stdout:
            match = URL_RE.search(raw.decode("utf-8", "replace"))
            if match:
                found.append(match.group(1))
                return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout_s)
    if not found:
        tail = stderr_path.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"opencode serve printed no URL within {timeout_s:g} s; stderr tail:\n{tail}")
    return found[0]


# --- a bare opencode serve ---------------------------------------------------------------------------


@dataclass
class BareServe:
    """One ``opencode serve`` started by hand: private XDG dirs, basic auth, its own process group.

    No library code is involved. ``config`` becomes ``OPENCODE_CONFIG_CONTENT``; ``extra_env`` is
    added to the server's environment.
    """

    binary: Path
    config: Mapping[str, Any]
    extra_env: Mapping[str, str] = field(default_factory=dict)
    password: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    url: str = ""
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="bench-serve-")))
    popen: subprocess.Popen[bytes] | None = None

    @property
    def auth(self) -> tuple[str, str]:
        return (USERNAME, self.password)

    def start(self, timeout_s: float = 120.0) -> str:
        env = isolated_env(self.root, self.config)
        env.update(self.extra_env)
        env["OPENCODE_SERVER_PASSWORD"] = self.password
        self._stderr = (self.root / "serve.stderr").open("wb")
        self.popen = subprocess.Popen(
            [str(self.binary), "serve", "--hostname", "127.0.0.1", "--port", "0"],
            cwd=self.root,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            start_new_session=True,
        )
        try:
            url = announced_url(self.popen, self.root / "serve.stderr", timeout_s)
        except RuntimeError:
            self.stop()
            raise
        self.url = url.rstrip("/")
        return self.url

    def stop(self) -> None:
        """End the server's process group by PID and remove its private dirs."""
        if self.popen is not None:
            kill_tree(self.popen.pid)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(5)
            if self.popen.stdout is not None:
                self.popen.stdout.close()
            self._stderr.close()
            self.popen = None
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> BareServe:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def message_text(body: Any) -> str:
    """The text parts of a ``POST /session/{id}/message`` response, joined."""
    parts = body.get("parts", []) if isinstance(body, dict) else []
    return "\n".join(p.get("text", "") for p in parts if isinstance(p, dict) and p.get("type") == "text")


# --- numbers -----------------------------------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def mb(n_bytes: float) -> str:
    return f"{n_bytes / 2**20:,.0f} MB"


def ratio(a: float, b: float) -> float:
    return a / b if b else float("inf")


def command_line() -> str:
    """How this script was started, with paths relative to the repository where possible."""

    def rel(path: str) -> str:
        try:
            return Path(path).absolute().relative_to(REPO_ROOT).as_posix()
        except ValueError:
            return path

    return " ".join([rel(sys.executable), rel(sys.argv[0]), *sys.argv[1:]])


def now() -> float:
    return time.monotonic()
