"""The run-mode client against a fake ``opencode`` (no real opencode, no network).

The fake (tests/fakes/opencode.py) records each invocation (argv, stdin bytes, pid, env) and plays
scripted stdout/stderr/exit actions, so these tests see exactly what the client sent and did.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import re
import signal
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from fakes import events as E
from fakes.opencode import FakeOpenCode, err, exit_with, hang, out, pid_alive, signal_self, write_script
from opencode_wrapper import (
    AsyncOpenCodeClient,
    DiagnosticEvent,
    ErrorEvent,
    Event,
    OpenCodeBinaryNotFoundError,
    OpenCodeCancelledError,
    OpenCodeConfigError,
    OpenCodeProcessError,
    OpenCodeTimeoutError,
    RunConfig,
    StepFinishEvent,
    StepStartEvent,
    TextEvent,
    ToolUseEvent,
    build_argv,
    parse_event_line,
)
from opencode_wrapper._validation import (
    check_non_negative,
    check_prompt,
    check_timeout,
    check_type_names,
    check_workspace,
)
from opencode_wrapper.backends.process import ProcessBackend, ProcessRun
from opencode_wrapper.backends.request import RunRequest
from opencode_wrapper.results import exception_for

SQLITE_CRASH = "\x1b[91m\x1b[1mError: \x1b[0mSQLiteError: database is locked\n"
PROMPT = "Say hello"


@pytest.fixture(autouse=True)
def private_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the real user's opencode config and data out of these tests."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "home" / ".config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "home" / ".local" / "share"))


@pytest.fixture
def fake(tmp_path: Path) -> FakeOpenCode:
    return FakeOpenCode(tmp_path / "fakebin")


@pytest.fixture
def client(fake: FakeOpenCode) -> AsyncOpenCodeClient:
    return AsyncOpenCodeClient(fake.path, startup_delay_s=0)


@pytest.fixture(scope="module")
def idle_fake(tmp_path_factory: pytest.TempPathFactory) -> FakeOpenCode:
    """One fake for all bad-input tests: nothing may ever run it (but ``--version``, once)."""
    return FakeOpenCode(tmp_path_factory.mktemp("idle") / "fakebin")


@pytest.fixture
def idle_client(idle_fake: FakeOpenCode) -> AsyncOpenCodeClient:
    client = AsyncOpenCodeClient(idle_fake.path, startup_delay_s=0)
    client.resolved_binary()
    assert idle_fake.version_calls() == 1, "the fake passed the --version check (once, cached)"
    assert idle_fake.calls() == []
    return client


async def _collect(stream: AsyncIterator[Event]) -> tuple[list[Event], BaseException | None]:
    seen: list[Event] = []
    try:
        async for ev in stream:
            seen.append(ev)
    except Exception as exc:
        return seen, exc
    return seen, None


# ----------------------------------------------------------------------------- build_argv


def test_argv_is_minimal_and_has_no_prompt_by_default() -> None:
    assert build_argv("/bin/opencode", "Say hello", RunConfig()) == [
        "/bin/opencode",
        "run",
        "--format",
        "json",
    ]


def test_argv_model_agent_and_cli_kwargs_expansion() -> None:
    cfg = RunConfig(
        model="anthropic/claude",
        agent="plan",
        cli_kwargs={
            "fork": True,
            "title": "demo run",
            "f": ["a.txt", "b.png"],
            "thinking": False,
            "variant": None,
            "s": "ses_123",
            "temperature": 0.5,
            "x": True,
            "file": ("c.md",),
        },
    )
    assert build_argv("oc", "prompt", cfg) == [
        "oc",
        "run",
        "--format",
        "json",
        "-m",
        "anthropic/claude",
        "--agent",
        "plan",
        "--fork",
        "--title=demo run",
        "-f",
        "a.txt",
        "-f",
        "b.png",
        "-s",
        "ses_123",
        "--temperature=0.5",
        "-x",
        "--file=c.md",
    ]


def test_argv_seed_example_with_prompt_in_argv() -> None:
    cfg = RunConfig(model="anthropic/claude", cli_kwargs={"fork": True, "title": "demo", "f": ["a.txt"]})
    prompt = 'Fix "the" bug\nplease'
    argv = build_argv("opencode", prompt, cfg, prompt_in_argv=True)
    assert argv == [
        "opencode",
        "run",
        "--format",
        "json",
        "-m",
        "anthropic/claude",
        "--fork",
        "--title=demo",
        "-f",
        "a.txt",
        prompt,
    ]


def test_argv_empty_prompt_is_never_appended() -> None:
    assert build_argv("oc", "", RunConfig(), prompt_in_argv=True) == ["oc", "run", "--format", "json"]


# ----------------------------------------------------------------------------- _validation helpers


def test_check_workspace_resolves(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "ws").mkdir()
    monkeypatch.chdir(tmp_path)
    assert check_workspace("ws") == str((tmp_path / "ws").resolve())
    assert check_workspace(tmp_path / "ws" / ".." / "ws") == str((tmp_path / "ws").resolve())


def test_check_helpers_accept_good_values() -> None:
    assert check_prompt(" x ") == " x "
    assert check_timeout(None) is None
    assert check_timeout(2) == 2.0 and isinstance(check_timeout(2), float)
    check_non_negative(0, "n", integer=True)
    check_non_negative(0.5, "d")
    assert check_type_names(None, "t") == frozenset()
    assert check_type_names(("text", "text", "tool_use"), "t") == frozenset({"text", "tool_use"})
    assert check_type_names((t for t in ["step_start"]), "t") == frozenset({"step_start"})


# ----------------------------------------------------------------------------- bad input, before spawn

# (id, keyword overrides for async_run, fragment the message must contain)
BAD_RUN_ARGS: list[tuple[str, dict[str, Any], str]] = [
    ("prompt-none", {"prompt": None}, "prompt must be a str, got NoneType None"),
    ("prompt-bytes", {"prompt": b"Say hello"}, "got bytes b'Say hello'"),
    ("prompt-int", {"prompt": 42}, "got int 42"),
    ("prompt-empty", {"prompt": ""}, "prompt must contain some text, got ''"),
    ("prompt-blank", {"prompt": " \n\t"}, "got ' \\n\\t'"),
    ("workspace-missing", {"workspace": "/nonexistent/ws-7781"}, "'/nonexistent/ws-7781' does not exist"),
    ("workspace-int", {"workspace": 123}, "got int 123"),
    ("workspace-none", {"workspace": None}, "got NoneType None"),
    ("workspace-nul", {"workspace": "/tmp/w\x00s"}, "'/tmp/w\\x00s'"),
    ("timeout-zero", {"timeout_s": 0}, "timeout_s must be a positive number of seconds or None, got 0"),
    ("timeout-negative", {"timeout_s": -5}, "got -5"),
    ("timeout-nan", {"timeout_s": math.nan}, "got nan"),
    ("timeout-inf", {"timeout_s": math.inf}, "got inf"),
    ("timeout-bool", {"timeout_s": True}, "got True"),
    ("timeout-str", {"timeout_s": "10"}, "got '10'"),
    ("retries-negative", {"max_retries": -1}, "max_retries must be a non-negative integer, got -1"),
    ("retries-float", {"max_retries": 1.5}, "got 1.5"),
    ("retries-bool", {"max_retries": True}, "got True"),
    (
        "retry-delay-negative",
        {"retry_delay_s": -0.5},
        "retry_delay_s must be a non-negative number, got -0.5",
    ),
    ("retry-delay-nan", {"retry_delay_s": math.nan}, "got nan"),
    ("exclude-str", {"log_exclude_types": "text"}, "not a single string 'text'"),
    (
        "exclude-int",
        {"log_exclude_types": ["text", 1]},
        "log_exclude_types must contain event type strings, got 1",
    ),
    ("run-cfg-dict", {"run_cfg": {"model": "a/b"}}, "run_cfg must be a RunConfig, got dict"),
    ("model-no-slash", {"run_cfg": RunConfig(model="claude")}, "'claude'"),
    ("model-no-provider", {"run_cfg": RunConfig(model="/m1")}, "'/m1'"),
    ("model-nul", {"run_cfg": RunConfig(model="fake/m\x00")}, "'fake/m\\x00'"),
    ("agent-empty", {"run_cfg": RunConfig(agent="")}, "agent must be a non-empty string or None, got ''"),
    (
        "permission-ask",
        {"run_cfg": RunConfig(permission={"bash": "ask"})},
        "'ask' is not supported in run mode at 'bash'",
    ),
    ("permission-typo", {"run_cfg": RunConfig(permission={"edit": "alow"})}, "'alow' at 'edit'"),
    ("extra-env-int", {"run_cfg": RunConfig(extra_env={"PORT": 1})}, "'PORT'=int"),  # type: ignore[dict-item]
    ("extra-env-nul", {"run_cfg": RunConfig(extra_env={"K": "a\x00"})}, "'K'"),
    ("mcp-list", {"run_cfg": RunConfig(mcp=["srv"])}, "mcp must be a dict or None, got list ['srv']"),  # type: ignore[arg-type]
    (
        "tools-str",
        {"run_cfg": RunConfig(tools={"bash": "off"})},
        "tools['bash'] must be True or False, got 'off'",
    ),
    ("overrides-set", {"run_cfg": RunConfig(config_overrides={"x": {1}})}, "config_overrides.x is set {1}"),
    ("instructions-str", {"run_cfg": RunConfig(instructions="AGENTS.md")}, "'AGENTS.md'"),  # type: ignore[arg-type]
    ("cli-reserved", {"run_cfg": RunConfig(cli_kwargs={"model": "a/b"})}, "cli_kwargs key 'model'"),
    ("cli-dashes", {"run_cfg": RunConfig(cli_kwargs={"--title": "x"})}, "cli_kwargs key '--title'"),
    ("cli-value", {"run_cfg": RunConfig(cli_kwargs={"title": 1j})}, "cli_kwargs['title'] has value 1j"),
    (
        "log-file-missing-dir",
        {"log_file": "/nonexistent/dir-7781/log.jsonl"},
        "'/nonexistent/dir-7781/log.jsonl'",
    ),
    ("data-home-int", {"data_home": 7}, "data_home must be a directory path (str or PathLike), got 7"),
]


@pytest.mark.parametrize(("case", "overrides", "fragment"), BAD_RUN_ARGS, ids=[c[0] for c in BAD_RUN_ARGS])
async def test_bad_run_arguments_fail_before_anything_is_spawned(
    case: str,
    overrides: dict[str, Any],
    fragment: str,
    idle_client: AsyncOpenCodeClient,
    idle_fake: FakeOpenCode,
    workspace: Path,
) -> None:
    kwargs: dict[str, Any] = {"prompt": PROMPT, "workspace": workspace, **overrides}
    with pytest.raises(OpenCodeConfigError) as info:
        await idle_client.async_run(**kwargs)
    assert fragment in str(info.value)
    assert idle_fake.calls() == [], "opencode must not be started for bad input"


async def test_workspace_that_is_a_file_and_log_file_that_is_a_directory(
    idle_client: AsyncOpenCodeClient, idle_fake: FakeOpenCode, workspace: Path, tmp_path: Path
) -> None:
    client, fake = idle_client, idle_fake
    a_file = workspace / "README.md"
    with pytest.raises(OpenCodeConfigError, match="is not a directory"):
        await client.async_run(PROMPT, a_file)
    with pytest.raises(OpenCodeConfigError) as info:
        await client.async_run(PROMPT, workspace, log_file=tmp_path)
    assert str(tmp_path) in str(info.value)
    with pytest.raises(OpenCodeConfigError, match="not a directory"):
        await client.async_run(PROMPT, workspace, data_home=a_file)
    assert fake.calls() == []


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"prompt": None}, "prompt must be a str"),
        ({"workspace": "/nonexistent/ws-7782"}, "does not exist"),
        ({"timeout_s": -1}, "timeout_s"),
        ({"run_cfg": RunConfig(permission={"*": "ask"})}, "'ask'"),
        ({"data_home": 3.5}, "data_home"),
    ],
)
async def test_bad_stream_arguments_fail_before_anything_is_spawned(
    overrides: dict[str, Any],
    fragment: str,
    idle_client: AsyncOpenCodeClient,
    idle_fake: FakeOpenCode,
    workspace: Path,
) -> None:
    kwargs: dict[str, Any] = {"prompt": PROMPT, "workspace": workspace, **overrides}
    # Checked when async_stream is called, before anything starts (seed code iterating it right
    # away sees the same exception).
    with pytest.raises(OpenCodeConfigError) as info:
        idle_client.async_stream(**kwargs)
    assert fragment in str(info.value)
    assert idle_fake.calls() == []


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"startup_concurrency": 0}, "startup_concurrency must be an integer >= 1, got 0"),
        ({"startup_concurrency": True}, "got True"),
        ({"startup_concurrency": "2"}, "got '2'"),
        ({"startup_delay_s": -1}, "startup_delay_s must be a non-negative number, got -1"),
        ({"startup_delay_s": math.inf}, "got inf"),
    ],
)
def test_bad_client_arguments(kwargs: dict[str, Any], fragment: str) -> None:
    with pytest.raises(OpenCodeConfigError) as info:
        AsyncOpenCodeClient("opencode", **kwargs)
    assert fragment in str(info.value)


async def test_a_binary_that_is_not_opencode_is_refused_before_running_the_prompt(
    tmp_path: Path, workspace: Path
) -> None:
    record = tmp_path / "impostor-calls"
    script = write_script(
        tmp_path / "impostor",
        f'if [ "$1" = --version ]; then echo "GNU bash, version 5"; else echo "$@" >> {record}; fi',
    )
    client = AsyncOpenCodeClient(script, startup_delay_s=0)
    with pytest.raises(OpenCodeBinaryNotFoundError, match="is not opencode"):
        await client.async_run(PROMPT, workspace)
    assert not record.exists()


# ----------------------------------------------------------------------------- what opencode receives

TRICKY_PROMPT = (
    "-n --help \"double quotes\" 'single' `id` $HOME\nsecond line\r\n\ttab ünïcödé ✓ 🎉 \\back\\slash\n"
    "-- trailing dash line\n"
)


async def test_prompt_arrives_on_stdin_byte_for_byte_and_not_in_argv(
    client: AsyncOpenCodeClient, fake: FakeOpenCode, workspace: Path
) -> None:
    fake.emit(E.simple_turn())
    result = await client.async_run(TRICKY_PROMPT, workspace)
    assert result.ok
    [call] = fake.calls()
    assert fake.stdin_of(call) == TRICKY_PROMPT.encode("utf-8")
    assert call["argv"] == ["run", "--format", "json", "--title=opencode-wrapper one-shot run"]
    assert not any("double quotes" in arg or arg == "-n" for arg in call["argv"])


async def test_config_reaches_argv_env_and_cwd(
    client: AsyncOpenCodeClient, fake: FakeOpenCode, workspace: Path
) -> None:
    fake.emit(E.simple_turn())
    cfg = RunConfig(
        model="offline/scripted",
        agent="build",
        permission={"bash": "allow"},
        extra_env={"OCW_EXTRA": "yes"},
        cli_kwargs={"title": "t1", "thinking": True},
    )
    await client.async_run(PROMPT, workspace, run_cfg=cfg)
    [call] = fake.calls()
    assert call["argv"] == [
        "run",
        "--format",
        "json",
        "-m",
        "offline/scripted",
        "--agent",
        "build",
        "--title=t1",
        "--thinking",
    ]
    assert call["cwd"] == str(workspace.resolve())
    env = call["env"]
    assert env["PWD"] == str(workspace.resolve())
    assert json.loads(env["OPENCODE_CONFIG_CONTENT"]) == {"permission": {"bash": "allow"}}
    assert env["OPENCODE_DISABLE_AUTOUPDATE"] == "1"
    assert env["OCW_EXTRA"] == "yes"


async def test_each_run_gets_a_private_data_dir_removed_afterwards(
    client: AsyncOpenCodeClient, fake: FakeOpenCode, workspace: Path, tmp_path: Path
) -> None:
    fake.emit(E.simple_turn())
    await client.async_run(PROMPT, workspace)
    await client.async_run(PROMPT, workspace)
    first, second = fake.calls()
    assert first["data_home_is_dir"] and second["data_home_is_dir"]
    assert first["env"]["XDG_DATA_HOME"] != second["env"]["XDG_DATA_HOME"]
    assert first["env"]["XDG_DATA_HOME"] != str(tmp_path / "home" / ".local" / "share")
    assert not Path(first["env"]["XDG_DATA_HOME"]).exists()
    assert not Path(first["env"]["XDG_CONFIG_HOME"]).exists()


async def test_a_given_data_home_is_used_and_kept(
    client: AsyncOpenCodeClient, fake: FakeOpenCode, workspace: Path, tmp_path: Path
) -> None:
    fake.emit(E.simple_turn())
    shared = tmp_path / "shared-data"
    await client.async_run(PROMPT, workspace, data_home=shared)
    assert fake.calls()[0]["env"]["XDG_DATA_HOME"] == str(shared)
    assert shared.is_dir()


# ----------------------------------------------------------------------------- results


async def test_successful_run_result(
    client: AsyncOpenCodeClient, fake: FakeOpenCode, workspace: Path
) -> None:
    fake.emit(E.tool_turn("It printed hi-from-tool."))
    result = await client.async_run(PROMPT, workspace)
    assert result.ok and result.exit_code == 0
    assert result.final_text == "It printed hi-from-tool."
    assert result.turns == 2 and result.total_cost == 0.75 and result.token_usage.total == 70
    assert result.session_id == E.SESSION
    assert [type(ev) for ev in result.events] == [
        StepStartEvent,
        ToolUseEvent,
        StepFinishEvent,
        StepStartEvent,
        TextEvent,
        StepFinishEvent,
    ]
    assert result.raw_stdout_lines == [E.line(ev) for ev in E.tool_turn("It printed hi-from-tool.")]


async def test_exit_0_with_auto_rejected_permission_returns_a_failed_result(
    client: AsyncOpenCodeClient, fake: FakeOpenCode, workspace: Path
) -> None:
    fake.emit(
        [E.step_start(), E.tool_use(status="error"), E.step_finish(reason="tool-calls")],
        stderr=E.ANSI_REJECT_BASH,
    )
    result = await client.async_run(PROMPT, workspace)
    assert result.exit_code == 0
    assert not result.ok
    assert result.error is not None and result.error.kind == "permission_rejected"
    assert result.permission_rejections[0].pattern == "echo hi-from-tool"
    assert result.stderr == E.ANSI_REJECT_BASH


async def test_non_json_stdout_is_kept_as_a_diagnostic(
    client: AsyncOpenCodeClient, fake: FakeOpenCode, workspace: Path
) -> None:
    fake.script([out("Warning: something odd"), *[out(ev) for ev in E.simple_turn("fine")]])
    result = await client.async_run(PROMPT, workspace)
    assert (
        isinstance(result.events[0], DiagnosticEvent) and result.events[0]["raw"] == "Warning: something odd"
    )
    assert result.final_text == "fine"


async def test_a_5_mb_single_line_event_is_parsed(
    client: AsyncOpenCodeClient, fake: FakeOpenCode, workspace: Path
) -> None:
    big = "x" * (5 * 1024 * 1024 - 7) + "ü✓end"
    fake.emit([E.step_start(), E.text(big), E.step_finish()])
    result = await client.async_run(PROMPT, workspace)
    assert result.ok
    assert len(result.events) == 3
    assert result.final_text == big


async def test_nonzero_exit_raises_with_the_diagnosed_result(
    client: AsyncOpenCodeClient, fake: FakeOpenCode, workspace: Path
) -> None:
    fake.emit([E.api_error(401, "Incorrect API key provided")], exit_code=1)
    with pytest.raises(OpenCodeProcessError) as info:
        await client.async_run(PROMPT, workspace)
    exc = info.value
    assert exc.exit_code == 1
    assert exc.result is not None and exc.result.error is not None
    assert exc.result.error.kind == "api_error" and exc.result.error.status_code == 401
    assert isinstance(exc.events[0], ErrorEvent)
    assert "api_error (HTTP 401): Incorrect API key provided" in str(exc)


async def test_nonzero_exit_with_only_stderr(
    client: AsyncOpenCodeClient, fake: FakeOpenCode, workspace: Path
) -> None:
    fake.script([err("\x1b[91m\x1b[1mError: \x1b[0mSession not found\n"), exit_with(1)])
    with pytest.raises(OpenCodeProcessError) as info:
        await client.async_run(PROMPT, workspace)
    assert info.value.result is not None and info.value.result.error is not None
    assert info.value.result.error.kind == "process_exit"
    assert info.value.result.error.message == "opencode exited with 1: Error: Session not found"
    assert "Session not found" in info.value.stderr
    assert len(fake.calls()) == 1  # not an SQLite start-up crash: no retry


# ----------------------------------------------------------------------------- SQLite start-up retry


async def test_sqlite_startup_crash_is_retried(
    client: AsyncOpenCodeClient, fake: FakeOpenCode, workspace: Path
) -> None:
    fake.script(
        [err(SQLITE_CRASH), exit_with(1)], [*[out(ev) for ev in E.simple_turn("second try")], exit_with(0)]
    )
    result = await client.async_run(TRICKY_PROMPT, workspace, retry_delay_s=0)
    assert result.ok and result.final_text == "second try"
    calls = fake.calls()
    assert len(calls) == 2
    assert all(fake.stdin_of(call) == TRICKY_PROMPT.encode() for call in calls)


async def test_a_failed_migration_of_a_fresh_shared_database_is_retried(
    client: AsyncOpenCodeClient, fake: FakeOpenCode, workspace: Path
) -> None:
    # Seen in CI: 4 runs creating one fresh shared database at once; one exited like this.
    migration = (
        "Error: Failed query: CREATE TABLE IF NOT EXISTS `project` (\n  `id` text PRIMARY KEY\n)\nparams: \n"
    )
    fake.script(
        [err(migration), exit_with(1)], [*[out(ev) for ev in E.simple_turn("second try")], exit_with(0)]
    )
    result = await client.async_run(PROMPT, workspace, retry_delay_s=0)
    assert result.ok and result.final_text == "second try"
    assert len(fake.calls()) == 2


async def test_no_retry_once_the_model_was_called(
    client: AsyncOpenCodeClient, fake: FakeOpenCode, workspace: Path
) -> None:
    fake.script([out(E.step_start()), err(SQLITE_CRASH), exit_with(1)], E.simple_turn())
    with pytest.raises(OpenCodeProcessError) as info:
        await client.async_run(PROMPT, workspace, retry_delay_s=0)
    assert len(fake.calls()) == 1, "a retry here would send the prompt twice"
    assert "database is locked" in info.value.stderr
    assert isinstance(info.value.events[0], StepStartEvent)


async def test_max_retries_0_disables_the_retry(
    client: AsyncOpenCodeClient, fake: FakeOpenCode, workspace: Path
) -> None:
    fake.script([err(SQLITE_CRASH), exit_with(1)], [*[out(ev) for ev in E.simple_turn()], exit_with(0)])
    with pytest.raises(OpenCodeProcessError) as info:
        await client.async_run(PROMPT, workspace, max_retries=0)
    assert len(fake.calls()) == 1
    assert info.value.exit_code == 1 and "database is locked" in info.value.stderr


async def test_retries_are_bounded(client: AsyncOpenCodeClient, fake: FakeOpenCode, workspace: Path) -> None:
    fake.script([err("Error: SQLITE_BUSY: database is locked\n"), exit_with(1)])
    with pytest.raises(OpenCodeProcessError):
        await client.async_run(PROMPT, workspace, max_retries=2, retry_delay_s=0)
    assert len(fake.calls()) == 3


# ----------------------------------------------------------------------------- signals and timeouts


async def test_sigterm_from_outside_is_a_cancellation(
    client: AsyncOpenCodeClient, fake: FakeOpenCode, workspace: Path
) -> None:
    fake.script([out(E.step_start()), out(E.text("partial")), signal_self("TERM")])
    with pytest.raises(OpenCodeCancelledError) as info:
        await client.async_run(PROMPT, workspace)
    result = info.value.result
    assert result is not None and result.exit_code == -signal.SIGTERM
    assert result.error is not None and result.error.kind == "cancelled"
    assert [type(ev) for ev in result.events] == [StepStartEvent, TextEvent]
    assert "SIGTERM" in str(info.value)


async def test_sigkill_is_a_process_error_not_a_cancellation(
    client: AsyncOpenCodeClient, fake: FakeOpenCode, workspace: Path
) -> None:
    # SIGKILL (e.g. the OOM killer) is a crash, not "somebody stopped the run".
    fake.script([out(E.step_start()), signal_self("KILL")])
    with pytest.raises(OpenCodeProcessError) as info:
        await client.async_run(PROMPT, workspace)
    assert not isinstance(info.value, OpenCodeCancelledError)
    assert info.value.exit_code == -signal.SIGKILL
    assert info.value.result is not None and isinstance(info.value.result.events[0], StepStartEvent)


def _finished_run(tmp_path: Path, exit_code: int, *lines: str) -> ProcessRun:
    run = ProcessRun(ProcessBackend(), RunRequest.create("p", tmp_path))
    for line in lines:
        run._fold.add(parse_event_line(line))
    run._exit_code = exit_code
    return run


@pytest.mark.parametrize(
    ("exit_code", "expected"),
    [
        (-signal.SIGTERM, OpenCodeCancelledError),
        (-signal.SIGINT, OpenCodeCancelledError),
        (-signal.SIGHUP, OpenCodeCancelledError),
        (-signal.SIGKILL, OpenCodeProcessError),
        (-signal.SIGSEGV, OpenCodeProcessError),
        (1, OpenCodeProcessError),
        (143, OpenCodeProcessError),
    ],
)
def test_exit_status_classification(tmp_path: Path, exit_code: int, expected: type[Exception]) -> None:
    result = _finished_run(tmp_path, exit_code, E.line(E.step_start()))._partial()
    exc = exception_for(result)
    assert type(exc) is expected
    assert exc is not None and exc.result is result
    assert result.exit_code == exit_code and len(result.events) == 1
    assert result.error is not None and result.error.raised
    assert result.error.kind == ("cancelled" if expected is OpenCodeCancelledError else "process_exit")


def test_exit_0_raises_nothing(tmp_path: Path) -> None:
    result = _finished_run(
        tmp_path, 0, E.line(E.step_start()), E.line(E.text("hi")), E.line(E.step_finish())
    )._partial()
    assert result.ok and exception_for(result) is None


async def test_timeout_ends_the_process_and_keeps_the_partial_result(
    client: AsyncOpenCodeClient, fake: FakeOpenCode, workspace: Path
) -> None:
    fake.script([out(E.step_start()), out(E.text("working on it")), hang()])
    with pytest.raises(OpenCodeTimeoutError) as info:
        await client.async_run(PROMPT, workspace, timeout_s=1.5)
    exc = info.value
    assert exc.timeout_s == 1.5
    assert isinstance(exc, TimeoutError)
    assert exc.result is not None
    assert [type(ev) for ev in exc.result.events] == [StepStartEvent, TextEvent]
    assert exc.result.final_text == "working on it"
    assert exc.result.error is not None and exc.result.error.kind == "timeout"
    [call] = fake.calls()
    assert not pid_alive(call["pid"])
    assert not Path(call["env"]["XDG_DATA_HOME"]).exists()


# ----------------------------------------------------------------------------- log_file


async def test_log_file_gets_every_event_and_is_owner_only(
    client: AsyncOpenCodeClient, fake: FakeOpenCode, workspace: Path, tmp_path: Path
) -> None:
    fake.emit(E.tool_turn())
    log = tmp_path / "run.jsonl"
    result = await client.async_run(PROMPT, workspace, log_file=log)
    rows = [json.loads(row) for row in log.read_text(encoding="utf-8").splitlines()]
    assert rows == result.events == E.tool_turn()
    assert stat.S_IMODE(os.stat(log).st_mode) == 0o600


async def test_log_exclude_types_keeps_them_out_of_the_log_only(
    client: AsyncOpenCodeClient, fake: FakeOpenCode, workspace: Path, tmp_path: Path
) -> None:
    fake.emit(E.tool_turn())
    log = tmp_path / "run.jsonl"
    result = await client.async_run(
        PROMPT, workspace, log_file=log, log_exclude_types=["step_start", "step_finish"]
    )
    types = [json.loads(row)["type"] for row in log.read_text(encoding="utf-8").splitlines()]
    assert types == ["tool_use", "text"]
    assert len(result.events) == 6


async def test_log_file_keeps_the_events_of_a_failed_run(
    client: AsyncOpenCodeClient, fake: FakeOpenCode, workspace: Path, tmp_path: Path
) -> None:
    fake.emit([E.step_start(), E.api_error(500, "boom", retryable=True)], exit_code=1)
    log = tmp_path / "run.jsonl"
    with pytest.raises(OpenCodeProcessError):
        await client.async_run(PROMPT, workspace, log_file=log)
    assert [json.loads(row)["type"] for row in log.read_text(encoding="utf-8").splitlines()] == [
        "step_start",
        "error",
    ]


# ----------------------------------------------------------------------------- async_stream


async def test_stream_yields_typed_events_in_order(
    client: AsyncOpenCodeClient, fake: FakeOpenCode, workspace: Path
) -> None:
    fake.emit(E.tool_turn("streamed"))
    events, error = await _collect(client.async_stream(TRICKY_PROMPT, workspace))
    assert error is None
    assert [type(ev) for ev in events] == [
        StepStartEvent,
        ToolUseEvent,
        StepFinishEvent,
        StepStartEvent,
        TextEvent,
        StepFinishEvent,
    ]
    assert events == E.tool_turn("streamed")
    assert events[4].part is not None and events[4].part.text == "streamed"
    assert fake.stdin_of(fake.calls()[0]) == TRICKY_PROMPT.encode()


async def test_stream_raises_after_the_last_event_on_nonzero_exit(
    client: AsyncOpenCodeClient, fake: FakeOpenCode, workspace: Path
) -> None:
    fake.emit([E.step_start(), E.api_error(401)], exit_code=1)
    events, error = await _collect(client.async_stream(PROMPT, workspace))
    assert [type(ev) for ev in events] == [StepStartEvent, ErrorEvent]
    assert isinstance(error, OpenCodeProcessError)
    assert error.exit_code == 1
    assert (
        error.result is not None and error.result.error is not None and error.result.error.status_code == 401
    )


async def test_breaking_out_of_the_stream_ends_opencode(
    client: AsyncOpenCodeClient, fake: FakeOpenCode, workspace: Path
) -> None:
    fake.script([out(E.step_start()), hang()])
    async with contextlib.aclosing(client.async_stream(PROMPT, workspace)) as stream:
        async for ev in stream:
            assert isinstance(ev, StepStartEvent)
            pid = fake.calls()[0]["pid"]
            assert pid_alive(pid)
            break
    assert not pid_alive(pid)


async def test_sigterm_sent_to_opencode_during_a_stream(
    client: AsyncOpenCodeClient, fake: FakeOpenCode, workspace: Path
) -> None:
    fake.script([out(E.step_start()), out(E.text("half")), hang()])
    seen: list[Event] = []
    with pytest.raises(OpenCodeCancelledError) as info:
        async for ev in client.async_stream(PROMPT, workspace):
            seen.append(ev)
            if isinstance(ev, TextEvent):
                os.kill(fake.calls()[0]["pid"], signal.SIGTERM)
    assert [type(ev) for ev in seen] == [StepStartEvent, TextEvent]
    assert info.value.result is not None and info.value.result.error is not None
    assert info.value.result.error.kind == "cancelled"


async def test_stream_timeout_ends_the_process(
    client: AsyncOpenCodeClient, fake: FakeOpenCode, workspace: Path
) -> None:
    fake.script([out(E.step_start()), hang()])
    events, error = await _collect(client.async_stream(PROMPT, workspace, timeout_s=1.5))
    assert [type(ev) for ev in events] == [StepStartEvent]
    assert isinstance(error, OpenCodeTimeoutError)
    assert error.result is not None and len(error.result.events) == 1
    assert error.result.error is not None and error.result.error.kind == "timeout"
    assert not pid_alive(fake.calls()[0]["pid"])


# ----------------------------------------------------------------------------- shared data dirs


async def _until(probe: Any, timeout_s: float = 30.0) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not (value := probe()) and loop.time() < deadline:
        await asyncio.sleep(0.02)
    return value


async def test_runs_sharing_a_data_dir_take_turns_and_private_runs_do_not_wait(
    fake: FakeOpenCode, workspace: Path, tmp_path: Path
) -> None:
    fake.script(*[[hang()] for _ in range(6)])
    client = AsyncOpenCodeClient(fake.path, startup_delay_s=0, shared_data_concurrency=2)
    shared = tmp_path / "shared-data"
    runs = [
        asyncio.ensure_future(client.async_run(PROMPT, workspace, data_home=shared, timeout_s=60))
        for _ in range(4)
    ]
    try:
        assert await _until(lambda: len(fake.calls()) == 2)
        slot = client._process._shared_data_slots[os.path.realpath(shared)]
        assert slot.locked(), "both slots are taken; the other two runs wait before spawning"
        private = asyncio.ensure_future(client.async_run(PROMPT, workspace, timeout_s=60))
        assert await _until(lambda: len(fake.calls()) == 3), "a private run does not queue"
        assert "shared-data" not in fake.calls()[-1]["env"]["XDG_DATA_HOME"]
        first = next(
            i for i, call in enumerate(fake.calls()) if "shared-data" in call["env"]["XDG_DATA_HOME"]
        )
        runs[first].cancel()  # calls and runs start in the same order: the semaphore is fair
        assert await _until(lambda: len(fake.calls()) == 4), "a freed slot lets the next shared run start"
        private.cancel()
        await asyncio.gather(private, return_exceptions=True)
    finally:
        for run in runs:
            run.cancel()
        await asyncio.gather(*runs, return_exceptions=True)
    assert all(not pid_alive(call["pid"]) for call in fake.calls())


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2", None])
def test_shared_data_concurrency_must_be_a_positive_integer(fake: FakeOpenCode, bad: Any) -> None:
    expected = f"shared_data_concurrency must be an integer >= 1, got {re.escape(repr(bad))}"
    with pytest.raises(OpenCodeConfigError, match=expected):
        AsyncOpenCodeClient(fake.path, shared_data_concurrency=bad)
    assert fake.calls() == []
