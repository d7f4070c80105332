"""``RunConfig``: what a run or session is configured with, and its validation.

Everything here is pure (no process, no I/O), so bad input is reported before anything is
spawned. How a config becomes an environment for opencode lives in ``_environment``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from opencode_wrapper._jsonc import loads_jsonc, strip_jsonc
from opencode_wrapper.errors import OpenCodeConfigError

__all__ = [
    "PRESERVE_KEYS",
    "RESERVED_CLI_FLAGS",
    "UNSET",
    "RunConfig",
    "loads_jsonc",
    "sanitize_user_config_json",
    "split_model",
    "strip_jsonc",
    "validate_config",
    "validate_config_for_run",
    "validate_model",
    "validate_permission_actions",
]

PermissionAction = str  # "allow" | "ask" | "deny"
PermissionMap = dict[str, Any]

#: Keys kept from the user's global opencode config when ``inherit_user_config=False``.
PRESERVE_KEYS: frozenset[str] = frozenset({"$schema", "provider", "disabled_providers", "enabled_providers"})

#: ``opencode run`` flags the client sets itself; passing them in ``cli_kwargs`` would break parsing.
RESERVED_CLI_FLAGS: frozenset[str] = frozenset({"format", "m", "model", "agent", "attach", "port"})


#: Config keys whose values are credentials (matched case-insensitively as substrings): hidden in reprs.
_SECRET_KEY_PARTS: tuple[str, ...] = (
    "apikey",
    "api_key",
    "token",
    "secret",
    "password",
    "credential",
    "authorization",
    "headers",
    "environment",
)
_HIDDEN = "***"


def _redacted(value: Any) -> Any:
    """``value`` with every credential-like entry of its mappings replaced by ``***``."""
    if isinstance(value, Mapping):
        return {
            k: _HIDDEN if any(p in str(k).lower() for p in _SECRET_KEY_PARTS) else _redacted(v)
            for k, v in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [_redacted(v) for v in value]
    return value


def _deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        existing = out.get(key)
        if isinstance(value, Mapping) and isinstance(existing, Mapping):
            out[key] = _deep_merge(existing, value)
        elif isinstance(value, Mapping):
            out[key] = _deep_merge({}, value)
        else:
            out[key] = value
    return out


def sanitize_user_config_json(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Keep only the provider-selection keys (``PRESERVE_KEYS``) of a user's global config."""
    return {k: v for k, v in raw.items() if k in PRESERVE_KEYS}


class _Unset:
    """The type of :data:`UNSET`."""

    _instance: _Unset | None = None

    def __new__(cls) -> _Unset:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNSET"

    def __reduce__(self) -> str:
        return "UNSET"

    def __bool__(self) -> bool:
        return False


#: "Not given": a :class:`RunConfig` field left at ``UNSET`` takes its default and does not
#: override a base config when merged (:meth:`RunConfig.merged_with`). Any other value, the
#: default's own value included, counts as given.
UNSET: Any = _Unset()

_DEFAULTS: dict[str, Any] = {
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
    "python_tools": None,
}


