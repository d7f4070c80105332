"""Bad input across the public API: a clear exception, before anything is spawned, nothing left.

Each case calls a public entry point with one bad value. It must raise ``OpenCodeConfigError``
(``OpenCodeBinaryNotFoundError`` for binaries) whose message names the bad value and says what
is allowed; no opencode process may be started (``OwnedProcess.start`` is watched), and no temp
dir may be created. The unit tests (``tests/test_client_unit.py``, ``tests/test_config.py``...)
cover run mode in depth; this table covers the other entry points: servers, sessions, turns,
pools, batches, budgets, the warm-server client, and binaries.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from opencode_wrapper import (
    AsyncOpenCodeClient,
    OpenCodeBinaryNotFoundError,
    OpenCodeConfigError,
    RunConfig,
)
from opencode_wrapper._proc.process import OwnedProcess
from opencode_wrapper.batch import Budget, Task, run_many
from opencode_wrapper.pool import ServerPool
from opencode_wrapper.server import OpenCodeServer
from opencode_wrapper.session import OpenCodeSession
from reliability.conftest import Reliability

Call = Callable[[dict[str, Any]], Awaitable[Any] | Any]


def sync_callback(request: dict[str, Any]) -> str:
    return "once"


async def good_callback(request: dict[str, Any]) -> str:
    return "once"


def _session(ctx: dict[str, Any], **kwargs: Any) -> OpenCodeSession:
    return OpenCodeSession(ctx["client"], ctx["ws"], **kwargs)


async def _warm_run(ctx: dict[str, Any], **kwargs: Any) -> Any:
    async with AsyncOpenCodeClient(ctx["binary"], warm_servers=True) as client:
        return await client.async_run("hello", ctx["ws"], **kwargs)


# (case id, call, fragments the message must contain)
CASES: list[tuple[str, Call, list[str]]] = [
    # servers
    (
        "server ask typo",
        lambda c: OpenCodeServer(run_cfg=RunConfig(permission={"bash": "maybe"})),
        ["'maybe'"],
    ),
    ("server startup timeout 0", lambda c: OpenCodeServer(startup_timeout_s=0), ["startup_timeout_s", "0"]),
    ("server username with colon", lambda c: OpenCodeServer(username="a:b"), ["'a:b'", "without ':'"]),
    ("server attach not a url", lambda c: OpenCodeServer.attach("localhost 4096"), ["'localhost 4096'"]),
    ("server model without provider", lambda c: OpenCodeServer(run_cfg=RunConfig(model="gpt")), ["'gpt'"]),
    # sessions (seed API)
    ("session workspace missing", lambda c: _session(c | {"ws": c["ws"] / "nope"}), ["does not exist"]),
    ("session workspace is a file", lambda c: _session(c | {"ws": c["file"]}), ["is not a directory"]),
    ("session sync on_permission", lambda c: _session(c, on_permission=sync_callback), ["async"]),
    ("session sync on_question", lambda c: _session(c, on_question=sync_callback), ["async"]),
    ("session on_permission not callable", lambda c: _session(c, on_permission="once"), ["'once'"]),
    ("session id not an id", lambda c: _session(c, session_id="abc"), ["'abc'", "ses_"]),
    ("session timeout negative", lambda c: _session(c, timeout_s=-1), ["timeout_s", "-1"]),
    ("session callback timeout nan", lambda c: _session(c, callback_timeout_s=math.nan), ["nan"]),
    ("session log exclude str", lambda c: _session(c, log_exclude_types="text"), ["'text'"]),
    ("session extra_env int", lambda c: _session(c, run_cfg=RunConfig(extra_env={"K": 1})), ["'K'"]),  # type: ignore[dict-item]
    # turns (checked before the session is even opened)
    (
        "turn output schema not object",
        lambda c: _session(c).send("x", output_schema={"type": "string"}),
        ["'string'"],
    ),
    (
        "turn output schema set",
        lambda c: _session(c).send("x", output_schema={"type": "object", "x": {1}}),
        ["JSON"],
    ),
    ("turn output schema str", lambda c: _session(c).send("x", output_schema="json"), ["'json'"]),
    ("turn files single path", lambda c: _session(c).send("x", files="a.txt"), ["'a.txt'", "list"]),
    (
        "turn file missing",
        lambda c: _session(c).send("x", files=[c["ws"] / "gone.txt"]),
        ["gone.txt", "not exist"],
    ),
    ("turn timeout zero", lambda c: _session(c).send("x", timeout_s=0), ["timeout_s", "0"]),
    ("turn sync callback", lambda c: _session(c).send("x", on_permission=sync_callback), ["async"]),
    ("turn prompt empty", lambda c: _session(c).send("   "), ["prompt"]),
    (
        "turn tools not bool",
        lambda c: _session(c).send("x", run_cfg=RunConfig(tools={"bash": "no"})),
        ["'no'"],
    ),
    # pools, batches, budgets
    ("pool max_servers 0", lambda c: ServerPool(max_servers=0), ["max_servers", "0"]),
    ("pool sessions_per_server bool", lambda c: ServerPool(sessions_per_server=True), ["True"]),
    ("batch concurrency 0", lambda c: run_many([("x", c["ws"])], concurrency=0), ["concurrency", "0"]),
    ("batch backend unknown", lambda c: run_many([("x", c["ws"])], backend="docker"), ["'docker'"]),  # type: ignore[arg-type]
    ("batch task not a task", lambda c: run_many(["do it"]), ["'do it'"]),  # type: ignore[list-item]
    ("batch prompt not str", lambda c: run_many([(b"x", c["ws"])]), ["b'x'"]),  # type: ignore[list-item]
    (
        # Warm backends take "ask" (nobody answers: rejected, as in a session); run mode cannot.
        "batch ask in a task in run mode",
        lambda c: run_many([Task("x", c["ws"], run_cfg=RunConfig(permission="ask"))], backend="run"),
        ["'ask' is not supported"],
    ),
    (
        "batch cli_kwargs on servers",
        lambda c: run_many([Task("x", c["ws"], run_cfg=RunConfig(cli_kwargs={"title": "t"}))]),
        ["cli_kwargs"],
    ),
    ("batch timeout inf", lambda c: run_many([Task("x", c["ws"], timeout_s=math.inf)]), ["inf"]),
    ("budget without limits", lambda c: Budget(), ["max_tokens", "max_cost"]),
    ("budget negative tokens", lambda c: Budget(max_tokens=-5), ["-5"]),
    ("budget zero cost", lambda c: Budget(max_cost=0), ["max_cost", "0"]),
    # the warm-server client
    ("client max_servers 0", lambda c: AsyncOpenCodeClient(max_servers=0), ["max_servers", "0"]),
    (
        "warm run with cli_kwargs",
        lambda c: _warm_run(c, run_cfg=RunConfig(cli_kwargs={"title": "t"})),
        ["cli_kwargs"],
    ),
    # Warm runs honour data_home now (a server per data dir); a data_home that is a file is still bad.
    (
        "warm run with a data_home that is a file",
        lambda c: _warm_run(c, data_home=c["ws"] / "README.md"),
        ["data_home"],
    ),
    (
        "warm run unserialisable config",
        lambda c: _warm_run(c, run_cfg=RunConfig(config_overrides={"x": object()})),
        ["config_overrides.x"],
    ),
    # binaries
    (
        "binary missing",
        lambda c: AsyncOpenCodeClient(c["ws"] / "no-opencode").async_run("x", c["ws"]),
        ["no-opencode"],
    ),
    (
        "binary not executable",
        lambda c: AsyncOpenCodeClient(c["file"]).async_run("x", c["ws"]),
        ["README.md"],
    ),
    (
        "binary not opencode",
        lambda c: AsyncOpenCodeClient(c["impostor"]).async_run("x", c["ws"]),
        ["impostor"],
    ),
]
ALLOWED_WORDS = (
    "must",
    "expected",
    "allowed",
    "pass ",
    "use ",
    "only",
    "needs",
    "not a",
    "install",
    "refused",
    "serialisable",
)


@pytest.fixture
def ctx(opencode_binary: str, workspace: Path, tmp_path: Path) -> dict[str, Any]:
    impostor = tmp_path / "impostor"
    impostor.write_text("#!/bin/sh\necho 'hello, I am not opencode'\n", encoding="utf-8")
    impostor.chmod(0o755)
    return {
        "binary": opencode_binary,
        "client": AsyncOpenCodeClient(opencode_binary),
        "ws": workspace,
        "file": workspace / "README.md",
        "impostor": impostor,
    }


@pytest.mark.parametrize(("case", "call", "fragments"), CASES, ids=[c[0] for c in CASES])
async def test_bad_input_is_refused_before_anything_is_spawned(
    case: str,
    call: Call,
    fragments: list[str],
    ctx: dict[str, Any],
    rel: Reliability,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spawned: list[Any] = []

    async def watched_start(*args: Any, **kwargs: Any) -> Any:
        spawned.append(args)
        raise AssertionError(f"{case}: opencode was started for bad input")

    monkeypatch.setattr(OwnedProcess, "start", watched_start)
    expected = OpenCodeBinaryNotFoundError if case.startswith("binary") else OpenCodeConfigError
    with pytest.raises(expected) as caught:
        outcome = call(ctx)
        if hasattr(outcome, "__await__"):
            await outcome
    message = str(caught.value)
    assert all(f in message for f in fragments), f"{case}: {message!r} lacks {fragments}"
    assert any(w in message.lower() for w in ALLOWED_WORDS), (
        f"{case}: {message!r} does not say what is allowed"
    )
    assert spawned == []
    assert list(rel.temp_root.iterdir()) == [], f"{case}: temp files were created"


def test_the_table_is_big_enough() -> None:
    assert len(CASES) >= 25
