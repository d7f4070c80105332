"""``RunConfig`` remembers which fields were given; ``RunRequest.create`` names every bad value."""

from __future__ import annotations

import copy
import math
import pickle
import re
from pathlib import Path
from typing import Any

import pytest

from opencode_wrapper.backends.request import RunRequest
from opencode_wrapper.config import UNSET, RunConfig
from opencode_wrapper.errors import OpenCodeConfigError

DEFAULTS: dict[str, Any] = {
    "agent": None,
    "model": None,
    "disable_autoupdate": True,
    "inherit_user_config": False,
    "extra_env": None,
    "permission": None,
    "mcp": None,
    "tools": None,
    "instructions": None,
    "config_overrides": None,
    "cli_kwargs": None,
}


def values(cfg: RunConfig) -> dict[str, Any]:
    return {name: getattr(cfg, name) for name in DEFAULTS}


# ----------------------------------------------------------------------------- given vs UNSET


def test_nothing_given_means_the_defaults() -> None:
    cfg = RunConfig()
    assert cfg.given_fields == frozenset()
    assert values(cfg) == DEFAULTS
    assert not any(cfg.is_given(name) for name in DEFAULTS)


def test_constructor_arguments_are_given_even_with_the_defaults_value() -> None:
    cfg = RunConfig(model="offline/scripted", permission=None, disable_autoupdate=True)
    assert cfg.given_fields == {"model", "permission", "disable_autoupdate"}
    assert cfg.is_given("permission") and not cfg.is_given("agent")
    assert values(cfg) == {**DEFAULTS, "model": "offline/scripted"}
    explicit_unset = RunConfig(model=UNSET, agent="build")
    assert explicit_unset.given_fields == {"agent"} and explicit_unset.model is None


def test_assignment_gives_a_field_and_assigning_unset_takes_it_back() -> None:
    cfg = RunConfig()
    cfg.agent = "plan"
    cfg.inherit_user_config = False  # the default's value, given
    assert cfg.given_fields == {"agent", "inherit_user_config"}
    cfg.agent = UNSET
    assert cfg.agent is None and cfg.given_fields == {"inherit_user_config"}
    cfg.disable_autoupdate = UNSET
    assert cfg.disable_autoupdate is True and not cfg.is_given("disable_autoupdate")


# ----------------------------------------------------------------------------- merged_with


def test_only_given_fields_win_a_merge() -> None:
    base = RunConfig(
        model="offline/scripted", agent="build", permission={"bash": "allow"}, inherit_user_config=True
    )
    merged = base.merged_with(RunConfig(agent="plan"))
    assert (merged.model, merged.agent, merged.permission, merged.inherit_user_config) == (
        "offline/scripted", "plan", {"bash": "allow"}, True,
    )  # fmt: skip
    assert merged.given_fields == {"model", "agent", "permission", "inherit_user_config"}
    assert base.merged_with(None) is base
    assert values(base.merged_with(RunConfig())) == values(base)


@pytest.mark.parametrize(
    ("field", "base_value", "task_value"),
    [
        ("inherit_user_config", True, False),
        ("permission", {"bash": "allow"}, None),
        ("disable_autoupdate", False, True),
        ("model", "offline/scripted", None),
        ("tools", {"webfetch": False}, None),
    ],
)
def test_a_task_can_set_a_field_back_to_its_default(field: str, base_value: Any, task_value: Any) -> None:
    base = RunConfig(**{field: base_value})
    merged = base.merged_with(RunConfig(**{field: task_value}))
    assert getattr(merged, field) == task_value == DEFAULTS[field]
    assert merged.is_given(field)


def test_mappings_given_on_both_sides_deep_merge_without_touching_either() -> None:
    base = RunConfig(
        tools={"webfetch": False, "bash": True},
        config_overrides={"provider": {"offline": {"options": {"baseURL": "http://a"}, "name": "Offline"}}},
        permission={"bash": "allow", "edit": {"*.md": "allow"}},
    )
    task = RunConfig(
        tools={"bash": False, "read": True},
        config_overrides={"provider": {"offline": {"options": {"timeout": 5}}}},
        permission={"edit": {"*.py": "deny"}},
    )
    before = (copy.deepcopy(values(base)), copy.deepcopy(values(task)))
    merged = base.merged_with(task)
    assert merged.tools == {"webfetch": False, "bash": False, "read": True}
    assert merged.config_overrides == {
        "provider": {"offline": {"options": {"baseURL": "http://a", "timeout": 5}, "name": "Offline"}}
    }
    assert merged.permission == {"bash": "allow", "edit": {"*.md": "allow", "*.py": "deny"}}
    assert (values(base), values(task)) == before
    assert merged.tools is not None
    merged.tools["bash"] = True
    assert task.tools == {"bash": False, "read": True}  # the merge copied, it did not share


