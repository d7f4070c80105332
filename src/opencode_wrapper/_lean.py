"""The lean profile: switch off what a headless agent does not need from opencode's set-up.

opencode 1.18.33 sets up an *instance* for every new directory a server sees, and most of that
work serves an interactive user: undo snapshots, a generated session title, a file watcher, and
the processing of the whole models.dev catalog (~225 providers, ~8,300 models). With one warm
``opencode serve`` and N sessions each in its own directory, that set-up dominates the run.

Everything here was measured with ``benchmarks/lean_profile.py`` (8 concurrent sessions, each in
its own fresh git directory, one ``bash`` call plus an answer each, offline model, 2 cores, a
busy shared machine, 3 interleaved rounds); ``benchmarks/LEAN_README_SECTION.md`` has the
tables. The numbers below are medians of per-round ratios of the server's CPU time (and wall
time) for the 8 sessions. "Alone" compares one knob with the default configuration (29.2 CPU-s,
where everything but the catalog is lost in the noise); "in lean" compares the whole profile
(6.8 CPU-s) with the profile minus that one knob. All together: x0.26 CPU, x0.35 wall, peak RSS
of the server 2.3 GB -> 0.86 GB; with 16 directories x0.21 CPU, x0.19 wall, 3.1 GB -> 1.0 GB.

Use it through :func:`lean_run_config`; the caller's own settings always win::

    cfg = lean_run_config(RunConfig(model="offline/scripted", config_overrides=...))

The profile is server-global config (it becomes ``OPENCODE_CONFIG_CONTENT`` and environment
variables), so lean and non-lean tasks never share a server (``RunConfig.server_key`` differs).
A headless agent keeps everything it uses: the tools (bash, read, edit, write, grep, ...),
permissions, the project's ``opencode.json``/``AGENTS.md``, MCP servers and answers.
"""

from __future__ import annotations

import atexit
import copy
import json
import os
import shutil
import tempfile
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

from opencode_wrapper._proc.binary import OPENCODE_VERSION
from opencode_wrapper.config import RunConfig, _deep_merge, split_model

#: opencode config keys of the lean profile (deep-merged *under* the caller's ``config_overrides``).
LEAN_CONFIG: dict[str, Any] = {
    # Snapshots: opencode keeps a private git repository per worktree (under
    # $XDG_DATA_HOME/opencode/snapshot/) and runs `git add`/`write-tree`/`diff` around every model
    # step. Measured: alone x1.00 (hidden by the catalog cost); in lean, snapshots back on cost
    # x1.57 CPU / x1.29 wall, about 0.5 CPU-s per directory. You lose: undo/redo of file changes
    # (`POST /session/{id}/revert`, the TUI's /undo), the per-message file diffs (`session.diff`
    # events and `GET /session/{id}/diff` are empty) and the `snapshot` hashes on step parts.
    # Your own git repository is untouched either way.
    "snapshot": False,
    # Title generation: the first prompt of every session forks an extra LLM request ("Generate a
    # title for this conversation") to the provider's small model (e.g. a Haiku-class model).
    # Measured: 1 LLM request fewer per session (1.00 -> 0.00); alone x0.87 CPU (noise level);
    # in lean, titles back on cost x1.04 CPU. It runs beside the turn, so with a real provider it
    # saves tokens, money and rate limit more than wall time. You lose: sessions keep the title
    # "New session - <timestamp>" (in server mode, `POST /session {"title": ...}` has the same
    # effect per session).
    "agent": {"title": {"disable": True}},
}

#: Environment variables of the lean profile (the caller's ``extra_env`` wins).
LEAN_ENV: dict[str, str] = {
    # models.dev refresh: every server start (and then every 60 minutes) downloads
    # https://models.opencode.ai/api.json (~1 MB) in the background. Measured: alone x1.05
    # (noise); in lean, the refresh back on costs x1.13 CPU (here the fetch fails: there is no
    # route out, and it is retried). You lose: models released after opencode 1.18.33 was built
    # stay unknown unless declared in your config (the catalog bundled in the binary is used).
    "OPENCODE_DISABLE_MODELS_FETCH": "1",
    # File watcher: a watcher per directory (on its .git) that publishes
    # `file.watcher.updated`/`vcs` events for changes made outside opencode. Measured: alone
    # x1.02 (noise); in lean, the watcher back on costs x1.18 CPU / x1.45 wall. You lose: those
    # events (e.g. a branch switch made by someone else is not noticed); a headless agent's own
    # edits are tracked without it.
    "OPENCODE_EXPERIMENTAL_DISABLE_FILEWATCHER": "1",
}

