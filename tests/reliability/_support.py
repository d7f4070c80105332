"""Shared tools of the reliability suite: scale, leftovers, timing, memory, figures.

Everything a fault test needs to say *what was left behind* and *how long it took to notice*:

* :class:`Leftovers` counts, against a baseline, the processes of this test (found by a tag in
  their environment, which every process we spawn inherits, and by unique command-line markers
  such as ``sleep 60.4242``, so that orphans re-parented to init are found too), the entries of
  the test's private temp dir, this process's open file descriptors and pending asyncio tasks.
* :func:`poll` waits for a condition with a deadline (no sleeps as synchronisation).
* :class:`RssSampler` samples this process's RSS in a thread and keeps the peak.
* :func:`slope` is an ordinary least-squares slope.
* :func:`record` appends one JSON line of figures to ``$OCW_RELIABILITY_REPORT``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import psutil

T = TypeVar("T")

SCALE = os.environ.get("OCW_RELIABILITY_SCALE", "short").strip().lower() or "short"
if SCALE not in ("short", "full"):
    raise RuntimeError(f"OCW_RELIABILITY_SCALE must be 'short' or 'full', got {SCALE!r}")
FULL = SCALE == "full"
REPORT_ENV = "OCW_RELIABILITY_REPORT"
TAG_ENV = "OCW_RELIABILITY_TAG"
# One seed for every random choice of the suite: a failure can be replayed exactly.
SEED = int(os.environ.get("OCW_RELIABILITY_SEED", "20240605"))

# opencode config for fast server turns: no git snapshot per step, no title request.
FAST: dict[str, Any] = {"snapshot": False, "agent": {"title": {"disable": True}}}


def scaled(short: int, full: int) -> int:
    """``short`` at the default scale, ``full`` with ``OCW_RELIABILITY_SCALE=full``."""
    return full if FULL else short


# ----------------------------------------------------------------------------- waiting


def poll(probe: Callable[[], T], *, timeout_s: float, interval_s: float = 0.02) -> T:
    """Call ``probe`` until it returns something truthy; return it (the last value at the deadline)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval_s)