def test_a_given_non_mapping_replaces_a_mapping() -> None:
    bare: Any = "deny"  # a bare action is valid opencode config
    merged = RunConfig(permission={"bash": "allow"}).merged_with(RunConfig(permission=bare))
    assert merged.permission == bare
    assert merged.build_opencode_config_dict() == {"permission": "deny"}


# ----------------------------------------------------------------------------- replace, equality, repr


def test_replace_keeps_givenness() -> None:
    cfg = RunConfig(model="offline/scripted")
    changed = cfg.replace(agent="plan")
    assert changed.given_fields == {"model", "agent"} and (changed.model, changed.agent) == (
        "offline/scripted",
        "plan",
    )
    assert cfg.given_fields == {"model"} and cfg.agent is None  # the original is unchanged
    back = changed.replace(model=UNSET)
    assert back.given_fields == {"agent"} and back.model is None
    with pytest.raises(OpenCodeConfigError, match=r"no field\(s\) \['modle'\]"):
        cfg.replace(modle="x")


def test_equality_ignores_givenness() -> None:
    assert RunConfig() == RunConfig(disable_autoupdate=True, inherit_user_config=False, model=None)
    assert RunConfig(model="a/b") != RunConfig(model="a/c")


def test_repr_shows_only_given_fields_and_hides_secrets() -> None:
    assert repr(RunConfig()) == "RunConfig()"
    assert repr(RunConfig(permission=None)) == "RunConfig(permission=None)"
    cfg = RunConfig(
        model="offline/scripted",
        extra_env={"OPENAI_API_KEY": "sk-env-secret", "PLAIN": "visible-env"},
        config_overrides={
            "provider": {"p": {"options": {"apiKey": "sk-provider-secret", "baseURL": "http://x:1"}}}
        },
        mcp={
            "srv": {"type": "remote", "url": "http://m", "headers": {"Authorization": "Bearer sk-mcp-secret"}}
        },
    )
    shown = repr(cfg)
    assert shown.startswith("RunConfig(model='offline/scripted', ")
    for secret in ("sk-env-secret", "visible-env", "sk-provider-secret", "sk-mcp-secret"):
        assert secret not in shown
    assert "'OPENAI_API_KEY': '***'" in shown and "'apiKey': '***'" in shown and "'headers': '***'" in shown
    assert "http://x:1" in shown and "http://m" in shown  # what is not a credential stays readable
    assert "agent=" not in shown and "permission=" not in shown
    assert cfg.extra_env == {
        "OPENAI_API_KEY": "sk-env-secret",
        "PLAIN": "visible-env",
    }  # hidden only in the repr


def test_copies_and_pickles_keep_givenness() -> None:
    cfg = RunConfig(model="offline/scripted", inherit_user_config=False, tools={"bash": True})
    for other in (copy.copy(cfg), copy.deepcopy(cfg), pickle.loads(pickle.dumps(cfg))):
        assert other == cfg and other.given_fields == cfg.given_fields
        assert other.merged_with(RunConfig()).given_fields == cfg.given_fields
    assert pickle.loads(pickle.dumps(UNSET)) is UNSET


# ----------------------------------------------------------------------------- RunRequest.create


async def _async_callback(request: dict[str, Any]) -> str:
    return "once"


def _sync_callback(request: dict[str, Any]) -> str:
    return "once"


def test_a_good_request_is_normalized(tmp_path: Path) -> None:
    attached = tmp_path / "notes.txt"
    attached.write_text("x", encoding="utf-8")
    request = RunRequest.create(
        "hi", tmp_path, timeout_s=5, files=[attached], max_retries=0, title="t", on_permission=_async_callback
    )
    assert (request.prompt, request.workspace, request.timeout_s, request.files) == (
        "hi", str(tmp_path.resolve()), 5.0, (str(attached.resolve()),),
    )  # fmt: skip
    assert (request.max_retries, request.retry_delay_s, request.title) == (0, 1.0, "t")
    assert request.given == {"timeout_s", "files", "max_retries", "title", "on_permission"}
    assert RunRequest.create("hi", tmp_path).given == frozenset()


