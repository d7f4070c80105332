"""Finding, installing and checking the ``opencode`` executable."""

from __future__ import annotations

import os
import shutil
import subprocess
import warnings
from functools import lru_cache
from pathlib import Path

from opencode_wrapper.errors import OpenCodeBinaryNotFoundError, OpenCodeVersionError

#: The opencode release this package is tested against (npm package ``opencode-ai``).
OPENCODE_VERSION = "1.18.33"
#: Versions outside ``[MIN, MAX)`` get a warning: their event shapes and quirks are untested.
TESTED_VERSION_MIN = (1, 18, 0)
TESTED_VERSION_MAX = (1, 19, 0)
#: Versions outside ``[MIN, MAX)`` are refused: opencode 2.x moved its server API under ``/api/...``
#: and older releases hang on permissions in headless runs.
SUPPORTED_VERSION_MIN = (1, 18, 0)
SUPPORTED_VERSION_MAX = (2, 0, 0)

_NPM_PACKAGE = "opencode-ai"
_INSTALL_HINT = (
    "Install the tested release with `python -m opencode_wrapper install-opencode` "
    f"(npm package {_NPM_PACKAGE}@{OPENCODE_VERSION}), or set OPENCODE_BINARY to its path."
)


def user_install_prefix(version: str = OPENCODE_VERSION) -> Path:
    """The per-user folder that ``install-opencode`` installs into by default."""
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "opencode-wrapper" / "opencode" / version


def _installed_binary(prefix: Path) -> Path:
    return prefix / "node_modules" / ".bin" / "opencode"


def resolve_binary(binary: str | os.PathLike[str] | None = "opencode") -> str:
    """Return the absolute path of the ``opencode`` executable to use.

    Looks, in order, at ``binary`` (a path, or a name looked up on ``PATH``), the
    ``OPENCODE_BINARY`` environment variable, ``PATH``, and the per-user install made by
    ``python -m opencode_wrapper install-opencode``. The default name ``"opencode"`` counts
    as "not given", so ``OPENCODE_BINARY`` wins over it.

    Raises:
        OpenCodeBinaryNotFoundError: nothing usable was found; the message says how to install.
    """
    explicit = None if binary in (None, "opencode") else os.fspath(binary)
    if explicit is not None:
        return _check_executable(explicit, source="binary argument")
    env_value = os.environ.get("OPENCODE_BINARY")
    if env_value:
        return _check_executable(env_value, source="OPENCODE_BINARY")
    on_path = shutil.which("opencode")
    if on_path:
        return on_path
    installed = _installed_binary(user_install_prefix())
    if installed.exists():
        return _check_executable(str(installed), source="per-user install")
    raise OpenCodeBinaryNotFoundError(
        "OpenCode binary not found: not given, OPENCODE_BINARY is unset, `opencode` is not on PATH "
        f"and there is no per-user install at {installed}. {_INSTALL_HINT}"
    )


def _check_executable(candidate: str, *, source: str) -> str:
    path = Path(candidate).expanduser()
    if path.is_file():
        if not os.access(path, os.X_OK):
            raise OpenCodeBinaryNotFoundError(
                f"OpenCode binary {candidate!r} (from {source}) is not executable. {_INSTALL_HINT}"
            )
        return str(path.resolve())
    if path.is_dir():
        raise OpenCodeBinaryNotFoundError(
            f"OpenCode binary {candidate!r} (from {source}) is a directory, not an executable. "
            f"{_INSTALL_HINT}"
        )
    found = shutil.which(candidate)
    if found:
        return found
    raise OpenCodeBinaryNotFoundError(
        f"OpenCode binary {candidate!r} (from {source}) does not exist. {_INSTALL_HINT}"
    )


def parse_version(text: str) -> tuple[int, int, int] | None:
    """Parse ``"1.18.33"`` (possibly with a ``v`` prefix or trailing text) into a tuple."""
    head = text.strip().lstrip("v").split()[0] if text.strip() else ""
    pieces = head.split(".")
    if len(pieces) < 3:
        return None
    try:
        return int(pieces[0]), int(pieces[1]), int(pieces[2].split("-")[0])
    except ValueError:
        return None


