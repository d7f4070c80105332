"""The environment an opencode process runs in: config injection, isolation, private dirs.

``build_env`` is the seed's pure function (config -> env vars). ``prepare_environment`` adds
what needs the file system: a sanitized copy of the user's global config and a private data
dir, both in owner-only temp dirs that the caller removes with ``cleanup()``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opencode_wrapper._jsonc import loads_jsonc
from opencode_wrapper._lean import needs_no_catalog, seed_plugin_dependencies
from opencode_wrapper.config import RunConfig, _deep_merge, sanitize_user_config_json
from opencode_wrapper.errors import OpenCodeConfigError

_LOG = logging.getLogger("opencode_wrapper")

_GLOBAL_CONFIG_FILENAMES = ("config.json", "opencode.json", "opencode.jsonc")
# Environment variables through which a user's own opencode set-up would leak into a run.
_USER_CONFIG_ENV = (
    "OPENCODE_CONFIG",
    "OPENCODE_CONFIG_DIR",
    "OPENCODE_CONFIG_CONTENT",
    "OPENCODE_PERMISSION",
)


def build_env(
    run_cfg: RunConfig,
    base: Mapping[str, str] | None = None,
    *,
    cwd: str | os.PathLike[str] | None = None,
) -> dict[str, str]:
    """Environment variables for opencode: ``base`` (default ``os.environ``) plus the config.

    Sets ``OPENCODE_CONFIG_CONTENT`` from ``run_cfg``, ``OPENCODE_DISABLE_AUTOUPDATE`` when
    asked, ``extra_env``, and pins ``PWD`` to ``cwd`` (opencode resolves the project from
    ``$PWD`` before ``cwd``).
    """
    env = dict(os.environ if base is None else base)
    if not run_cfg.inherit_user_config:
        for name in _USER_CONFIG_ENV:
            env.pop(name, None)
    if run_cfg.extra_env:
        env.update(run_cfg.extra_env)
    content = run_cfg.opencode_config_content_json()
    if content is not None:
        env["OPENCODE_CONFIG_CONTENT"] = content
    if run_cfg.disable_autoupdate:
        env["OPENCODE_DISABLE_AUTOUPDATE"] = "1"
    if cwd is not None:
        env["PWD"] = os.fspath(cwd)
    return env


@dataclass
class PreparedEnvironment:
    """An environment plus the temp dirs it points at (removed by :meth:`cleanup`)."""

    env: dict[str, str]
    temp_dirs: list[Path] = field(default_factory=list)

    @property
    def data_home(self) -> Path:
        return Path(self.env["XDG_DATA_HOME"]) if "XDG_DATA_HOME" in self.env else _real_data_home(self.env)

    def cleanup(self) -> None:
        for path in self.temp_dirs:
            shutil.rmtree(path, ignore_errors=True)
        self.temp_dirs.clear()


def prepare_environment(
    run_cfg: RunConfig,
    *,
    cwd: str,
    private_data: bool = True,
    data_home: str | os.PathLike[str] | None = None,
    base: Mapping[str, str] | None = None,
    prefix: str = "ocw_",
) -> PreparedEnvironment:
    """Build the full environment for one opencode process.

    Args:
        run_cfg: the config to inject.
        cwd: the workspace (becomes ``PWD``).
        private_data: give opencode a fresh ``XDG_DATA_HOME`` (its own SQLite DB), removed at
            cleanup. Ignored when ``data_home`` is given.
        data_home: use this ``XDG_DATA_HOME`` (kept at cleanup: the caller owns it).
        base: the starting environment (default ``os.environ``).
        prefix: temp dir name prefix.
    """
    source_env = dict(os.environ if base is None else base)
    env = build_env(run_cfg, source_env, cwd=cwd)
    prepared = PreparedEnvironment(env)
    try:
        if data_home is not None or private_data:
            if data_home is not None:
                target = check_data_home(data_home)
                target.mkdir(parents=True, exist_ok=True, mode=0o700)
            else:
                target = Path(tempfile.mkdtemp(prefix=f"{prefix}data_"))
                prepared.temp_dirs.append(target)
            _link_credentials(_real_data_home(source_env), target)
            env["XDG_DATA_HOME"] = str(target)
        if not run_cfg.inherit_user_config:
            root = Path(tempfile.mkdtemp(prefix=f"{prefix}cfg_"))
            prepared.temp_dirs.append(root)
            _isolate_user_config(env, source_env, root)
    except BaseException:
        prepared.cleanup()
        raise
    return prepared


def check_data_home(data_home: object) -> Path:
    """``data_home`` as an absolute path (opencode runs elsewhere); it must be a directory path."""
    if not isinstance(data_home, (str, os.PathLike)) or not os.fspath(data_home):
        raise OpenCodeConfigError(f"data_home must be a directory path (str or PathLike), got {data_home!r}")
    target = Path(os.fspath(data_home)).expanduser().absolute()
    if target.exists() and not target.is_dir():
        raise OpenCodeConfigError(f"data_home {os.fspath(data_home)!r} exists and is not a directory")
    return target


def _real_data_home(env: Mapping[str, str]) -> Path:
    xdg = env.get("XDG_DATA_HOME")
    return Path(xdg) if xdg else Path(env.get("HOME", str(Path.home()))) / ".local" / "share"


def _link_credentials(real_data_home: Path, data_home: Path) -> None:
    """Make ``opencode auth`` credentials visible in a private data dir (a symlink, no copy)."""
    real_auth = real_data_home / "opencode" / "auth.json"
    if not real_auth.is_file():
        return
    target_dir = data_home / "opencode"
    target_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    link = target_dir / "auth.json"
    if not link.exists() and not link.is_symlink():
        link.symlink_to(real_auth)


def _isolate_user_config(env: dict[str, str], source_env: Mapping[str, str], root: Path) -> None:
    """Point opencode at sanitized copies of the user's global config (provider keys only)."""
    real_config_dir, real_dot_opencode = _user_config_dirs(source_env)
    for private in (root / "xdg", root / "home"):
        private.mkdir(mode=0o700)  # mkdir(parents=True) below would create them with the umask's mode
    for folder in (root / "xdg", root / "home"):
        folder.mkdir(mode=0o700, exist_ok=True)
    _sanitize_and_copy(real_config_dir, root / "xdg" / "opencode")
    _sanitize_and_copy(real_dot_opencode, root / "home" / ".opencode")
    # The private config dir holds no plugins, so opencode's install of its plugin SDK there
    # (an npm download on every start of every process) buys nothing; see the function.
    seed_plugin_dependencies(root / "xdg" / "opencode")
    env["XDG_CONFIG_HOME"] = str(root / "xdg")
    env["OPENCODE_TEST_HOME"] = str(root / "home")


