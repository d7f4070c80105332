"""The command line end to end: `python -m opencode_wrapper ...`, the real opencode, the offline model."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import signal
import stat
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

pytestmark = pytest.mark.e2e

#: The longest any one command may take here (a loaded 2-core machine starts opencode slowly).
COMMAND_TIMEOUT_S = 240.0
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07|\r")


def cli_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("OPENCODE_WRAPPER_PLAIN", None)
    env.update(extra)
    return env


def cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run `python -m opencode_wrapper ARGS` to its end, output captured (so not a terminal)."""
    return subprocess.run(
        [sys.executable, "-m", "opencode_wrapper", *args],
        cwd=cwd,
        env=env or cli_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
        check=False,
    )


def strip_ansi(text: str) -> str:
    return _ANSI.sub("", text)


class Terminal:
    """A command on a pseudo-terminal: what it prints, and keys typed into it."""

    def __init__(self, argv: list[str], *, cwd: Path, env: dict[str, str], columns: int = 120) -> None:
        self.master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
        self.proc = subprocess.Popen(
            argv, cwd=cwd, env=env, stdin=slave, stdout=slave, stderr=slave, close_fds=True
        )
        os.close(slave)
        self.output = ""
        self._seen = 0

    def _read(self, timeout_s: float) -> bool:
        ready, _, _ = select.select([self.master], [], [], timeout_s)
        if not ready:
            return True
        try:
            chunk = os.read(self.master, 65536)
        except OSError:  # EIO: the other side is closed
            return False
        if not chunk:
            return False
        self.output += chunk.decode("utf-8", errors="replace")
        return True

    def expect(self, text: str, timeout_s: float = COMMAND_TIMEOUT_S) -> str:
        """Wait for ``text`` after the previous match; return what came before it (ANSI removed)."""
        deadline = time.monotonic() + timeout_s
        while True:
            plain = strip_ansi(self.output)
            found = plain.find(text, self._seen)
            if found >= 0:
                before = plain[self._seen : found]
                self._seen = found + len(text)
                return before
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._read(min(remaining, 1.0)):
                raise AssertionError(f"{text!r} did not appear; the terminal shows:\n{plain[-3000:]}")

    def send(self, line: str) -> None:
        os.write(self.master, (line + "\n").encode())

    def wait(self) -> int:
        """Read to the end and wait for the exit status."""
        deadline = time.monotonic() + COMMAND_TIMEOUT_S
        while self._read(1.0) and time.monotonic() < deadline:
            if self.proc.poll() is not None and not select.select([self.master], [], [], 0)[0]:
                break
        return self.proc.wait(timeout=COMMAND_TIMEOUT_S)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        os.close(self.master)


@pytest.fixture
def terminal() -> Iterator[list[Terminal]]:
    opened: list[Terminal] = []
    yield opened
    for term in opened:
        term.close()


def run_in_terminal(
    argv: list[str], *, cwd: Path, env: dict[str, str], columns: int = 120
) -> tuple[int, str]:
    term = Terminal(argv, cwd=cwd, env=env, columns=columns)
    try:
        code = term.wait()
    finally:
        term.close()
    return code, term.output


COMMANDS = {
    "run": [
        "PROMPT",
        "--json",
        "--timeout",
        "--permission",
        "--workspace",
        "--offline",
        "--agent",
        "--model",
    ],
    "batch": ["TASKS.jsonl", "--concurrency", "--out", "--offline", "--permission"],
    "chat": ["--workspace", "--permission", "--offline"],
    "demo": ["--model"],
    "install-opencode": ["--version", "--prefix"],
    "doctor": ["--binary"],
}


# ----------------------------------------------------------------------------- help


