"""Every exception (and every value a result carries) survives pickle and deepcopy, also in a new process.

Exceptions and results cross worker processes (a process pool, a cluster): each is built here the
way the library builds it, carrying a result with typed events and tool calls of both
transports, and must come back with its type, message, attributes and result intact.
"""

from __future__ import annotations

import copy
import io
import json
import os
import pickle
import subprocess
import sys
from collections.abc import Callable
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any

import pytest

from fakes import activity as A
from opencode_wrapper import errors
from opencode_wrapper._proc.binary import check_supported, resolve_binary
from opencode_wrapper._wire.server import ServerEventParser
from opencode_wrapper.backends.request import RunRequest
from opencode_wrapper.batch import Task, TaskOutcome, error_for_exception
from opencode_wrapper.config import RunConfig
from opencode_wrapper.errors import (
    ApplyConflictError,
    ApplyError,
    IsolationError,
    OpenCodeBinaryNotFoundError,
    OpenCodeCancelledError,
    OpenCodeError,
    OpenCodeProcessError,
    OpenCodeRunError,
    OpenCodeServerError,
    OpenCodeTimeoutError,
    OpenCodeVersionError,
    ServerHTTPError,
)
from opencode_wrapper.events import Event, TokenUsage, ToolCall, parse_event_line
from opencode_wrapper.results import (
    PermissionRejection,
    RunError,
    RunResult,
    aggregate_run_result,
    aggregate_server_result,
    exception_for,
)

TESTS_DIR = Path(__file__).resolve().parent


# ----------------------------------------------------------------------------- a comparable description


def _name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def describe(obj: Any) -> Any:
    """A JSON-able description of ``obj``: its types, values and normalized views, recursively."""
    if isinstance(obj, BaseException):
        return {
            "type": _name(type(obj)),
            "str": str(obj),
            "args": [repr(arg) for arg in obj.args],
            "attrs": {key: describe(value) for key, value in sorted(vars(obj).items())},
            "error": describe(getattr(obj, "error", None)),
            "retryable": getattr(obj, "retryable", None),
        }
    if isinstance(obj, Event):
        part = obj.part
        return {
            "type": _name(type(obj)),
            "kind": obj.kind,
            "dict": json.loads(json.dumps(obj)),
            "part": _name(type(obj.get("part"))) if part is not None else None,
            "text": obj.text,
            "tool": describe(obj.tool),
            "tokens": describe(obj.tokens),
            "error": describe(obj.error),
        }
    if isinstance(obj, ToolCall):
        return {
            "type": _name(type(obj)),
            "view": [obj.name, obj.call_id, obj.status, obj.input, obj.output, obj.error],
            "dict": json.loads(json.dumps(obj)),
        }
    if isinstance(obj, RunConfig):
        values = {f.name: repr(getattr(obj, f.name)) for f in fields(obj)}
        return {
            "type": _name(type(obj)),
            "given": sorted(obj.given_fields),
            "values": values,
            "repr": repr(obj),
        }
    if isinstance(obj, RunResult):
        described = {f.name: describe(getattr(obj, f.name)) for f in fields(obj) if f.name != "_fold"}
        return {
            "type": _name(type(obj)),
            "fields": described,
            "ok": obj.ok,
            "tools": obj.tools,
            "texts": obj.texts,
        }
    if isinstance(obj, TaskOutcome):
        described = {f.name: describe(getattr(obj, f.name)) for f in fields(obj)}
        return {"type": _name(type(obj)), "fields": described, "ok": obj.ok, "error": describe(obj.error)}
    if is_dataclass(obj) and not isinstance(obj, type):
        return {
            "type": _name(type(obj)),
            "fields": {f.name: describe(getattr(obj, f.name)) for f in fields(obj)},
        }
    if isinstance(obj, (list, tuple)):
        return [describe(item) for item in obj]
    if isinstance(obj, dict):
        return {"type": _name(type(obj)), "items": {str(k): describe(v) for k, v in obj.items()}}
    return repr(obj)


