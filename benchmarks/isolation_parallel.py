"""Many isolated runs of one repository at once: does git cope, and what does isolation cost?

``python benchmarks/isolation_parallel.py [--runs 16] [--rounds 5] [--files 200]``

1. *bare git*: ``runs`` concurrent ``git worktree add -b`` into directories with the same name,
   then ``runs`` concurrent ``git worktree remove --force`` + ``git branch -D``, no lock:
   counts the commands that failed (git reads other worktrees' half-written entries).
2. *IsolatedWorkspace*: ``runs`` concurrent create + one-line change + close (keep="never")
   through :mod:`opencode_wrapper.isolation` (registration and removal under its per-repository
   lock): wall time per round, failures, and what was left.
3. The process-tag sweep: the time ``reaper.kill_tagged`` takes when nothing carries the tag
   (what every ``OwnedProcess.end()`` pays), with this machine's process count.

Prints one JSON object. Standard library + this package.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from opencode_wrapper._proc.reaper import kill_tagged
from opencode_wrapper.isolation import isolate


def _git(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=False)


def _repo(root: Path, files: int) -> Path:
    repo = root / "repo"
    repo.mkdir()
    _git(repo, "init", "-q", "-b", "main")
    for n in range(files):
        (repo / f"f{n:04d}.txt").write_text(f"file {n}\n" * 20)
    (repo / "README.md").write_text("# bench\n")
    _git(repo, "add", "-A")
    _git(repo, "-c", "user.name=b", "-c", "user.email=b@b", "commit", "-q", "-m", "init")
    return repo


def bare_git(root: Path, runs: int, rounds: int) -> dict[str, object]:
    repo = root / "repo"
    failures: dict[str, int] = {"add": 0, "remove": 0}
    messages: set[str] = set()
    for r in range(rounds):
        paths = [root / f"bare{r}-{i}" / "repo" for i in range(runs)]
        adds = [
            subprocess.Popen(
                ["git", "worktree", "add", "-q", "-b", f"bare/{r}-{i}", str(p), "HEAD"],
                cwd=repo,
                stderr=subprocess.PIPE,
                text=True,
            )
            for i, p in enumerate(paths)
        ]
        for proc in adds:
            _, err = proc.communicate()
            if proc.returncode:
                failures["add"] += 1
                messages.add(err.strip().split("\n")[-1][:80])
        removes = [
            subprocess.Popen(
                ["sh", "-c", f"git worktree remove --force {p} && git branch -q -D bare/{r}-{i}"],
                cwd=repo,
                stderr=subprocess.PIPE,
                text=True,
            )
            for i, p in enumerate(paths)
        ]
        for proc in removes:
            _, err = proc.communicate()
            if proc.returncode:
                failures["remove"] += 1
                messages.add(err.strip().split("\n")[-1][:80])
        _git(repo, "worktree", "prune")
        for i in range(runs):
            _git(repo, "branch", "-q", "-D", f"bare/{r}-{i}")
    return {"commands": 2 * runs * rounds, "failed": failures, "messages": sorted(messages)[:6]}


async def isolated(root: Path, runs: int, rounds: int) -> dict[str, object]:
    repo = root / "repo"
    scratch = root / "scratch"
    scratch.mkdir()
    walls: list[float] = []
    failed = 0

    async def one(n: int) -> bool:
        async with isolate(repo, keep="never", name=f"b{n}", directory=scratch) as iso:
            (iso.root / "README.md").write_text(f"# bench\nrun {n}\n")
        assert iso.changes is not None
        return [f.path for f in iso.changes.files] == ["README.md"]

    for _ in range(rounds):
        started = time.monotonic()
        outcomes = await asyncio.gather(*(one(n) for n in range(runs)), return_exceptions=True)
        walls.append(time.monotonic() - started)
        failed += sum(1 for o in outcomes if o is not True)
    left = {
        "worktrees": _git(repo, "worktree", "list").stdout.count("\n") - 1,
        "branches": len(_git(repo, "for-each-ref", "refs/heads/ocw/").stdout.split("\n")) - 1,
        "scratch": len(os.listdir(scratch)),
    }
    return {
        "runs": runs * rounds,
        "failed": failed,
        "wall_s_per_round": {"median": round(statistics.median(walls), 3), "max": round(max(walls), 3)},
        "per_run_s": round(statistics.median(walls) / runs, 4),
        "left": left,
    }


def sweep_cost(samples: int = 200) -> dict[str, object]:
    tag = uuid.uuid4().hex
    times = []
    for _ in range(samples):
        started = time.perf_counter()
        kill_tagged(tag)
        times.append((time.perf_counter() - started) * 1000)
    processes = sum(1 for e in os.listdir("/proc") if e.isdigit())
    return {
        "processes_on_machine": processes,
        "ms": {
            "median": round(statistics.median(times), 3),
            "p95": round(sorted(times)[int(0.95 * samples)], 3),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--files", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ocw_bench_iso_") as tmp:
        root = Path(tmp)
        _repo(root, args.files)
        report = {
            "git": _git(root, "--version").stdout.strip(),
            "files_in_repo": args.files + 1,
            "bare_git_no_lock": bare_git(root, args.runs, args.rounds),
            "isolated_workspace": asyncio.run(isolated(root, args.runs, args.rounds)),
            "tag_sweep": sweep_cost(),
        }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