def test_top_level_help_lists_every_command(tmp_path: Path) -> None:
    done = cli("--help", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    for command in COMMANDS:
        assert command in done.stdout


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_has_help(command: str, tmp_path: Path) -> None:
    done = cli(command, "--help", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"usage: opencode-wrapper {command}")
    for flag in COMMANDS[command]:
        assert flag in done.stdout, f"{command} --help does not mention {flag}"


# ----------------------------------------------------------------------------- run


def test_run_shows_tool_calls_and_the_answer(opencode_binary: str, workspace: Path) -> None:
    done = cli("run", "--offline", "-w", str(workspace), "[[bash: echo cli-marker-42]]", cwd=workspace.parent)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert "[tool] bash completed: echo cli-marker-42" in lines
    assert "    | cli-marker-42" in lines
    assert "Tool results: bash: cli-marker-42" in lines
    assert lines[-1].startswith("[ok] 2 steps, 25 tokens (20 in, 5 out), $0.0000")


def test_run_json_prints_typed_events_then_the_result(opencode_binary: str, workspace: Path) -> None:
    done = cli(
        "run", "--offline", "--json", "-w", str(workspace), "[[say: json hello]]", cwd=workspace.parent
    )
    assert done.returncode == 0, done.stdout + done.stderr
    records = [json.loads(line) for line in done.stdout.splitlines()]
    types = [record["type"] for record in records]
    assert types[:-1] == ["step_start", "text", "step_finish"]
    assert records[1]["part"]["text"] == "json hello"
    result = records[-1]
    assert result["type"] == "result"
    assert result["ok"] is True and result["error"] is None
    assert result["final_text"] == "json hello"
    assert result["tokens"]["total"] == records[2]["part"]["tokens"]["total"] == 12
    assert result["session_id"] == records[0]["sessionID"]


def test_run_exits_non_zero_on_an_api_error(opencode_binary: str, workspace: Path) -> None:
    done = cli("run", "--offline", "--json", "-w", str(workspace), "[[error: 401]]", cwd=workspace.parent)
    assert done.returncode == 1, done.stdout + done.stderr
    records = [json.loads(line) for line in done.stdout.splitlines()]
    assert any(record["type"] == "error" for record in records)
    result = records[-1]
    assert result["type"] == "result" and result["ok"] is False
    assert result["error"]["kind"] == "api_error"
    assert result["error"]["status_code"] == 401


def test_run_exits_non_zero_when_opencode_auto_rejects_a_permission(
    opencode_binary: str, workspace: Path
) -> None:
    # Reading outside the workspace asks for `external_directory`, which `opencode run` auto-rejects (exit 0).
    prompt = '[[tool: read {"filePath": "/etc/hostname"}]]'
    done = cli("run", "--offline", "-w", str(workspace), prompt, cwd=workspace.parent)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "[tool] read error: /etc/hostname" in done.stdout
    assert "The user rejected permission" in done.stdout
    assert done.stdout.splitlines()[-1].startswith("[failed] permission_rejected: ")


def test_run_refuses_bad_arguments_before_starting_anything(tmp_path: Path) -> None:
    missing = cli("run", "--offline", "-w", str(tmp_path / "missing"), "hello", cwd=tmp_path)
    assert missing.returncode == 2
    assert "error: workspace" in missing.stderr and "does not exist" in missing.stderr
    ask = cli("run", "--offline", "--permission", "bash=ask", "-w", str(tmp_path), "hello", cwd=tmp_path)
    assert ask.returncode == 2
    assert "'ask'" in ask.stderr and "on_permission" in ask.stderr


# ----------------------------------------------------------------------------- batch


def open_for_writing(fifo: Path, timeout_s: float = COMMAND_TIMEOUT_S) -> int:
    """Open ``fifo`` for writing, which returns once a process opened it for reading."""
    opened: list[int] = []
    opener = threading.Thread(target=lambda: opened.append(os.open(fifo, os.O_WRONLY)), daemon=True)
    opener.start()
    opener.join(timeout_s)
    if opener.is_alive():
        unblock = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # lets the waiting open() return
        opener.join()
        os.close(opened[0])
        os.close(unblock)
        raise AssertionError(f"no process read {fifo} within {timeout_s} s")
    return opened[0]


def _write_tasks(path: Path, tasks: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(task) + "\n" for task in tasks), encoding="utf-8")
    return path


