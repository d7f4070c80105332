"""The command line's parts without opencode: options, tasks files, the views, the chat printer."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from opencode_wrapper._cli.agents import AgentRow, Board
from opencode_wrapper._cli.app import build_parser
from opencode_wrapper._cli.chat_view import TurnPrinter
from opencode_wrapper._cli.cmd_batch import default_out
from opencode_wrapper._cli.cmd_chat import chat_config
from opencode_wrapper._cli.common import parse_permissions
from opencode_wrapper._cli.human import describe_permission, read_permission_answer, read_question_answer
from opencode_wrapper._cli.live import PlainView, render_board
from opencode_wrapper._cli.output import Output
from opencode_wrapper._cli.results import ResultWriter, outcome_record
from opencode_wrapper._cli.tasks_file import load_tasks
from opencode_wrapper.batch import Task, TaskOutcome
from opencode_wrapper.config import RunConfig
from opencode_wrapper.errors import OpenCodeConfigError
from opencode_wrapper.events import RunError, RunResult, make_event, parse_event_line
from opencode_wrapper.session import PermissionReply

# ----------------------------------------------------------------------------- options


def test_permission_options_become_a_permission_map() -> None:
    assert parse_permissions([]) is None
    assert parse_permissions(["bash=allow", "edit=deny"]) == {"bash": "allow", "edit": "deny"}
    assert parse_permissions(["bash=deny", "bash:git *=allow", "bash:a=b=ask"]) == {
        "bash": {"*": "deny", "git *": "allow", "a=b": "ask"}
    }
    with pytest.raises(OpenCodeConfigError, match="TOOL=ACTION"):
        parse_permissions(["bash"])


def test_every_command_is_registered() -> None:
    parser = build_parser()
    args = parser.parse_args(["run", "hi", "--permission", "bash=allow", "--json", "--timeout", "5"])
    assert (args.prompt, args.permission, args.json, args.timeout) == ("hi", ["bash=allow"], True, 5.0)
    for command in ("batch t.jsonl", "chat", "demo", "doctor", "install-opencode"):
        assert callable(parser.parse_args(command.split()).handler)


def test_chat_asks_for_risky_tools_unless_told_otherwise() -> None:
    assert chat_config(RunConfig()).permission == {"bash": "ask", "edit": "ask", "webfetch": "ask"}
    cfg = chat_config(RunConfig(permission={"bash": "allow", "read": "deny"}))
    assert cfg.permission == {"bash": "allow", "edit": "ask", "webfetch": "ask", "read": "deny"}


# ----------------------------------------------------------------------------- tasks file


def test_tasks_file_lines_become_tasks(tmp_path: Path) -> None:
    (tmp_path / "ws").mkdir()
    path = tmp_path / "tasks.jsonl"
    lines = [
        {"prompt": "one", "workspace": "ws"},
        {"prompt": "two", "workspace": str(tmp_path / "ws"), "name": "b", "timeout_s": 9, "agent": "plan"},
    ]
    path.write_text(json.dumps(lines[0]) + "\n\n" + json.dumps(lines[1]) + "\n", encoding="utf-8")
    base = RunConfig(model="p/m", permission={"bash": "allow"})
    first, second = load_tasks(str(path), base=base, default_timeout_s=60)
    assert first == Task("one", str(tmp_path / "ws"), base.merged_with(RunConfig()), 60.0, None)
    assert second.name == "b" and second.timeout_s == 9
    assert second.run_cfg is not None and (second.run_cfg.agent, second.run_cfg.model) == ("plan", "p/m")
    assert default_out(str(path)) == str(tmp_path / "tasks.results.jsonl")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("not json", "line 1: not valid JSON"),
        ("[1]", "line 1: expected a JSON object"),
        ('{"workspace": "."}', "line 1: 'prompt' must be a non-empty string"),
        ('{"prompt": "x"}', "line 1: 'workspace' must be a directory path"),
        ('{"prompt": "x", "workspace": "nope"}', "line 1: workspace 'nope' is not a directory"),
        ('{"prompt": "x", "workspace": ".", "modle": "a/b"}', "line 1: unknown key 'modle'"),
        ('{"prompt": "x", "workspace": ".", "model": "nope"}', "line 1: Invalid model 'nope'"),
        (
            '{"prompt": "x", "workspace": ".", "permission": {"bash": "ask"}}',
            "line 1: Permission action 'ask'",
        ),
        ('{"prompt": "x", "workspace": ".", "timeout_s": -1}', "line 1: 'timeout_s' must be a positive"),
    ],
)
def test_tasks_file_errors_name_the_line(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "tasks.jsonl"
    path.write_text(line + "\n", encoding="utf-8")
    with pytest.raises(OpenCodeConfigError, match=message.replace("(", r"\(")):
        load_tasks(str(path), base=RunConfig(), default_timeout_s=None)


# ----------------------------------------------------------------------------- agent rows


def _run_events() -> list[Any]:
    """A run-mode tool turn: step, tool_use (completed), step_finish, step, text, step_finish."""
    lines = [
        {"type": "step_start", "part": {"id": "p1", "type": "step-start"}},
        {
            "type": "tool_use",
            "part": {
                "id": "p2",
                "type": "tool",
                "tool": "bash",
                "state": {"status": "completed", "output": "hi\n"},
            },
        },
        {
            "type": "step_finish",
            "part": {
                "id": "p3",
                "type": "step-finish",
                "reason": "tool-calls",
                "tokens": {"total": 11},
                "cost": 0.5,
            },
        },
        {"type": "step_start", "part": {"id": "p4", "type": "step-start"}},
        {"type": "text", "part": {"id": "p5", "type": "text", "text": "done"}},
        {
            "type": "step_finish",
            "part": {
                "id": "p6",
                "type": "step-finish",
                "reason": "stop",
                "tokens": {"total": 4},
                "cost": 0.25,
            },
        },
    ]
    return [parse_event_line(json.dumps(line)) for line in lines]


def _server_part(part: dict[str, Any]) -> Any:
    return make_event({"type": "message.part.updated", "properties": {"part": part}})


def test_a_row_follows_run_mode_events() -> None:
    row = AgentRow(index=0, label="a", workspace="/w")
    states = []
    for event in _run_events():
        row.apply(event)
        states.append(row.state)
    assert states == ["thinking", "thinking", "thinking", "thinking", "answering", "finishing"]
    assert (row.tool, row.tool_status, row.tools_run, row.tokens, row.cost) == (
        "bash",
        "completed",
        1,
        15,
        0.75,
    )


def test_a_row_follows_server_events_and_counts_repeated_parts_once() -> None:
    row = AgentRow(index=0, label="a", workspace="/w")
    row.apply(_server_part({"id": "t", "type": "tool", "tool": "bash", "state": {"status": "pending"}}))
    assert (row.state, row.tool_status) == ("running bash", "pending")
    row.apply(_server_part({"id": "t", "type": "tool", "tool": "bash", "state": {"status": "running"}}))
    row.apply(_server_part({"id": "t", "type": "tool", "tool": "bash", "state": {"status": "completed"}}))
    finish = {"id": "f", "type": "step-finish", "tokens": {"total": 7}, "cost": 0.1, "reason": "stop"}
    row.apply(_server_part(finish))
    row.apply(_server_part(finish))
    assert (row.tool_status, row.tools_run, row.tokens, row.cost) == ("completed", 1, 7, 0.1)
    row.apply(make_event({"type": "session.error", "properties": {"error": {"name": "APIError"}}}))
    assert row.state == "error"


def _outcome(index: int, task: Task, *, ok: bool, tokens: int = 0) -> TaskOutcome:
    result = RunResult()
    result.token_usage.total = tokens
    if not ok:
        result.error = RunError(kind="api_error", message="denied", status_code=401)
    return TaskOutcome(index=index, task=task, result=result, elapsed_s=3.5)


def test_the_live_table_shows_running_agents_and_the_progress(tmp_path: Path) -> None:
    from rich.console import Console

    tasks = [Task("p", tmp_path / name, name=name if name != "b" else None) for name in ("a", "b", "c")]
    board = Board(total=3)
    for index, task in enumerate(tasks):
        board.start(index, task)
    for event in _run_events()[:3]:
        board.event(1, event)
    board.finish(_outcome(0, tasks[0], ok=False, tokens=5))
    console = Console(record=True, width=140, file=io.StringIO())
    console.print(render_board(board))
    text = console.export_text()
    header = next(line for line in text.splitlines() if "Workspace" in line)
    assert header.split() == ["#", "Agent", "Workspace", "Elapsed", "Tool", "Tokens", "Cost", "State"]
    rows = {line.split()[1]: line.split() for line in text.splitlines() if line.strip()[:1].isdigit()}
    assert set(rows) == {"b", "c"}  # the finished agent left the table
    assert rows["b"][4:9] == ["bash", "completed", "11", "$0.5000", "thinking"]
    assert rows["c"][-1] == "starting"
    assert (
        "1/3" in text and "ETA" in text and "2 running" in text and "1 failed" in text and "5 tokens" in text
    )


def test_the_plain_view_prints_a_line_per_start_tool_and_finish(tmp_path: Path) -> None:
    stream = io.StringIO()
    view = PlainView(Output(stream), Board(total=1))
    task = Task("p", tmp_path / "ws", name="api")
    view.task_started(0, task)
    for event in _run_events():
        view.task_event(0, event)
    view.task_finished(_outcome(0, task, ok=True, tokens=15))
    lines = stream.getvalue().splitlines()
    assert lines[0] == f"start  api            {tmp_path / 'ws'}"
    assert lines[1] == "tool   api            bash completed"
    assert lines[2].startswith("ok     api              0:03       15 tokens  $0.0000")
    assert lines[2].endswith("(1/1)")


# ----------------------------------------------------------------------------- results


def test_result_lines_are_whole_json_lines(tmp_path: Path) -> None:
    task = Task("p", tmp_path, name="x")
    target = tmp_path / "out.jsonl"
    with ResultWriter(str(target)) as writer:
        writer.write(outcome_record(_outcome(3, task, ok=False, tokens=2)))
        writer.write(outcome_record(TaskOutcome(index=4, task=task, exception=OSError("boom"))))
    first, second = (json.loads(line) for line in target.read_text().splitlines())
    assert first["index"] == 3 and first["ok"] is False and first["tokens"]["total"] == 2
    assert first["error"] == {"kind": "api_error", "message": "denied", "status_code": 401, "name": None}
    assert second["ok"] is False and second["error"]["message"] == "OSError: boom"
    assert oct(target.stat().st_mode & 0o777) == "0o600"


# ----------------------------------------------------------------------------- chat


def test_permission_answers() -> None:
    assert read_permission_answer("y") == "once"
    assert read_permission_answer(" Always ") == "always"
    assert read_permission_answer("n") == "reject"
    assert read_permission_answer("") is None
    assert read_permission_answer("use git instead") == PermissionReply.reject("use git instead")
    request = {"permission": "bash", "patterns": ["ls"], "metadata": {"command": "ls -la"}}
    assert describe_permission(request) == "bash: ls -la"
    assert describe_permission({"permission": "edit", "patterns": ["a.py", "b.py"]}) == "edit: a.py, b.py"


def test_question_answers() -> None:
    labels = ["red", "blue", "green"]
    assert read_question_answer("2", labels, multiple=False) == ["blue"]
    assert read_question_answer("1, 3", labels, multiple=True) == ["red", "green"]
    assert read_question_answer("BLUE", labels, multiple=False) == ["blue"]
    assert read_question_answer("purple", labels, multiple=False) == ["purple"]
    assert read_question_answer("7", labels, multiple=False) is None


def test_the_chat_printer_streams_text_once_and_skips_the_users_message() -> None:
    stream = io.StringIO()
    printer = TurnPrinter(Output(stream))

    def props(kind: str, **properties: Any) -> None:
        printer.event(make_event({"type": kind, "properties": properties}))

    props("message.updated", info={"id": "msg_u", "role": "user"})
    props(
        "message.part.updated", part={"id": "pu", "messageID": "msg_u", "type": "text", "text": "my prompt"}
    )
    props("message.part.updated", part={"id": "pt", "messageID": "msg_a", "type": "text", "text": ""})
    props("message.part.delta", messageID="msg_a", partID="pt", field="text", delta="Hel")
    props("message.part.delta", messageID="msg_a", partID="pt", field="text", delta="lo")
    props(
        "message.part.updated",
        part={"id": "pt", "messageID": "msg_a", "type": "text", "text": "Hello world", "time": {"end": 1}},
    )
    tool = {"id": "pk", "messageID": "msg_a", "type": "tool", "tool": "bash", "state": {"status": "running"}}
    props("message.part.updated", part=tool)
    props("message.part.updated", part=tool)
    tool["state"] = {"status": "completed", "title": "ls", "output": "a.txt\n"}
    props("message.part.updated", part=tool)
    props("session.error", error={"name": "APIError", "data": {"message": "nope", "statusCode": 500}})
    assert stream.getvalue().splitlines() == [
        "Hello world",
        "[tool] bash running",
        "[tool] bash completed: ls",
        "    | a.txt",
        "[error] api_error (HTTP 500): nope",
    ]


# ----------------------------------------------------------------------------- the batch hook


class _Recorder:
    def __init__(self) -> None:
        self.seen: list[tuple[str, int, str]] = []

    def task_started(self, index: int, task: Task) -> None:
        self.seen.append(("start", index, str(task.name)))

    def task_event(self, index: int, event: Any) -> None:
        self.seen.append(("event", index, event.type))


async def test_batches_that_report_events_feed_the_view(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The contract asked of batch: ``on_event(index, event)`` and ``on_progress`` after each start."""
    from opencode_wrapper._cli import observe
    from opencode_wrapper.batch import Progress

    calls: dict[str, Any] = {}

    async def iter_run_many(
        tasks: list[Task], *, on_event: Any = None, on_progress: Any = None, **options: Any
    ) -> Any:
        calls.update(options)
        progress = Progress(total=len(tasks))
        for index, task in enumerate(tasks):
            progress.started += 1
            progress.last_started = index
            on_progress(progress)
            for event in _run_events()[:2]:
                on_event(index, event)
            yield TaskOutcome(index=index, task=task, result=RunResult())

    monkeypatch.setattr(observe, "iter_run_many", iter_run_many)
    assert observe.choose_backend(None) == "server"
    assert observe.choose_backend("run") == "run"
    tasks = [Task("p", tmp_path, name="a"), Task("p", tmp_path, name="b")]
    recorder = _Recorder()
    outcomes = [
        o async for o in observe.iter_observed(tasks, recorder, backend="server", concurrency=2, binary="x")
    ]
    assert [o.index for o in outcomes] == [0, 1]
    assert calls == {"concurrency": 2, "backend": "server", "binary": "x"}
    assert recorder.seen == [
        ("start", 0, "a"),
        ("event", 0, "step_start"),
        ("event", 0, "tool_use"),
        ("start", 1, "b"),
        ("event", 1, "step_start"),
        ("event", 1, "tool_use"),
    ]
