"""RunConfig: validation, model strings, merging, the server key and the opencode config it produces."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from opencode_wrapper import OpenCodeConfigError, RunConfig, split_model, validate_permission_actions
from opencode_wrapper.config import (
    PRESERVE_KEYS,
    RESERVED_CLI_FLAGS,
    sanitize_user_config_json,
    validate_config,
    validate_config_for_run,
    validate_model,
)

# ----------------------------------------------------------------------------- split_model / model


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("anthropic/claude-sonnet-4-5", {"providerID": "anthropic", "modelID": "claude-sonnet-4-5"}),
        # Only the first "/" separates: OpenRouter-style model ids contain slashes themselves.
        (
            "openrouter/meta-llama/llama-3.1-8b",
            {"providerID": "openrouter", "modelID": "meta-llama/llama-3.1-8b"},
        ),
        ("offline/scripted", {"providerID": "offline", "modelID": "scripted"}),
        ("noslash", {"providerID": "", "modelID": "noslash"}),
    ],
)
def test_split_model(model: str, expected: dict[str, str]) -> None:
    assert split_model(model) == expected


@pytest.mark.parametrize("model", [None, "a/b", "offline/scripted", "openrouter/meta-llama/llama-3"])
def test_validate_model_accepts(model: str | None) -> None:
    validate_model(model)


@pytest.mark.parametrize(
    ("model", "fragment"),
    [
        ("noslash", "'noslash'"),
        ("", "''"),
        ("/m1", "'/m1'"),
        ("fake/", "'fake/'"),
        (" fake/m1", "' fake/m1'"),
        ("fake/m1\n", "'fake/m1\\n'"),
        ("  /  ", "'  /  '"),
        (123, "int 123"),
        (["fake/m1"], "list ['fake/m1']"),
    ],
)
def test_validate_model_rejects_and_names_the_value(model: object, fragment: str) -> None:
    with pytest.raises(OpenCodeConfigError) as info:
        validate_model(model)
    assert fragment in str(info.value)


def test_config_error_is_a_value_error() -> None:
    # Seed code catches ValueError; it must keep working.
    with pytest.raises(ValueError, match="noslash"):
        validate_config_for_run(RunConfig(model="noslash"))


# ----------------------------------------------------------------------------- permissions


def test_permission_maps_with_allow_and_deny_pass() -> None:
    validate_permission_actions({"*": "allow", "bash": {"*": "deny", "git *": "allow"}, "edit": "deny"})
    validate_permission_actions("allow")


def test_ask_is_refused_in_run_mode_with_its_path() -> None:
    with pytest.raises(OpenCodeConfigError) as info:
        validate_permission_actions({"bash": {"rm *": "ask"}})
    message = str(info.value)
    assert "'ask'" in message and "'bash.rm *'" in message and "run mode" in message


def test_ask_is_accepted_where_it_can_be_answered() -> None:
    validate_permission_actions({"bash": {"rm *": "ask"}}, allow_ask=True)


@pytest.mark.parametrize(
    ("permission", "fragment"),
    [
        ({"bash": "maybe"}, "'maybe' at 'bash'"),
        ({"bash": {"*": "ALLOW"}}, "'ALLOW' at 'bash.*'"),
        ({"bash": 1}, "1 at 'bash'"),
        ({"bash": None}, "None at 'bash'"),
        ({"bash": ["allow"]}, "['allow'] at 'bash'"),
        ({1: "allow"}, "keys must be strings, got 1"),
        ("yes", "'yes'"),
    ],
)
def test_bad_permission_values_are_named(permission: Any, fragment: str) -> None:
    with pytest.raises(OpenCodeConfigError) as info:
        validate_permission_actions(permission, allow_ask=True)
    assert fragment in str(info.value)


# ----------------------------------------------------------------------------- validate_config


def test_a_full_valid_config_passes() -> None:
    validate_config_for_run(
        RunConfig(
            agent="build",
            model="offline/scripted",
            extra_env={"FOO": "bar", "EMPTY": ""},
            permission={"bash": "allow", "edit": {"*.py": "deny"}},
            mcp={"local": {"type": "local", "command": ["srv", "--flag"], "enabled": True}},
            tools={"webfetch": False, "bash": True},
            instructions=["AGENTS.md", "docs/*.md"],
            config_overrides={"share": "disabled", "temperature": 0.5, "nested": {"a": [1, 2.5, None]}},
            cli_kwargs={"title": "demo", "fork": True, "f": ["a.txt", "b.png"], "thinking": False, "n": None},
        )
    )


BAD_CONFIGS: list[tuple[str, Any, str]] = [
    ("run_cfg", {"model": "a/b"}, "run_cfg must be a RunConfig, got dict"),
    ("agent", RunConfig(agent=""), "agent must be a non-empty string or None, got ''"),
    ("agent", RunConfig(agent="   "), "got '   '"),
    ("agent", RunConfig(agent=5), "got 5"),  # type: ignore[arg-type]
    ("permission", RunConfig(permission={"bash": "ask"}), "'ask' is not supported in run mode at 'bash'"),
    ("extra_env", RunConfig(extra_env=["A=1"]), "got a list"),  # type: ignore[arg-type]  # values never printed
    ("extra_env", RunConfig(extra_env={"PORT": 8080}), "'PORT'=int"),  # type: ignore[dict-item]
    ("extra_env", RunConfig(extra_env={"": "x"}), "entry ''"),
    ("extra_env", RunConfig(extra_env={"A=B": "x"}), "'A=B'"),
    ("extra_env", RunConfig(extra_env={3: "x"}), "entry 3"),  # type: ignore[dict-item]
    ("mcp", RunConfig(mcp=["server"]), "mcp must be a dict or None, got list ['server']"),  # type: ignore[arg-type]
    ("tools", RunConfig(tools={"bash": "yes"}), "tools['bash'] must be True or False, got 'yes'"),
    ("tools", RunConfig(tools={"bash": 1}), "got 1"),
    ("config_overrides", RunConfig(config_overrides={"x": {1, 2}}), "config_overrides.x is set {1, 2}"),
    ("config_overrides", RunConfig(config_overrides={"t": math.nan}), "config_overrides.t is nan"),
    ("config_overrides", RunConfig(config_overrides={"t": [1, math.inf]}), "config_overrides.t[1] is inf"),
    ("config_overrides", RunConfig(config_overrides={"a": {2: "x"}}), "non-string key 2"),
    ("config_overrides", RunConfig(config_overrides={"o": object}), "config_overrides.o is type"),
    ("config_overrides", RunConfig(config_overrides="share=disabled"), "'share=disabled'"),  # type: ignore[arg-type]
    ("instructions", RunConfig(instructions="AGENTS.md"), "'AGENTS.md'"),  # type: ignore[arg-type]
    ("instructions", RunConfig(instructions=["a.md", 1]), "['a.md', 1]"),  # type: ignore[list-item]
    ("cli_kwargs", RunConfig(cli_kwargs=["--fork"]), "['--fork']"),  # type: ignore[arg-type]
    ("cli_kwargs", RunConfig(cli_kwargs={"--title": "x"}), "'--title'"),
    ("cli_kwargs", RunConfig(cli_kwargs={"": True}), "key ''"),
    ("cli_kwargs", RunConfig(cli_kwargs={"ti tle": "x"}), "'ti tle'"),
    ("cli_kwargs", RunConfig(cli_kwargs={1: "x"}), "key 1"),  # type: ignore[dict-item]
    ("cli_kwargs", RunConfig(cli_kwargs={"title": object()}), "cli_kwargs['title'] has value <object"),
    ("cli_kwargs", RunConfig(cli_kwargs={"title": b"demo"}), "b'demo' of type bytes"),
    ("cli_kwargs", RunConfig(cli_kwargs={"f": ["a.txt", ["b.txt"]]}), "['b.txt'] of type list"),
    ("cli_kwargs", RunConfig(cli_kwargs={"title": {"a": 1}}), "{'a': 1} of type dict"),
]


@pytest.mark.parametrize(
    ("field", "cfg", "fragment"), BAD_CONFIGS, ids=[f"{c[0]}-{i}" for i, c in enumerate(BAD_CONFIGS)]
)
def test_bad_configs_raise_naming_the_value(field: str, cfg: Any, fragment: str) -> None:
    with pytest.raises(OpenCodeConfigError) as info:
        validate_config_for_run(cfg)
    assert fragment in str(info.value)
    if field != "run_cfg":
        assert field in str(info.value) or field == "permission"


@pytest.mark.parametrize("flag", sorted(RESERVED_CLI_FLAGS))
def test_reserved_cli_flags_are_refused(flag: str) -> None:
    with pytest.raises(OpenCodeConfigError) as info:
        validate_config_for_run(RunConfig(cli_kwargs={flag: "x"}))
    assert repr(flag) in str(info.value) and "set by the client itself" in str(info.value)


@pytest.mark.parametrize(
    ("cfg", "fragment"),
    [
        (RunConfig(model="fake/m1\x00"), "'fake/m1\\x00'"),
        (RunConfig(agent="build\x00"), "'build\\x00'"),
        (RunConfig(extra_env={"TOKEN": "abc\x00def"}), "'TOKEN'"),
        (RunConfig(extra_env={"TO\x00KEN": "abc"}), "'TO\\x00KEN'"),
        (RunConfig(cli_kwargs={"title": "de\x00mo"}), "'de\\x00mo'"),
        (RunConfig(cli_kwargs={"f": ["ok.txt", "a\x00b"]}), "'a\\x00b'"),
    ],
)
def test_nul_characters_that_cannot_reach_argv_or_env_are_config_errors(
    cfg: RunConfig, fragment: str
) -> None:
    # A NUL byte cannot be passed in argv or the environment: without this check, exec fails
    # later with a bare ValueError("embedded null byte") after temp dirs were created.
    with pytest.raises(OpenCodeConfigError) as info:
        validate_config_for_run(cfg)
    assert fragment in str(info.value)


def test_validate_config_allow_ask_switch() -> None:
    cfg = RunConfig(permission={"bash": "ask"})
    validate_config(cfg, allow_ask=True)
    with pytest.raises(OpenCodeConfigError):
        validate_config(cfg, allow_ask=False)


# ----------------------------------------------------------------------------- opencode config dict


def test_empty_config_sets_nothing() -> None:
    cfg = RunConfig()
    assert cfg.build_opencode_config_dict() == {}
    assert cfg.opencode_config_content_json() is None


def test_config_dict_contains_every_server_global_field() -> None:
    cfg = RunConfig(
        model="offline/scripted",
        agent="build",
        permission={"bash": "allow"},
        mcp={"srv": {"type": "remote", "url": "http://localhost:1"}},
        tools={"webfetch": False},
        instructions=("AGENTS.md",),  # type: ignore[arg-type]
        config_overrides={"share": "disabled"},
        cli_kwargs={"title": "t"},
    )
    assert cfg.build_opencode_config_dict() == {
        "share": "disabled",
        "permission": {"bash": "allow"},
        "mcp": {"srv": {"type": "remote", "url": "http://localhost:1"}},
        "tools": {"webfetch": False},
        "instructions": ["AGENTS.md"],
    }


def test_dedicated_fields_are_deep_merged_over_config_overrides() -> None:
    cfg = RunConfig(
        permission={"bash": "deny", "edit": {"*.md": "allow"}},
        config_overrides={
            "permission": {"bash": "allow", "webfetch": "deny", "edit": {"*": "deny"}},
            "instructions": ["old.md"],
            "provider": {"fake": {"options": {"baseURL": "http://x"}}},
        },
        instructions=["new.md"],
    )
    assert cfg.build_opencode_config_dict() == {
        "permission": {"bash": "deny", "webfetch": "deny", "edit": {"*": "deny", "*.md": "allow"}},
        "instructions": ["new.md"],
        "provider": {"fake": {"options": {"baseURL": "http://x"}}},
    }


def test_building_the_config_does_not_mutate_the_inputs() -> None:
    overrides = {"provider": {"fake": {"options": {"apiKey": "x"}}}, "permission": {"edit": "deny"}}
    permission = {"bash": "allow"}
    cfg = RunConfig(config_overrides=overrides, permission=permission)
    built = cfg.build_opencode_config_dict()
    built["provider"]["fake"]["options"]["apiKey"] = "changed"
    built["permission"]["bash"] = "deny"
    assert overrides == {"provider": {"fake": {"options": {"apiKey": "x"}}}, "permission": {"edit": "deny"}}
    assert permission == {"bash": "allow"}


def test_a_single_permission_action_for_everything_is_passed_through() -> None:
    # opencode accepts `"permission": "allow"` (all permissions at once), and validation accepts it.
    cfg = RunConfig(permission="allow")  # type: ignore[arg-type]
    validate_config_for_run(cfg)
    assert cfg.build_opencode_config_dict() == {"permission": "allow"}
    overriding = RunConfig(permission="deny", config_overrides={"permission": {"bash": "allow"}})  # type: ignore[arg-type]
    assert overriding.build_opencode_config_dict() == {"permission": "deny"}


def test_config_content_json_keeps_unicode_and_round_trips() -> None:
    cfg = RunConfig(instructions=["dokumentación/ü.md"], config_overrides={"share": "disabled"})
    content = cfg.opencode_config_content_json()
    assert content is not None
    assert "ü" in content
    assert json.loads(content) == cfg.build_opencode_config_dict()


# ----------------------------------------------------------------------------- merged_with


def test_merged_with_none_is_the_same_config() -> None:
    base = RunConfig(model="a/b")
    assert base.merged_with(None) is base


def test_merged_with_fields_set_in_other_win_and_mappings_deep_merge() -> None:
    base = RunConfig(
        model="a/base",
        agent="build",
        tools={"webfetch": False},
        permission={"bash": {"*": "deny", "git *": "allow"}},
        instructions=["base.md"],
        extra_env={"A": "1"},
    )
    turn = RunConfig(
        model="a/turn",
        tools={"bash": False},
        permission={"bash": {"rm *": "deny"}},
        instructions=["turn.md"],
        extra_env={"B": "2"},
    )
    merged = base.merged_with(turn)
    assert merged.model == "a/turn"
    assert merged.agent == "build"  # not set in `turn`: kept
    assert merged.tools == {"webfetch": False, "bash": False}
    assert merged.permission == {"bash": {"*": "deny", "git *": "allow", "rm *": "deny"}}
    assert merged.instructions == ["turn.md"]  # lists are replaced, not concatenated
    assert merged.extra_env == {"A": "1", "B": "2"}


def test_merged_with_returns_a_new_config_and_leaves_both_unchanged() -> None:
    base = RunConfig(tools={"webfetch": False})
    turn = RunConfig(tools={"bash": False})
    merged = base.merged_with(turn)
    assert merged is not base
    assert base.tools == {"webfetch": False}
    assert turn.tools == {"bash": False}


def test_merged_with_non_default_boolean_wins() -> None:
    merged = RunConfig().merged_with(RunConfig(inherit_user_config=True, disable_autoupdate=False))
    assert merged.inherit_user_config is True
    assert merged.disable_autoupdate is False


# ----------------------------------------------------------------------------- server_key


def test_server_key_ignores_per_turn_fields() -> None:
    # model, agent and tools go with each prompt; cli_kwargs are run-mode only.
    a = RunConfig(
        model="a/one",
        agent="build",
        tools={"bash": False},
        cli_kwargs={"title": "x"},
        permission={"bash": "allow"},
    )
    b = RunConfig(model="b/two", agent="plan", tools=None, cli_kwargs=None, permission={"bash": "allow"})
    assert a.server_key() == b.server_key()


def test_server_key_does_not_depend_on_env_order() -> None:
    a = RunConfig(extra_env={"A": "1", "B": "2"})
    b = RunConfig(extra_env={"B": "2", "A": "1"})
    assert a.server_key() == b.server_key()


@pytest.mark.parametrize(
    "other",
    [
        RunConfig(permission={"bash": "deny"}),
        RunConfig(extra_env={"A": "1"}),
        RunConfig(inherit_user_config=True),
        RunConfig(disable_autoupdate=False),
        RunConfig(config_overrides={"share": "disabled"}),
        RunConfig(mcp={"srv": {"type": "local", "command": ["x"]}}),
        RunConfig(instructions=["a.md"]),
    ],
)
def test_server_key_differs_for_server_global_settings(other: RunConfig) -> None:
    assert RunConfig().server_key() != other.server_key()


# ----------------------------------------------------------------------------- user config sanitizing


def test_sanitize_keeps_only_provider_selection_keys() -> None:
    raw = {
        "$schema": "https://opencode.ai/config.json",
        "provider": {"anthropic": {"options": {"apiKey": "k"}}},
        "disabled_providers": ["openai"],
        "enabled_providers": ["anthropic"],
        "permission": {"bash": "allow"},
        "mcp": {"x": {}},
        "model": "anthropic/claude",
        "agent": {"build": {}},
        "plugin": ["evil"],
    }
    assert sanitize_user_config_json(raw) == {k: raw[k] for k in PRESERVE_KEYS}
