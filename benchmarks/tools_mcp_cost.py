"""What serving Python tools over MCP costs opencode: the connection, per run and per session.

Two measures, with the real opencode and the offline model:

* the MCP handshake as the tool server sees it: from opencode's ``initialize`` request to the end
  of its ``tools/list`` answer, for every MCP session (one per ``opencode run``, one per
  ``opencode serve`` instance directory);
* wall time with and without the tool server in the config (alternating, medians): ``opencode
  run`` of a trivial prompt, and a warm ``opencode serve``: its first turn in a workspace (where
  opencode connects its MCP servers) and a later turn.

Run: ``OPENCODE_BINARY=... .venv/bin/python benchmarks/tools_mcp_cost.py [--runs 3]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from opencode_wrapper import AsyncOpenCodeClient, OpenCodeServer
from opencode_wrapper.testing import OfflineModelServer
from opencode_wrapper.tools import ToolServer, tool

FAST = {"snapshot": False, "agent": {"title": {"disable": True}}}


@tool
async def add(a: int, b: int = 2) -> int:
    """Add two numbers."""
    return a + b


class HandshakeClock:
    """Wraps the tool server's ASGI app: per MCP session, initialize start -> tools/list end."""

    def __init__(self, server: ToolServer) -> None:
        self.inner: Any = server._asgi
        self.started: dict[str, float] = {}
        self.pending_init: list[float] = []
        self.durations: list[float] = []
        server._asgi = self  # type: ignore[method-assign]

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.inner(scope, receive, send)
            return
        t0 = time.perf_counter()
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        replayed = False

        async def replay() -> Any:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        session = ""

        async def spy(message: Any) -> None:
            nonlocal session
            if message["type"] == "http.response.start":
                session = dict(message.get("headers", [])).get(b"mcp-session-id", b"").decode()
            await send(message)

        await self.inner(scope, replay, spy)
        method = json.loads(body or b"{}").get("method") if body.startswith(b"{") else None
        if method == "initialize" and session:
            self.started[session] = t0
        elif method == "tools/list":
            sid = dict(scope["headers"]).get(b"mcp-session-id", b"").decode()
            if sid in self.started:
                self.durations.append(time.perf_counter() - self.started.pop(sid))


def workspace(root: Path, name: str) -> Path:
    path = root / name
    path.mkdir()
    subprocess.run(["git", "init", "-q", str(path)], check=True)
    (path / "README.md").write_text("# scratch\n", encoding="utf-8")
    return path


async def run_mode(
    binary: str, model: OfflineModelServer, server: ToolServer, root: Path, runs: int
) -> dict[str, Any]:
    client = AsyncOpenCodeClient(binary, startup_delay_s=0)
    ws = workspace(root, "run")
    times: dict[str, list[float]] = {"without": [], "with": []}
    for _ in range(runs):
        for label, cfg in (
            ("without", model.run_config(config_overrides=FAST)),
            ("with", model.run_config(mcp=server.mcp_config("py"), config_overrides=FAST)),
        ):
            t0 = time.perf_counter()
            result = await client.async_run("[[say: hi]]", ws, run_cfg=cfg, timeout_s=300)
            times[label].append(time.perf_counter() - t0)
            assert result.ok, result.error
    return {k: round(statistics.median(v), 2) for k, v in times.items()} | {"runs": runs}


async def session_mode(
    binary: str, model: OfflineModelServer, server: ToolServer, root: Path, runs: int
) -> dict[str, Any]:
    times: dict[str, dict[str, list[float]]] = {
        label: {"first_turn_s": [], "later_turn_s": []} for label in ("without", "with")
    }
    for n in range(runs):
        for label, cfg in (
            ("without", model.run_config(config_overrides=FAST)),
            ("with", model.run_config(mcp=server.mcp_config("py"), config_overrides=FAST)),
        ):
            ws = workspace(root, f"session-{label}-{n}")
            async with OpenCodeServer(binary=binary, run_cfg=cfg, cwd=root) as oc, oc.session(ws) as s:
                t0 = time.perf_counter()
                first = await s.send("[[say: first]]")
                t1 = time.perf_counter()
                second = await s.send("[[say: second]]")
                t2 = time.perf_counter()
                assert first.ok and second.ok
            times[label]["first_turn_s"].append(t1 - t0)
            times[label]["later_turn_s"].append(t2 - t1)
    return {
        label: {key: round(statistics.median(values), 2) for key, values in measures.items()}
        for label, measures in times.items()
    } | {"runs": runs}


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=3, help="opencode runs per configuration (default 3)")
    args = parser.parse_args()
    binary = os.environ.get("OPENCODE_BINARY", "opencode")
    with tempfile.TemporaryDirectory() as tmp, OfflineModelServer() as model:
        root = Path(tmp)
        server = ToolServer([add])
        clock = HandshakeClock(server)
        async with server:
            runs = await run_mode(binary, model, server, root, args.runs)
            run_handshakes = list(clock.durations)
            sessions = await session_mode(binary, model, server, root, args.runs)
            session_handshakes = clock.durations[len(run_handshakes) :]
    report = {
        "machine": {"cpus": os.cpu_count(), "load_1min": round(os.getloadavg()[0], 2)},
        "handshake_ms": {
            "run_mode": [round(d * 1000, 1) for d in run_handshakes],
            "session": [round(d * 1000, 1) for d in session_handshakes],
        },
        "run_mode_wall_s": runs,
        "session_wall_s": sessions,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
