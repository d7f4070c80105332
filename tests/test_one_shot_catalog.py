"""A pool's servers skip the models catalog exactly when nothing could use it; run mode keeps it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from opencode_wrapper import AsyncOpenCodeClient, RunConfig, RunResult, run_many
from opencode_wrapper._lean import (
    MODELS_PATH_ENV,
    empty_models_catalog,
    needs_no_catalog,
    one_shot_run_config,
)
from opencode_wrapper._proc.environment import catalog_unused, user_providers
from opencode_wrapper.backends.pool import ServerPool
from opencode_wrapper.backends.request import RunRequest
from opencode_wrapper.testing import MODEL, OfflineModelServer, provider_config

DECLARED = {"provider": {"mine": {"npm": "@ai-sdk/openai-compatible", "models": {"m1": {}, "m2": {}}}}}


def _cfg(**fields: object) -> RunConfig:
    fields.setdefault("config_overrides", DECLARED)
    fields.setdefault("model", "mine/m1")
    return RunConfig(**fields)  # type: ignore[arg-type]


def test_a_declared_model_in_a_plain_folder_needs_no_catalog(tmp_path: Path) -> None:
    assert needs_no_catalog(_cfg(), tmp_path)
    env = one_shot_run_config(_cfg(), empty_catalog=catalog_unused(_cfg(), tmp_path)).extra_env or {}
    assert env[MODELS_PATH_ENV] == str(empty_models_catalog())
    assert empty_models_catalog().read_text(encoding="utf-8").strip() == "{}"


@pytest.mark.parametrize(
    "cfg",
    [
        RunConfig(model="anthropic/claude-sonnet-4-5"),  # a catalog model
        RunConfig(),  # opencode picks the model
        _cfg(inherit_user_config=True),  # the user's config may name any model
        _cfg(config_overrides={**DECLARED, "small_model": "anthropic/claude-haiku-4-5"}),
        _cfg(config_overrides={**DECLARED, "agent": {"review": {"model": "openai/gpt-5"}}}),
        _cfg(extra_env={"OPENCODE_CONFIG": "/etc/more.json"}),
        _cfg(extra_env={"OPENCODE_CONFIG_DIR": "/etc/opencode"}),
        # A built-in provider's model declared for its options: its SDK comes from the catalog.
        RunConfig(
            model="anthropic/claude-sonnet-4-5",
            config_overrides={"provider": {"anthropic": {"models": {"claude-sonnet-4-5": {}}}}},
        ),
    ],
    ids=[
        "catalog-model",
        "no-model",
        "inherited",
        "small-model",
        "agent-model",
        "config-env",
        "config-dir",
        "sdk-from-catalog",
    ],
)
def test_anything_that_could_use_the_catalog_keeps_it(cfg: RunConfig, tmp_path: Path) -> None:
    assert not needs_no_catalog(cfg, tmp_path)
    env = one_shot_run_config(cfg, empty_catalog=catalog_unused(cfg, tmp_path)).extra_env or {}
    assert env.get(MODELS_PATH_ENV) == (cfg.extra_env or {}).get(MODELS_PATH_ENV)


def test_declared_agent_models_need_no_catalog(tmp_path: Path) -> None:
    cfg = _cfg(config_overrides={**DECLARED, "agent": {"review": {"model": "mine/m2"}}})
    assert needs_no_catalog(cfg, tmp_path)


@pytest.mark.parametrize("name", ["opencode.json", "opencode.jsonc", ".opencode"])
def test_a_project_config_in_the_folder_or_above_keeps_the_catalog(tmp_path: Path, name: str) -> None:
    nested = tmp_path / "repo" / "src"
    nested.mkdir(parents=True)
    assert needs_no_catalog(_cfg(), nested)
    target = tmp_path / "repo" / name
    target.mkdir() if name.startswith(".") else target.write_text("{}", encoding="utf-8")
    assert not needs_no_catalog(_cfg(), nested)
    assert not needs_no_catalog(_cfg(), tmp_path / "repo")


def test_your_own_catalog_file_wins(tmp_path: Path) -> None:
    mine = str(tmp_path / "models.json")
    cfg = _cfg(extra_env={MODELS_PATH_ENV: mine})
    assert (one_shot_run_config(cfg, empty_catalog=True).extra_env or {})[MODELS_PATH_ENV] == mine


def test_providers_of_your_global_config_count_as_declared(tmp_path: Path) -> None:
    config_home = tmp_path / "xdg"
    (config_home / "opencode").mkdir(parents=True)
    (config_home / "opencode" / "opencode.jsonc").write_text(
        '// mine\n{"provider": ' + json.dumps(DECLARED["provider"]) + ', "model": "x/y"}\n', encoding="utf-8"
    )
    (tmp_path / "home" / ".opencode").mkdir(parents=True)
    (tmp_path / "home" / ".opencode" / "opencode.json").write_text("not json", encoding="utf-8")
    env = {"XDG_CONFIG_HOME": str(config_home), "HOME": str(tmp_path / "home")}
    found = user_providers(env)
    assert found == DECLARED["provider"]  # the unreadable file counts as empty
    bare = RunConfig(model="mine/m2")
    assert not needs_no_catalog(bare, tmp_path / "xdg")
    assert needs_no_catalog(bare, tmp_path / "xdg", found)
    assert not needs_no_catalog(RunConfig(model="mine/m3"), tmp_path / "xdg", found)  # not declared


def test_a_pool_gives_runs_that_could_use_the_catalog_a_server_of_their_own(tmp_path: Path) -> None:
    plain, project = tmp_path / "plain", tmp_path / "project"
    plain.mkdir()
    project.mkdir()
    (project / "opencode.json").write_text("{}", encoding="utf-8")
    pool = ServerPool()
    free = RunRequest.create("hi", plain, run_cfg=_cfg())
    catalog_model = RunRequest.create("hi", plain, run_cfg=_cfg(model="anthropic/claude-sonnet-4-5"))
    in_project = RunRequest.create("hi", project, run_cfg=_cfg())
    assert len({pool._key(free), pool._key(catalog_model), pool._key(in_project)}) == 2
    assert pool._key(catalog_model) == pool._key(in_project)  # the same config, both with the catalog
    empty = pool.server_config(free.config, empty_catalog=True).extra_env or {}
    full = pool.server_config(in_project.config).extra_env or {}
    assert empty[MODELS_PATH_ENV] == str(empty_models_catalog()) and MODELS_PATH_ENV not in full


# --- end to end: what the real opencode was given, seen from its bash tool ----------------------------

ECHO = '[[bash: echo "catalog=${OPENCODE_MODELS_PATH:-full}"]]'


def _seen(result: RunResult | None) -> str:
    assert result is not None and result.ok, result and result.error
    return (result.tool_calls[0].output or "").strip()


@pytest.mark.e2e
async def test_run_many_on_a_pool_skips_the_catalog_only_where_nothing_could_use_it(
    opencode_binary: str, make_workspace: Any
) -> None:
    plain, project = make_workspace("plain"), make_workspace("project")
    (project / "opencode.json").write_text("{}\n", encoding="utf-8")
    with OfflineModelServer() as model:
        cfg = model.run_config(permission={"bash": "allow"})
        async with ServerPool(binary=opencode_binary) as pool:
            outcomes = await run_many([(ECHO, plain), (ECHO, project)], run_cfg=cfg, pool=pool)
            assert len(pool.servers) == 2  # one without the catalog, one with it
    assert [_seen(o.result) for o in outcomes] == [f"catalog={empty_models_catalog()}", "catalog=full"]


@pytest.mark.e2e
async def test_a_model_declared_in_your_global_config_skips_the_catalog_too(
    opencode_binary: str, workspace: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with OfflineModelServer() as model:
        config_home = tmp_path / "user-config"
        (config_home / "opencode").mkdir(parents=True)
        (config_home / "opencode" / "opencode.json").write_text(json.dumps(provider_config(model.url)))
        monkeypatch.setenv("XDG_CONFIG_HOME", str(config_home))
        cfg = RunConfig(model=MODEL, permission={"bash": "allow"})  # declares nothing itself
        async with AsyncOpenCodeClient(opencode_binary, warm_servers=True) as warm:
            result = await warm.async_run(ECHO, workspace, run_cfg=cfg, timeout_s=120)
    assert _seen(result) == f"catalog={empty_models_catalog()}"


@pytest.mark.e2e
async def test_run_mode_keeps_the_catalog(opencode_binary: str, workspace: Path) -> None:
    # Without it opencode exits so soon after its last event that a multi-megabyte answer is cut in
    # the stdout pipe (tests/reliability/test_big_data.py).
    with OfflineModelServer() as model:
        cfg = model.run_config(permission={"bash": "allow"})
        result = await AsyncOpenCodeClient(opencode_binary).async_run(ECHO, workspace, run_cfg=cfg)
    assert _seen(result) == "catalog=full"
