"""End-to-end: the real ``opencode run --format json`` against the offline model.

The binary comes from ``OPENCODE_BINARY``. opencode is started directly with ``subprocess`` (not
through the wrapper's client), with private XDG directories, in a scratch git repository, and the
prompt written to its stdin. Each run costs ~2.5 s, so this file keeps to six runs.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from opencode_wrapper.testing import MODEL, OfflineModelProcess, OfflineModelServer, Reply, Usage

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def opencode_binary() -> str:
    binary = os.environ.get("OPENCODE_BINARY")
    if not binary:
        pytest.fail(
            "OPENCODE_BINARY is not set: point it at the opencode 1.18.33 executable "
            "(`make setup` installs .opencode/1.18.33/node_modules/.bin/opencode)"
        )
    if not os.access(binary, os.X_OK):
        pytest.fail(f"OPENCODE_BINARY={binary!r} is not an executable file")
    return binary


@dataclass
class Run:
    returncode: int
    events: list[dict[str, Any]]
    stderr: str

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] == kind]

    @property
    def texts(self) -> list[str]:
        return [e["part"]["text"] for e in self.of_type("text")]


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """A scratch git repository (``repo``) next to private XDG directories."""
    subprocess.run(["git", "init", "-q", str(tmp_path / "repo")], check=True)
    return tmp_path


def run_opencode(binary: str, config: dict[str, Any], prompt: str, workspace: Path, *args: str) -> Run:
    """``opencode run --format json -m offline/scripted [args]`` with ``prompt`` written to stdin."""
    env = {**os.environ, "OPENCODE_CONFIG_CONTENT": json.dumps(config), "OPENCODE_DISABLE_AUTOUPDATE": "1"}
    for name in ("XDG_DATA_HOME", "XDG_CONFIG_HOME", "XDG_CACHE_HOME", "XDG_STATE_HOME"):
        env[name] = str(workspace / name.lower())
    process = subprocess.Popen(
        [binary, "run", "--format", "json", "-m", MODEL, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=workspace / "repo",
        env=env,
    )
    try:
        # Write the prompt and close stdin: `run` reads stdin to EOF and sends it as the message.
        stdout, stderr = process.communicate(prompt.encode(), timeout=90)
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()
    events = [json.loads(line) for line in stdout.decode().splitlines() if line.strip()]
    return Run(process.returncode, events, stderr.decode())


def test_text_reasoning_and_token_usage_reach_opencode(opencode_binary: str, workspace: Path) -> None:
    usage = Usage(prompt_tokens=123, completion_tokens=45)
    reply = Reply.text("Hello from the offline model.", reasoning="Thinking it over.", usage=usage)
    with OfflineModelServer(rules=[("usage probe", reply)]) as model:
        run = run_opencode(
            opencode_binary,
            model.run_config().build_opencode_config_dict(),
            "usage probe",
            workspace,
            "--thinking",
        )
        chats = model.chat_requests
    assert run.returncode == 0, run
    assert run.texts == ["Hello from the offline model."]
    assert [e["part"]["text"] for e in run.of_type("reasoning")] == ["Thinking it over."]
    (finish,) = run.of_type("step_finish")
    tokens = finish["part"]["tokens"]
    assert (tokens["input"], tokens["output"], tokens["total"]) == (123, 45, 168), tokens
    assert finish["part"]["reason"] == "stop"
    assert len(chats) == 1 and "bash" in chats[0].tool_names


def test_bash_directive_runs_the_tool_and_the_answer_quotes_its_output(
    opencode_binary: str, workspace: Path
) -> None:
    with OfflineModelServer() as model:
        config = model.run_config(permission={"bash": "allow"}).build_opencode_config_dict()
        run = run_opencode(opencode_binary, config, "[[bash: echo hi]]", workspace)
        chats = model.chat_requests
    assert run.returncode == 0, run
    (tool,) = run.of_type("tool_use")
    assert tool["part"]["tool"] == "bash"
    assert tool["part"]["state"]["status"] == "completed"
    assert tool["part"]["state"]["input"] == {"command": "echo hi", "description": "Run a command"}
    assert run.texts == ["Tool results: bash: hi"]
    assert [e["part"]["reason"] for e in run.of_type("step_finish")] == ["tool-calls", "stop"]
    # The second request carries the tool result, and the directive was not obeyed again.
    assert len(chats) == 2
    assert [(r.name, r.output) for r in chats[1].tool_results] == [("bash", "hi\n")]


def test_401_from_the_model_is_an_error_event_and_exit_code_1(opencode_binary: str, workspace: Path) -> None:
    # Through the subprocess form, steered by a rules file: it is what CI jobs outside Python use.
    rules = [{"match": "^please fail", "reply": {"error": 401, "message": "offline says no"}}]
    with OfflineModelProcess(rules=rules) as model:
        run = run_opencode(
            opencode_binary, model.run_config().build_opencode_config_dict(), "please fail", workspace
        )
    assert run.returncode == 1, run
    (error,) = run.of_type("error")
    assert error["error"]["name"] == "APIError"
    assert error["error"]["data"]["statusCode"] == 401
    assert error["error"]["data"]["message"] == "offline says no"
    assert error["error"]["data"]["isRetryable"] is False


def test_prompt_reaches_the_model_byte_for_byte(opencode_binary: str, workspace: Path) -> None:
    # Quotes, a leading dash, unicode, inner and trailing newlines. Measured with 1.18.33: a prompt
    # written to stdin is sent exactly as written; the trailing newline is NOT stripped.
    prompt = "-n \"double\" 'single' `tick` $HOME\n  second line: ünïcödé — 日本語 🚀\n\n"
    with OfflineModelServer() as model:
        run = run_opencode(
            opencode_binary, model.run_config().build_opencode_config_dict(), prompt, workspace
        )
        requests = model.requests
    assert run.returncode == 0, run
    (chat,) = [r for r in requests if r.is_chat and not r.is_title_request]
    assert chat.last_user_text == prompt
    assert chat.messages[-1] == {"role": "user", "content": prompt}
    assert run.texts == ["You said: " + prompt.strip()]
    # The title request (measured shape): title-generator system prompt, a fixed user line, the prompt.
    (title,) = [r for r in requests if r.is_title_request]
    assert [m["role"] for m in title.messages] == ["system", "user", "user"]
    assert title.messages[1]["content"] == "Generate a title for this conversation:\n"
    assert title.last_user_text == prompt
    assert title.tool_names == []


def test_history_is_sent_on_a_continued_session(opencode_binary: str, workspace: Path) -> None:
    # Two runs sharing a data directory: `-c` continues the last session, so the name is in the history.
    with OfflineModelServer() as model:
        config = model.run_config().build_opencode_config_dict()
        first = run_opencode(opencode_binary, config, "Hello, my name is Grace Hopper.", workspace)
        second = run_opencode(opencode_binary, config, "What is my name?", workspace, "-c")
        last = model.chat_requests[-1]
    assert first.returncode == 0 and second.returncode == 0, (first, second)
    assert second.texts == ["Your name is Grace Hopper."]
    assert [m["role"] for m in last.messages] == ["system", "user", "assistant", "user"]
