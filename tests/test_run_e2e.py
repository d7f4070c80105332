"""Run mode end to end: the real pinned opencode against the offline model."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import stat
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from opencode_wrapper import (
    AsyncOpenCodeClient,
    OpenCodeProcessError,
    OpenCodeTimeoutError,
    RunConfig,
    StepFinishEvent,
    TextEvent,
    ToolUseEvent,
)
from opencode_wrapper.testing import OfflineModelServer, Reply

pytestmark = pytest.mark.e2e


@pytest.fixture
def client(opencode_binary: str) -> AsyncOpenCodeClient:
    return AsyncOpenCodeClient(opencode_binary, startup_delay_s=0)


@pytest.fixture
def private_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Route this process's temp dirs into the test's folder, to prove they are removed."""
    root = tmp_path / "tmp"
    root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    yield root


def _alive(marker: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        if marker in " ".join(proc.info["cmdline"] or []) and proc.info["status"] != psutil.STATUS_ZOMBIE:
            found.append(proc)
    return found


async def _wait_until(predicate: object, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.1)


async def test_text_answer_and_exact_token_sums(
    client: AsyncOpenCodeClient, workspace: Path, offline_model: OfflineModelServer
) -> None:
    result = await client.async_run(
        "Say [[say: hello from the offline model]]",
        workspace,
        run_cfg=offline_model.run_config(),
        timeout_s=120,
    )
    assert result.ok, result.error
    assert result.exit_code == 0
    assert result.final_text == "hello from the offline model"
    assert result.session_id and result.session_id.startswith("ses_")
    steps = [ev for ev in result.events if isinstance(ev, StepFinishEvent)]
    assert result.turns == len(steps) == 1
    assert result.token_usage.total == sum(ev.part.tokens["total"] for ev in steps if ev.part)
    # The offline model reports 10 prompt tokens and one completion token per word.
    assert (result.token_usage.input, result.token_usage.output) == (10, 5)


async def test_prompt_reaches_the_model_byte_for_byte(
    client: AsyncOpenCodeClient, workspace: Path, offline_model: OfflineModelServer
) -> None:
    prompt = "-n \"quoted\" and 'single'\nsecond line\twith tab — ünïcødé ✓ $HOME `x`\n\n  trailing  "
    result = await client.async_run(prompt, workspace, run_cfg=offline_model.run_config(), timeout_s=120)
    assert result.ok, result.error
    assert offline_model.chat_requests[-1].last_user_text == prompt


async def test_bash_tool_step_and_final_answer(
    client: AsyncOpenCodeClient, workspace: Path, offline_model: OfflineModelServer
) -> None:
    result = await client.async_run(
        "[[bash: echo tool-output-$((6*7))]]", workspace, run_cfg=offline_model.run_config(), timeout_s=120
    )
    assert result.ok, result.error
    tools = [ev for ev in result.events if isinstance(ev, ToolUseEvent)]
    assert len(tools) == 1 and tools[0].part is not None
    assert tools[0].part.tool == "bash"
    assert tools[0].part.state.status == "completed"
    assert tools[0].part.state.output == "tool-output-42\n"
    assert result.turns == 2
    assert "tool-output-42" in result.final_text
    assert len(result.tool_calls) == 1


async def test_events_are_typed_and_still_dicts(
    client: AsyncOpenCodeClient, workspace: Path, offline_model: OfflineModelServer
) -> None:
    seen = []
    async for event in client.async_stream(
        "[[say: streamed]]", workspace, run_cfg=offline_model.run_config()
    ):
        seen.append(event)
    texts = [ev for ev in seen if isinstance(ev, TextEvent)]
    assert [ev.part.text for ev in texts if ev.part] == ["streamed"]
    assert texts[0]["part"]["text"] == "streamed"  # seed code indexes dicts
    assert json.loads(json.dumps(texts[0]))["part"]["text"] == "streamed"
    assert {ev.type for ev in seen} >= {"step_start", "text", "step_finish"}


async def test_five_megabyte_event_line(
    client: AsyncOpenCodeClient, workspace: Path, offline_model: OfflineModelServer
) -> None:
    big = ("0123456789abcdef" * 64 + "\n") * 5000  # ~5 MB in one text part = one stdout line
    offline_model.add_rule(r"BIG ANSWER", Reply.text(big, chunk_size=256 * 1024))
    result = await client.async_run(
        "BIG ANSWER please", workspace, run_cfg=offline_model.run_config(), timeout_s=180
    )
    assert result.ok, result.error
    assert result.final_text == big
    assert max(len(line) for line in result.raw_stdout_lines) > 5_000_000


async def test_provider_error_is_reported_with_status(
    client: AsyncOpenCodeClient, workspace: Path, offline_model: OfflineModelServer
) -> None:
    with pytest.raises(OpenCodeProcessError) as caught:
        await client.async_run("[[error: 401]]", workspace, run_cfg=offline_model.run_config(), timeout_s=120)
    result = caught.value.result
    assert caught.value.exit_code == 1
    assert result is not None and result.error is not None
    assert result.error.kind == "api_error"
    assert result.error.status_code == 401
    assert not result.ok


async def test_unknown_model_is_an_error_not_success(
    client: AsyncOpenCodeClient, workspace: Path, offline_model: OfflineModelServer
) -> None:
    cfg = offline_model.run_config(model="offline/no-such-model")
    with pytest.raises(OpenCodeProcessError) as caught:
        await client.async_run("hello", workspace, run_cfg=cfg, timeout_s=120)
    assert caught.value.result is not None
    assert caught.value.result.error is not None
    assert caught.value.result.error.kind == "error_event"


async def test_auto_rejected_permission_is_not_success(
    client: AsyncOpenCodeClient, workspace: Path, offline_model: OfflineModelServer
) -> None:
    # Reading outside the workspace needs `external_directory`, which run mode auto-rejects.
    outside = Path(tempfile.mkdtemp(prefix="ocw-outside-"))
    try:
        (outside / "secret.txt").write_text("nope", encoding="utf-8")
        prompt = "[[tool: read " + json.dumps({"filePath": str(outside / "secret.txt")}) + "]]"
        result = await client.async_run(prompt, workspace, run_cfg=offline_model.run_config(), timeout_s=120)
    finally:
        (outside / "secret.txt").unlink()
        outside.rmdir()
    assert result.exit_code == 0  # what opencode says...
    assert not result.ok  # ...and the truth
    assert result.error is not None and result.error.kind == "permission_rejected"
    assert [r.permission for r in result.permission_rejections] == ["external_directory"]
    assert result.final_text == ""


async def test_timeout_inside_bash_sleep_leaves_nothing(
    client: AsyncOpenCodeClient, workspace: Path, offline_model: OfflineModelServer, private_tmp: Path
) -> None:
    started = time.monotonic()
    with pytest.raises(OpenCodeTimeoutError) as caught:
        await client.async_run(
            "[[bash: sleep 60.0417]]", workspace, run_cfg=offline_model.run_config(), timeout_s=12
        )
    elapsed = time.monotonic() - started
    assert caught.value.result is not None and caught.value.result.error is not None
    assert caught.value.result.error.kind == "timeout"
    assert elapsed < 12 + 5, elapsed
    assert not _alive("sleep 60.0417"), "the bash tool's sleep must be ended with opencode"
    assert list(private_tmp.iterdir()) == [], "temp dirs must be removed"


async def test_cancel_inside_bash_sleep_leaves_nothing(
    client: AsyncOpenCodeClient, workspace: Path, offline_model: OfflineModelServer, private_tmp: Path
) -> None:
    task = asyncio.ensure_future(
        client.async_run("[[bash: sleep 60.0418]]", workspace, run_cfg=offline_model.run_config())
    )
    await _wait_until(lambda: bool(_alive("sleep 60.0418")))
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not _alive("sleep 60.0418")
    assert list(private_tmp.iterdir()) == []


async def test_log_file_and_exclusions(
    client: AsyncOpenCodeClient, workspace: Path, offline_model: OfflineModelServer, tmp_path: Path
) -> None:
    log = tmp_path / "events.jsonl"
    result = await client.async_run(
        "[[say: logged]]",
        workspace,
        run_cfg=offline_model.run_config(),
        log_file=log,
        log_exclude_types={"step_start"},
        timeout_s=120,
    )
    lines = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]
    assert [ev["type"] for ev in lines] == [ev.type for ev in result.events if ev.type != "step_start"]
    assert stat.S_IMODE(log.stat().st_mode) == 0o600