#: opencode reads its models.dev catalog from this file instead of its bundled copy.
MODELS_PATH_ENV = "OPENCODE_MODELS_PATH"
#: The package opencode installs (from the npm registry) into every config directory it uses.
PLUGIN_SDK_PACKAGE = "@opencode-ai/plugin"

CatalogMode = Literal["auto", "empty", "trimmed", "full"]

_EMPTY_CATALOG = Path(__file__).with_name("models-empty.json")
_catalog_lock = threading.Lock()
_catalog_dir: Path | None = None
_catalog_files: dict[str, Path] = {}


def _private_catalog_file(name: str, content: dict[str, Any]) -> Path:
    """Write ``content`` once per process into a private temp dir (removed at exit)."""
    global _catalog_dir
    with _catalog_lock:
        path = _catalog_files.get(name)
        if path is not None and path.is_file():
            return path
        if _catalog_dir is None or not _catalog_dir.is_dir():
            _catalog_dir = Path(tempfile.mkdtemp(prefix="ocw_catalog_"))  # mode 0700
            atexit.register(shutil.rmtree, _catalog_dir, ignore_errors=True)
        path = _catalog_dir / name
        path.write_text(json.dumps(content) + "\n", encoding="utf-8")
        _catalog_files[name] = path
        return path


def empty_models_catalog() -> Path:
    """A file holding an empty models.dev catalog (``{}``), shipped with the package (read-only,
    so nothing is left behind when this process is killed).

    With ``OPENCODE_MODELS_PATH`` pointing here, opencode knows only the providers and models
    declared in its config. Measured: the biggest single per-directory cost: alone x0.41 CPU,
    x0.42 wall, peak RSS 2.3 GB -> 1.1 GB for 8 directories (every instance builds opencode's
    provider/model state from the ~8,300-model catalog and runs ~45 built-in catalog plugins).
    You lose: every model not declared in your config (built-in providers such as ``anthropic``
    are unknown), so :func:`lean_run_config` uses it only when the model is declared.
    """
    return _EMPTY_CATALOG


def models_cache_file(env: dict[str, str] | None = None) -> Path:
    """Where opencode caches the models.dev catalog it downloaded (``$XDG_CACHE_HOME/opencode``)."""
    source = os.environ if env is None else env
    cache_home = source.get("XDG_CACHE_HOME") or str(Path(source.get("HOME", str(Path.home()))) / ".cache")
    return Path(cache_home) / "opencode" / "models.json"


def trimmed_models_catalog(
    provider_ids: Iterable[str], source: str | os.PathLike[str] | None = None
) -> Path | None:
    """A catalog file with only ``provider_ids``, cut from opencode's cached models.dev catalog.

    Returns ``None`` (use the full catalog) when the cache file is missing or unreadable, or
    lacks one of the providers: opencode then falls back to the catalog bundled in its binary.
    Not measured here (this machine has no cache); one provider is a few dozen models instead
    of ~8,300, so it should come close to the empty catalog. You lose: models of other providers.
    """
    path = Path(source) if source is not None else models_cache_file()
    wanted = sorted(set(provider_ids))
    try:
        catalog = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if (
        not isinstance(catalog, dict)
        or not wanted
        or any(not isinstance(catalog.get(p), dict) for p in wanted)
    ):
        return None
    trimmed = {p: catalog[p] for p in wanted}
    return _private_catalog_file("models-" + "-".join(p.replace("/", "_") for p in wanted) + ".json", trimmed)


def _declares(config: dict[str, Any], model: str) -> bool:
    ids = split_model(model)
    provider = config.get("provider")
    entry = provider.get(ids["providerID"]) if isinstance(provider, dict) else None
    models = entry.get("models") if isinstance(entry, dict) else None
    return isinstance(models, dict) and ids["modelID"] in models