BAD_OPTIONS: list[tuple[dict[str, Any], str]] = [
    ({"timeout_s": 0}, r"timeout_s must be a positive number of seconds or None, got 0"),
    ({"timeout_s": -1.5}, r"timeout_s .* got -1\.5"),
    ({"timeout_s": math.nan}, r"timeout_s .* got nan"),
    ({"timeout_s": "5"}, r"timeout_s .* got '5'"),
    ({"timeout_s": True}, r"timeout_s .* got True"),
    ({"callback_timeout_s": 0}, r"callback_timeout_s .* got 0"),
    (
        {"output_schema": ["not", "a", "schema"]},
        r"output_schema must be a JSON schema dict or a pydantic model",
    ),
    ({"output_schema": {"type": "string"}}, r"output_schema must describe an object .* got type 'string'"),
    ({"output_schema": {"type": "object", "properties": 5}}, r"output_schema is not a valid JSON schema"),
    ({"on_permission": _sync_callback}, r"on_permission must be an async function \(async def \.\.\.\), got"),
    ({"on_question": "yes"}, r"on_question must be an async function or None, got 'yes'"),
    ({"on_event": 42}, r"on_event must be a callable taking one event, or None, got 42"),
    ({"title": ""}, r"title must be a non-empty string or None, got ''"),
    ({"title": 7}, r"title must be a non-empty string or None, got 7"),
    ({"max_retries": -1}, r"max_retries must be a non-negative integer, got -1"),
    ({"max_retries": 1.5}, r"max_retries must be a non-negative integer, got 1\.5"),
    ({"max_retries": True}, r"max_retries must be a non-negative integer, got True"),
    ({"retry_delay_s": -0.5}, r"retry_delay_s must be a non-negative number, got -0\.5"),
    ({"log_file": 12}, r"log_file must be a path or None, got 12"),
    ({"log_exclude_types": "text"}, r"log_exclude_types must be a collection of event type strings"),
    ({"run_cfg": {"model": "a/b"}}, r"run_cfg must be a RunConfig, got dict"),
    ({"run_cfg": RunConfig(model="no-slash")}, r"Invalid model 'no-slash'"),
    ({"run_cfg": RunConfig(permission={"bash": "maybe"})}, r"Invalid permission action 'maybe' at 'bash'"),
]


@pytest.mark.parametrize(("options", "message"), BAD_OPTIONS)
def test_each_bad_option_is_named(tmp_path: Path, options: dict[str, Any], message: str) -> None:
    with pytest.raises(OpenCodeConfigError, match=message):
        RunRequest.create("hi", tmp_path, **options)


def test_bad_prompts_and_workspaces_are_named(tmp_path: Path) -> None:
    with pytest.raises(OpenCodeConfigError, match=r"prompt must be a str, got int 42"):
        RunRequest.create(42, tmp_path)
    with pytest.raises(OpenCodeConfigError, match=r"prompt must contain some text, got ' \\n'"):
        RunRequest.create(" \n", tmp_path)
    missing = tmp_path / "missing"
    with pytest.raises(OpenCodeConfigError, match=f"workspace '{re.escape(str(missing))}' does not exist"):
        RunRequest.create("hi", missing)
    a_file = tmp_path / "file.txt"
    a_file.write_text("x", encoding="utf-8")
    with pytest.raises(OpenCodeConfigError, match=f"workspace '{re.escape(str(a_file))}' is not a directory"):
        RunRequest.create("hi", a_file)
    with pytest.raises(
        OpenCodeConfigError, match=r"workspace must be a path \(str or os.PathLike\), got int 3"
    ):
        RunRequest.create("hi", 3)


def test_bad_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(
        OpenCodeConfigError, match=r"files must be a list of paths, not a single path 'a.txt'"
    ):
        RunRequest.create("hi", tmp_path, files="a.txt")
    missing = tmp_path / "gone.txt"
    with pytest.raises(
        OpenCodeConfigError, match=f"file to attach '{re.escape(str(missing))}' does not exist"
    ):
        RunRequest.create("hi", tmp_path, files=[missing])
    with pytest.raises(OpenCodeConfigError, match=r"files must contain paths \(str or os.PathLike\), got 5"):
        RunRequest.create("hi", tmp_path, files=[5])  # type: ignore[list-item]


def test_the_first_bad_value_is_reported_before_anything_else_is_checked(tmp_path: Path) -> None:
    with pytest.raises(OpenCodeConfigError, match="prompt"):
        RunRequest.create("", tmp_path / "missing", timeout_s=-1)
