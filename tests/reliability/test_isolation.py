"""User-config isolation really isolates, checked on what the model receives.

A user's global opencode set-up is planted in a fake home: a global ``opencode.json`` with an MCP
server, a plugin, an agent, instructions and permissive permissions; a global ``AGENTS.md``; a
plugin and an agent in the global ``plugin/`` and ``agent/`` folders; ``OPENCODE_CONFIG`` and
``OPENCODE_PERMISSION`` in the environment. Every item carries a marker. Then one run (run mode)
and one session turn (server mode) read a file outside the workspace, which opencode's default
``external_directory: ask`` refuses and the planted permissions allow.

With ``inherit_user_config=False`` (the default) no marker may reach the model (its recorded
requests: system prompt, tool list and descriptions), the MCP server and the plugins must never
start (they would write their marker files), and the outside read must be refused. With
``inherit_user_config=True`` the same markers do arrive: the positive control that makes the
first half mean something.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from opencode_wrapper import AsyncOpenCodeClient, OpenCodeProcessError, RunResult
from opencode_wrapper.server import OpenCodeServer
from opencode_wrapper.testing import OfflineModelServer
from reliability._support import FAST, scaled
from reliability.conftest import Reliability

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(scaled(300, 600))]

MCP_SERVER = """\
import json, pathlib, sys
pathlib.Path(sys.argv[1]).write_text("started")
for line in sys.stdin:
    msg = json.loads(line)
    if "id" not in msg:
        continue
    method = msg.get("method")
    if method == "initialize":
        result = {"protocolVersion": msg["params"].get("protocolVersion", "2024-11-05"),
                  "capabilities": {"tools": {}}, "serverInfo": {"name": "spy", "version": "1"}}
    elif method == "tools/list":
        result = {"tools": [{"name": "probe", "description": "SPY-MCP-MARKER",
                             "inputSchema": {"type": "object", "properties": {}}}]}
    else:
        result = {}
    print(json.dumps({"jsonrpc": "2.0", "id": msg["id"], "result": result}), flush=True)
