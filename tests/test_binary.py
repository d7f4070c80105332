"""Finding, checking and installing the opencode executable (fake binaries only, npm is never run)."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from fakes.opencode import FakeOpenCode, write_script
from opencode_wrapper import (
    OpenCodeBinaryNotFoundError,
    OpenCodeVersionError,
    install_opencode,
    resolve_binary,
)
from opencode_wrapper import __main__ as cli
from opencode_wrapper._proc.binary import (
    binary_version,
    check_version,
    parse_version,
    user_install_prefix,
)

HINT = "install-opencode"


@pytest.fixture
def clean_lookup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No OPENCODE_BINARY, an empty PATH dir, and a private per-user cache; returns the PATH dir."""
    path_dir = tmp_path / "path-bin"
    path_dir.mkdir()
    monkeypatch.delenv("OPENCODE_BINARY", raising=False)
    monkeypatch.setenv("PATH", str(path_dir))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return path_dir


def _fake(folder: Path, version: str = "1.18.33") -> Path:
    return FakeOpenCode(folder, version=version).path


# ----------------------------------------------------------------------------- resolution order


def test_explicit_argument_wins_over_env_and_path(
    clean_lookup: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    arg = _fake(tmp_path / "arg")
    monkeypatch.setenv("OPENCODE_BINARY", str(_fake(tmp_path / "env")))
    _fake(clean_lookup)
    assert resolve_binary(arg) == str(arg.resolve())
    assert resolve_binary(str(arg)) == str(arg.resolve())


def test_explicit_name_is_looked_up_on_path(clean_lookup: Path) -> None:
    named = write_script(clean_lookup / "my-opencode", "echo 1.18.33")
    assert resolve_binary("my-opencode") == str(named)


def test_env_variable_wins_over_path_for_the_default_name(
    clean_lookup: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env_binary = _fake(tmp_path / "env")
    _fake(clean_lookup)
    monkeypatch.setenv("OPENCODE_BINARY", str(env_binary))
    assert resolve_binary() == str(env_binary.resolve())
    assert resolve_binary(None) == str(env_binary.resolve())


def test_path_is_used_when_nothing_is_given(clean_lookup: Path) -> None:
    on_path = _fake(clean_lookup)
    assert resolve_binary() == str(on_path)


def test_per_user_install_is_the_last_resort(clean_lookup: Path) -> None:
    installed = user_install_prefix() / "node_modules" / ".bin" / "opencode"
    installed.parent.mkdir(parents=True)
    write_script(installed, "echo 1.18.33")
    assert str(user_install_prefix()).startswith(str(clean_lookup.parent / "cache"))
    assert resolve_binary() == str(installed.resolve())


def test_path_wins_over_the_per_user_install(clean_lookup: Path) -> None:
    installed = user_install_prefix() / "node_modules" / ".bin" / "opencode"
    installed.parent.mkdir(parents=True)
    write_script(installed, "echo 1.18.33")
    on_path = _fake(clean_lookup)
    assert resolve_binary() == str(on_path)


def test_nothing_found_explains_how_to_install(clean_lookup: Path) -> None:
    with pytest.raises(OpenCodeBinaryNotFoundError) as info:
        resolve_binary()
    message = str(info.value)
    assert "OPENCODE_BINARY" in message and "PATH" in message and HINT in message
    assert str(user_install_prefix() / "node_modules" / ".bin" / "opencode") in message


# ----------------------------------------------------------------------------- unusable candidates


def test_not_executable(clean_lookup: Path, tmp_path: Path) -> None:
    script = write_script(tmp_path / "opencode", "echo 1.18.33", mode=0o644)
    with pytest.raises(OpenCodeBinaryNotFoundError) as info:
        resolve_binary(script)
    assert (
        "is not executable" in str(info.value) and str(script) in str(info.value) and HINT in str(info.value)
    )


def test_directory(clean_lookup: Path, tmp_path: Path) -> None:
    with pytest.raises(OpenCodeBinaryNotFoundError) as info:
        resolve_binary(tmp_path)
    assert "is a directory" in str(info.value) and str(tmp_path) in str(info.value)


def test_missing_argument(clean_lookup: Path, tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "opencode"
    with pytest.raises(OpenCodeBinaryNotFoundError) as info:
        resolve_binary(missing)
    assert "does not exist" in str(info.value) and "binary argument" in str(info.value)


def test_bad_env_variable_is_reported_not_skipped(
    clean_lookup: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake(clean_lookup)  # a usable one on PATH must not silently replace what the user asked for
    monkeypatch.setenv("OPENCODE_BINARY", str(tmp_path / "gone"))
    with pytest.raises(OpenCodeBinaryNotFoundError) as info:
        resolve_binary()
    assert "(from OPENCODE_BINARY)" in str(info.value) and "gone" in str(info.value)


# ----------------------------------------------------------------------------- version check


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1.18.33\n", (1, 18, 33)),
        ("v1.18.33", (1, 18, 33)),
        ("1.19.0-beta.2", (1, 19, 0)),
        ("1.18.33 (build abc)", (1, 18, 33)),
        ("1.18", None),
        ("", None),
        ("hello world", None),
        ("1.x.3", None),
        ("opencode 1.18.33", None),
    ],
)
def test_parse_version(text: str, expected: tuple[int, int, int] | None) -> None:
    assert parse_version(text) == expected


def test_a_script_that_is_not_opencode_is_refused(tmp_path: Path) -> None:
    script = write_script(tmp_path / "impostor", "echo 'Usage: impostor [options] -- does things'")
    with pytest.raises(OpenCodeBinaryNotFoundError) as info:
        binary_version(str(script))
    message = str(info.value)
    assert "is not opencode" in message and "Usage: impostor" in message and HINT in message


def test_version_printed_with_failing_exit_is_refused(tmp_path: Path) -> None:
    script = write_script(tmp_path / "failing", "echo 1.18.33; exit 2")
    with pytest.raises(OpenCodeBinaryNotFoundError, match="exited 2"):
        binary_version(str(script))


def test_a_file_that_cannot_be_executed_is_refused(tmp_path: Path) -> None:
    junk = tmp_path / "junk"
    junk.write_bytes(b"\x00\x01\x02 not an executable format")
    junk.chmod(0o755)
    with pytest.raises(OpenCodeBinaryNotFoundError, match="could not be run as opencode"):
        binary_version(str(junk))


def test_tested_version_gives_no_warning(tmp_path: Path) -> None:
    binary = str(_fake(tmp_path / "ok", "1.18.33"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check_version(binary) == (1, 18, 33)


@pytest.mark.parametrize("version", ["1.19.0", "1.99.3"])
def test_untested_version_warns_once(tmp_path: Path, version: str) -> None:
    binary = str(_fake(tmp_path / "untested", version))
    with pytest.warns(
        RuntimeWarning, match=rf"opencode {version} .* outside the tested range \[1\.18\.0, 1\.19\.0\)"
    ):
        assert check_version(binary) == parse_version(version)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_version(binary)


@pytest.mark.parametrize("version", ["2.0.1", "2.1.0", "1.17.9"])
def test_unsupported_version_is_refused_naming_the_range(tmp_path: Path, version: str) -> None:
    binary = str(_fake(tmp_path / "unsupported", version))
    with pytest.raises(
        OpenCodeVersionError, match=rf"opencode {version} .* is not supported.*>=1\.18\.0, <2\.0\.0"
    ):
        check_version(binary)
    # A version error is a "no usable opencode" error: code that catches that keeps working.
    assert issubclass(OpenCodeVersionError, OpenCodeBinaryNotFoundError)


def test_version_is_asked_once_per_binary(tmp_path: Path) -> None:
    fake = FakeOpenCode(tmp_path / "once")
    binary_version(str(fake.path))
    binary_version(str(fake.path))
    assert fake.version_calls() == 1


# ----------------------------------------------------------------------------- install_opencode


def test_install_without_npm_says_what_is_missing(clean_lookup: Path, tmp_path: Path) -> None:
    prefix = tmp_path / "install"
    with pytest.raises(OpenCodeBinaryNotFoundError) as info:
        install_opencode(prefix=prefix)
    assert "npm was not found on PATH" in str(info.value) and "Node.js" in str(info.value)
    assert not prefix.exists(), "nothing is half-installed"


def test_install_reuses_an_existing_install_of_the_same_version(clean_lookup: Path, tmp_path: Path) -> None:
    prefix = tmp_path / "install"
    _fake(prefix / "node_modules" / ".bin")
    # No npm on PATH: returning at all proves npm was not needed.
    assert install_opencode("1.18.33", prefix) == prefix / "node_modules" / ".bin" / "opencode"


def test_install_over_another_version_needs_npm(clean_lookup: Path, tmp_path: Path) -> None:
    prefix = tmp_path / "install"
    _fake(prefix / "node_modules" / ".bin", version="1.17.0")
    with pytest.raises(OpenCodeBinaryNotFoundError, match="npm was not found"):
        install_opencode("1.18.33", prefix)


def test_cli_install_reports_the_error_and_exits_1(
    clean_lookup: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["install-opencode", "--prefix", str(tmp_path / "p")]) == 1
    assert "error: npm was not found" in capsys.readouterr().err