def model_is_declared(cfg: RunConfig) -> bool:
    """Whether ``cfg.model`` is declared under ``provider.<id>.models.<id>`` in ``cfg``'s config."""
    return bool(cfg.model) and _declares(cfg.build_opencode_config_dict(), str(cfg.model))


def _catalog_for(cfg: RunConfig, mode: CatalogMode) -> Path | None:
    if mode == "full":
        return None
    if mode == "empty" or (mode == "auto" and model_is_declared(cfg)):
        return empty_models_catalog()
    if not cfg.model:
        return None
    return trimmed_models_catalog([split_model(cfg.model)["providerID"]])


#: What every one-shot run (run mode, and the warm servers of a pool) gets by default, unless its
#: config sets it: no file watcher. It reports changes made *outside* opencode to an interactive
#: client (a branch switched by someone else); a one-shot headless run has no such client, and its
#: own edits are tracked without it. Measured in the lean profile: x1.18 CPU / x1.45 wall with it.
ONE_SHOT_ENV: dict[str, str] = {"OPENCODE_EXPERIMENTAL_DISABLE_FILEWATCHER": "1"}


#: Where opencode finds a project's own config (which may name models of other providers).
_PROJECT_CONFIG_NAMES = ("opencode.json", "opencode.jsonc", ".opencode")
#: Environment variables that hand opencode more config than the run's own.
_MORE_CONFIG_ENV = ("OPENCODE_CONFIG", "OPENCODE_CONFIG_DIR", MODELS_PATH_ENV)


