"""The ``RunHandle`` contract on a scripted fake backend, and what each real backend refuses up front.

The fake's ``_produce`` plays a script: an event dict is folded and emitted (then it yields to
the loop, as a real transport does between lines), an ``asyncio.Event`` is a gate it waits at,
an exception is raised. Its ``finally`` does some asynchronous clean-up and then sets
``cleaned_up``, so a test sees whether the run was really ended, not just told to end.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest

from fakes import activity as A
from opencode_wrapper._model.fold import Fold
from opencode_wrapper._turn.link import SessionLink
from opencode_wrapper.backends.base import Backend
from opencode_wrapper.backends.handle import RunHandle
from opencode_wrapper.backends.process import ProcessBackend
from opencode_wrapper.backends.request import RunRequest
from opencode_wrapper.backends.server import ServerBackend
from opencode_wrapper.client import AsyncOpenCodeClient
from opencode_wrapper.config import RunConfig
from opencode_wrapper.errors import OpenCodeBinaryNotFoundError, OpenCodeConfigError
from opencode_wrapper.events import Event, TextEvent, as_event
from opencode_wrapper.results import RunError, RunResult
from opencode_wrapper.server import OpenCodeServer

Step = dict[str, Any] | asyncio.Event | BaseException


class ScriptedRun(RunHandle):
    backend = "fake"

    def __init__(self, request: RunRequest, script: list[Step]) -> None:
        super().__init__(request)
        self._script = script
        self._fold = Fold()
        self.produced = False
        self.cleaned_up = False
        self.at_gate = asyncio.Event()

    async def _produce(self) -> None:
        self.produced = True
        try:
            for step in self._script:
                if isinstance(step, asyncio.Event):
                    self.at_gate.set()
                    await step.wait()
                elif isinstance(step, BaseException):
                    raise step
                else:
                    event = as_event(step)
                    self._fold.add(event)
                    self._emit(event)
                    await asyncio.sleep(0)
        finally:
            for _ in range(3):  # clean-up takes a few turns of the loop, like ending a process tree
                await asyncio.sleep(0)
            self.cleaned_up = True

    def _partial(self) -> RunResult:
        return RunResult.from_fold(self._fold, exit_code=0)


class ScriptedBackend(Backend):
    name = "fake"

    def __init__(self, *script: Step) -> None:
        self.script = list(script)

    def check(self, request: RunRequest) -> None:
        return None

    def _handle(self, request: RunRequest) -> RunHandle:
        return ScriptedRun(request, self.script)


def open_run(tmp_path: Path, *script: Step, **options: Any) -> ScriptedRun:
    handle = ScriptedBackend(*script).open(RunRequest.create("do it", tmp_path, **options))
    assert isinstance(handle, ScriptedRun)
    return handle


EVENTS = A.run_events()


# ----------------------------------------------------------------------------- the RunHandle contract


async def test_iterating_gives_every_event_then_the_result(tmp_path: Path) -> None:
    run = open_run(tmp_path, *EVENTS)
    assert "new" in repr(run) and not run.done
    async with run:
        got = [event async for event in run]
    assert got == EVENTS and all(isinstance(ev, Event) for ev in got) and isinstance(got[6], TextEvent)
    assert run.done and run.cleaned_up and "done" in repr(run)
    result = run.result
    assert result.ok and result.final_text == A.ANSWER and result.events == got
    assert await run.wait() is result


async def test_wait_returns_a_failed_runs_result_and_never_raises_for_it(tmp_path: Path) -> None:
    run = open_run(tmp_path, EVENTS[0], A.run_error_event())
    result = await run.wait()
    assert result.error is not None and (result.error.kind, result.error.status_code) == ("api_error", 500)
    assert run.result is result and run.cleaned_up


async def test_timeout_ends_the_run_with_its_partial_result(tmp_path: Path) -> None:
    never = asyncio.Event()
    run = open_run(tmp_path, EVENTS[0], EVENTS[1], never, EVENTS[2], timeout_s=0.05)
    result = await run.wait()
    assert result.error is not None and result.error.kind == "timeout"
    assert result.error.detail == {"timeout_s": 0.05} and "timeout_s=0.05" in result.error.message
    assert result.events == EVENTS[:2] and [call.name for call in result.tool_calls] == ["bash"]
    assert run.cleaned_up and not never.is_set()


async def test_abort_ends_the_run_and_returns_what_it_did(tmp_path: Path) -> None:
    gate = asyncio.Event()
    run = open_run(tmp_path, EVENTS[0], gate, *EVENTS[1:])
    async with run:
        first = await run.__anext__()
        result = await run.abort()
    assert first == EVENTS[0]
    assert result.error is not None and result.error.kind == "aborted" and result.events == [first]
    assert run.cleaned_up and run.result is result
    assert await run.abort() is result  # aborting an ended run changes nothing


async def test_leaving_async_with_early_ends_the_run(tmp_path: Path) -> None:
    gate = asyncio.Event()
    run = open_run(tmp_path, EVENTS[0], gate, *EVENTS[1:])
    async with run:
        async for _ in run:
            break
    assert run.done and run.cleaned_up
    assert run.result.error is not None and run.result.error.kind == "aborted"
    assert run.result.events == EVENTS[:1]

    failing = open_run(tmp_path, EVENTS[0], asyncio.Event())
    with pytest.raises(KeyError, match="from the body"):
        async with failing:
            await failing.__anext__()
            raise KeyError("from the body")
    assert failing.done and failing.cleaned_up


async def test_stop_before_start_ends_the_run_at_once(tmp_path: Path) -> None:
    run = open_run(tmp_path, *EVENTS)
    reason = RunError(kind="budget_exhausted", message="no budget left")
    run.stop(reason)
    run.stop(RunError(kind="aborted", message="a second stop is ignored"))
    result = await run.wait()
    assert result.error is reason and result.events == []
    assert not run.produced  # nothing was started


async def test_a_cancelled_waiter_ends_the_run_then_cancellation_propagates(tmp_path: Path) -> None:
    run = open_run(tmp_path, EVENTS[0], asyncio.Event(), *EVENTS[1:])
    waiter = asyncio.create_task(run.wait())
    await run.at_gate.wait()
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert run.done and run.cleaned_up  # ended, clean-up finished, before the waiter saw its cancellation
    assert run.result.error is not None and run.result.error.kind == "cancelled"
    assert run.result.events == EVENTS[:1]


class SetupFailed(Exception):
    """Not about the run's outcome: bad set-up (no binary, an unsupported version)."""


