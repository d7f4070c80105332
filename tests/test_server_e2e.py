"""``OpenCodeServer`` end to end: start, auth, death, shutdown and attach, on the real pinned opencode.

The shutdown test runs opencode's defaults (git snapshots and titles included, so their processes
must end too); the others switch both off to save seconds per turn.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from opencode_wrapper import OpenCodeConfigError, OpenCodeServerError, RunConfig
from opencode_wrapper._http import ServerHTTPError
from opencode_wrapper.server import OpenCodeServer
from opencode_wrapper.testing import OfflineModelServer

pytestmark = pytest.mark.e2e

FAST = {"snapshot": False, "agent": {"title": {"disable": True}}}


@pytest.fixture
def model() -> Iterator[OfflineModelServer]:
    with OfflineModelServer() as server:
        yield server


@pytest.fixture
def private_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Route this process's temp dirs into the test's folder, to prove they are removed."""
    root = tmp_path / "tmp"
    root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    return root


def opencode_of(server: OpenCodeServer) -> psutil.Process:
    """The opencode process (the only child of the supervisor)."""
    assert server.pid is not None
    children = psutil.Process(server.pid).children()
    assert len(children) == 1, children
    return children[0]


def tree(server: OpenCodeServer) -> list[psutil.Process]:
    assert server.pid is not None
    root = psutil.Process(server.pid)
    return [root, *root.children(recursive=True)]


async def approve(request: dict[str, Any]) -> str:
    return "once"


async def test_server_killed_during_a_turn_fails_the_turn_within_2_s(
    model: OfflineModelServer, opencode_binary: str, workspace: Path
) -> None:
    cfg = model.run_config(config_overrides=FAST)
    async with OpenCodeServer(binary=opencode_binary, run_cfg=cfg, cwd=workspace) as server:
        async with server.session(workspace) as s:
            stream = s.stream("[[hang]]")
            async for ev in stream:
                if ev.type == "session.status" and ev.properties["status"]["type"] == "busy":
                    break
            opencode = opencode_of(server)
            waiting = asyncio.ensure_future(stream.__anext__())
            killed_at = time.monotonic()
            opencode.send_signal(signal.SIGKILL)
            with pytest.raises(OpenCodeServerError) as caught:
                while True:
                    await waiting
                    waiting = asyncio.ensure_future(stream.__anext__())
            detected_s = time.monotonic() - killed_at
            with pytest.raises(OpenCodeServerError):
                await s.send("anything")  # the server is known dead: fails at once
        assert not server.alive
    error = caught.value
    print(f"server death detected after {detected_s * 1000:.0f} ms")
    assert detected_s < 2.0
    assert "exited unexpectedly" in str(error) and "signal 9" in str(error)
    assert error.result is not None and error.result.error is not None
    assert error.result.error.kind == "server_failure"
    assert stream.result is error.result


async def test_refuses_unauthenticated_requests_and_shuts_down_cleanly(
    model: OfflineModelServer, opencode_binary: str, workspace: Path, private_tmp: Path
) -> None:
    cfg = model.run_config(permission={"bash": "ask"})
    server = OpenCodeServer(binary=opencode_binary, run_cfg=cfg, cwd=workspace)
    async with server:
        assert server.url is not None and re.fullmatch(r"http://127\.0\.0\.1:\d+", server.url)
        async with httpx.AsyncClient(trust_env=False) as raw:
            anonymous = await raw.get(f"{server.url}/session")
            wrong = await raw.get(f"{server.url}/global/health", auth=("opencode", "wrong"))
        assert anonymous.status_code == 401 and wrong.status_code == 401
        assert list(private_tmp.iterdir()), "the server's private dirs are in the temp dir"

        # A one-shot run, then a turn left running (a 60 s command) when the server closes.
        seen: list[Any] = []
        log = workspace.parent / "one-shot.jsonl"
        one_shot = await server.run("[[say: one shot]]", workspace, on_event=seen.append, log_file=log)
        assert one_shot.final_text == "one shot"
        assert seen == one_shot.events and len(log.read_text(encoding="utf-8").splitlines()) >= len(seen)
        session = await server.session(workspace, on_permission=approve).__aenter__()
        turn = asyncio.ensure_future(session.send("[[bash: sleep 60]]"))
        sleeper = await _wait_for(lambda: [p for p in tree(server) if p.name() == "sleep"])
        everything = tree(server)
    closed_at = time.monotonic()
    # The closing server aborted the turn: it ends as aborted, or fails because the server is gone.
    try:
        ended = await turn
        assert ended.error is not None and ended.error.kind == "aborted"
    except OpenCodeServerError as exc:
        assert "closed" in str(exc)
    assert time.monotonic() - closed_at < 10
    gone, alive = psutil.wait_procs(everything, timeout=5)
    assert alive == [] and sleeper[0] in gone
    assert list(private_tmp.iterdir()) == []
    await server.aclose()  # idempotent


async def _wait_for(probe: Any, timeout_s: float = 60) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            found = probe()
        except psutil.Error:
            found = None
        if found:
            return found
        await asyncio.sleep(0.05)
    raise AssertionError("condition not reached in time")


async def test_a_failed_start_says_why(tmp_path: Path, workspace: Path) -> None:
    fake = tmp_path / "opencode"
    fake.write_text(
        "#!/bin/sh\n"
        'if [ "$1" = "--version" ]; then echo 1.18.33; exit 0; fi\n'
        "echo 'Error: cannot open the database' >&2\n"
        "exit 3\n",
        encoding="utf-8",
    )
    fake.chmod(0o755)
    with pytest.raises(OpenCodeServerError) as caught:
        async with OpenCodeServer(binary=str(fake), cwd=workspace):
            pass
    assert "exited with code 3 before listening" in str(caught.value)
    assert "cannot open the database" in caught.value.stderr