@lru_cache(maxsize=32)
def binary_version(binary: str) -> tuple[int, int, int]:
    """Run ``binary --version`` once (cached per path) and return the parsed version.

    Raises:
        OpenCodeBinaryNotFoundError: the file does not answer ``--version`` like opencode does.
    """
    try:
        completed = subprocess.run(
            [binary, "--version"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise OpenCodeBinaryNotFoundError(
            f"{binary!r} could not be run as opencode ({exc}). {_INSTALL_HINT}"
        ) from exc
    version = parse_version(completed.stdout)
    if completed.returncode != 0 or version is None:
        raise OpenCodeBinaryNotFoundError(
            f"{binary!r} is not opencode: `--version` exited {completed.returncode} "
            f"and printed {completed.stdout.strip()[:200]!r}. {_INSTALL_HINT}"
        )
    return version


def supported_range() -> str:
    """The supported versions, as text: ``">=1.18.0, <2.0.0"``."""
    low = ".".join(map(str, SUPPORTED_VERSION_MIN))
    high = ".".join(map(str, SUPPORTED_VERSION_MAX))
    return f">={low}, <{high}"


def check_supported(version: tuple[int, int, int], where: str) -> None:
    """Refuse a version outside the supported range.

    Raises:
        OpenCodeVersionError: naming the version, where it was found and the supported range.
    """
    if SUPPORTED_VERSION_MIN <= version < SUPPORTED_VERSION_MAX:
        return
    shown = ".".join(map(str, version))
    raise OpenCodeVersionError(
        f"opencode {shown} ({where}) is not supported: this package drives opencode {supported_range()} "
        f"(opencode 2.x serves a different API under /api/...). {_INSTALL_HINT}",
        version=shown,
        supported=supported_range(),
    )


def check_version(binary: str) -> tuple[int, int, int]:
    """Return the binary's version; refuse an unsupported one, warn once outside the tested range.

    Raises:
        OpenCodeVersionError: the version is outside :func:`supported_range`.
    """
    version = binary_version(binary)
    check_supported(version, binary)
    if not TESTED_VERSION_MIN <= version < TESTED_VERSION_MAX:
        _warn_untested(binary, version)
    return version


@lru_cache(maxsize=32)
def _warn_untested(binary: str, version: tuple[int, int, int]) -> None:
    shown = ".".join(map(str, version))
    low = ".".join(map(str, TESTED_VERSION_MIN))
    high = ".".join(map(str, TESTED_VERSION_MAX))
    warnings.warn(
        f"opencode {shown} at {binary} is outside the tested range [{low}, {high}); "
        f"event shapes may differ. {_INSTALL_HINT}",
        RuntimeWarning,
        stacklevel=4,
    )


def install_opencode(version: str = OPENCODE_VERSION, prefix: Path | None = None) -> Path:
    """Install ``opencode-ai@version`` from the npm registry into ``prefix``; return the binary path.

    Idempotent: an existing install of the same version is reused.

    Raises:
        OpenCodeBinaryNotFoundError: npm is missing or the install failed.
    """
    target = prefix if prefix is not None else user_install_prefix(version)
    binary = _installed_binary(target)
    if binary.exists() and _installed_version(binary) == parse_version(version):
        return binary
    npm = shutil.which("npm")
    if npm is None:
        raise OpenCodeBinaryNotFoundError(
            "npm was not found on PATH; it is needed to install opencode from the npm registry. "
            "Install Node.js (which ships npm), then run `python -m opencode_wrapper install-opencode` again."
        )
    target.mkdir(parents=True, exist_ok=True)
    # A package.json of our own keeps npm from walking up to an unrelated project.
    manifest = target / "package.json"
    if not manifest.exists():
        manifest.write_text('{"name": "opencode-wrapper-install", "private": true}\n', encoding="utf-8")
    completed = subprocess.run(
        [npm, "install", "--no-audit", "--no-fund", "--save-exact", f"{_NPM_PACKAGE}@{version}"],
        cwd=target,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
    )
    if completed.returncode != 0 or not binary.exists():
        raise OpenCodeBinaryNotFoundError(
            f"`npm install {_NPM_PACKAGE}@{version}` in {target} failed (exit {completed.returncode}):\n"
            f"{completed.stderr.strip()[-2000:]}"
        )
    binary_version.cache_clear()
    return binary


def _installed_version(binary: Path) -> tuple[int, int, int] | None:
    try:
        return binary_version(str(binary))
    except OpenCodeBinaryNotFoundError:
        return None
