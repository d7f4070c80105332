"""The private world one example runs in: a scratch git repository, a home, and a provider config."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: The environment variable that marks every process an example starts.
TAG_ENV = "OCW_DOCS_EXAMPLE"

#: The files of the scratch repository every example starts in (committed once).
SCRATCH_FILES: dict[str, str] = {
    "README.md": "# scratch project\n\nA small repository that the documentation examples run in.\n",
    "src/app.py": 'def add(a: int, b: int) -> int:\n    """Add two numbers."""\n    return a + b\n',
    "tests/test_app.py": "from app import add\n\n\ndef test_add() -> None:\n    assert add(2, 2) == 4\n",
    "services/api/main.py": "# TODO: authentication\nprint('api')\n",
    "services/worker/main.py": "# TODO: retries\n# TODO: metrics\nprint('worker')\n",
    "services/gateway/main.py": "# TODO: rate limits\nprint('gateway')\n",
}

# Variables of the caller's environment that would let a user's own opencode set-up or credentials in.
_DROPPED_PREFIXES = ("OPENCODE_CONFIG", "OPENCODE_PERMISSION", "XDG_")
_KEPT = ("OPENCODE_BINARY",)


@dataclass(frozen=True)
class Sandbox:
    root: Path
    workspace: Path
    env: dict[str, str]
    tag: str
    tmp: Path

    def remove_tmp(self) -> None:
        """Remove the example's temporary folder (it lives outside ``root``, see make_sandbox)."""
        shutil.rmtree(self.tmp, ignore_errors=True)


def provider_entry(base_url: str, model_ids: Iterable[str], provider_id: str) -> dict[str, Any]:
    """An OpenAI-compatible provider serving ``model_ids`` from the offline model at ``base_url``.

    ``whitelist`` limits a built-in provider (``anthropic``, ...) to these models, so that opencode
    also picks one of them for its title requests instead of the provider's catalog "small model",
    which would be called with the provider's own SDK.
    """
    ids = sorted(set(model_ids))
    return {
        "npm": "@ai-sdk/openai-compatible",
        "name": f"{provider_id} (offline stand-in)",
        "options": {"baseURL": base_url, "apiKey": "offline"},
        "models": {mid: {"name": mid, "tool_call": True, "reasoning": True} for mid in ids},
        "whitelist": ids,
    }


def global_config(base_url: str, models: Iterable[str]) -> dict[str, Any]:
    """The global opencode config declaring each ``provider/model`` (and ``offline/scripted``)."""
    by_provider: dict[str, set[str]] = {"offline": {"scripted"}}
    for model in models:
        provider, _, model_id = model.partition("/")
        by_provider.setdefault(provider, set()).add(model_id)
    return {
        "$schema": "https://opencode.ai/config.json",
        "provider": {p: provider_entry(base_url, ids, p) for p, ids in sorted(by_provider.items())},
        "enabled_providers": sorted(by_provider),
    }


def _git(args: list[str], cwd: Path) -> None:
    subprocess.run(
        ["git", "-c", "user.name=docs", "-c", "user.email=docs@example.invalid", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
        stdin=subprocess.DEVNULL,
    )


def make_scratch_repo(path: Path) -> Path:
    path.mkdir(parents=True)
    for name, content in SCRATCH_FILES.items():
        target = path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content, encoding="utf-8")
    _git(["init", "-q", "-b", "main"], path)
    _git(["add", "-A"], path)
    _git(["commit", "-q", "-m", "scratch project"], path)
    return path


def make_sandbox(
    root: Path, *, tag: str, base_url: str, models: Iterable[str], base_env: Mapping[str, str] | None = None
) -> Sandbox:
    """Create ``root`` with a scratch repository, a private home and the provider config."""
    root.mkdir(parents=True)
    workspace = make_scratch_repo(root / "ws")
    home, config = root / "home", root / "config"
    # A short TMPDIR: Ray puts its AF_UNIX sockets there, and their paths may not exceed 107 bytes.
    tmp = Path(tempfile.mkdtemp(prefix="ocw-ex-", dir="/tmp"))
    for folder in (home, config / "opencode"):
        folder.mkdir(parents=True)
    (config / "opencode" / "opencode.json").write_text(
        json.dumps(global_config(base_url, models), indent=2), encoding="utf-8"
    )
    source = dict(os.environ if base_env is None else base_env)
    env = {
        k: v
        for k, v in source.items()
        if k in _KEPT or not (k.startswith(_DROPPED_PREFIXES) or k.endswith("_API_KEY"))
    }
    venv_bin = str(Path(sys.executable).parent)
    env.update(
        {
            "HOME": str(home),
            "XDG_CONFIG_HOME": str(config),
            "XDG_DATA_HOME": str(root / "data"),
            "XDG_CACHE_HOME": str(root / "cache"),
            "XDG_STATE_HOME": str(root / "state"),
            "TMPDIR": str(tmp),
            "PATH": venv_bin + os.pathsep + source.get("PATH", os.defpath),
            "PWD": str(workspace),
            "PYTHONUNBUFFERED": "1",
            "PYTHONDONTWRITEBYTECODE": "1",
            TAG_ENV: tag,
        }
    )
    return Sandbox(root, workspace, env, tag, tmp)
