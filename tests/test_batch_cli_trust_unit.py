"""``batch``'s trust options without opencode: task lines, option checks, result lines, ``--resume``
planning, patches, and retries reaching the view (through the real scheduler, a scripted backend)."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any

import pytest

from opencode_wrapper._cli.agents import AgentRow, Board
from opencode_wrapper._cli.app import build_parser, main
from opencode_wrapper._cli.batch_options import task_defaults
from opencode_wrapper._cli.live import PlainView, finished_text, render_board, state_text
from opencode_wrapper._cli.observe import iter_observed
from opencode_wrapper._cli.output import Output
from opencode_wrapper._cli.patches import PatchWriter, patch_name
from opencode_wrapper._cli.results import ResultWriter, outcome_record, task_hash
from opencode_wrapper._cli.resume import check_unique_names, plan_resume, read_records
from opencode_wrapper._cli.tasks_file import TaskDefaults, load_tasks
from opencode_wrapper._model.fold import Fold
from opencode_wrapper.backends.base import Backend
from opencode_wrapper.backends.handle import RunHandle
from opencode_wrapper.backends.request import RunRequest
from opencode_wrapper.backends.verify import Verification
from opencode_wrapper.batch import Task, TaskOutcome
from opencode_wrapper.config import RunConfig
from opencode_wrapper.errors import OpenCodeConfigError
from opencode_wrapper.events import Event, RunError, RunResult, make_event
from opencode_wrapper.isolation import Changes, FileChange
from opencode_wrapper.limits import Limits
from opencode_wrapper.results import Attempt

# ----------------------------------------------------------------------------- tasks file


def _tasks(tmp_path: Path, *lines: dict[str, Any], defaults: TaskDefaults | None = None) -> list[Task]:
    (tmp_path / "ws").mkdir(exist_ok=True)
    path = tmp_path / "tasks.jsonl"
    path.write_text("".join(json.dumps({"prompt": "p", "workspace": "ws", **line}) + "\n" for line in lines))
    return load_tasks(str(path), base=RunConfig(), default_timeout_s=None, defaults=defaults)


def test_task_lines_set_their_run_options_over_the_command_line(tmp_path: Path) -> None:
    defaults = TaskDefaults(
        isolation="worktree",
        keep="never",
        verify="make test",
        verify_timeout_s=30.0,
        retries=2,
        retry_backoff_s=1.0,
        limits=Limits(max_cost=1.0, max_steps=9),
    )
    plain, own, off = _tasks(
        tmp_path,
        {},
        {
            "isolation": "copy",
            "keep": "always",
            "verify": "pytest -q",
            "verify_timeout_s": 5,
            "retries": 0,
            "retry_backoff_s": 0,
            "limits": {"max_steps": 3, "idle_timeout_s": 2},
        },
        {"isolation": "none", "verify": None, "limits": {"max_cost": None, "max_steps": None}},
        defaults=defaults,
    )
    assert (plain.isolation, plain.keep, plain.verify, plain.verify_timeout_s) == (
        "worktree",
        "never",
        "make test",
        30.0,
    )
    assert (plain.retries, plain.retry_backoff_s, plain.limits) == (2, 1.0, Limits(max_cost=1.0, max_steps=9))
    assert (own.isolation, own.keep, own.verify, own.verify_timeout_s) == ("copy", "always", "pytest -q", 5.0)
    assert (own.retries, own.retry_backoff_s) == (0, 0)
    # The line's limits go field by field over the command line's.
    assert own.limits == Limits(max_cost=1.0, max_steps=3, idle_timeout_s=2)
    # null switches a default off.
    assert (off.isolation, off.verify, off.limits) == ("none", None, None)
    # Without defaults a task keeps the library's.
    (bare,) = _tasks(tmp_path, {})
    assert (bare.isolation, bare.verify, bare.retries, bare.limits) == (None, None, None, None)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ({"isolation": "vm"}, "line 1: isolation must be one of 'none', 'worktree', 'copy'; got 'vm'"),
        ({"keep": "sometimes"}, "line 1: keep must be one of"),
        ({"isolation": "copy", "base": "HEAD~1"}, "line 1: base= needs isolation='worktree'"),
        ({"isolation": "worktree", "base": "-x"}, "line 1: base must be a git commit-ish"),
        ({"verify": ""}, "line 1: 'verify' must be a shell command"),
        ({"verify": ["make"]}, "line 1: 'verify' must be a shell command"),
        ({"verify_timeout_s": 0}, "line 1: 'verify_timeout_s' must be a positive number"),
        ({"retries": -1}, "line 1: 'retries' must be a non-negative integer, got -1"),
        ({"retries": 1.5}, "line 1: 'retries' must be a non-negative integer"),
        ({"retry_backoff_s": "soon"}, "line 1: 'retry_backoff_s' must be a non-negative number"),
        ({"limits": 5}, "line 1: 'limits' must be an object with some of max_cost, max_tokens"),
        ({"limits": {"max_time": 5}}, "line 1: unknown key 'max_time' in 'limits'"),
        ({"limits": {"max_steps": 0}}, "line 1: Limits.max_steps must be an integer >= 1"),
        ({"isolation": 3}, "line 1: 'isolation' must be a string, got 3"),
    ],
)
def test_bad_run_options_in_a_line_are_named(tmp_path: Path, line: dict[str, Any], message: str) -> None:
    with pytest.raises(OpenCodeConfigError) as raised:
        _tasks(tmp_path, line)
    assert message in str(raised.value)


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--retries", "-1"], "--retries must be an integer >= 0, got -1"),
        (["--retry-backoff", "-0.5"], "--retry-backoff must be a number >= 0, got -0.5"),
        (["--max-cost", "0"], "--max-cost must be a positive number, got 0.0"),
        (["--max-tokens", "0"], "--max-tokens must be an integer >= 1, got 0"),
        (["--max-steps", "-3"], "--max-steps must be an integer >= 1, got -3"),
        (["--idle-timeout", "nan"], "--idle-timeout must be a positive number, got nan"),
        (["--verify-timeout", "0"], "--verify-timeout must be a positive number, got 0.0"),
        (["--verify", " "], "--verify must be a shell command, got an empty one"),
    ],
)
def test_out_of_range_options_are_named(option: list[str], message: str) -> None:
    args = build_parser().parse_args(["batch", "tasks.jsonl", *option])
    with pytest.raises(OpenCodeConfigError, match="^" + re.escape(message)):
        task_defaults(args)


def test_options_become_defaults() -> None:
    args = build_parser().parse_args(
        [
            *("batch", "t.jsonl", "--isolation", "worktree", "--keep", "never", "--base", "main~1"),
            *("--verify", "make check", "--verify-timeout", "9", "--retries", "2", "--retry-backoff", "0.5"),
            *("--max-cost", "0.25", "--max-tokens", "1000", "--max-steps", "7", "--idle-timeout", "30"),
        ]
    )
    assert task_defaults(args) == TaskDefaults(
        isolation="worktree",
        keep="never",
        base="main~1",
        verify="make check",
        verify_timeout_s=9.0,
        retries=2,
        retry_backoff_s=0.5,
        limits=Limits(max_cost=0.25, max_tokens=1000, max_steps=7, idle_timeout_s=30.0),
    )
    assert task_defaults(build_parser().parse_args(["batch", "t.jsonl"])) == TaskDefaults()


@pytest.mark.parametrize(
    ("extra", "lines", "message"),
    [
        (["--resume", "--out", "-"], [{}], "--resume reads the results file back"),
        (["--diff-dir", "p"], [{}], "--diff-dir writes the diffs of isolated tasks, and no task is isolated"),
        (["--resume"], [{"name": "a"}, {"name": "a"}], "--resume needs unique task names: tasks #0 and #1"),
        (
            ["--diff-dir", "p", "--isolation", "worktree"],
            [{"name": "a/b"}, {"name": "a_b"}],
            "--diff-dir: tasks #0 and #1 would both write a_b.patch",
        ),
        (["--max-steps", "0"], [{}], "--max-steps must be an integer >= 1"),
    ],
)
def test_the_command_refuses_before_starting_anything(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    lines: list[dict[str, Any]],
    message: str,
) -> None:
    (tmp_path / "ws").mkdir()
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text("".join(json.dumps({"prompt": "p", "workspace": "ws", **line}) + "\n" for line in lines))
    # A binary that does not exist: anything that tried to start opencode would fail differently.
    code = main(["batch", str(tasks), "--binary", str(tmp_path / "no-opencode"), *extra])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "tasks.results.jsonl").exists() and not (tmp_path / "p").exists()


# ----------------------------------------------------------------------------- result lines


def _changes(**fields: Any) -> Changes:
    base = {
        "diff": "diff --git a/x b/x\n",
        "files": (FileChange("x.py", "modified", 2, 1), FileChange("new.py", "renamed", 0, 0, "old.py")),
        "base_commit": "abc123",
        "isolation": "worktree",
    }
    return Changes(**{**base, **fields})


def test_a_result_line_says_what_changed_how_it_was_checked_and_each_try(tmp_path: Path) -> None:
    task = Task("p", tmp_path, name="api")
    result = RunResult(changes=_changes(branch="ocw/api-1", path=tmp_path / "wt"))
    result.verification = Verification(False, "1 failed", 1)
    result.error = RunError(kind="verification_failed", message="the run's verify check failed: 1 failed")
    outcome = TaskOutcome(
        index=2,
        task=task,
        result=result,
        attempts=[
            Attempt(1, RunError(kind="api_error", message="x", status_code=425), 1.25),
            Attempt(2, None, 2.0),
        ],
    )
    record = outcome_record(outcome)
    assert record["task_hash"] == task_hash(task) and len(record["task_hash"]) == 16
    assert record["changes"] == {
        "isolation": "worktree",
        "files": [
            {"path": "x.py", "status": "modified", "additions": 2, "deletions": 1},
            {"path": "new.py", "status": "renamed", "additions": 0, "deletions": 0, "old_path": "old.py"},
        ],
        "additions": 2,
        "deletions": 1,
        "base_commit": "abc123",
        "branch": "ocw/api-1",
        "path": str(tmp_path / "wt"),
    }
    assert (record["ok"], record["verified"], record["verify_exit_code"]) == (False, False, 1)
    assert record["error"]["kind"] == "verification_failed"
    assert record["attempts"] == [
        {"number": 1, "error": "api_error", "elapsed_s": 1.25},
        {"number": 2, "error": None, "elapsed_s": 2.0},
    ]
    plain = outcome_record(TaskOutcome(index=0, task=task, result=RunResult()))
    assert (plain["changes"], plain["verified"], plain["verify_exit_code"], plain["attempts"]) == (
        None,
        None,
        None,
        [],
    )
    json.dumps(record)  # a JSON line


def test_the_task_hash_is_its_prompt_and_workspace(tmp_path: Path) -> None:
    assert task_hash(Task("p", tmp_path)) == task_hash(Task("p", tmp_path, name="other", retries=3))
    assert task_hash(Task("p", tmp_path)) != task_hash(Task("q", tmp_path))
    assert task_hash(Task("p", tmp_path)) != task_hash(Task("p", tmp_path / "sub"))


# ----------------------------------------------------------------------------- --resume


def _record(index: int, task: Task, ok: bool) -> dict[str, Any]:
    return {"index": index, "name": task.name, "task_hash": task_hash(task), "ok": ok}


def test_resume_keeps_the_ok_tasks_and_runs_the_others(tmp_path: Path) -> None:
    tasks = [
        Task("a", tmp_path, name="a"),  # ok before
        Task("b", tmp_path, name="b"),  # failed before
        Task("c", tmp_path),  # unnamed, ok before at this position
        Task("d", tmp_path),  # unnamed, ok before but at another position
        Task("e", tmp_path),  # unnamed, its prompt changed since
        Task("f", tmp_path, name="f"),  # never ran
    ]
    records = [
        _record(2, tasks[2], True),
        _record(1, tasks[1], False),
        _record(0, tasks[0], True),
        _record(1, tasks[3], True),
        _record(4, Task("e (old)", tmp_path), True),
        {"index": 9, "name": "gone", "task_hash": "x", "ok": True},
    ]
    plan = plan_resume(tasks, records)
    assert plan.todo == [1, 3, 4, 5]
    assert plan.kept == [records[2], records[0]]  # in task order


def test_results_files_are_read_whole_lines_only(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    assert read_records(str(path)) == []
    path.write_text('{"index": 0, "ok": true}\n[1]\n\n{"index": 1, "ok": tr')  # cut by a crash
    assert read_records(str(path)) == [{"index": 0, "ok": True}]


def test_duplicate_names_are_refused_where_names_identify_tasks(tmp_path: Path) -> None:
    check_unique_names([Task("p", tmp_path, name="a"), Task("p", tmp_path), Task("p", tmp_path)], "--resume")
    with pytest.raises(OpenCodeConfigError, match="--resume needs unique task names: tasks #0 and #2 "):
        check_unique_names(
            [Task("p", tmp_path, name="a"), Task("p", tmp_path), Task("q", tmp_path, name="a")], "--resume"
        )


def test_a_resumed_results_file_starts_with_the_kept_lines(tmp_path: Path) -> None:
    target = tmp_path / "results.jsonl"
    target.write_text('{"old": 1}\n{"old": 2}\n')
    with ResultWriter(str(target), kept=[{"kept": 1}]) as writer:
        writer.write({"new": 1})
    assert [json.loads(line) for line in target.read_text().splitlines()] == [{"kept": 1}, {"new": 1}]
    assert (writer.kept, writer.written) == (1, 1)
    assert oct(target.stat().st_mode & 0o777) == "0o600"
    assert [p.name for p in tmp_path.iterdir()] == ["results.jsonl"]  # no temporary file left
    with ResultWriter(str(target)):
        pass
    assert target.read_text() == ""  # without kept lines: truncated
    with pytest.raises(ValueError):
        ResultWriter("-", kept=[{"kept": 1}])


# ----------------------------------------------------------------------------- --diff-dir


def test_patches_are_named_after_their_task_and_only_non_empty_ones_are_written(tmp_path: Path) -> None:
    tasks = [Task("p", tmp_path, name="api"), Task("p", tmp_path), Task("p", tmp_path, name="../etc/x y")]
    assert [patch_name(t, i) for i, t in enumerate(tasks)] == ["api.patch", "1.patch", "_.._etc_x_y.patch"]
    writer = PatchWriter(str(tmp_path / "out" / "patches"), tasks)
    written = writer.write(0, _changes(diff="diff --git a/x b/x\n+one\n"))
    assert written == tmp_path / "out" / "patches" / "api.patch"
    assert written.read_text() == "diff --git a/x b/x\n+one\n"
    assert writer.write(1, None) is None and writer.write(2, _changes(diff="", files=())) is None
    # A task that runs again and changes nothing takes its old patch away.
    assert writer.write(0, _changes(diff="", files=())) is None
    assert list((tmp_path / "out" / "patches").iterdir()) == []
    # Binary contents: the patch git can apply.
    writer.write(1, _changes(binary_patch="GIT binary patch\n"))
    assert (tmp_path / "out" / "patches" / "1.patch").read_text() == "GIT binary patch\n"


def test_patch_names_must_not_collide(tmp_path: Path) -> None:
    with pytest.raises(OpenCodeConfigError, match=r"tasks #0 and #1 would both write 1\.patch"):
        PatchWriter(str(tmp_path / "p"), [Task("p", tmp_path, name="1"), Task("p", tmp_path)])
    assert not (tmp_path / "p").exists()


# ----------------------------------------------------------------------------- the view


def test_rows_show_their_try_and_the_check() -> None:
    board = Board(total=2)
    task = Task("p", "/w", name="api", verify="make test")
    row = board.start(0, task)
    assert row.verifies and state_text(row) == "starting"
    finish = {"id": "f", "type": "step-finish", "tokens": {"total": 3}, "cost": 0.0, "reason": "stop"}
    row.apply(make_event({"type": "step_finish", "part": finish}))
    assert row.state == "verifying"
    board.attempt(0, 2)
    assert state_text(row) == "retrying (try 2)"
    other = board.start(1, Task("p", "/w", name="web"))
    other.apply(make_event({"type": "step_finish", "part": finish}))
    assert other.state == "finishing"
    assert board.attempt(7, 2) is None  # a task not on the board


def test_the_table_and_the_lines_show_tries_and_verification(tmp_path: Path) -> None:
    from rich.console import Console

    board = Board(total=2)
    task = Task("p", tmp_path, name="api", verify="make test")
    board.start(0, task)
    board.attempt(0, 3)
    console = Console(record=True, width=140, file=io.StringIO())
    console.print(render_board(board))
    assert "retrying (try 3)" in console.export_text()

    stream = io.StringIO()
    view = PlainView(Output(stream), Board(total=1))
    view.task_started(0, task)
    view.task_attempt(0, 2, RunError(kind="api_error", message="too early", status_code=425))
    view.task_attempt(5, 2, None)  # not on the board: nothing printed
    result = RunResult()
    result.verification = Verification(True, "", 0)
    view.task_finished(
        TaskOutcome(index=0, task=task, result=result, attempts=[Attempt(1), Attempt(2)], elapsed_s=2.0)
    )
    lines = stream.getvalue().splitlines()
    assert lines[1] == "retry  api            try 2 after api_error (HTTP 425): too early"
    assert lines[2].startswith("ok     api ") and lines[2].endswith("verified  2 tries  (1/1)")
    assert view.board.verified == 1 and view.board.retried == 1

    failed = RunResult(error=RunError(kind="verification_failed", message="no"))
    failed.verification = Verification(False, "no", 1)
    row = AgentRow(index=0, label="api", workspace=str(tmp_path))
    text = finished_text(row, TaskOutcome(index=0, task=task, result=failed), Board(total=1)).plain
    assert "verify failed" in text and "tries" not in text


# ----------------------------------------------------------------------------- retries reach the view


class _Flaky(Backend):
    """First try of every task fails with a 425, the second succeeds."""

    name = "flaky"

    def __init__(self) -> None:
        self.opened: list[str] = []

    def check(self, request: RunRequest) -> None:
        return None

    def _handle(self, request: RunRequest) -> RunHandle:
        self.opened.append(request.prompt)
        return _FlakyRun(request, first=self.opened.count(request.prompt) == 1)


class _FlakyRun(RunHandle):
    backend = "flaky"

    def __init__(self, request: RunRequest, *, first: bool) -> None:
        super().__init__(request)
        self._fold = Fold()
        self._first = first

    async def _produce(self) -> None:
        self._emit(
            make_event({"type": "step_start", "part": {"id": f"s{self._first}", "type": "step-start"}})
        )

    def _partial(self) -> RunResult:
        if self._first:
            return RunResult(error=RunError(kind="api_error", message="too early", status_code=425))
        return RunResult(final_text="done")


class _Recorder:
    def __init__(self) -> None:
        self.seen: list[tuple[Any, ...]] = []

    def task_started(self, index: int, task: Task) -> None:
        self.seen.append(("start", index, task.name))

    def task_event(self, index: int, event: Event) -> None:
        self.seen.append(("event", index))

    def task_attempt(self, index: int, number: int, previous: RunError | None) -> None:
        self.seen.append(("attempt", index, number, previous.status_code if previous else None))


async def test_a_retry_reaches_the_view_under_the_tasks_line_position(tmp_path: Path) -> None:
    tasks = [
        Task("first", tmp_path, name="a", retries=1, retry_backoff_s=0),
        Task("second", tmp_path, name="b"),
    ]
    recorder, backend = _Recorder(), _Flaky()
    outcomes = [
        o
        async for o in iter_observed(
            tasks, recorder, backend="server", concurrency=1, binary="x", engine=backend, positions=[3, 7]
        )
    ]
    assert [(o.index, o.ok, len(o.attempts)) for o in outcomes] == [(3, True, 2), (7, False, 1)]
    assert recorder.seen == [
        ("start", 3, "a"),
        ("event", 3),
        ("attempt", 3, 2, 425),
        ("event", 3),
        ("start", 7, "b"),
        ("event", 7),
    ]
    assert backend.opened == ["first", "first", "second"]


async def test_positions_must_match_the_tasks(tmp_path: Path) -> None:
    observed = iter_observed(
        [Task("p", tmp_path), Task("q", tmp_path)],
        _Recorder(),
        backend="server",
        concurrency=1,
        binary="x",
        positions=[0],
    )
    with pytest.raises(ValueError, match="2 tasks but 1 positions"):
        await observed.__anext__()