async def apoll(probe: Callable[[], T], *, timeout_s: float, interval_s: float = 0.02) -> T:
    """:func:`poll` for async code (the event loop keeps running while waiting)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if value or time.monotonic() >= deadline:
            return value
        await asyncio.sleep(interval_s)


async def timed(awaitable: Awaitable[T]) -> tuple[T | BaseException, float]:
    """Await; return ``(result or the exception raised, seconds taken)``."""
    started = time.monotonic()
    try:
        value: T | BaseException = await awaitable
    except BaseException as exc:  # includes CancelledError: the caller inspects it
        value = exc
    return value, time.monotonic() - started


# ----------------------------------------------------------------------------- processes


def _environ_has(pid: int, needle: bytes) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as fh:
            return needle in fh.read()
    except OSError:
        return False


def tagged_processes(
    tag: str | None, markers: Iterable[str] = (), exclude: Iterable[int] = ()
) -> list[psutil.Process]:
    """Live processes carrying ``TAG_ENV=tag`` in their environment or a marker in their command line.

    Both survive re-parenting: an orphan adopted by init still has its environment and argv.
    This process and ``exclude`` are left out; zombies do not count (they hold nothing but a PID
    and are reaped by their parent).
    """
    needle = f"{TAG_ENV}={tag}".encode() + b"\0" if tag else None
    wanted = [m for m in markers if m]
    skip = {os.getpid(), *exclude}
    found = []
    for proc in psutil.process_iter(["pid", "cmdline", "status"]):
        if proc.pid in skip or proc.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        cmdline = " ".join(proc.info["cmdline"] or [])
        if any(m in cmdline for m in wanted) or (needle is not None and _environ_has(proc.pid, needle)):
            found.append(proc)
    return found


def describe(procs: Sequence[psutil.Process]) -> str:
    out = []
    for proc in procs:
        try:
            out.append(f"{proc.pid} {' '.join(proc.cmdline())[:100]}")
        except psutil.Error:
            out.append(str(proc.pid))
    return "; ".join(out)


def kill_all(procs: Sequence[psutil.Process]) -> None:
    """Last-resort clean-up of a failed test, by PID (never by name)."""
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(list(procs), timeout=5)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def pending_tasks() -> list[asyncio.Task[Any]]:
    """asyncio tasks of the running loop other than the current one."""
    try:
        current = asyncio.current_task()
    except RuntimeError:
        return []
    return [t for t in asyncio.all_tasks() if t is not current and not t.done()]


def rss() -> int:
    return int(psutil.Process().memory_info().rss)


# ----------------------------------------------------------------------------- leftovers


@dataclass
class Leftovers:
    """What a fault left behind, measured against a baseline taken by :meth:`baseline`.

    ``counts()`` polls (with a deadline) until nothing is left or the deadline passes, then
    returns the counts: a leftover is what is *still* there after a generous settling time,
    and ``settle_s`` says how long settling took.
    """

    tag: str
    temp_root: Path
    markers: list[str] = field(default_factory=list)
    exclude_pids: set[int] = field(default_factory=set)
    fds_before: int = 0
    settle_s: float = 0.0

    def baseline(self) -> None:
        self.fds_before = open_fds()

    def processes(self) -> list[psutil.Process]:
        return tagged_processes(self.tag, self.markers, self.exclude_pids)

    def temp_entries(self) -> list[Path]:
        return sorted(self.temp_root.iterdir()) if self.temp_root.exists() else []

    def snapshot(self) -> dict[str, int]:
        return {
            "processes": len(self.processes()),
            "temp_dirs": len(self.temp_entries()),
            "fds": max(0, open_fds() - self.fds_before),
            "tasks": len(pending_tasks()),
        }

    async def settle(self, timeout_s: float = 15.0) -> dict[str, int]:
        """Wait until nothing is left (or the deadline); return the counts and set ``settle_s``."""
        started = time.monotonic()
        counts = await apoll(
            lambda: (lambda c: c if not any(c.values()) else None)(self.snapshot()),
            timeout_s=timeout_s,
            interval_s=0.05,
        )
        self.settle_s = time.monotonic() - started
        return counts or self.snapshot()

    def explain(self) -> str:
        return (
            f"processes: {describe(self.processes())}; temp: {[p.name for p in self.temp_entries()]}; "
            f"fds {open_fds()} (baseline {self.fds_before}); tasks: {pending_tasks()}"
        )


# ----------------------------------------------------------------------------- memory


class RssSampler:
    """Samples this process's RSS every ``interval_s`` in a thread; ``peak`` is the highest seen."""

    def __init__(self, interval_s: float = 0.005) -> None:
        self.interval_s = interval_s
        self.start_rss = rss()
        self.peak = self.start_rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _run(self) -> None:
        proc = psutil.Process()
        while not self._stop.is_set():
            self.peak = max(self.peak, int(proc.memory_info().rss))
            self._stop.wait(self.interval_s)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss())

    @property
    def growth(self) -> int:
        return self.peak - self.start_rss


def slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Least-squares slope of ``ys`` over ``xs``."""
    n = len(xs)
    if n < 2:
        return 0.0
    mx = sum(xs) / n
    my = sum(ys) / n
    var = sum((x - mx) ** 2 for x in xs)
    if var == 0:
        return 0.0
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var


# ----------------------------------------------------------------------------- figures


def record(figures: dict[str, Any]) -> None:
    """Append one JSON line of figures to ``$OCW_RELIABILITY_REPORT`` (nothing if unset)."""
    path = os.environ.get(REPORT_ENV)
    if not path:
        return
    line = json.dumps({"scale": SCALE, **figures}, sort_keys=True, default=str) + "\n"
    # One write on an O_APPEND descriptor: lines of parallel workers do not interleave.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def summary(values: Sequence[float]) -> dict[str, float]:
    if not values:
        return {"max": 0.0, "median": 0.0}
    ordered = sorted(values)
    return {"max": round(ordered[-1], 3), "median": round(ordered[len(ordered) // 2], 3)}
