"""The blocking API (opencode_wrapper.sync) end to end: the real pinned opencode and the offline model.

One warm client (one ``opencode serve``) and one workspace serve most tests of the module:
opencode boots an instance per directory, which costs seconds on the first prompt there.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from opencode_wrapper import Event, RunConfig, sync
from opencode_wrapper.testing import OfflineModelServer

pytestmark = pytest.mark.e2e

# opencode config for faster turns: no git snapshot per step, no title request.
FAST = {"snapshot": False, "agent": {"title": {"disable": True}}}


@pytest.fixture(scope="module")
def model() -> Iterator[OfflineModelServer]:
    with OfflineModelServer() as server:
        yield server


@pytest.fixture(scope="module")
def config(model: OfflineModelServer) -> RunConfig:
    return model.run_config(config_overrides=FAST)


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sync-e2e") / "ws"
    path.mkdir()
    subprocess.run(["git", "init", "-q", str(path)], check=True)
    (path / "README.md").write_text("# scratch workspace\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def warm(opencode_binary: str, shared: Path) -> Iterator[sync.Client]:
    with sync.Client(opencode_binary, startup_delay_s=0, warm_servers=True) as client:
        yield client
    assert _processes_in(shared) == []  # the servers and everything they started ended with close()


def _processes_in(root: Path) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["pid"]):
        try:
            cwd = proc.cwd()
            if (cwd == str(root) or cwd.startswith(f"{root}/")) and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except psutil.Error:
            continue
    return found


def test_run_in_run_mode(opencode_binary: str, config: RunConfig, workspace: Path) -> None:
    seen: list[tuple[str, int]] = []

    def on_event(event: Event) -> None:
        seen.append((event.type, threading.get_ident()))

    with sync.Client(opencode_binary, startup_delay_s=0) as client:
        result = client.run(
            "[[bash: echo sync-run-mode]]", workspace, run_cfg=config, timeout_s=120, on_event=on_event
        )
    assert result.ok, result.error
    assert result.exit_code == 0 and result.tools == ["bash"]
    assert "sync-run-mode" in result.final_text
    assert [kind for kind, _ in seen] == [ev.type for ev in result.events]
    assert {ident for _, ident in seen} == {threading.get_ident()}


def test_run_stream_and_run_many_on_warm_servers(warm: sync.Client, config: RunConfig, shared: Path) -> None:
    result = warm.run("[[say: hello from a warm server]]", shared, run_cfg=config, timeout_s=120)
    assert result.ok, result.error
    assert result.final_text == "hello from a warm server"

    events = warm.stream("[[say: streamed word by word]]", shared, run_cfg=config, timeout_s=120)
    kinds = [event.type for event in events]
    assert "message.part.delta" in kinds  # a server streams the text as it is written
    assert events.result.ok and events.result.final_text == "streamed word by word"
    assert events.result.texts == ["streamed word by word"]

    outcomes = sync.run_many([(f"[[say: task {i}]]", shared) for i in range(3)], client=warm, run_cfg=config)
    assert [o.index for o in outcomes] == [0, 1, 2]
    assert [o.result.final_text for o in outcomes if o.result] == ["task 0", "task 1", "task 2"]


async def test_the_sync_api_inside_a_running_event_loop(
    warm: sync.Client, config: RunConfig, shared: Path
) -> None:
    # As in a Jupyter cell: this coroutine's loop is running (and blocked) while sync.run waits.
    result = warm.run("[[say: called from a coroutine]]", shared, run_cfg=config, timeout_s=120)
    assert result.ok and result.final_text == "called from a coroutine"
    assert [
        o.ok for o in sync.run_many([("[[say: batch in a loop]]", shared)], client=warm, run_cfg=config)
    ] == [True]


def test_session_with_permission_callbacks(
    opencode_binary: str, model: OfflineModelServer, shared: Path
) -> None:
    asked: list[tuple[str, str]] = []
    main = threading.get_ident()

    def approve(request: dict[str, Any]) -> str:  # a plain function: a worker thread runs it
        asked.append((request["patterns"][0], "main" if threading.get_ident() == main else "worker"))
        return "once"

    async def reject(request: dict[str, Any]) -> str:  # an async one: the client's loop runs it
        asked.append((request["patterns"][0], "loop"))
        return "reject"

    cfg = model.run_config(permission={"bash": "ask"}, config_overrides=FAST)
    with (
        sync.Client(opencode_binary, startup_delay_s=0) as client,
        sync.Session(client, shared, run_cfg=cfg, on_permission=approve) as session,
    ):
        first = session.send("[[bash: echo approved-in-a-thread]]", timeout_s=120)
        second = session.send("[[bash: echo rejected-on-the-loop]]", on_permission=reject, timeout_s=120)
        turn = session.stream("My name is Bob.")
        kinds = [event.type for event in turn]
        assert session.session_id is not None and session.session_id.startswith("ses")
    assert first.ok and first.final_text == "Tool results: bash: approved-in-a-thread"
    assert second.error is not None and second.error.kind == "permission_rejected"
    assert asked == [("echo approved-in-a-thread", "worker"), ("echo rejected-on-the-loop", "loop")]
    assert "message.part.delta" in kinds
    assert turn.result.ok and turn.result.final_text == "You said: My name is Bob."


INTERRUPTED = """
import json, os, sys
import psutil
from opencode_wrapper import RunConfig, sync

workspace = os.path.realpath(sys.argv[1])
config = RunConfig(model="offline/scripted", config_overrides=json.loads(sys.argv[2]))
print("running", flush=True)
try:
    sync.run("[[bash: sleep 60]]", workspace, run_cfg=config, timeout_s=120)
except KeyboardInterrupt:
    # What still runs in the workspace when the interrupt reaches this program's code.
    left = []
    for proc in psutil.process_iter(["cwd", "cmdline"]):
        if (proc.info["cwd"] or "").startswith(workspace) and proc.status() != psutil.STATUS_ZOMBIE:
            left.append(" ".join(proc.info["cmdline"] or []))
    print("left:", json.dumps(left), flush=True)
    raise
"""


def test_a_real_sigint_ends_sync_run_and_leaves_no_process(
    opencode_binary: str, model: OfflineModelServer, workspace: Path, tmp_path: Path
) -> None:
    script = tmp_path / "interrupted.py"
    script.write_text(INTERRUPTED, encoding="utf-8")
    overrides = json.dumps(model.run_config(config_overrides=FAST).config_overrides)
    with subprocess.Popen(
        [sys.executable, str(script), str(workspace), overrides],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OPENCODE_BINARY": opencode_binary},
    ) as program:
        try:
            assert program.stdout is not None and program.stdout.readline() == "running\n"
            _wait_for_sleep(workspace)  # the bash tool's `sleep 60` runs
            program.send_signal(signal.SIGINT)
            stdout, stderr = program.communicate(timeout=60)
        finally:
            if program.poll() is None:
                program.kill()
    assert program.returncode == -signal.SIGINT, stderr
    assert "KeyboardInterrupt" in stderr
    # opencode, bash and sleep had ended when the KeyboardInterrupt was raised.
    assert stdout.splitlines() == ["left: []"], stderr
    assert _processes_in(workspace) == []


def _wait_for_sleep(workspace: Path, timeout_s: float = 90.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for proc in _processes_in(workspace):
            try:
                if proc.cmdline()[:2] == ["sleep", "60"]:
                    return
            except psutil.Error:
                continue
        time.sleep(0.1)
    raise AssertionError("the bash tool's `sleep 60` never started")