def _user_config_dirs(source_env: Mapping[str, str]) -> tuple[Path, Path]:
    home = Path(source_env.get("HOME", str(Path.home())))
    xdg_config = source_env.get("XDG_CONFIG_HOME")
    return (Path(xdg_config) if xdg_config else home / ".config") / "opencode", home / ".opencode"


def user_providers(base: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The ``provider`` section of the user's global opencode config (what an isolated run keeps).

    Files that cannot be read or parsed count as empty, as :func:`prepare_environment` skips them.
    """
    merged: dict[str, Any] = {}
    for folder in _user_config_dirs(os.environ if base is None else base):
        for name in _GLOBAL_CONFIG_FILENAMES:
            try:
                raw = loads_jsonc((folder / name).read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            providers = raw.get("provider") if isinstance(raw, dict) else None
            if isinstance(providers, dict):
                merged = _deep_merge(merged, providers)
    return merged


def catalog_unused(run_cfg: RunConfig, workspace: str | os.PathLike[str]) -> bool:
    """Whether an ``opencode`` started for ``run_cfg``'s one-shot runs in ``workspace`` needs no
    models catalog (:func:`~opencode_wrapper._lean.needs_no_catalog`, with the providers of the
    user's global config that such a run keeps)."""
    providers = None if run_cfg.inherit_user_config else user_providers()
    return needs_no_catalog(run_cfg, workspace, providers)


def _sanitize_and_copy(src_dir: Path, dst_dir: Path) -> None:
    # No source, no copy: an empty `.opencode` dir in the private home is one more config dir
    # for opencode, where it writes files and installs its plugin package on every start.
    if not src_dir.is_dir():
        return
    for name in _GLOBAL_CONFIG_FILENAMES:
        src = src_dir / name
        if not src.is_file():
            continue
        try:
            raw = loads_jsonc(src.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            # Hiding a file we cannot parse is safer than leaking capability keys from it.
            _LOG.warning("user-config isolation: skipping %s (%s)", src, exc)
            continue
        if not isinstance(raw, dict):
            _LOG.warning("user-config isolation: skipping %s (not a JSON object)", src)
            continue
        dst_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        dst = dst_dir / name
        dst.write_text(json.dumps(sanitize_user_config_json(raw), ensure_ascii=False), encoding="utf-8")
        dst.chmod(0o600)