async def test_user_config_is_isolated_unless_inherited(
    client: AsyncOpenCodeClient,
    workspace: Path,
    offline_model: OfflineModelServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    marker = "USER-GLOBAL-INSTRUCTION-7f3a"
    config_home = tmp_path / "user-config"
    (config_home / "opencode").mkdir(parents=True)
    rules = tmp_path / "rules.md"
    rules.write_text(marker, encoding="utf-8")
    (config_home / "opencode" / "opencode.json").write_text(
        json.dumps({"instructions": [str(rules)], "permission": {"bash": "deny"}}), encoding="utf-8"
    )
    monkeypatch.setenv("XDG_CONFIG_HOME", str(config_home))

    isolated = await client.async_run(
        "[[say: a]]", workspace, run_cfg=offline_model.run_config(), timeout_s=120
    )
    assert isolated.ok, isolated.error
    assert marker not in offline_model.chat_requests[-1].system_text
    assert "bash" in offline_model.chat_requests[-1].tool_names

    inherited = await client.async_run(
        "[[say: b]]", workspace, run_cfg=offline_model.run_config(inherit_user_config=True), timeout_s=120
    )
    assert inherited.ok, inherited.error
    assert marker in offline_model.chat_requests[-1].system_text
    assert "bash" not in offline_model.chat_requests[-1].tool_names


async def test_parallel_runs_with_seed_defaults(
    opencode_binary: str, make_workspace: object, offline_model: OfflineModelServer
) -> None:
    client = AsyncOpenCodeClient(opencode_binary)  # seed defaults: paced start, private DBs
    spaces = [make_workspace(f"agent{i}") for i in range(3)]  # type: ignore[operator]
    results = await asyncio.gather(
        *[
            client.async_run(
                f"[[bash: echo agent-{i}]]", ws, run_cfg=offline_model.run_config(), timeout_s=180
            )
            for i, ws in enumerate(spaces)
        ]
    )
    assert [r.ok for r in results] == [True, True, True]
    assert [f"agent-{i}" in r.final_text for i, r in enumerate(results)] == [True, True, True]
    assert len({r.session_id for r in results}) == 3


async def test_shared_data_home_keeps_history(
    client: AsyncOpenCodeClient, workspace: Path, offline_model: OfflineModelServer, tmp_path: Path
) -> None:
    data_home = tmp_path / "data"
    first = await client.async_run(
        "My name is Ada.", workspace, run_cfg=offline_model.run_config(), data_home=data_home, timeout_s=120
    )
    assert first.ok and first.session_id
    cfg = offline_model.run_config(cli_kwargs={"session": first.session_id})
    second = await client.async_run(
        "What is my name?", workspace, run_cfg=cfg, data_home=data_home, timeout_s=120
    )
    assert second.ok, second.error
    assert second.final_text == "Your name is Ada."
    assert (data_home / "opencode").is_dir()


async def test_breaking_out_of_a_stream_ends_the_run(
    client: AsyncOpenCodeClient, workspace: Path, offline_model: OfflineModelServer
) -> None:
    stream = client.async_stream("[[bash: sleep 60.0419]]", workspace, run_cfg=offline_model.run_config())
    async with contextlib.aclosing(stream):
        async for event in stream:
            if event.type == "step_start":
                break
    assert not _alive("sleep 60.0419")
    assert not [p for p in _alive(str(workspace)) if "opencode" in " ".join(p.cmdline())]


def test_no_stdin_inheritance(
    opencode_binary: str, workspace: Path, offline_model: OfflineModelServer
) -> None:
    """opencode reads stdin to EOF: a run must finish even when our own stdin is an idle pipe."""
    read_end, write_end = os.pipe()
    saved = os.dup(0)
    os.dup2(read_end, 0)
    try:
        client = AsyncOpenCodeClient(opencode_binary, startup_delay_s=0)
        result = asyncio.run(
            client.async_run("[[say: no hang]]", workspace, run_cfg=offline_model.run_config(), timeout_s=120)
        )
    finally:
        os.dup2(saved, 0)
        for fd in (saved, read_end, write_end):
            os.close(fd)
    assert result.final_text == "no hang"


def test_run_config_from_fixture(offline_run_config: RunConfig) -> None:
    assert offline_run_config.model == "offline/scripted"