def test_batch_writes_a_result_line_per_task_and_exits_1_on_a_failure(
    tmp_path: Path, opencode_binary: str
) -> None:
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    tasks = _write_tasks(
        tmp_path / "tasks.jsonl",
        [
            {"name": "good", "prompt": "[[bash: echo from-a]]", "workspace": "a"},
            # A line's RunConfig fields win over the command line's: this model does not exist.
            {"name": "bad-model", "prompt": "hello", "workspace": "b", "model": "offline/missing"},
        ],
    )
    done = cli("batch", "--offline", str(tasks), "--out", "results.jsonl", cwd=tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    records = {r["name"]: r for r in map(json.loads, (tmp_path / "results.jsonl").read_text().splitlines())}
    assert set(records) == {"good", "bad-model"}
    good, bad = records["good"], records["bad-model"]
    assert good["ok"] is True and good["final_text"] == "Tool results: bash: from-a"
    assert good["tools"] == ["bash"] and good["tokens"]["total"] == 25
    assert good["workspace"] == str(tmp_path / "a") and good["index"] == 0
    assert bad["ok"] is False and bad["error"]["kind"] in ("error_event", "process_exit", "session_error")
    lines = done.stdout.splitlines()
    assert "tool   good           bash completed: echo from-a" in lines
    assert any(line.startswith("failed bad-model") for line in lines)
    assert lines[-1].startswith("2 tasks: 1 ok, 1 failed; 25 tokens")


def test_batch_refuses_a_bad_tasks_file(tmp_path: Path) -> None:
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text(
        '{"prompt": "hi", "workspace": "."}\n{"promt": "typo", "workspace": "."}\n', encoding="utf-8"
    )
    done = cli("batch", "--offline", str(tasks), cwd=tmp_path)
    assert done.returncode == 2
    assert "tasks.jsonl line 2: unknown key 'promt'" in done.stderr
    assert not (tmp_path / "tasks.results.jsonl").exists()


def test_batch_interrupted_keeps_finished_results_and_leaves_no_process(
    tmp_path: Path, opencode_binary: str
) -> None:
    fifos = {name: tmp_path / name / "wait.fifo" for name in ("block1", "block2")}
    lines = []
    for name in ("quick1", "block1", "quick2", "block2"):
        (tmp_path / name).mkdir()
        # A blocking task's bash command reads a FIFO in its workspace: it runs until the interruption.
        prompt = "[[bash: cat wait.fifo]]" if name in fifos else f"[[say: {name} done]]"
        lines.append({"name": name, "prompt": prompt, "workspace": name})
    for fifo in fifos.values():
        os.mkfifo(fifo)
    tasks = _write_tasks(tmp_path / "tasks.jsonl", lines)
    proc = subprocess.Popen(
        [sys.executable, "-m", "opencode_wrapper", "batch", "--offline", str(tasks), "--concurrency", "4"],
        cwd=tmp_path,
        env=cli_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    writers = []
    try:
        assert proc.stdout is not None
        finished = []
        while len(finished) < 2:
            line = proc.stdout.readline()
            assert line, f"the batch ended early: {proc.wait()} {proc.stderr.read() if proc.stderr else ''}"
            if line.startswith(("ok ", "failed ")):
                finished.append(line)
        # Opening a FIFO for writing returns once its reader runs: both blocking commands are running.
        writers = [open_for_writing(fifo) for fifo in fifos.values()]
        tree = psutil.Process(proc.pid).children(recursive=True)
        assert any(p.name() == "cat" for p in tree), [p.name() for p in tree]
        proc.send_signal(signal.SIGINT)
        rest, errors = proc.communicate(timeout=120)
    finally:
        for fd in writers:
            os.close(fd)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, errors
    assert all("quick" in line for line in finished)
    assert "interrupted: 2 of 4 tasks finished (0 failed); 2 cancelled; 2 result lines in" in rest
    records = [json.loads(line) for line in (tmp_path / "tasks.results.jsonl").read_text().splitlines()]
    assert sorted(r["name"] for r in records) == ["quick1", "quick2"]
    assert all(r["ok"] and r["final_text"] == f"{r['name']} done" for r in records)
    left = [p for p in tree if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert not left, [(p.pid, p.name()) for p in left]


# ----------------------------------------------------------------------------- demo


def test_demo_runs_the_workflow_in_the_live_view(tmp_path: Path, opencode_binary: str) -> None:
    code, output = run_in_terminal(
        [sys.executable, "-m", "opencode_wrapper", "demo"], cwd=tmp_path, env=cli_env(), columns=140
    )
    text = strip_ansi(output)
    assert code == 0, text[-3000:]
    # The live table (a terminal gets it) with its columns, and the progress line with an ETA.
    for header in ("Agent", "Workspace", "Elapsed", "Tool", "Tokens", "Cost", "State"):
        assert header in text
    assert "ETA" in text and "running" in text
    assert "bash completed" in text
    # Then what examples/demo.py prints.
    assert "  [api] 4 lines, 1 TODOs   (tools: bash; ok)" in text
    assert "  [worker] 7 lines, 2 TODOs   (tools: bash; ok)" in text
    assert "  [gateway] 5 lines, 1 TODOs   (tools: bash; ok)" in text
    assert "Summary: 3 services, 16 lines of Python, 4 TODOs; most TODOs: worker." in text
    assert "; 4 agents in " in text


# ----------------------------------------------------------------------------- doctor


def test_doctor_passes_with_the_pinned_binary(tmp_path: Path, opencode_binary: str) -> None:
    done = cli("doctor", cwd=tmp_path, env=cli_env(XDG_CONFIG_HOME=str(tmp_path / "config")))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "[ok  ] opencode binary" in done.stdout
    assert "[ok  ] opencode version  1.18.33" in done.stdout
    assert "[ok  ] smoke run" in done.stdout
    assert "All checks passed" in done.stdout


def test_doctor_explains_what_is_wrong(tmp_path: Path) -> None:
    impostor = tmp_path / "opencode"
    impostor.write_text("#!/bin/sh\necho hello\n", encoding="utf-8")
    impostor.chmod(impostor.stat().st_mode | stat.S_IXUSR)
    config = tmp_path / "config" / "opencode"
    config.mkdir(parents=True)
    (config / "opencode.json").write_text('{"provider": {"anthropic": {}},,}', encoding="utf-8")
    env = cli_env(OPENCODE_BINARY=str(impostor), XDG_CONFIG_HOME=str(tmp_path / "config"))
    done = cli("doctor", cwd=tmp_path, env=env)
    assert done.returncode == 1, done.stdout + done.stderr
    out = done.stdout
    assert "[FAIL] opencode version" in out and "is not opencode" in out
    assert f"{impostor} (set by OPENCODE_BINARY) is not an opencode executable" in out
    assert "opencode-wrapper install-opencode" in out
    assert "[FAIL] provider config" in out and "Fix the JSON(C) syntax" in out
    assert "[skip] smoke run" in out
    assert "2 check(s) failed: opencode version, provider config" in out


# ----------------------------------------------------------------------------- chat


def test_chat_in_a_terminal_asks_before_running_a_command(
    terminal: list[Terminal], workspace: Path, opencode_binary: str
) -> None:
    argv = [sys.executable, "-m", "opencode_wrapper", "chat", "--offline", "-w", str(workspace)]
    term = Terminal(argv, cwd=workspace.parent, env=cli_env())
    terminal.append(term)
    term.expect("asks before: bash, edit, webfetch")
    term.expect("you> ")
    # Approved once: the command runs and the model sees its output.
    term.send("[[bash: echo chat-marker-7]]")
    term.expect("[permission] bash: echo chat-marker-7")
    term.expect("allow? [y]es once, [a]lways, [n]o, or type a reason to refuse: ")
    term.send("y")
    shown = term.expect("you> ")
    assert "[tool] bash completed: echo chat-marker-7" in shown
    assert "    | chat-marker-7" in shown
    assert "Tool results: bash: chat-marker-7" in shown
    assert "[ok] 2 steps" in shown
    # Refused with a reason: the command does not run and the model gets the reason.
    term.send(f"[[bash: touch {workspace}/refused]]")
    term.expect("[permission] bash: touch")
    term.expect("refuse: ")
    term.send("not in my repo")
    shown = term.expect("you> ")
    assert "[tool] bash error" in shown
    assert (
        "rejected permission to use this specific tool call with the following feedback: not in my repo"
        in shown
    )
    assert not (workspace / "refused").exists()
    # Several turns, one session: the model remembers.
    term.send("My name is Ada.")
    term.expect("you> ")
    term.send("What is my name?")
    assert "Your name is Ada." in term.expect("you> ")
    tree = psutil.Process(term.proc.pid).children(recursive=True)
    assert any("opencode" in " ".join(p.cmdline()) for p in tree)
    term.send("/exit")
    assert term.wait() == 0
    left = [p for p in tree if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert not left, [(p.pid, p.name()) for p in left]
