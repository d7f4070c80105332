"""Helpers of the isolation tests: scratch repositories and what an isolated run may leave behind."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


def git(repo: Path, *args: str, check: bool = True) -> str:
    # No optional locks: `git status` must not refresh (rewrite) the index the tests compare.
    env = dict(os.environ, GIT_OPTIONAL_LOCKS="0")
    done = subprocess.run(["git", *args], cwd=repo, env=env, capture_output=True, text=True, check=False)
    if check and done.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed in {repo}: {done.stderr}")
    return done.stdout


def make_repo(path: Path, files: dict[str, str | bytes] | None = None, commits: int = 1) -> Path:
    """A repository with ``files`` committed (``README.md`` by default), then ``commits - 1`` more commits."""
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "-q", "-b", "main")
    git(path, "config", "user.email", "tests@example.invalid")
    git(path, "config", "user.name", "tests")
    for rel, content in (files or {"README.md": "# scratch\n"}).items():
        target = path / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            target.write_bytes(content)
        else:
            target.write_text(content)
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "first")
    for n in range(2, commits + 1):
        (path / "history.txt").write_text(f"commit {n}\n")
        git(path, "add", "-A")
        git(path, "commit", "-q", "-m", f"commit {n}")
    return path


def state_of(repo: Path) -> tuple[str, str, bytes]:
    """What must not change in the user's checkout: HEAD, ``git status``, and the index file."""
    index = (repo / ".git" / "index").read_bytes()
    return git(repo, "rev-parse", "HEAD"), git(repo, "status", "--porcelain", "--untracked-files=all"), index


def leftovers(repo: Path | None, scratch: Path | None) -> dict[str, list[str]]:
    """Everything of ours still there: worktrees beyond the main one, ocw/ branches, their
    registrations in .git/worktrees, and entries of the scratch directory."""
    found: dict[str, list[str]] = {}
    if repo is not None:
        listed = [
            line.split(" ", 1)[1] for line in git(repo, "worktree", "list", "--porcelain").splitlines()
            if line.startswith("worktree ")
        ]  # fmt: skip
        found["worktrees"] = [w for w in listed if Path(w).resolve() != repo.resolve()]
        found["branches"] = git(repo, "for-each-ref", "--format=%(refname)", "refs/heads/ocw/").split()
        admin = repo / ".git" / "worktrees"
        found["registrations"] = sorted(os.listdir(admin)) if admin.exists() else []
    if scratch is not None and scratch.exists():
        found["scratch"] = sorted(p.name for p in scratch.iterdir())
    return {k: v for k, v in found.items() if v}


def poll(probe: Callable[[], T], timeout_s: float, interval_s: float = 0.02) -> T:
    """Call ``probe`` until it returns something truthy or the deadline passes; return its last value."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval_s)


async def apoll(probe: Callable[[], T], timeout_s: float, interval_s: float = 0.05) -> T:
    """:func:`poll` that lets the event loop run meanwhile."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if value or time.monotonic() > deadline:
            return value
        await asyncio.sleep(interval_s)