async def test_a_config_opencode_refuses_fails_the_session_clearly(
    model: OfflineModelServer, opencode_binary: str, workspace: Path
) -> None:
    broken = model.run_config(config_overrides={"share": 5})  # serve reads the config per directory
    async with OpenCodeServer(binary=opencode_binary, run_cfg=broken, cwd=workspace) as server:
        with pytest.raises(OpenCodeServerError) as caught:
            async with server.session(workspace):
                pass
    assert "share" in str(caught.value)


@pytest.fixture
def external(
    opencode_binary: str, model: OfflineModelServer, tmp_path: Path
) -> Iterator[tuple[str, str, Any]]:
    """An ``opencode serve`` started by "someone else" (here: plain subprocess), with a password."""
    from opencode_wrapper._proc.environment import prepare_environment

    password = secrets.token_urlsafe(16)
    home = tmp_path / "external"
    home.mkdir()
    prepared = prepare_environment(
        model.run_config(config_overrides=FAST), cwd=str(home), data_home=home / "data"
    )
    env = dict(prepared.env, OPENCODE_SERVER_PASSWORD=password)
    proc = subprocess.Popen(
        [opencode_binary, "serve", "--hostname", "127.0.0.1", "--port", "0"],
        cwd=home,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().decode()
        match = re.search(r"listening on (http://\S+)", line)
        assert match, line
        yield match.group(1), password, proc
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        prepared.cleanup()


async def test_attach_to_an_external_server(external: tuple[str, str, Any], workspace: Path) -> None:
    url, password, proc = external
    with pytest.raises(ServerHTTPError) as refused:
        async with OpenCodeServer.attach(url, password="not-the-pass-9f3e"):
            pass
    assert refused.value.status_code == 401 and "not-the-pass-9f3e" not in str(refused.value)

    server = OpenCodeServer.attach(url, password=password)
    assert not server.owned and server.pid is None and password not in repr(server)
    async with server, server.session(workspace) as s:
        first = await s.send("My name is Carol.")
        second = await s.send("What is my name?")
        async for _ in s.stream("[[say: streamed from afar]]"):
            pass
    assert first.ok and second.final_text == "Your name is Carol."
    assert proc.poll() is None, "aclose() of an attached server must not stop it"
    async with httpx.AsyncClient(trust_env=False) as raw:
        health = await raw.get(f"{url}/global/health", auth=("opencode", password))
    assert health.status_code == 200


async def test_config_errors_come_before_any_process(opencode_binary: str, tmp_path: Path) -> None:
    from opencode_wrapper import AsyncOpenCodeClient, OpenCodeConfigError
    from opencode_wrapper.session import OpenCodeSession

    def not_async(request: dict[str, Any]) -> str:
        return "once"

    before = {p.pid for p in psutil.Process().children(recursive=True)}
    client = AsyncOpenCodeClient(opencode_binary)
    with pytest.raises(OpenCodeConfigError, match="async"):
        OpenCodeSession(client, tmp_path, on_permission=not_async)  # type: ignore[arg-type]
    with pytest.raises(OpenCodeConfigError, match="async"):
        OpenCodeSession(client, tmp_path, on_question=not_async)  # type: ignore[arg-type]
    with pytest.raises(OpenCodeConfigError):
        OpenCodeSession(client, tmp_path / "missing")
    with pytest.raises(OpenCodeConfigError):
        OpenCodeServer(run_cfg=RunConfig(permission={"bash": "maybe"}))
    with pytest.raises(OpenCodeConfigError):
        OpenCodeServer.attach("not a url")
    assert {p.pid for p in psutil.Process().children(recursive=True)} == before


async def test_a_titled_session_and_a_one_shot_run_cost_no_title_request(
    model: OfflineModelServer, opencode_binary: str, workspace: Path
) -> None:
    def title_requests(session_id: str | None) -> list[Any]:
        return [
            r for r in model.requests if r.is_title_request and r.headers.get("x-session-id") == session_id
        ]

    async with OpenCodeServer(binary=opencode_binary, run_cfg=model.run_config(), cwd=workspace) as server:
        one_shot = await server.run("[[say: one shot]]", workspace)
        async with server.session(workspace, title="Nightly triage") as titled:
            assert (await titled.send("[[say: titled]]")).ok
            info = await server.request(
                "GET", f"/session/{titled.session_id}", params={"directory": str(workspace)}
            )
            assert info["title"] == "Nightly triage"
        # The control: an untitled session does ask the model for a title. Its request comes
        # after the other two prompts started, so theirs would have come by then too.
        async with server.session(workspace) as untitled:
            assert (await untitled.send("[[say: untitled]]")).ok
            deadline = time.monotonic() + 60
            while not title_requests(untitled.session_id) and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert title_requests(untitled.session_id), "the control session never asked for a title"
    assert one_shot.ok and one_shot.session_id
    assert title_requests(one_shot.session_id) == [] and title_requests(titled.session_id) == []


def test_a_blank_title_is_refused_before_anything_starts(opencode_binary: str, workspace: Path) -> None:
    server = OpenCodeServer(binary=opencode_binary)
    with pytest.raises(OpenCodeConfigError, match="title must be a non-empty string"):
        server.session(workspace, title="  ")
    assert server.pid is None