# ----------------------------------------------------------------------------- built as the library does


def run_result() -> RunResult:
    """A failed run-mode result: typed run events, run-shaped tool calls, an ``api_error``."""
    lines = [*A.run_lines(), json.dumps(A.run_error_event())]
    return aggregate_run_result(
        events=[parse_event_line(line) for line in lines],
        raw_stdout_lines=lines,
        exit_code=1,
        stderr="Error: x\n",
    )


def server_result(error: RunError | None = None) -> RunResult:
    """A server-mode result: kinds set by the stream's parser, server-shaped tool calls."""
    result = aggregate_server_result(
        events=A.server_payloads(), session_id=A.SESSION, user_message_id=A.USER_MSG
    )
    result.error = error
    return result


def _raised(call: Callable[[], object]) -> BaseException:
    with pytest.raises(OpenCodeError) as caught:
        call()
    return caught.value


def _for(result: RunResult) -> OpenCodeRunError:
    exc = exception_for(result)
    assert exc is not None
    return exc


BUILDERS: dict[str, Callable[[Path], BaseException]] = {
    "OpenCodeError": lambda _: OpenCodeError("the OpenCodeServer is closing"),
    "OpenCodeBinaryNotFoundError": lambda tmp: _raised(lambda: resolve_binary(tmp / "no-such-opencode")),
    "OpenCodeVersionError": lambda _: _raised(lambda: check_supported((2, 1, 0), "the test binary")),
    "OpenCodeConfigError": lambda tmp: _raised(lambda: RunRequest.create("hi", tmp, timeout_s=-1)),
    "OpenCodeRunError": lambda _: _for(
        server_result(RunError(kind="permission_rejected", message="refused bash"))
    ),
    "OpenCodeProcessError": lambda _: _for(run_result()),
    "OpenCodeServerError": lambda _: _for(
        server_result(
            RunError(kind="server_failure", message="the opencode server (pid 4242) exited with -9")
        )
    ),
    "ServerHTTPError": lambda _: ServerHTTPError(
        "opencode server answered HTTP 404 to GET /session/ses_x: not found",
        status_code=404,
        body='{"name":"NotFoundError","data":{"message":"Session not found"}}',
        stderr="INFO service=server\n",
    ),
    "OpenCodeTimeoutError": lambda _: _for(
        server_result(RunError(kind="timeout", message="no result within 2.5 s", detail={"timeout_s": 2.5}))
    ),
    "IsolationError": lambda _: IsolationError(
        "could not create a worktree of /repo", stderr="fatal: not a git repository\n"
    ),
    "ApplyError": lambda tmp: ApplyError(
        "the changes do not apply", stderr="error: patch failed: a.txt:1\n", target=str(tmp)
    ),
    "ApplyConflictError": lambda tmp: ApplyConflictError(
        "the changes applied with conflicts", stderr="", target=str(tmp), conflicts=("a.txt", "b/c.py")
    ),
    "OpenCodeCancelledError": lambda _: OpenCodeCancelledError(
        "the task was cancelled",
        result=server_result(RunError(kind="cancelled", message="stopped by SIGTERM")),
    ),
}


def test_every_exported_exception_has_a_builder_here() -> None:
    exported = {name for name in errors.__all__ if isinstance(getattr(errors, name), type)}
    assert exported == set(BUILDERS)
    assert all(issubclass(getattr(errors, name), OpenCodeError) for name in exported)


@pytest.fixture
def built(tmp_path: Path) -> dict[str, BaseException]:
    made = {name: build(tmp_path) for name, build in BUILDERS.items()}
    for name, exc in made.items():
        assert type(exc) is getattr(errors, name)
    return made


