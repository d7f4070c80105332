"""Shared fixtures: the real opencode binary, scratch workspaces, and a leftover-process check."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest


@pytest.fixture(scope="session")
def opencode_binary() -> str:
    """The pinned opencode that `make test` installs (exported as OPENCODE_BINARY)."""
    path = os.environ.get("OPENCODE_BINARY")
    if not path or not Path(path).is_file():
        pytest.fail(
            "OPENCODE_BINARY must point at the pinned opencode binary; run the suite with `make test` "
            f"(got {path!r})"
        )
    return path


def _make_repo(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["git", "init", "-q", str(path)], check=True)
    (path / "README.md").write_text("# scratch workspace\n", encoding="utf-8")
    return path


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """A scratch git repository for one test."""
    return _make_repo(tmp_path / "ws")


@pytest.fixture
def make_workspace(tmp_path: Path) -> object:
    """Factory for more scratch repositories: ``make_workspace("name")``."""
    return lambda name: _make_repo(tmp_path / name)


def processes_under(root: Path) -> list[psutil.Process]:
    """Live processes whose working directory is inside ``root`` (ours: opencode, bash, sleep...)."""
    found = []
    resolved = str(root.resolve())
    for proc in psutil.process_iter(["pid"]):
        try:
            cwd = proc.cwd()
            inside = cwd == resolved or cwd.startswith(resolved + os.sep)
            if inside and proc.pid != os.getpid() and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


@pytest.fixture(autouse=True)
def no_leftover_processes(tmp_path: Path) -> Iterator[None]:
    """Fail a test that leaves any process running in its temporary directory."""
    yield
    left = processes_under(tmp_path)
    if left:
        details = []
        for proc in left:
            try:
                details.append(f"{proc.pid} {' '.join(proc.cmdline())[:120]}")
            except psutil.Error:
                details.append(str(proc.pid))
            with contextlib.suppress(psutil.Error):
                proc.kill()
        pytest.fail("processes left behind: " + "; ".join(details))
