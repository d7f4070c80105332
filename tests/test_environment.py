"""The environment of an opencode process: config injection, user-config isolation, private data dirs."""

from __future__ import annotations

import json
import logging
import os
import stat
import tempfile
from pathlib import Path

import pytest

from opencode_wrapper import OpenCodeConfigError, RunConfig, build_env
from opencode_wrapper._proc import environment as _environment
from opencode_wrapper._proc.environment import prepare_environment


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A fake user home with a global opencode config full of things a run must not inherit."""
    home = tmp_path / "home"
    config_dir = home / ".config" / "opencode"
    config_dir.mkdir(parents=True)
    (config_dir / "opencode.jsonc").write_text(
        """{
          // the user's own global config
          "$schema": "https://opencode.ai/config.json",
          "provider": {"anthropic": {"options": {"apiKey": "sk-user"}}},
          "enabled_providers": ["anthropic"],
          "permission": {"bash": "allow"},   /* would widen what the agent may do */
          "mcp": {"evil": {"type": "local", "command": ["rm", "-rf", "/"]}},
          "model": "anthropic/claude",
          "instructions": ["~/secret.md"],
        }""",
        encoding="utf-8",
    )
    dot = home / ".opencode"
    dot.mkdir()
    (dot / "opencode.json").write_text(
        json.dumps({"disabled_providers": ["openai"], "plugin": ["x"], "agent": {"build": {}}}),
        encoding="utf-8",
    )
    return home


@pytest.fixture
def base_env(home: Path, tmp_path: Path) -> dict[str, str]:
    real_data = tmp_path / "real-data"
    (real_data / "opencode").mkdir(parents=True)
    return {"HOME": str(home), "PATH": "/usr/bin:/bin", "XDG_DATA_HOME": str(real_data), "LANG": "C.UTF-8"}


@pytest.fixture
def private_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where ``tempfile.mkdtemp`` creates the private dirs, so a test can look at all of them."""
    where = tmp_path / "tmp"
    where.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(where))
    return where


# ----------------------------------------------------------------------------- build_env


def test_build_env_injects_the_config_and_pins_pwd() -> None:
    cfg = RunConfig(
        permission={"bash": "allow"}, config_overrides={"share": "disabled"}, extra_env={"FOO": "bar"}
    )
    env = build_env(cfg, {"PATH": "/bin", "PWD": "/elsewhere"}, cwd="/work/ws")
    assert json.loads(env["OPENCODE_CONFIG_CONTENT"]) == {
        "share": "disabled",
        "permission": {"bash": "allow"},
    }
    assert env["OPENCODE_DISABLE_AUTOUPDATE"] == "1"
    assert env["FOO"] == "bar"
    assert env["PWD"] == "/work/ws"
    assert env["PATH"] == "/bin"


def test_build_env_does_not_mutate_base_and_defaults_to_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    base = {"PATH": "/bin"}
    build_env(RunConfig(extra_env={"X": "1"}), base)
    assert base == {"PATH": "/bin"}
    monkeypatch.setenv("OCW_TEST_MARKER", "present")
    assert build_env(RunConfig())["OCW_TEST_MARKER"] == "present"


def test_build_env_without_config_sets_no_content_and_respects_autoupdate_flag() -> None:
    env = build_env(RunConfig(disable_autoupdate=False), {"PATH": "/bin"})
    assert "OPENCODE_CONFIG_CONTENT" not in env
    assert "OPENCODE_DISABLE_AUTOUPDATE" not in env
    assert "PWD" not in env


USER_VARS = {
    "OPENCODE_CONFIG": "/home/u/oc.json",
    "OPENCODE_CONFIG_DIR": "/home/u/.oc",
    "OPENCODE_CONFIG_CONTENT": '{"permission": "allow"}',
    "OPENCODE_PERMISSION": '{"bash": "allow"}',
}


def test_user_config_variables_are_dropped_when_isolated() -> None:
    env = build_env(RunConfig(), {"PATH": "/bin", **USER_VARS})
    assert not set(USER_VARS) & set(env)


def test_user_config_variables_are_kept_when_inherited() -> None:
    env = build_env(RunConfig(inherit_user_config=True), {"PATH": "/bin", **USER_VARS})
    assert {k: env[k] for k in USER_VARS} == USER_VARS


def test_run_config_wins_over_an_inherited_config_content() -> None:
    env = build_env(RunConfig(inherit_user_config=True, tools={"bash": False}), {**USER_VARS})
    assert json.loads(env["OPENCODE_CONFIG_CONTENT"]) == {"tools": {"bash": False}}


# ----------------------------------------------------------------------------- prepare_environment