"""
PLUGIN = """\
import { writeFileSync } from "node:fs";
writeFileSync(%s, "loaded");
export const SpyPlugin = async () => ({});
"""
# What must not reach the model (text markers) when the user's config is not inherited.
TEXT_MARKERS = {
    "agent (opencode.json)": "SPY-AGENT-MARKER",
    "agent (agent/ folder)": "SPY-MDAGENT-MARKER",
    "agent (OPENCODE_CONFIG)": "SPY-ENVAGENT-MARKER",
    "instructions": "SPY-INSTRUCTIONS-MARKER",
    "global AGENTS.md": "SPY-GLOBAL-AGENTS-MARKER",
}
SECRET_FILE_TEXT = "SPY-OUTSIDE-FILE-CONTENT"


def _plant(home: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    config = home / ".config" / "opencode"
    (config / "plugin").mkdir(parents=True)
    (config / "agent").mkdir()
    files = {
        "mcp": home / "mcp-started",
        "plugin (opencode.json)": home / "plugin-loaded",
        "plugin (plugin/ folder)": home / "folder-plugin-loaded",
    }
    mcp = home / "spy_mcp.py"
    mcp.write_text(MCP_SERVER, encoding="utf-8")
    plugin = home / "spy-plugin.js"
    plugin.write_text(PLUGIN % json.dumps(str(files["plugin (opencode.json)"])), encoding="utf-8")
    (config / "plugin" / "spy-folder.js").write_text(
        PLUGIN % json.dumps(str(files["plugin (plugin/ folder)"])), encoding="utf-8"
    )
    instructions = home / "spy-instructions.md"
    instructions.write_text(f"Always obey {TEXT_MARKERS['instructions']}.\n", encoding="utf-8")
    (config / "AGENTS.md").write_text(f"# {TEXT_MARKERS['global AGENTS.md']}\n", encoding="utf-8")
    (config / "agent" / "spymd.md").write_text(
        f"---\ndescription: {TEXT_MARKERS['agent (agent/ folder)']}\nmode: subagent\n---\nSpy.\n",
        encoding="utf-8",
    )
    global_config = {
        "mcp": {"spy": {"type": "local", "command": [sys.executable, str(mcp), str(files["mcp"])]}},
        "plugin": [plugin.as_uri()],
        "agent": {"spyagent": {"description": TEXT_MARKERS["agent (opencode.json)"], "mode": "subagent"}},
        "instructions": [str(instructions)],
        "permission": {"external_directory": "allow", "bash": "allow", "read": "allow"},
    }
    (config / "opencode.json").write_text(json.dumps(global_config), encoding="utf-8")
    env_config = home / "env-config.json"
    env_config.write_text(
        json.dumps({"agent": {"envagent": {"description": TEXT_MARKERS["agent (OPENCODE_CONFIG)"]}}}),
        encoding="utf-8",
    )
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("OPENCODE_CONFIG", str(env_config))
    monkeypatch.setenv("OPENCODE_PERMISSION", json.dumps({"external_directory": "allow"}))
    return files


def _what_reached(model: OfflineModelServer, prompt_tag: str, files: dict[str, Path]) -> dict[str, Any]:
    requests = [r for r in model.chat_requests if prompt_tag in json.dumps(r.messages)]
    assert requests, "the model was never asked"
    body = " ".join(json.dumps(r.body) for r in requests)
    tools = sorted({name for r in requests for name in r.tool_names})
    outputs = " ".join(t.output for r in requests for t in r.tool_results)
    reached = {name: marker in body for name, marker in TEXT_MARKERS.items()}
    reached["mcp tool"] = any("spy" in t or "probe" in t for t in tools) or "SPY-MCP-MARKER" in body
    reached["permissive permissions"] = SECRET_FILE_TEXT in outputs
    for name, path in files.items():
        reached[f"{name} started"] = path.exists()
    return reached


async def _run_both(
    opencode_binary: str, workspace: Path, model: OfflineModelServer, inherit: bool, outside: Path, tag: str
) -> tuple[RunResult | None, RunResult]:
    prompt = f'[[tool: read {{"filePath": "{outside}"}}]] {tag}'
    cfg = model.run_config(inherit_user_config=inherit)
    client = AsyncOpenCodeClient(opencode_binary, startup_delay_s=0)
    run: RunResult | None
    try:
        run = await client.async_run(prompt + " run", workspace, run_cfg=cfg, timeout_s=300)
    except OpenCodeProcessError as exc:
        run = exc.result
    server_cfg = model.run_config(inherit_user_config=inherit, config_overrides=FAST)
    async with (
        OpenCodeServer(binary=opencode_binary, run_cfg=server_cfg, cwd=workspace) as server,
        server.session(workspace) as session,
    ):
        turn = await session.send(prompt + " session", timeout_s=300)
    return run, turn


@pytest.mark.parametrize("inherit", [False, True], ids=["isolated", "inherited"])
async def test_user_config_reaches_a_run_only_when_inherited(
    inherit: bool,
    opencode_binary: str,
    workspace: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    rel: Reliability,
) -> None:
    files = _plant(tmp_path / "home", monkeypatch)
    outside = tmp_path / "outside" / "notes.txt"
    outside.parent.mkdir()
    outside.write_text(SECRET_FILE_TEXT, encoding="utf-8")
    with OfflineModelServer() as model:
        run, turn = await _run_both(opencode_binary, workspace, model, inherit, outside, rel.tag[:12])
        run_reached = _what_reached(model, rel.tag[:12] + " run", files)
        turn_reached = _what_reached(model, rel.tag[:12] + " session", files)
    reached = {f"run: {k}": v for k, v in run_reached.items()} | {
        f"session: {k}": v for k, v in turn_reached.items()
    }
    leaked = sorted(k for k, v in reached.items() if v)
    rel.figures.update(
        fault="security: user-config isolation" + (" (positive control)" if inherit else ""),
        mode="run + session",
        injected=len(reached),
        reached=leaked,
        left_behind={"leaked": 0 if inherit else len(leaked)},
        left_total=0 if inherit else len(leaked),
    )
    if not inherit:
        assert leaked == [], f"user config reached an isolated run: {leaked}"
        assert run is not None and run.permission_rejections, "the outside read must be refused"
        assert turn.permission_rejections, "the outside read must be refused in the session too"
        return
    # Positive control: every planted item does reach opencode when inherited (measured on
    # 1.18.33: all of them, plugins and MCP server started, in both modes).
    missing = sorted(k for k, v in reached.items() if not v)
    assert missing == [], f"planted config not seen even when inherited: {missing}"
