"""``opencode-wrapper batch`` end to end with the trust options: ``--resume`` after Ctrl-C, and
``--isolation``/``--diff-dir``/``--verify``/``--retries`` with their result lines (the real opencode,
``--offline``, the CLI as a subprocess)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from _worktree_support import git, leftovers, make_repo, poll, state_of

pytestmark = pytest.mark.e2e

#: The longest one command may take here (a loaded 2-core machine starts opencode slowly).
COMMAND_TIMEOUT_S = 240.0
#: Waits for the blocked tasks to be released: `go` appears in their workspace.
FIRST = ("--concurrency", "4", "--permission", "bash=allow")
WAIT_FOR_GO = "[[bash: while [ ! -e go ]; do sleep 0.1; done; echo released]]"


def env(**extra: str) -> dict[str, str]:
    environ = dict(os.environ)
    environ.pop("OPENCODE_WRAPPER_PLAIN", None)
    environ.update(extra)
    return environ


def batch(*args: str, cwd: Path, **extra_env: str) -> subprocess.CompletedProcess[str]:
    """`python -m opencode_wrapper batch --offline --lean ARGS` to its end, output captured."""
    return subprocess.run(
        [sys.executable, "-m", "opencode_wrapper", "batch", "--offline", "--lean", *args],
        cwd=cwd,
        env=env(**extra_env),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
        check=False,
    )


def write_tasks(path: Path, tasks: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(task) + "\n" for task in tasks), encoding="utf-8")
    return path


def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def started(output: str) -> list[str]:
    """The labels of the ``start`` lines of the plain view."""
    return [line.split()[1] for line in output.splitlines() if line.startswith("start ")]


def test_resume_after_an_interruption_runs_exactly_the_tasks_not_yet_ok(tmp_path: Path) -> None:
    for name in ("q1", "q2", "q3", "q4", "b1", "b2", "flaky"):
        (tmp_path / name).mkdir()
    lines: list[dict[str, Any]] = [
        {"name": "q1", "prompt": "[[say: one]]", "workspace": "q1"},
        {"name": "b1", "prompt": WAIT_FOR_GO, "workspace": "b1"},
        {"name": "q2", "prompt": "[[say: two]]", "workspace": "q2"},
        # Fails its check until `go` exists: failed in the first run, so run again.
        {"name": "flaky", "prompt": "[[say: checked]]", "workspace": "flaky", "verify": "test -e go"},
        {"prompt": "[[say: three]]", "workspace": "q3"},  # no name: matched by position and hash
        {"name": "b2", "prompt": WAIT_FOR_GO, "workspace": "b2"},
        {"name": "q4", "prompt": "[[say: four]]", "workspace": "q4"},
    ]
    tasks = write_tasks(tmp_path / "tasks.jsonl", lines)
    results = tmp_path / "tasks.results.jsonl"
    results.write_text('{"stale": "a line of an older batch"}\n')  # without --resume: truncated
    first = subprocess.Popen(
        [sys.executable, "-m", "opencode_wrapper", "batch", "--offline", "--lean", str(tasks), *FIRST],
        cwd=tmp_path,
        env=env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # Five tasks can finish; the two blocked ones run until the interruption.
        finished = poll(lambda: results.exists() and len(results.read_text().splitlines()) >= 5, 180.0)
        assert finished, f"only {results.read_text() if results.exists() else 'no'} result lines"
        first.send_signal(signal.SIGINT)
        out, err = first.communicate(timeout=COMMAND_TIMEOUT_S)
    finally:
        if first.poll() is None:
            first.kill()
            first.communicate()
    assert first.returncode == 130, err
    assert "interrupted: 5 of 7 tasks finished (1 failed); 2 cancelled; 5 result lines in" in out
    before = results.read_text().splitlines()
    assert sorted(r.get("name") or f"#{r['index']}" for r in map(json.loads, before)) == [
        "#4",
        "flaky",
        "q1",
        "q2",
        "q4",
    ]
    assert not any(r["ok"] for r in map(json.loads, before) if r["name"] == "flaky")
    for name in ("b1", "b2", "flaky"):
        (tmp_path / name / "go").touch()

    second = batch(str(tasks), "--resume", "--permission", "bash=allow", cwd=tmp_path)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "resuming: 4 of 7 tasks are ok in" in second.stdout
    assert sorted(started(second.stdout)) == ["b1", "b2", "flaky"]
    after = results.read_text().splitlines()
    # The lines of the tasks that were ok are kept as they were (in task order, first); the
    # failed one's is replaced.
    kept = [line for line in before if json.loads(line)["ok"]]
    assert sorted(after[: len(kept)]) == sorted(kept) and len(kept) == 4
    final = [json.loads(line) for line in after]
    assert sorted(r["index"] for r in final) == list(range(7))
    assert all(r["ok"] for r in final), [r["error"] for r in final]
    by_index = {r["index"]: r for r in final}
    assert by_index[1]["final_text"] == by_index[5]["final_text"] == "Tool results: bash: released"
    assert by_index[3]["verified"] is True and by_index[3]["verify_exit_code"] == 0
    assert by_index[4]["name"] is None and by_index[4]["final_text"] == "three"


def test_isolated_batch_writes_patches_and_reports_changes_checks_and_tries(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", {"shared.txt": "base\n"})
    scratch = tmp_path / "scratch"  # the batch's temp dir: its worktrees are made there
    scratch.mkdir()
    before = state_of(repo)
    # opencode does not retry this 425 itself (see tests/test_trust_e2e.py); the batch does.
    rules = {
        "faults": [
            {
                "reply": {"error": 425, "message": "too early", "type": "invalid_request_error", "code": "x"},
                "match": "flaky",
                "times": 1,
            }
        ]
    }
    (tmp_path / "rules.json").write_text(json.dumps(rules))
    tasks = write_tasks(
        tmp_path / "tasks.jsonl",
        [
            {"name": "alpha", "prompt": "[[bash: echo alpha >> shared.txt]]", "workspace": "repo"},
            {"prompt": "[[bash: echo unnamed >> shared.txt]]", "workspace": "repo"},
            {"name": "quiet", "prompt": "[[say: nothing to change]]", "workspace": "repo"},
            {"name": "flaky", "prompt": "flaky [[bash: echo flaky >> shared.txt]]", "workspace": "repo"},
            {
                "name": "kept",
                "prompt": "[[bash: echo kept >> shared.txt]]",
                "workspace": "repo",
                "keep": "on_change",
                "verify": "grep -q nope shared.txt",
            },
        ],
    )
    done = batch(
        str(tasks),
        "--offline-rules",
        str(tmp_path / "rules.json"),
        "--permission",
        "bash=allow",
        "--isolation",
        "worktree",
        "--keep",
        "never",
        "--verify",
        "grep -q base shared.txt",
        "--retries",
        "1",
        "--retry-backoff",
        "0.1",
        "--diff-dir",
        "patches",
        cwd=tmp_path,
        TMPDIR=str(scratch),
    )
    assert done.returncode == 1, done.stdout + done.stderr  # "kept" fails its own check
    assert "retry  flaky          try 2 after api_error (HTTP 425): too early" in done.stdout
    assert any(line.startswith("ok     alpha") and "verified" in line for line in done.stdout.splitlines())
    assert done.stdout.splitlines()[-1].endswith("patches in patches")
    # One patch per task that changed something, named after the task (or its line), holding
    # only that task's line; each applies to a clean checkout.
    patches = tmp_path / "patches"
    assert sorted(p.name for p in patches.iterdir()) == [
        "1.patch",
        "alpha.patch",
        "flaky.patch",
        "kept.patch",
    ]
    for name, line in [("alpha", "alpha"), ("1", "unnamed"), ("flaky", "flaky"), ("kept", "kept")]:
        text = (patches / f"{name}.patch").read_text()
        assert [x for x in text.splitlines() if x.startswith("+") and not x.startswith("+++")] == [f"+{line}"]
        checkout = tmp_path / f"checkout-{name}"
        subprocess.run(["git", "clone", "-q", str(repo), str(checkout)], check=True)
        git(checkout, "apply", str(patches / f"{name}.patch"))
        assert (checkout / "shared.txt").read_text() == f"base\n{line}\n"
    by_name = {r["name"] or f"#{r['index']}": r for r in records(tmp_path / "tasks.results.jsonl")}
    head = git(repo, "rev-parse", "HEAD").strip()
    alpha = by_name["alpha"]
    assert alpha["ok"] and (alpha["verified"], alpha["verify_exit_code"]) == (True, 0)
    assert alpha["changes"] == {
        "isolation": "worktree",
        "files": [{"path": "shared.txt", "status": "modified", "additions": 1, "deletions": 0}],
        "additions": 1,
        "deletions": 0,
        "base_commit": head,
        "branch": None,
        "path": None,
    }
    assert alpha["attempts"] == [{"number": 1, "error": None, "elapsed_s": alpha["attempts"][0]["elapsed_s"]}]
    assert by_name["quiet"]["ok"] and by_name["quiet"]["changes"]["files"] == []
    flaky = by_name["flaky"]
    assert flaky["ok"] and [(a["number"], a["error"]) for a in flaky["attempts"]] == [
        (1, "api_error"),
        (2, None),
    ]
    # A line's own keep and verify win over the command line's.
    kept = by_name["kept"]
    assert not kept["ok"] and kept["error"]["kind"] == "verification_failed"
    assert (kept["verified"], kept["verify_exit_code"]) == (False, 1)
    branch = kept["changes"]["branch"]
    assert branch.startswith("ocw/kept-") and git(repo, "show", f"{branch}:shared.txt") == "base\nkept\n"
    assert state_of(repo) == before
    # Only the kept task's worktree is left (opencode's own temp files aside).
    left = leftovers(repo, None)
    assert (left["worktrees"], left["branches"]) == ([kept["changes"]["path"]], [f"refs/heads/{branch}"])
    git(repo, "worktree", "remove", "--force", kept["changes"]["path"])
    git(repo, "branch", "-q", "-D", branch)
    assert leftovers(repo, None) == {}
    ours = sorted(p.name for p in scratch.iterdir() if p.name.startswith("ocw_"))
    assert ours == [Path(kept["changes"]["path"]).parent.name]
