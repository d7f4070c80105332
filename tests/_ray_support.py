"""Helpers of tests/test_ray_cluster.py: process trees (found and waited for by PID), workspaces."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
from pathlib import Path

import psutil
from ray.cluster_utils import Cluster

from conftest import processes_under
from opencode_wrapper.events import Event


def tree(pid: int) -> list[psutil.Process]:
    """``pid`` and every process below it."""
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def names(procs: list[psutil.Process]) -> list[str]:
    found = []
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            found.append(proc.name())
    return found


def still_alive(procs: list[psutil.Process], timeout_s: float) -> list[str]:
    """Wait up to ``timeout_s`` for ``procs`` to end; describe (and kill, by PID) those that did not."""
    _, alive = psutil.wait_procs(procs, timeout=timeout_s)
    described = []
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            described.append(f"{proc.pid} {' '.join(proc.cmdline())[:60]}")
            proc.kill()
    return described


async def sleeper_below(pid: int, name: str = "sleep") -> list[psutil.Process]:
    """The tree below ``pid`` once a process called ``name`` (the bash tool's command) runs in it
    (bounded poll: opencode marks the tool running just before it spawns the command)."""
    deadline = time.monotonic() + 30
    while True:
        procs = tree(pid)
        if name in names(procs):
            return procs
        assert time.monotonic() < deadline, f"no {name} below {pid}: {names(procs)}"
        await asyncio.sleep(0.05)


async def sleepers_in(root: Path, count: int) -> None:
    """Wait (bounded poll) until ``count`` ``sleep 300`` processes run inside ``root``."""
    deadline = time.monotonic() + 30
    while True:
        found = []
        for proc in processes_under(root):
            with contextlib.suppress(psutil.Error):
                if proc.cmdline() == ["sleep", "300"]:
                    found.append(proc)
        if len(found) >= count:
            return
        assert time.monotonic() < deadline, f"{len(found)} of {count} sleeps run in {root}"
        await asyncio.sleep(0.05)


def ray_processes(cluster: Cluster) -> list[psutil.Process]:
    """Every process of the cluster's nodes (GCS, raylets, workers...) and everything below them."""
    found: dict[int, psutil.Process] = {}
    for node in cluster.list_all_nodes():
        for infos in node.all_processes.values():
            for info in infos:
                with contextlib.suppress(psutil.Error):
                    for proc in tree(info.process.pid):
                        found[proc.pid] = proc
    return list(found.values())


def is_running_tool(event: Event) -> bool:
    tool = event.tool
    return tool is not None and tool.status == "running"


def git_workspace(path: Path) -> Path:
    """A fresh git repository at ``path``."""
    path.mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(path)], check=True)
    return path