@pytest.mark.parametrize("name", sorted(BUILDERS))
@pytest.mark.parametrize("how", ["pickle", "deepcopy"])
def test_exception_round_trip(built: dict[str, BaseException], name: str, how: str) -> None:
    original = built[name]
    restored = pickle.loads(pickle.dumps(original)) if how == "pickle" else copy.deepcopy(original)
    assert type(restored) is type(original)
    assert str(restored) == str(original) and restored.args == original.args
    assert vars(restored).keys() == vars(original).keys()
    assert describe(restored) == describe(original)
    result = getattr(original, "result", None)
    if result is not None:
        assert isinstance(restored, OpenCodeRunError) and restored.result is not None
        assert restored.result == result
        assert [type(ev) for ev in restored.result.events] == [type(ev) for ev in result.events]
        assert [ev.kind for ev in restored.result.events] == [ev.kind for ev in result.events]
        assert all(type(call) is ToolCall for call in restored.result.tool_calls)
        assert restored.result.tools == ["bash", "read"]
        assert restored.error == original.error and restored.retryable == original.retryable  # type: ignore[attr-defined]
        assert error_for_exception(restored) == error_for_exception(original)


def test_the_attributes_that_matter_come_back(built: dict[str, BaseException]) -> None:
    back = {name: pickle.loads(pickle.dumps(exc)) for name, exc in built.items()}
    version = back["OpenCodeVersionError"]
    assert isinstance(version, OpenCodeVersionError) and isinstance(version, OpenCodeBinaryNotFoundError)
    assert (version.version, version.supported) == ("2.1.0", built["OpenCodeVersionError"].supported)  # type: ignore[attr-defined]
    assert version.supported.startswith(">=")
    http = back["ServerHTTPError"]
    assert isinstance(http, ServerHTTPError) and isinstance(http, OpenCodeServerError)
    assert (http.status_code, http.exit_code, http.stderr) == (404, None, "INFO service=server\n")
    assert "Session not found" in http.body
    timeout = back["OpenCodeTimeoutError"]
    assert isinstance(timeout, OpenCodeTimeoutError) and isinstance(timeout, TimeoutError)
    assert timeout.timeout_s == 2.5 and timeout.error is not None and timeout.error.kind == "timeout"
    process = back["OpenCodeProcessError"]
    assert isinstance(process, OpenCodeProcessError)
    assert (process.exit_code, process.stderr) == (1, "Error: x\n")
    assert process.retryable is True and process.error is not None and process.error.status_code == 500
    assert [ev.kind for ev in process.events][-1] == "error"
    assert process.raw_stdout_lines == [*A.run_lines(), json.dumps(A.run_error_event())]
    config = back["OpenCodeConfigError"]
    assert isinstance(config, ValueError) and "timeout_s" in str(config)
    assert "no-such-opencode" in str(back["OpenCodeBinaryNotFoundError"])
    server = back["OpenCodeServerError"]
    assert isinstance(server, OpenCodeServerError) and server.retryable is True


class _Recorder(pickle.Unpickler):
    """Records every global a pickle names."""

    def __init__(self, data: bytes) -> None:
        super().__init__(io.BytesIO(data))
        self.names: set[tuple[str, str]] = set()

    def find_class(self, module: str, name: str) -> Any:
        self.names.add((module, name))
        return super().find_class(module, name)


def test_pickles_name_the_public_classes(tmp_path: Path, built: dict[str, BaseException]) -> None:
    recorder = _Recorder(pickle.dumps([built, other_values(tmp_path)]))
    recorder.load()
    modules: dict[str, set[str]] = {}
    for module, name in recorder.names:
        modules.setdefault(name, set()).add(module)
    # A class pickled under a private module would break old pickles at the next refactor.
    expected = {
        **dict.fromkeys(errors.__all__, "opencode_wrapper.errors"),
        **dict.fromkeys(["RunResult", "RunError", "PermissionRejection"], "opencode_wrapper.results"),
        **dict.fromkeys(
            [
                "Event",
                "StepStartEvent",
                "TextEvent",
                "ReasoningEvent",
                "ToolUseEvent",
                "StepFinishEvent",
                "ErrorEvent",
                "DiagnosticEvent",
                "Part",
                "ToolState",
                "EventError",
                "ToolCall",
                "TokenUsage",
            ],
            "opencode_wrapper.events",
        ),
        "RunConfig": "opencode_wrapper.config",
        "TaskOutcome": "opencode_wrapper.batch",
        "Task": "opencode_wrapper.batch",
    }
    assert {name: modules.get(name) for name in expected} == {name: {m} for name, m in expected.items()}


