"""The seed README's ``OpenCodeSession`` examples, unchanged but for the model and the prompts.

``OpenCodeSession(client, workspace, ...)`` owns a private ``opencode serve``: each example starts
one. They run concurrently, with git snapshots and titles off, to keep the suite fast.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from opencode_wrapper import AsyncOpenCodeClient, RunConfig
from opencode_wrapper.session import OpenCodeSession
from opencode_wrapper.testing import OfflineModelServer

pytestmark = pytest.mark.e2e

FAST = {"snapshot": False, "agent": {"title": {"disable": True}}}


@pytest.fixture
def model() -> Iterator[OfflineModelServer]:
    with OfflineModelServer() as server:
        yield server


async def chat(client: AsyncOpenCodeClient, ws: Path, cfg: RunConfig) -> tuple[str | None, str]:
    async with OpenCodeSession(client, ws, run_cfg=cfg) as s:
        r1 = await s.send("My name is Bob.")
        r2 = await s.send("What is my name?")  # continues natively → "Bob"
        assert r1.ok
        return s.session_id, r2.final_text


async def permissions(client: AsyncOpenCodeClient, ws: Path, cfg: RunConfig) -> str:
    asked: list[dict[str, Any]] = []

    async def approve(props: dict[str, Any]) -> str:  # props: {"id", "sessionID", "permission", ...}
        asked.append(props)
        return "once"

    async with OpenCodeSession(client, ws, run_cfg=cfg, on_permission=approve) as s:
        r = await s.send("Run `echo hi` and tell me the output. [[bash: echo hi]]")
    assert [p["permission"] for p in asked] == ["bash"] and asked[0]["sessionID"]
    return r.final_text


async def questions(client: AsyncOpenCodeClient, ws: Path, cfg: RunConfig, log: Path) -> str:
    async def answer(props: dict[str, Any]) -> list[list[str]]:
        out = []
        for q in props["questions"]:
            out.append([q["options"][0]["label"]])  # pick the first option
        return out

    ask = {
        "questions": [
            {
                "question": "Which database?",
                "header": "Database",
                "options": [
                    {"label": "sqlite", "description": "file"},
                    {"label": "postgres", "description": "server"},
                ],
            }
        ]
    }
    async with OpenCodeSession(
        client,
        ws,
        run_cfg=cfg,
        on_question=answer,
        timeout_s=120,
        log_file=log,
        log_exclude_types={"message.part.delta"},
    ) as s:
        r = await s.send(
            f"Ask me which database to use, then scaffold it. [[tool: question {json.dumps(ask)}]]"
        )
    return r.final_text


async def test_seed_readme_session_examples(
    model: OfflineModelServer,
    opencode_binary: str,
    make_workspace: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    temp_root = tmp_path / "tmp"
    temp_root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp_root))
    client = AsyncOpenCodeClient(opencode_binary)
    log = tmp_path / "session.jsonl"
    before = {p.pid for p in psutil.Process().children(recursive=True)}

    (sid, name), tool_text, question_text = await asyncio.wait_for(
        asyncio.gather(
            chat(client, make_workspace("chat"), model.run_config(config_overrides=FAST)),
            permissions(
                client,
                make_workspace("perm"),
                model.run_config(permission={"bash": "ask"}, config_overrides=FAST),
            ),
            questions(
                client,
                make_workspace("question"),
                model.run_config(extra_env={"OPENCODE_ENABLE_QUESTION_TOOL": "1"}, config_overrides=FAST),
                log,
            ),
        ),
        170,
    )
    assert sid is not None and sid.startswith("ses_") and name == "Your name is Bob."
    assert tool_text == "Tool results: bash: hi"
    assert '"Which database?"="sqlite"' in question_text
    logged = [json.loads(line)["type"] for line in log.read_text(encoding="utf-8").splitlines()]
    assert "question.asked" in logged and "message.part.delta" not in logged
    # Each example's server, and everything it started, is gone; so are its temp dirs.
    assert {p.pid for p in psutil.Process().children(recursive=True)} <= before
    assert list(temp_root.iterdir()) == []