@dataclass
class RunConfig:
    """Settings for one run, one session, or one batch task.

    ``model``/``agent``/``tools`` can change per turn in a session; ``permission``, ``mcp``,
    ``instructions`` and ``config_overrides`` are server-global (they become
    ``OPENCODE_CONFIG_CONTENT``). ``cli_kwargs`` are extra ``opencode run`` flags (run mode only).

    A config remembers which fields were *given* (passed to the constructor or assigned, even with
    the default's value) and which were left out (``UNSET``): :meth:`merged_with` lets only the
    given fields of a per-task or per-turn config win, so a task can set a field back to its
    default (``RunConfig(inherit_user_config=False)``, ``RunConfig(permission=None)``).

    Attributes:
        agent: opencode agent name (``build``, ``plan``, ``explore``, ``general`` or your own).
        model: ``"provider/model"``; ``None`` uses the configured default.
        disable_autoupdate: set ``OPENCODE_DISABLE_AUTOUPDATE=1``.
        inherit_user_config: ``False`` (default) gives opencode a sanitized copy of the user's
            global config that keeps only provider keys; ``True`` passes it through unchanged.
        extra_env: extra environment variables for opencode (values must be strings).
        permission: permission map, e.g. ``{"bash": "allow", "edit": {"*.py": "deny"}}``.
        mcp: MCP server definitions.
        tools: enable/disable tools, e.g. ``{"webfetch": False}``.
        instructions: instruction file paths or globs.
        config_overrides: any other opencode config keys, deep-merged.
        cli_kwargs: extra ``opencode run`` flags: ``True`` -> ``--flag``, value -> ``--flag=value``,
            single-char key -> ``-k value``, list -> repeated, ``False``/``None`` -> skipped.
        python_tools: Python functions (or ``@tool`` objects) the agent can call, served to
            opencode as an MCP server named ``py`` for the run or server (tools appear to the
            model as ``py_<name>``); needs the ``tools`` extra. Server-global, like ``mcp``.
    """

    agent: str | None = UNSET
    model: str | None = UNSET
    disable_autoupdate: bool = UNSET
    inherit_user_config: bool = UNSET
    extra_env: Mapping[str, str] | None = UNSET
    permission: PermissionMap | None = UNSET
    mcp: dict[str, Any] | None = UNSET
    tools: dict[str, Any] | None = UNSET
    instructions: list[str] | None = UNSET
    config_overrides: dict[str, Any] | None = UNSET
    cli_kwargs: dict[str, Any] | None = UNSET
    python_tools: list[Any] | None = UNSET

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _DEFAULTS:
            given: set[str] = self.__dict__.setdefault("_given", set())
            if value is UNSET:
                given.discard(name)
                value = _DEFAULTS[name]
            else:
                given.add(name)
        object.__setattr__(self, name, value)

    @property
    def given_fields(self) -> frozenset[str]:
        """The fields that were given (not left ``UNSET``)."""
        return frozenset(self.__dict__.get("_given", ()))

    def is_given(self, name: str) -> bool:
        """Whether field ``name`` was given (see :attr:`given_fields`)."""
        return name in self.given_fields

    def __getstate__(self) -> dict[str, Any]:
        return {**{name: getattr(self, name) for name in _DEFAULTS}, "_given": sorted(self.given_fields)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        given = set(state.get("_given", ()))
        for name in _DEFAULTS:
            object.__setattr__(self, name, state.get(name, _DEFAULTS[name]))
        object.__setattr__(self, "_given", given)

    def replace(self, **changes: Any) -> RunConfig:
        """A copy with ``changes`` given; the other fields keep whether they were given."""
        unknown = sorted(set(changes) - set(_DEFAULTS))
        if unknown:
            raise OpenCodeConfigError(f"RunConfig has no field(s) {unknown}; fields: {sorted(_DEFAULTS)}")
        values = {name: getattr(self, name) if self.is_given(name) else UNSET for name in _DEFAULTS}
        values.update(changes)
        return RunConfig(**values)

    def __repr__(self) -> str:
        # Values of ``extra_env`` and credential-like config entries (API keys, MCP headers and
        # environments) are hidden: configs end up in logs, tracebacks and batch outcomes.
        parts = []
        for f in fields(self):
            if not self.is_given(f.name):
                continue
            value = getattr(self, f.name)
            if f.name == "extra_env" and isinstance(value, Mapping):
                value = dict.fromkeys(value, _HIDDEN)
            elif f.name in ("mcp", "config_overrides"):
                value = _redacted(value)
            parts.append(f"{f.name}={value!r}")
        return f"RunConfig({', '.join(parts)})"

    def build_opencode_config_dict(self) -> dict[str, Any]:
        """The config passed to opencode as ``OPENCODE_CONFIG_CONTENT``."""
        merged: dict[str, Any] = _deep_merge({}, self.config_overrides or {})
        for key, value in (
            ("permission", self.permission),
            ("mcp", self.mcp),
            ("tools", self.tools),
        ):
            if value is not None:
                # A bare action (``permission="allow"``) is valid opencode config, not a mapping.
                merged = _deep_merge(merged, {key: value if isinstance(value, str) else dict(value)})
        if self.instructions is not None:
            merged["instructions"] = list(self.instructions)
        return merged

    def opencode_config_content_json(self) -> str | None:
        """``OPENCODE_CONFIG_CONTENT`` as a JSON string, or ``None`` when there is nothing to set."""
        cfg = self.build_opencode_config_dict()
        return json.dumps(cfg, ensure_ascii=False) if cfg else None

    def merged_with(self, other: RunConfig | None) -> RunConfig:
        """A copy of ``self`` where every field that ``other`` *gives* wins (see the class docstring).

        Mappings given on both sides are deep-merged, so a per-turn ``tools`` adds to the base
        ``tools``; a given ``None`` clears the field.
        """
        if other is None:
            return self
        changes: dict[str, Any] = {}
        for name in other.given_fields:
            mine, theirs = getattr(self, name), getattr(other, name)
            if isinstance(mine, Mapping) and isinstance(theirs, Mapping):
                changes[name] = _deep_merge(mine, theirs)
            else:
                changes[name] = theirs
        return self.replace(**changes)

    def server_key(self) -> str:
        """A string equal for configs that can share one ``opencode serve`` process.

        ``model``, ``agent`` and ``tools`` are left out: a server takes them per prompt.
        """
        return json.dumps(
            {
                "config": self.replace(tools=None).build_opencode_config_dict(),
                "env": dict(sorted((self.extra_env or {}).items())),
                "inherit": self.inherit_user_config,
                "autoupdate": self.disable_autoupdate,
                # One tool server per tool set, leased for the opencode process's life.
                "python_tools": sorted(id(fn) for fn in self.python_tools or ()),
            },
            sort_keys=True,
            default=str,
        )


def split_model(model: str) -> dict[str, str]:
    """Split ``"provider/model"`` into the server's ``{"providerID", "modelID"}`` shape.

    Only the first ``/`` separates the two (model ids may contain ``/``). A string without
    ``/`` gives an empty ``providerID`` (use :func:`validate_model` to refuse it).
    """
    provider, sep, rest = model.partition("/")
    if not sep:
        return {"providerID": "", "modelID": model}
    return {"providerID": provider, "modelID": rest}


def validate_model(model: object) -> None:
    """Raise :class:`OpenCodeConfigError` unless ``model`` is ``None`` or ``"provider/model"``."""
    if model is None:
        return
    if not isinstance(model, str):
        raise OpenCodeConfigError(
            f"model must be a 'provider/model' string or None, got {type(model).__name__} {model!r}"
        )
    provider, sep, rest = model.partition("/")
    if not sep or not provider.strip() or not rest.strip() or model != model.strip() or "\x00" in model:
        raise OpenCodeConfigError(
            f"Invalid model {model!r}: expected 'provider/model' with a non-empty provider and model id, "
            "e.g. 'anthropic/claude-sonnet-4-5' or 'offline/scripted'"
        )


def validate_permission_actions(obj: Any, *, _path: str = "", allow_ask: bool = False) -> None:
    """Check that every leaf of a permission map is a valid action.

    ``"ask"`` is refused unless ``allow_ask`` (sessions can answer it; ``opencode run`` would
    silently auto-reject it).

    Raises:
        OpenCodeConfigError: (a ``ValueError``) naming the bad value and its path.
    """
    allowed = {"allow", "deny", "ask"} if allow_ask else {"allow", "deny"}
    where = f" at {_path!r}" if _path else ""
    if isinstance(obj, str):
        if obj == "ask" and not allow_ask:
            raise OpenCodeConfigError(
                f"Permission action 'ask' is not supported in run mode{where}: opencode run auto-rejects it; "
                "use 'allow' or 'deny', or a warm backend (a session, warm_servers=True, run_many) "
                "with an on_permission callback"
            )
        if obj not in allowed:
            raise OpenCodeConfigError(
                f"Invalid permission action {obj!r}{where}; expected one of {sorted(allowed)}"
            )
        return
    if isinstance(obj, Mapping):
        for key, value in obj.items():
            if not isinstance(key, str):
                raise OpenCodeConfigError(f"Permission keys must be strings, got {key!r}{where}")
            validate_permission_actions(value, _path=f"{_path}.{key}" if _path else key, allow_ask=allow_ask)
        return
    raise OpenCodeConfigError(
        f"Invalid permission value {obj!r}{where}; "
        "expected an action string or a mapping of pattern -> action"
    )


def _check_json_value(value: Any, path: str) -> None:
    if value is None or isinstance(value, (str, bool, int)):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise OpenCodeConfigError(f"{path} is {value!r}, which JSON cannot represent")
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise OpenCodeConfigError(f"{path} has a non-string key {key!r}; config keys must be strings")
            _check_json_value(item, f"{path}.{key}")
        return
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            _check_json_value(item, f"{path}[{index}]")
        return
    raise OpenCodeConfigError(
        f"{path} is {type(value).__name__} {value!r}, which cannot be serialised to JSON for opencode's "
        "config; use str, int, float, bool, None, lists and dicts"
    )


def _check_cli_kwargs(cli_kwargs: Any) -> None:
    if cli_kwargs is None:
        return
    if not isinstance(cli_kwargs, Mapping):
        raise OpenCodeConfigError(f"cli_kwargs must be a dict of flag -> value, got {cli_kwargs!r}")
    for key, value in cli_kwargs.items():
        if not isinstance(key, str) or not key or key.startswith("-") or " " in key or "\x00" in key:
            raise OpenCodeConfigError(
                f"cli_kwargs key {key!r} is not a flag name; use e.g. 'title' or 'f' (no leading dashes)"
            )
        if key in RESERVED_CLI_FLAGS:
            raise OpenCodeConfigError(
                f"cli_kwargs key {key!r} is set by the client itself; use RunConfig.model / RunConfig.agent "
                f"instead (reserved: {sorted(RESERVED_CLI_FLAGS)})"
            )
        values = value if isinstance(value, (list, tuple)) else [value]
        for item in values:
            if item is not None and not isinstance(item, (str, int, float, bool)):
                raise OpenCodeConfigError(
                    f"cli_kwargs[{key!r}] has value {item!r} of type {type(item).__name__}; "
                    "allowed: str, int, float, bool, None, or a list of those"
                )
            if isinstance(item, str) and "\x00" in item:
                raise OpenCodeConfigError(f"cli_kwargs[{key!r}] value {item!r} contains a NUL character")


def validate_config(cfg: RunConfig, *, allow_ask: bool) -> None:
    """Check every field of ``cfg``; raise :class:`OpenCodeConfigError` on the first bad one."""
    if not isinstance(cfg, RunConfig):
        raise OpenCodeConfigError(f"run_cfg must be a RunConfig, got {type(cfg).__name__} {cfg!r}")
    validate_model(cfg.model)
    if cfg.agent is not None and (
        not isinstance(cfg.agent, str) or not cfg.agent.strip() or "\x00" in cfg.agent
    ):
        raise OpenCodeConfigError(f"agent must be a non-empty string or None, got {cfg.agent!r}")
    if cfg.permission is not None:
        validate_permission_actions(cfg.permission, allow_ask=allow_ask)
    if cfg.extra_env is not None:
        if not isinstance(cfg.extra_env, Mapping):
            raise OpenCodeConfigError(
                f"extra_env must be a dict of str -> str, got a {type(cfg.extra_env).__name__}"
            )
        for key, value in cfg.extra_env.items():
            if (
                not isinstance(key, str)
                or not isinstance(value, str)
                or not key
                or "=" in key
                or "\x00" in key + value
            ):
                raise OpenCodeConfigError(
                    f"extra_env entry {key!r}={type(value).__name__} is invalid; names and values must be "
                    "strings (names non-empty, without '='; no NUL characters)"
                )
    for name in ("mcp", "tools", "config_overrides"):
        value = getattr(cfg, name)
        if value is not None and not isinstance(value, Mapping):
            raise OpenCodeConfigError(f"{name} must be a dict or None, got {type(value).__name__} {value!r}")
        _check_json_value(value, name)
    if cfg.tools is not None:
        for tool, enabled in cfg.tools.items():
            if not isinstance(enabled, bool):
                raise OpenCodeConfigError(f"tools[{tool!r}] must be True or False, got {enabled!r}")
    if cfg.instructions is not None and (
        isinstance(cfg.instructions, str) or not all(isinstance(i, str) for i in cfg.instructions)
    ):
        raise OpenCodeConfigError(
            f"instructions must be a list of path/glob strings, got {cfg.instructions!r}"
        )
    _check_cli_kwargs(cfg.cli_kwargs)
    _check_python_tools(cfg.python_tools)


def _check_python_tools(python_tools: Any) -> None:
    if python_tools is None:
        return
    if isinstance(python_tools, (str, bytes)) or not isinstance(python_tools, (list, tuple)):
        raise OpenCodeConfigError(
            f"python_tools must be a list of functions (or @tool objects), got {type(python_tools).__name__}"
        )
    bad = [fn for fn in python_tools if not callable(fn)]
    if bad:
        raise OpenCodeConfigError(
            f"python_tools must contain functions (or @tool objects), got {bad[0]!r:.100}"
        )
    if python_tools:
        from opencode_wrapper import tools  # the tools extra is optional: only then is it needed

        tools.as_tools(
            python_tools
        )  # OpenCodeConfigError: a missing extra, or a function that cannot be a tool


def validate_config_for_run(cfg: RunConfig) -> None:
    """Strict checks before spawning ``opencode run`` (``"ask"`` refused)."""
    validate_config(cfg, allow_ask=False)
