"""Big data: a 50 MB tool output and a 5 MB single-line answer, through run mode and sessions.

The model runs in its own process (``OfflineModelProcess``), so the RSS sampled here is the
wrapper's alone: a thread samples it every 5 ms and the peak growth over the call is reported.

Bounds, and why:

* 5 MB answer: in run mode it arrives as one 5 MB JSON line (read in 64 KiB chunks, joined,
  decoded, parsed) and the result keeps the raw line, the event and the final text; in a session
  it arrives as deltas plus the finished part, and the result keeps the events and the text.
  A handful of copies of the payload is inherent; the bound is 16 copies (80 MB), which a
  wrapper that held every intermediate buffer, or re-joined the text per delta, would exceed.
* 50 MB tool output: opencode keeps the full output in a file and sends us (and the model) only
  its last ~50 KB, so the wrapper must not grow by anything like 50 MB: bound 25 MB.
"""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any

import pytest

from opencode_wrapper import AsyncOpenCodeClient, RunResult
from opencode_wrapper.server import OpenCodeServer
from opencode_wrapper.testing import OfflineModelProcess
from reliability._support import FAST, RssSampler, scaled
from reliability.conftest import Reliability

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(scaled(240, 900))]

MB = 1024 * 1024
ANSWER = 5 * MB
TOOL_OUTPUT = 50 * MB
ANSWER_BOUND = 16 * ANSWER
TOOL_BOUND = 25 * MB
LINE = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
BIG_TOOL = f"[[bash: yes {LINE} | head -c {TOOL_OUTPUT}]]"


def _big_text() -> str:
    text = (LINE * (ANSWER // len(LINE) + 1))[:ANSWER]
    assert "\n" not in text and len(text) == ANSWER
    return text


async def _measure(call: Any) -> tuple[RunResult, int]:
    gc.collect()
    with RssSampler() as sampler:
        result = await call()
    return result, sampler.growth


def _check_tool(result: RunResult) -> int:
    assert result.ok, result.error
    # Run mode keeps the seed's shape (the event, ``part`` inside); sessions give the part itself.
    parts = [c.get("part", c) for c in result.tool_calls]
    outputs = [p["state"].get("output") or "" for p in parts if p.get("tool") == "bash"]
    assert outputs, result.tool_calls
    output = outputs[-1]
    # opencode truncates what it passes on and says where the full output is.
    assert "truncated" in output and len(output) < 1 * MB, len(output)
    assert LINE in output
    return len(output)


async def test_big_outputs_through_run_mode_and_sessions(
    opencode_binary: str, workspace: Path, rel: Reliability
) -> None:
    big = _big_text()
    rules = [{"match": "bigtext", "reply": {"text": big, "chunk_size": 64 * 1024}}]
    growth: dict[str, int] = {}
    with OfflineModelProcess(rules=rules) as model:
        cfg = model.run_config(permission={"bash": "allow"}, config_overrides=FAST)
        client = AsyncOpenCodeClient(opencode_binary, startup_delay_s=0)
        client.resolved_binary()
        left = rel.leftovers(exclude=[model.pid])
        left.baseline()

        result, growth["run: 5 MB answer"] = await _measure(
            lambda: client.async_run("bigtext please", workspace, run_cfg=cfg, timeout_s=300)
        )
        assert result.ok and result.final_text == big
        del result
        result, growth["run: 50 MB tool output"] = await _measure(
            lambda: client.async_run(BIG_TOOL, workspace, run_cfg=cfg, timeout_s=300)
        )
        _check_tool(result)
        del result

        async with (
            OpenCodeServer(binary=opencode_binary, run_cfg=cfg, cwd=workspace) as server,
            server.session(workspace) as session,
        ):
            assert (await session.send("[[say: warm]]", timeout_s=120)).ok
            result, growth["session: 5 MB answer"] = await _measure(
                lambda: session.send("bigtext in a session", timeout_s=300)
            )
            assert result.ok and result.final_text == big
            del result
            result, growth["session: 50 MB tool output"] = await _measure(
                lambda: session.send(BIG_TOOL, timeout_s=300)
            )
            _check_tool(result)
            del result
    counts = await left.settle()  # after the model process: its rules file is in the temp dir
    rel.figures.update(
        fault="big data (50 MB tool output, 5 MB one-line answer)",
        mode="run + session",
        injected=len(growth),
        peak_rss_growth_mb={k: round(v / MB, 1) for k, v in growth.items()},
        left_behind=counts,
        left_total=sum(counts.values()),
    )
    for name, value in growth.items():
        bound = ANSWER_BOUND if "answer" in name else TOOL_BOUND
        assert value < bound, f"{name}: RSS grew by {value / MB:.1f} MB (bound {bound / MB:.0f} MB)"
    assert counts == {"processes": 0, "temp_dirs": 0, "fds": 0, "tasks": 0}, left.explain()


async def test_opencode_stdout_pipe_is_widened(tmp_path: Path) -> None:
    """Regression guard for the cut-short 5 MB line: opencode writes into a 1 MiB pipe."""
    import fcntl
    import os

    from opencode_wrapper._proc.process import OwnedProcess

    proc = await OwnedProcess.start(["true"], cwd=str(tmp_path), env=dict(os.environ), stdin_data=None)
    try:
        pipe = proc._proc._transport.get_pipe_transport(1).get_extra_info("pipe")  # type: ignore[attr-defined]
        with open("/proc/sys/fs/pipe-max-size", encoding="ascii") as fh:
            expected = min(MB, int(fh.read()))
        assert fcntl.fcntl(pipe.fileno(), 1032) == expected  # F_GETPIPE_SZ
    finally:
        await proc.end()