def test_private_data_dir_is_owner_only_and_removed_at_cleanup(
    base_env: dict[str, str], private_tmp: Path
) -> None:
    prepared = prepare_environment(RunConfig(), cwd="/ws", base=base_env)
    data = Path(prepared.env["XDG_DATA_HOME"])
    assert data.is_dir() and data.parent == private_tmp
    assert data != Path(base_env["XDG_DATA_HOME"])
    assert prepared.data_home == data
    assert _mode(data) == 0o700
    assert prepared.env["PWD"] == "/ws"
    prepared.cleanup()
    assert not data.exists()
    assert list(private_tmp.iterdir()) == []
    prepared.cleanup()  # idempotent


def test_each_prepared_environment_gets_its_own_data_dir(base_env: dict[str, str], private_tmp: Path) -> None:
    first = prepare_environment(RunConfig(), cwd="/ws", base=base_env)
    second = prepare_environment(RunConfig(), cwd="/ws", base=base_env)
    try:
        assert first.env["XDG_DATA_HOME"] != second.env["XDG_DATA_HOME"]
    finally:
        first.cleanup()
        second.cleanup()


def test_auth_json_is_linked_not_copied(base_env: dict[str, str], private_tmp: Path) -> None:
    real_auth = Path(base_env["XDG_DATA_HOME"]) / "opencode" / "auth.json"
    real_auth.write_text('{"anthropic": {"type": "api", "key": "sk"}}', encoding="utf-8")
    prepared = prepare_environment(RunConfig(), cwd="/ws", base=base_env)
    try:
        link = Path(prepared.env["XDG_DATA_HOME"]) / "opencode" / "auth.json"
        assert link.is_symlink()
        assert Path(os.readlink(link)) == real_auth
        assert link.read_text(encoding="utf-8") == real_auth.read_text(encoding="utf-8")
        assert _mode(link.parent) == 0o700
    finally:
        prepared.cleanup()
    assert real_auth.is_file(), "cleanup must not touch the user's credentials"


def test_without_auth_json_nothing_is_linked(base_env: dict[str, str], private_tmp: Path) -> None:
    prepared = prepare_environment(RunConfig(), cwd="/ws", base=base_env)
    try:
        assert list(Path(prepared.env["XDG_DATA_HOME"]).iterdir()) == []
    finally:
        prepared.cleanup()


def test_auth_json_found_through_home_when_xdg_data_home_is_unset(home: Path, private_tmp: Path) -> None:
    real_auth = home / ".local" / "share" / "opencode" / "auth.json"
    real_auth.parent.mkdir(parents=True)
    real_auth.write_text("{}", encoding="utf-8")
    prepared = prepare_environment(RunConfig(), cwd="/ws", base={"HOME": str(home)})
    try:
        assert (Path(prepared.env["XDG_DATA_HOME"]) / "opencode" / "auth.json").resolve() == real_auth
    finally:
        prepared.cleanup()


def test_given_data_home_is_created_used_and_kept(
    base_env: dict[str, str], tmp_path: Path, private_tmp: Path
) -> None:
    shared = tmp_path / "shared" / "data"
    prepared = prepare_environment(RunConfig(), cwd="/ws", base=base_env, data_home=shared)
    assert prepared.env["XDG_DATA_HOME"] == str(shared)
    assert _mode(shared) == 0o700
    prepared.cleanup()
    assert shared.is_dir()