def other_values(tmp_path: Path) -> dict[str, Any]:
    run_events = [parse_event_line(line) for line in A.run_lines()]
    run_events.append(parse_event_line(json.dumps(A.run_error_event())))
    run_events.append(parse_event_line("not json"))
    parser = ServerEventParser()
    server_events = [parser.parse(payload) for payload in A.server_payloads()]
    appended = RunResult()
    for ev in A.run_events():
        appended.append_event(ev)  # carries its running fold
    cfg = RunConfig(
        model="offline/scripted", permission=None, inherit_user_config=False, tools={"bash": True}
    )
    task = Task(prompt="do it", workspace=str(tmp_path), run_cfg=cfg, timeout_s=5.0, name="t1")
    failed = run_result()
    return {
        "run_result": failed,
        "server_result": server_result(),
        "appended_result": appended,
        "run_error": RunError(kind="api_error", message="rate limited", status_code=429, detail={"a": [1]}),
        "rejection": PermissionRejection(permission="bash", pattern="echo hi", message="auto-rejecting"),
        "run_events": run_events,  # one of each run-mode Event subclass, and a diagnostic
        "server_events": server_events,  # kinds decided by the stream's parser
        "tool_calls": [*failed.tool_calls, *server_result().tool_calls],
        "usage": TokenUsage(**A.USAGE),
        "config": cfg,
        "empty_config": RunConfig(),
        "outcome": TaskOutcome(
            index=3, task=task, result=failed, exception=exception_for(failed), elapsed_s=1.25
        ),
        "cancelled_outcome": TaskOutcome(
            index=0, task=task, exception=OpenCodeCancelledError("the task was cancelled"), started=True
        ),
    }


def test_values_round_trip(tmp_path: Path) -> None:
    values = other_values(tmp_path)
    run_types = {type(ev).__name__ for ev in values["run_events"]}
    assert run_types == {
        "StepStartEvent", "ToolUseEvent", "StepFinishEvent", "ReasoningEvent", "TextEvent", "ErrorEvent",
        "DiagnosticEvent",
    }  # fmt: skip
    for restored in (pickle.loads(pickle.dumps(values)), copy.deepcopy(values)):
        assert describe(restored) == describe(values)
        assert restored["server_events"][1].kind == "other"  # the parser's verdict, not classify()'s "text"
        assert restored["config"].given_fields == {"model", "permission", "inherit_user_config", "tools"}
        assert restored["empty_config"].given_fields == frozenset()
        assert restored["config"].merged_with(RunConfig(model="a/b")).model == "a/b"
        assert restored["appended_result"] == values["appended_result"]
        restored["appended_result"].append_event(A.run_events()[0])  # its fold still works
        assert len(restored["appended_result"].events) == len(values["appended_result"].events) + 1
        outcome = restored["outcome"]
        assert type(outcome.exception) is OpenCodeProcessError and outcome.exception.result == outcome.result
        assert outcome.error is not None and outcome.error.kind == "api_error" and not outcome.ok
        assert restored["cancelled_outcome"].error.kind == "cancelled"


def test_a_new_process_unpickles_everything(tmp_path: Path, built: dict[str, BaseException]) -> None:
    everything = {"exceptions": built, "values": other_values(tmp_path)}
    blob = tmp_path / "objects.pickle"
    blob.write_bytes(pickle.dumps(everything))
    code = (
        # Unpickled first, with nothing imported: the pickle alone must name everything it needs.
        "import json, pickle, sys\n"
        f"objects = pickle.loads(open({str(blob)!r}, 'rb').read())\n"
        f"sys.path.insert(0, {str(TESTS_DIR)!r})\n"
        "from test_errors_pickle import describe\n"
        "print(json.dumps(describe(objects)))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=tmp_path,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == json.loads(json.dumps(describe(everything)))
