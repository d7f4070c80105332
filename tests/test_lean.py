"""The lean profile: how it merges into a RunConfig, and that opencode accepts it and still works."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from opencode_wrapper import AsyncOpenCodeClient, RunConfig, ToolUseEvent
from opencode_wrapper._lean import (
    LEAN_CONFIG,
    LEAN_ENV,
    MODELS_PATH_ENV,
    lean_run_config,
    model_is_declared,
    seed_plugin_dependencies,
    trimmed_models_catalog,
)
from opencode_wrapper._proc.environment import build_env
from opencode_wrapper.config import validate_config_for_run
from opencode_wrapper.testing import OfflineModelServer, Reply

# --- unit: merging --------------------------------------------------------------------------------------


def test_lean_profile_is_added_and_the_input_is_not_changed() -> None:
    cfg = RunConfig(model="a/b", permission={"bash": "allow"})
    lean = lean_run_config(cfg)
    assert cfg.config_overrides is None and cfg.extra_env is None
    assert lean is not cfg
    assert lean.model == "a/b" and lean.permission == {"bash": "allow"}
    built = lean.build_opencode_config_dict()
    for key, value in LEAN_CONFIG.items():
        assert built[key] == value
    assert built["permission"] == {"bash": "allow"}
    assert dict(lean.extra_env or {}) == LEAN_ENV
    validate_config_for_run(lean)


def test_the_callers_own_settings_win() -> None:
    cfg = RunConfig(
        config_overrides={"snapshot": True, "agent": {"build": {"steps": 3}}},
        extra_env={"OPENCODE_DISABLE_MODELS_FETCH": "0", "MY_VAR": "x"},
    )
    lean = lean_run_config(cfg)
    built = lean.build_opencode_config_dict()
    assert built["snapshot"] is True  # explicitly asked for: kept
    assert built["agent"]["build"] == {"steps": 3}
    assert built["agent"]["title"] == {"disable": True}  # deep-merged next to the caller's agent
    env = dict(lean.extra_env or {})
    assert env["OPENCODE_DISABLE_MODELS_FETCH"] == "0" and env["MY_VAR"] == "x"


def test_applying_it_twice_changes_nothing_and_the_constants_stay_intact() -> None:
    before = json.dumps(LEAN_CONFIG, sort_keys=True)
    once = lean_run_config(RunConfig())
    twice = lean_run_config(once)
    assert twice.build_opencode_config_dict() == once.build_opencode_config_dict()
    assert twice.extra_env == once.extra_env
    assert once.config_overrides is not None
    once.config_overrides["agent"]["title"]["disable"] = False  # mutating a result...
    assert json.dumps(LEAN_CONFIG, sort_keys=True) == before  # ...leaves the profile alone


def test_the_profile_reaches_opencodes_environment() -> None:
    env = build_env(lean_run_config(RunConfig()), base={})
    content = json.loads(env["OPENCODE_CONFIG_CONTENT"])
    assert all(content[key] == value for key, value in LEAN_CONFIG.items())
    assert all(env[name] == value for name, value in LEAN_ENV.items())
    # A lean config and a default one must not share a warm server.
    assert lean_run_config(RunConfig()).server_key() != RunConfig().server_key()


def test_empty_catalog_when_the_model_is_declared_in_config(
    offline_model: OfflineModelServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "no-cache"))
    declared = offline_model.run_config()  # provider "offline" with model "scripted" in its config
    assert model_is_declared(declared)
    lean = lean_run_config(declared)
    catalog = Path((lean.extra_env or {})[MODELS_PATH_ENV])
    assert json.loads(catalog.read_text(encoding="utf-8")) == {}
    assert lean_run_config(declared).extra_env == lean.extra_env  # one file per process: servers can share

    builtin = RunConfig(model="anthropic/claude-sonnet-4-5")  # needs opencode's models.dev catalog
    assert not model_is_declared(builtin)
    assert MODELS_PATH_ENV not in (lean_run_config(builtin).extra_env or {})  # no cache: full catalog
    assert MODELS_PATH_ENV not in (lean_run_config(RunConfig()).extra_env or {})
    assert MODELS_PATH_ENV not in (lean_run_config(declared, catalog="full").extra_env or {})
    forced = lean_run_config(builtin, catalog="empty")
    assert (forced.extra_env or {})[MODELS_PATH_ENV] == str(catalog)
    own = lean_run_config(declared.merged_with(RunConfig(extra_env={MODELS_PATH_ENV: "/my/models.json"})))
    assert (own.extra_env or {})[MODELS_PATH_ENV] == "/my/models.json"


def test_trimmed_catalog_from_opencodes_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache" / "opencode" / "models.json"
    cache.parent.mkdir(parents=True)
    full = {
        "anthropic": {"id": "anthropic", "models": {"claude-x": {"id": "claude-x"}}},
        "openai": {"id": "openai", "models": {"gpt-x": {"id": "gpt-x"}}},
    }
    cache.write_text(json.dumps(full), encoding="utf-8")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    lean = lean_run_config(RunConfig(model="anthropic/claude-x"))
    trimmed = json.loads(Path((lean.extra_env or {})[MODELS_PATH_ENV]).read_text(encoding="utf-8"))
    assert trimmed == {"anthropic": full["anthropic"]}
    # A provider the cache does not know, or a broken cache: opencode keeps its full catalog.
    assert MODELS_PATH_ENV not in (lean_run_config(RunConfig(model="nope/x")).extra_env or {})
    assert trimmed_models_catalog(["anthropic"], source=tmp_path / "missing.json") is None
    cache.write_text("{not json", encoding="utf-8")
    assert trimmed_models_catalog(["anthropic"]) is None


def test_seeding_the_plugin_sdk_never_overwrites_a_real_install(tmp_path: Path) -> None:
    config_dir = tmp_path / "xdg" / "opencode"
    assert seed_plugin_dependencies(config_dir)
    package = json.loads((config_dir / "package.json").read_text(encoding="utf-8"))
    lock = json.loads((config_dir / "package-lock.json").read_text(encoding="utf-8"))
    assert package["dependencies"] == lock["packages"][""]["dependencies"]
    assert list(package["dependencies"]) == ["@opencode-ai/plugin"]
    assert (config_dir / "node_modules").is_dir()
    (config_dir / "package.json").write_text('{"dependencies": {"mine": "1"}}', encoding="utf-8")
    assert not seed_plugin_dependencies(config_dir)
    assert "mine" in (config_dir / "package.json").read_text(encoding="utf-8")


# --- end to end: the real opencode accepts the profile, tools and answers still work ---------------------


@pytest.mark.e2e
async def test_lean_run_still_uses_bash_read_and_edit(
    opencode_binary: str, workspace: Path, offline_model: OfflineModelServer, tmp_path: Path
) -> None:
    readme = workspace / "README.md"
    offline_model.enqueue(
        Reply.tool_calls(
            ("bash", {"command": "echo hi", "description": "say hi"}),
            ("read", {"filePath": str(readme)}),
        ),
        Reply.tool_call(
            "edit",
            {"filePath": str(readme), "oldString": "# scratch workspace", "newString": "# lean workspace"},
        ),
        "All done.",
    )
    data_home = tmp_path / "data"
    client = AsyncOpenCodeClient(opencode_binary, startup_delay_s=0)
    result = await client.async_run(
        "Say hi, read the README, then edit it.",
        workspace,
        run_cfg=lean_run_config(offline_model.run_config()),
        timeout_s=180,
        data_home=data_home,
    )

    assert result.ok, (result.error, result.stderr)
    assert result.final_text == "All done."
    tools = {ev.part.tool: ev.part.state for ev in result.events if isinstance(ev, ToolUseEvent) and ev.part}
    assert set(tools) == {"bash", "read", "edit"}
    assert all(state.status == "completed" for state in tools.values()), tools
    assert tools["bash"].output == "hi\n"
    assert "scratch workspace" in (tools["read"].output or "")
    assert readme.read_text(encoding="utf-8") == "# lean workspace\n"
    # What the profile switches off really is off: no title request, no snapshot repository.
    assert not [r for r in offline_model.requests if r.is_title_request]
    assert len(offline_model.chat_requests) == 3
    snapshots = data_home / "opencode" / "snapshot"
    assert not snapshots.exists() or not any(snapshots.rglob("HEAD"))