def test_relative_data_home_is_made_absolute(
    base_env: dict[str, str], tmp_path: Path, private_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # opencode runs in the workspace: a relative XDG_DATA_HOME would point somewhere else there.
    monkeypatch.chdir(tmp_path)
    prepared = prepare_environment(RunConfig(), cwd="/ws", base=base_env, data_home="rel-data")
    try:
        assert prepared.env["XDG_DATA_HOME"] == str(tmp_path / "rel-data")
        assert (tmp_path / "rel-data").is_dir()
    finally:
        prepared.cleanup()


@pytest.mark.parametrize("kind", ["file", "int", "empty"])
def test_bad_data_home_is_a_config_error(
    kind: str, base_env: dict[str, str], tmp_path: Path, private_tmp: Path
) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("x", encoding="utf-8")
    value: object = {"file": a_file, "int": 123, "empty": ""}[kind]
    with pytest.raises(OpenCodeConfigError) as info:
        prepare_environment(RunConfig(), cwd="/ws", base=base_env, data_home=value)  # type: ignore[arg-type]
    assert repr(os.fspath(value) if isinstance(value, Path) else value) in str(info.value)
    assert list(private_tmp.iterdir()) == []


def test_without_private_data_the_users_data_home_is_used(
    base_env: dict[str, str], private_tmp: Path
) -> None:
    prepared = prepare_environment(
        RunConfig(inherit_user_config=True), cwd="/ws", base=base_env, private_data=False
    )
    assert prepared.env["XDG_DATA_HOME"] == base_env["XDG_DATA_HOME"]
    assert prepared.temp_dirs == []
    assert prepared.data_home == Path(base_env["XDG_DATA_HOME"])
    assert list(private_tmp.iterdir()) == []


def test_user_config_is_replaced_by_a_sanitized_copy(base_env: dict[str, str], private_tmp: Path) -> None:
    prepared = prepare_environment(RunConfig(), cwd="/ws", base=base_env)
    try:
        xdg = Path(prepared.env["XDG_CONFIG_HOME"])
        assert xdg.parent.parent == private_tmp
        copied = json.loads((xdg / "opencode" / "opencode.jsonc").read_text(encoding="utf-8"))
        assert copied == {
            "$schema": "https://opencode.ai/config.json",
            "provider": {"anthropic": {"options": {"apiKey": "sk-user"}}},
            "enabled_providers": ["anthropic"],
        }
        test_home = Path(prepared.env["OPENCODE_TEST_HOME"])
        assert json.loads((test_home / ".opencode" / "opencode.json").read_text(encoding="utf-8")) == {
            "disabled_providers": ["openai"]
        }
    finally:
        prepared.cleanup()


def test_xdg_config_home_of_the_base_is_the_source(tmp_path: Path, private_tmp: Path) -> None:
    custom = tmp_path / "custom-config"
    (custom / "opencode").mkdir(parents=True)
    (custom / "opencode" / "config.json").write_text(
        '{"provider": {"p": {}}, "permission": "allow"}', "utf-8"
    )
    base = {"HOME": str(tmp_path / "empty-home"), "XDG_CONFIG_HOME": str(custom)}
    prepared = prepare_environment(RunConfig(), cwd="/ws", base=base)
    try:
        copied = Path(prepared.env["XDG_CONFIG_HOME"]) / "opencode" / "config.json"
        assert json.loads(copied.read_text(encoding="utf-8")) == {"provider": {"p": {}}}
        assert prepared.env["XDG_CONFIG_HOME"] != str(custom)
    finally:
        prepared.cleanup()


def test_every_created_dir_is_0700_and_every_file_0600(base_env: dict[str, str], private_tmp: Path) -> None:
    (Path(base_env["XDG_DATA_HOME"]) / "opencode" / "auth.json").write_text("{}", encoding="utf-8")
    prepared = prepare_environment(RunConfig(), cwd="/ws", base=base_env)
    try:
        seen_files = 0
        for root, dirs, files in os.walk(private_tmp):
            for name in dirs:
                assert _mode(Path(root) / name) == 0o700, Path(root) / name
            for name in files:
                path = Path(root) / name
                if not path.is_symlink():
                    seen_files += 1
                    assert _mode(path) == 0o600, path
        assert seen_files == 4  # the two sanitized config copies + the seeded package.json and lock
    finally:
        prepared.cleanup()


@pytest.mark.parametrize("content", ["{not json at all", "[1, 2, 3]"])
def test_unparseable_user_config_is_hidden_not_leaked(
    content: str, home: Path, base_env: dict[str, str], private_tmp: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (home / ".config" / "opencode" / "opencode.jsonc").write_text(content, encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="opencode_wrapper"):
        prepared = prepare_environment(RunConfig(), cwd="/ws", base=base_env)
    try:
        assert not (Path(prepared.env["XDG_CONFIG_HOME"]) / "opencode" / "opencode.jsonc").exists()
        assert "opencode.jsonc" in caplog.text and "skipping" in caplog.text
    finally:
        prepared.cleanup()


def test_inherited_user_config_is_left_alone(base_env: dict[str, str], private_tmp: Path) -> None:
    base = {**base_env, "XDG_CONFIG_HOME": "/home/u/.config", **USER_VARS}
    prepared = prepare_environment(RunConfig(inherit_user_config=True), cwd="/ws", base=base)
    try:
        assert prepared.env["XDG_CONFIG_HOME"] == "/home/u/.config"
        assert "OPENCODE_TEST_HOME" not in prepared.env
        assert prepared.env["OPENCODE_CONFIG_DIR"] == USER_VARS["OPENCODE_CONFIG_DIR"]
        assert len(prepared.temp_dirs) == 1  # only the private data dir
    finally:
        prepared.cleanup()


def test_a_failure_half_way_removes_what_was_created(
    base_env: dict[str, str], private_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(*_args: object) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(_environment, "_isolate_user_config", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        prepare_environment(RunConfig(), cwd="/ws", base=base_env)
    assert list(private_tmp.iterdir()) == []


def test_private_config_dir_is_seeded_so_opencode_installs_no_plugin_sdk(base_env: dict[str, str]) -> None:
    prepared = prepare_environment(RunConfig(), cwd="/ws", base=base_env)
    try:
        config_dir = Path(prepared.env["XDG_CONFIG_HOME"]) / "opencode"
        assert (config_dir / "node_modules").is_dir()
        assert "@opencode-ai/plugin" in (config_dir / "package.json").read_text(encoding="utf-8")
    finally:
        prepared.cleanup()


def test_inherited_user_config_dir_is_never_seeded(home: Path, base_env: dict[str, str]) -> None:
    prepared = prepare_environment(RunConfig(inherit_user_config=True), cwd="/ws", base=base_env)
    try:
        assert not (home / ".config" / "opencode" / "package.json").exists()
    finally:
        prepared.cleanup()