async def test_an_exception_that_is_not_a_run_failure_propagates(tmp_path: Path) -> None:
    waited = open_run(tmp_path, EVENTS[0], SetupFailed("no opencode here"))
    with pytest.raises(SetupFailed, match="no opencode here"):
        await waited.wait()
    with pytest.raises(SetupFailed):
        _ = waited.result
    assert waited.cleaned_up

    iterated = open_run(tmp_path, EVENTS[0], OpenCodeBinaryNotFoundError("opencode not found"))
    got: list[Event] = []
    with pytest.raises(OpenCodeBinaryNotFoundError, match="opencode not found"):
        async with iterated:
            async for event in iterated:
                got.append(event)
    assert got == EVENTS[:1] and iterated.cleaned_up


async def test_log_file_gets_every_event_as_it_arrives(tmp_path: Path) -> None:
    log = tmp_path / "events.jsonl"
    gate = asyncio.Event()
    run = open_run(tmp_path, *EVENTS[:3], gate, *EVENTS[3:], log_file=log)
    run.start()
    await run.at_gate.wait()
    assert [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()] == EVENTS[:3]
    gate.set()
    await run.wait()
    assert [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()] == EVENTS
    assert stat.S_IMODE(os.stat(log).st_mode) == 0o600


async def test_on_event_sees_each_event_and_its_exception_does_not_break_the_run(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[Event] = []

    def on_event(event: Event) -> None:
        seen.append(event)
        if len(seen) == 1:
            raise RuntimeError("observer bug")

    run = open_run(tmp_path, *EVENTS, on_event=on_event, log_file=tmp_path / "log.jsonl")
    with caplog.at_level(logging.ERROR, logger="opencode_wrapper"):
        async with run:
            got = [event async for event in run]
    assert seen == EVENTS and got == EVENTS
    assert run.result.ok and run.result.final_text == A.ANSWER
    assert len((tmp_path / "log.jsonl").read_text(encoding="utf-8").splitlines()) == len(EVENTS)
    assert any("on_event" in record.getMessage() and record.exc_info for record in caplog.records)


async def test_the_result_before_the_end_is_a_runtime_error(tmp_path: Path) -> None:
    gate = asyncio.Event()
    run = open_run(tmp_path, EVENTS[0], gate, *EVENTS[1:])
    with pytest.raises(RuntimeError, match="has not ended yet"):
        _ = run.result
    run.start()
    await run.at_gate.wait()
    with pytest.raises(RuntimeError, match="has not ended yet"):
        _ = run.result
    gate.set()
    assert (await run.wait()).ok


# ----------------------------------------------------------------------------- refusals up front


@pytest.fixture
def no_spawn(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to start a process fails the test."""

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"a process was started: {args!r}")

    monkeypatch.setattr(asyncio, "create_subprocess_exec", refuse)
    monkeypatch.setattr(subprocess, "Popen", refuse)
    monkeypatch.setattr(subprocess, "run", refuse)


async def _on_request(request: dict[str, Any]) -> Any:
    return None


SCHEMA = {"type": "object", "properties": {"n": {"type": "integer"}}}
RUN_MODE_REFUSALS: list[tuple[dict[str, Any], str]] = [
    ({"on_permission": _on_request}, "on_permission cannot be honoured by the run-mode backend"),
    ({"on_question": _on_request}, "on_question cannot be honoured by the run-mode backend"),
    ({"output_schema": SCHEMA}, "output_schema cannot be honoured by the run-mode backend"),
    ({"run_cfg": RunConfig(permission={"bash": "ask"})}, "'ask' is not supported in run mode at 'bash'"),
    (
        {"run_cfg": RunConfig(permission={"edit": {"*.py": "ask"}})},
        "'ask' is not supported in run mode at 'edit.*.py'",
    ),
    ({"run_cfg": RunConfig(permission="ask")}, "'ask' is not supported in run mode"),  # type: ignore[arg-type]
]


@pytest.mark.parametrize(("options", "message"), RUN_MODE_REFUSALS)
async def test_process_backend_refuses_what_opencode_run_cannot_do(
    tmp_path: Path, no_spawn: None, options: dict[str, Any], message: str
) -> None:
    # A binary that does not exist: had the check got that far, it would say so instead.
    backend = ProcessBackend(tmp_path / "no-such-opencode")
    with pytest.raises(OpenCodeConfigError) as caught:
        backend.open(RunRequest.create("hi", tmp_path, **options))
    assert message in str(caught.value)
    client = AsyncOpenCodeClient(tmp_path / "no-such-opencode")
    with pytest.raises(OpenCodeConfigError, match=message.split(" ")[0]):
        await client.async_run("hi", tmp_path, **options)
    with pytest.raises(OpenCodeConfigError, match=message.split(" ")[0]):
        client.start("hi", tmp_path, **options)


async def test_process_backend_would_otherwise_look_for_the_binary(tmp_path: Path, no_spawn: None) -> None:
    backend = ProcessBackend(tmp_path / "no-such-opencode")
    with pytest.raises(OpenCodeBinaryNotFoundError):
        backend.open(RunRequest.create("hi", tmp_path, run_cfg=RunConfig(permission={"bash": "allow"})))


@pytest.fixture
def server(tmp_path: Path) -> OpenCodeServer:
    """A server object that is never started (its binary does not even exist)."""
    cfg = RunConfig(permission={"bash": "ask"}, instructions=["AGENTS.md"], model="offline/scripted")
    return OpenCodeServer(binary=tmp_path / "no-such-opencode", run_cfg=cfg, data_home=tmp_path / "srv-data")


def _request(
    server: OpenCodeServer, workspace: Path, run_cfg: RunConfig | None = None, **options: Any
) -> RunRequest:
    return RunRequest.create("hi", workspace, run_cfg=server.run_cfg.merged_with(run_cfg), **options)


@pytest.mark.parametrize(
    ("run_cfg", "field"),
    [
        (RunConfig(permission={"bash": "deny"}), "permission"),
        (RunConfig(instructions=["OTHER.md"]), "instructions"),
        (RunConfig(mcp={"docs": {"type": "remote", "url": "http://127.0.0.1:9"}}), "mcp"),
        (RunConfig(config_overrides={"share": "disabled"}), "share"),
        (RunConfig(extra_env={"FOO": "1"}), "extra_env"),
        (RunConfig(inherit_user_config=True), "inherit_user_config"),
    ],
)
def test_server_backend_refuses_server_global_fields_that_differ(
    server: OpenCodeServer, tmp_path: Path, no_spawn: None, run_cfg: RunConfig, field: str
) -> None:
    request = _request(server, tmp_path, run_cfg)
    with pytest.raises(OpenCodeConfigError, match=rf"RunConfig field\(s\) \['{field}'\] cannot be honoured"):
        ServerBackend(server).open(request)
    link = SessionLink(server, str(tmp_path.resolve()))
    with pytest.raises(OpenCodeConfigError, match=r"a session can only change \['agent', 'model', 'tools'\]"):
        ServerBackend(server, link=link).open(request)


def test_server_backend_takes_per_prompt_fields(
    server: OpenCodeServer, tmp_path: Path, no_spawn: None
) -> None:
    per_prompt = RunConfig(model="offline/other", agent="plan", tools={"bash": False})
    handle = ServerBackend(server).open(
        _request(server, tmp_path, per_prompt, data_home=tmp_path / "srv-data")
    )
    assert not handle.done and handle.request.config.agent == "plan"
    link = SessionLink(server, str(tmp_path.resolve()))
    assert not ServerBackend(server, link=link).open(_request(server, tmp_path, per_prompt)).done


def test_server_backend_refuses_cli_kwargs_and_another_data_home(
    server: OpenCodeServer, tmp_path: Path, no_spawn: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = ServerBackend(server)
    with pytest.raises(
        OpenCodeConfigError, match=r"cli_kwargs \['thinking'\] cannot be honoured by the server"
    ):
        backend.open(_request(server, tmp_path, RunConfig(cli_kwargs={"thinking": True})))
    with pytest.raises(OpenCodeConfigError, match="data_home cannot be honoured by the server backend"):
        backend.open(_request(server, tmp_path, data_home=tmp_path / "other-data"))
    without = OpenCodeServer(binary=tmp_path / "no-such-opencode", run_cfg=server.run_cfg)
    with pytest.raises(OpenCodeConfigError, match="data_home cannot be honoured"):
        ServerBackend(without).open(_request(without, tmp_path, data_home=tmp_path / "srv-data"))
    # The server's own directory, however it was spelt, is not "another" one.
    monkeypatch.chdir(tmp_path)
    relative = OpenCodeServer(
        binary=tmp_path / "no-such-opencode", run_cfg=server.run_cfg, data_home="srv-data"
    )
    ServerBackend(relative).open(_request(relative, tmp_path, data_home="srv-data"))
    ServerBackend(relative).open(_request(relative, tmp_path, data_home=tmp_path / "srv-data"))
    link = SessionLink(server, str((tmp_path / "elsewhere").resolve()))
    with pytest.raises(OpenCodeConfigError, match="workspace cannot be honoured"):
        ServerBackend(server, link=link).open(_request(server, tmp_path))


async def test_server_entry_points_refuse_before_starting_the_server(
    server: OpenCodeServer, tmp_path: Path, no_spawn: None
) -> None:
    with pytest.raises(OpenCodeConfigError, match=r"\['permission'\]"):
        await server.run("hi", tmp_path, run_cfg=RunConfig(permission={"bash": "allow"}))
    with pytest.raises(OpenCodeConfigError, match="cli_kwargs"):
        await server.run("hi", tmp_path, run_cfg=RunConfig(cli_kwargs={"thinking": True}))
    with pytest.raises(OpenCodeConfigError, match=r"\['mcp'\] of this session differ from the server's"):
        server.session(
            tmp_path, run_cfg=RunConfig(mcp={"docs": {"type": "remote", "url": "http://127.0.0.1:9"}})
        )
    assert server.url is None and server.pid is None


async def test_warm_client_outside_async_with_is_a_config_error(tmp_path: Path, no_spawn: None) -> None:
    client = AsyncOpenCodeClient(tmp_path / "no-such-opencode", warm_servers=True)
    with pytest.raises(OpenCodeConfigError, match="use it as 'async with client:'"):
        client.start("hi", tmp_path)
    with pytest.raises(OpenCodeConfigError, match="async with"):
        await client.async_run("hi", tmp_path)
    with pytest.raises(OpenCodeConfigError, match="async with"):
        client.async_stream("hi", tmp_path)