def _named_models(value: Any) -> Iterable[str]:
    """Every ``model`` / ``small_model`` string anywhere in an opencode config."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key in ("model", "small_model") and isinstance(item, str):
                yield item
            else:
                yield from _named_models(item)
    elif isinstance(value, list):
        for item in value:
            yield from _named_models(item)


def _sdk_declared(config: dict[str, Any], model: str) -> bool:
    # Without the catalog, a provider's SDK package is known only if its config names it.
    entry = config["provider"][split_model(model)["providerID"]]
    return isinstance(entry.get("npm"), str) and bool(entry["npm"])


def needs_no_catalog(
    cfg: RunConfig,
    workspace: str | os.PathLike[str],
    user_providers: Mapping[str, Any] | None = None,
) -> bool:
    """Whether every model a run of ``cfg`` in ``workspace`` can use is declared (under
    ``provider.<id>.models``, the provider with its ``npm`` SDK package) in ``cfg`` or in
    ``user_providers`` (the ``provider`` section of the user's global config, which a run keeps).

    Then opencode's models.dev catalog (~8,300 models, processed at every start) serves nothing.
    It does when the user's own config is inherited, when the environment hands opencode more
    config, when ``cfg`` names a model (for an agent, ``small_model``) it does not declare, or when
    the workspace or a folder above it has a project config (``opencode.json``, ``.opencode/``).
    """
    if not cfg.model or cfg.inherit_user_config:
        return False
    if any(name in (cfg.extra_env or {}) for name in _MORE_CONFIG_ENV):
        return False
    own = cfg.build_opencode_config_dict()
    config = _deep_merge({"provider": dict(user_providers)}, own) if user_providers else own
    models = [str(cfg.model), *_named_models(own)]
    if not all(_declares(config, model) and _sdk_declared(config, model) for model in models):
        return False
    folder = Path(workspace).resolve()
    return not any(
        (parent / name).exists() for parent in (folder, *folder.parents) for name in _PROJECT_CONFIG_NAMES
    )


def one_shot_run_config(cfg: RunConfig, *, isolated: bool = False, empty_catalog: bool = False) -> RunConfig:
    """``cfg`` with the defaults of a one-shot run underneath (the caller's settings win).

    :data:`ONE_SHOT_ENV`; for an isolated run (its changes are taken with git, in its own
    worktree), no opencode snapshots: they are an undo history of that worktree, which nobody
    can use once the run ended (measured: ~0.5 CPU-s per directory); with ``empty_catalog``
    (the caller found that nothing could use it: :func:`needs_no_catalog`), the empty models
    catalog (measured: a one-shot run with one bash call x0.57 CPU, 6.6 -> 3.7 CPU-s, and
    4.7 -> 2.7 s).
    """
    env = {**ONE_SHOT_ENV, **(cfg.extra_env or {})}
    if empty_catalog and MODELS_PATH_ENV not in env:
        env[MODELS_PATH_ENV] = str(empty_models_catalog())
    changes: dict[str, Any] = {"extra_env": env}
    if isolated:
        changes["config_overrides"] = _deep_merge({"snapshot": False}, cfg.config_overrides or {})
    return cfg.replace(**changes)


def lean_run_config(cfg: RunConfig, *, catalog: CatalogMode = "auto") -> RunConfig:
    """A copy of ``cfg`` with the lean profile underneath; the caller's own settings win.

    ``config_overrides`` is deep-merged over :data:`LEAN_CONFIG` and ``extra_env`` over
    :data:`LEAN_ENV`, so e.g. ``config_overrides={"snapshot": True}`` keeps snapshots on.

    Args:
        cfg: the configuration to make lean (not modified).
        catalog: which models.dev catalog opencode processes for every directory
            (``OPENCODE_MODELS_PATH``; never set when ``cfg.extra_env`` already sets it):

            * ``"auto"`` (default): ``"empty"`` when ``cfg.model`` is declared in the config's
              ``provider`` section (it needs nothing from the catalog), else ``"trimmed"``;
            * ``"empty"``: no catalog; every model you use (including per-turn or per-agent
              models) must be declared under ``provider`` in your config;
            * ``"trimmed"``: only ``cfg.model``'s provider, cut from opencode's cached catalog
              (``~/.cache/opencode/models.json``); the full catalog when there is no cache;
            * ``"full"``: opencode's default.
    """
    env = {**LEAN_ENV, **(cfg.extra_env or {})}
    if MODELS_PATH_ENV not in (cfg.extra_env or {}):
        path = _catalog_for(cfg, catalog)
        if path is not None:
            env[MODELS_PATH_ENV] = str(path)
    return cfg.replace(
        config_overrides=_deep_merge(copy.deepcopy(LEAN_CONFIG), cfg.config_overrides or {}),
        extra_env=env,
    )


def seed_plugin_dependencies(config_dir: str | os.PathLike[str], version: str = OPENCODE_VERSION) -> bool:
    """Make opencode's background install of its plugin SDK into ``config_dir`` a no-op.

    For every directory it sets up, opencode checks each config directory it uses (here the
    private ``$XDG_CONFIG_HOME/opencode`` the wrapper creates for every process) and, when
    ``node_modules`` is missing, runs an npm install of ``@opencode-ai/plugin`` (27 packages from
    the registry) under a cross-process file lock; until the first install finishes, every new
    directory queues another one. Measured (the benchmark seeds every variant but one): an
    unseeded server costs x1.27 CPU / x1.70 wall for the same 8 sessions, and downloads from
    the registry. Writing the ``package.json``, ``package-lock.json`` and ``node_modules/`` that
    opencode checks for makes the check pass. The wrapper does this to its own private config
    directory whenever it isolates the user's config (the default); call it yourself for a
    config directory you hand to opencode.

    You lose: TypeScript plugins or custom tools placed in *that* config directory cannot
    import ``@opencode-ai/plugin`` (the wrapper's private config directory has none). Returns
    ``False`` and changes nothing when the directory already has a ``package.json`` or
    ``node_modules``.
    """
    root = Path(config_dir)
    if (root / "package.json").exists() or (root / "node_modules").exists():
        return False
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    deps = {PLUGIN_SDK_PACKAGE: version}
    manifest = {"dependencies": deps}
    lock = {
        "name": "opencode",
        "lockfileVersion": 3,
        "requires": True,
        "packages": {"": {"dependencies": deps}},
    }
    for name, content in (("package.json", manifest), ("package-lock.json", lock)):
        path = root / name
        path.write_text(json.dumps(content, indent=2) + "\n", encoding="utf-8")
        path.chmod(0o600)
    (root / "node_modules").mkdir(mode=0o700)
    return True
