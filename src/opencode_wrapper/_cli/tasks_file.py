"""Reading a batch's tasks: one JSON object per line (``prompt``, ``workspace``, run options and
``RunConfig`` fields)."""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from opencode_wrapper._cli.common import RUN_CONFIG_FIELDS
from opencode_wrapper._validation import check_non_negative, check_timeout
from opencode_wrapper.batch import Task
from opencode_wrapper.config import RunConfig, validate_config
from opencode_wrapper.errors import OpenCodeConfigError
from opencode_wrapper.isolation import check_options
from opencode_wrapper.limits import Limits

#: Keys of a task line besides the ``RunConfig`` fields.
TASK_KEYS = (
    "prompt",
    "workspace",
    "name",
    "timeout_s",
    "isolation",
    "keep",
    "base",
    "verify",
    "verify_timeout_s",
    "retries",
    "retry_backoff_s",
    "limits",
)
#: Keys of a line's ``limits`` object (the fields of :class:`~opencode_wrapper.Limits`).
LIMIT_KEYS = tuple(f.name for f in dataclasses.fields(Limits))


@dataclass(frozen=True)
class TaskDefaults:
    """What the command line gives every task; a line's own key wins (``limits`` field by field).

    ``None`` leaves the library's default (no isolation, no check, no retry, no limit).
    """

    isolation: str | None = None
    keep: str | None = None
    base: str | None = None
    verify: str | None = None
    verify_timeout_s: float | None = None
    retries: int | None = None
    retry_backoff_s: float | None = None
    limits: Limits | None = None


def load_tasks(
    source: str,
    *,
    base: RunConfig,
    default_timeout_s: float | None,
    defaults: TaskDefaults | None = None,
) -> list[Task]:
    """The tasks of ``source`` (a path, or ``-`` for standard input).

    A relative ``workspace`` is taken relative to the tasks file's folder (to the current
    directory for ``-``). Each task's config is ``base`` with the line's fields over it, and its
    run options are ``defaults`` with the line's over them.

    Raises:
        OpenCodeConfigError: naming the file, line and key at fault.
    """
    if source == "-":
        text, folder, shown = sys.stdin.read(), Path.cwd(), "<stdin>"
    else:
        path = Path(source)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise OpenCodeConfigError(f"cannot read the tasks file {source}: {exc.strerror or exc}") from exc
        folder, shown = path.resolve().parent, source
    chosen = defaults or TaskDefaults()
    tasks = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{shown} line {number}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise OpenCodeConfigError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno})") from exc
        if not isinstance(obj, dict):
            raise OpenCodeConfigError(f"{where}: expected a JSON object, got {type(obj).__name__}")
        tasks.append(_task(obj, where, folder, base, default_timeout_s, chosen))
    if not tasks:
        raise OpenCodeConfigError(f"{shown} has no tasks (one JSON object per line)")
    return tasks


def _task(
    obj: dict[str, Any],
    where: str,
    folder: Path,
    base: RunConfig,
    default_timeout_s: float | None,
    defaults: TaskDefaults,
) -> Task:
    unknown = sorted(set(obj) - set(TASK_KEYS) - set(RUN_CONFIG_FIELDS))
    if unknown:
        raise OpenCodeConfigError(
            f"{where}: unknown key {unknown[0]!r}; expected {', '.join(TASK_KEYS)} "
            f"or a RunConfig field ({', '.join(RUN_CONFIG_FIELDS)})"
        )
    prompt = obj.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise OpenCodeConfigError(f"{where}: 'prompt' must be a non-empty string")
    workspace = obj.get("workspace")
    if not isinstance(workspace, str) or not workspace:
        raise OpenCodeConfigError(f"{where}: 'workspace' must be a directory path (a string)")
    folder_path = (folder / Path(workspace).expanduser()).resolve()
    if not folder_path.is_dir():
        raise OpenCodeConfigError(f"{where}: workspace {workspace!r} is not a directory ({folder_path})")
    name = obj.get("name")
    if name is not None and not isinstance(name, str):
        raise OpenCodeConfigError(f"{where}: 'name' must be a string")
    timeout = obj.get("timeout_s", default_timeout_s)
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0
    ):
        raise OpenCodeConfigError(f"{where}: 'timeout_s' must be a positive number of seconds")
    try:
        own = RunConfig(**{key: value for key, value in obj.items() if key in RUN_CONFIG_FIELDS})
        cfg = base.merged_with(own)
        validate_config(cfg, allow_ask=False)
    except (TypeError, OpenCodeConfigError) as exc:
        raise OpenCodeConfigError(f"{where}: {exc}") from exc
    return Task(
        prompt=prompt,
        workspace=str(folder_path),
        run_cfg=cfg,
        timeout_s=None if timeout is None else float(timeout),
        name=name,
        **_run_options(obj, where, defaults),
    )


def _run_options(obj: Mapping[str, Any], where: str, defaults: TaskDefaults) -> dict[str, Any]:
    """The ``Task`` fields of the line's run options over ``defaults``, each checked."""

    def pick(key: str, check: Callable[[Any], Any]) -> Any:
        value = obj.get(key, getattr(defaults, key))
        if value is None:
            return None
        try:
            return check(value)
        except OpenCodeConfigError as exc:
            raise OpenCodeConfigError(f"{where}: {exc}") from exc

    options: dict[str, Any] = {
        "isolation": pick("isolation", lambda v: _string(v, "isolation")),
        "keep": pick("keep", lambda v: _string(v, "keep")),
        "base": pick("base", lambda v: _string(v, "base")),
        "verify": pick("verify", _verify_command),
        "verify_timeout_s": pick("verify_timeout_s", lambda v: check_timeout(v, "'verify_timeout_s'")),
        "retries": pick("retries", lambda v: _non_negative(v, "retries", integer=True)),
        "retry_backoff_s": pick("retry_backoff_s", lambda v: _non_negative(v, "retry_backoff_s")),
        "limits": _limits(obj, where, defaults.limits),
    }
    try:
        check_options(
            options["isolation"] or "none", keep=options["keep"] or "on_change", base=options["base"]
        )
    except OpenCodeConfigError as exc:
        raise OpenCodeConfigError(f"{where}: {exc}") from exc
    return options


def _string(value: object, key: str) -> str:
    if not isinstance(value, str):
        raise OpenCodeConfigError(f"{key!r} must be a string, got {value!r}")
    return value


def _verify_command(value: object) -> str:
    if not isinstance(value, str) or not value.strip() or "\x00" in value:
        raise OpenCodeConfigError(
            f"'verify' must be a shell command (a non-empty string) or null, got {value!r}"
        )
    return value


def _non_negative(value: object, key: str, *, integer: bool = False) -> Any:
    check_non_negative(value, repr(key), integer=integer)
    return value


def _limits(obj: Mapping[str, Any], where: str, default: Limits | None) -> Limits | None:
    """The line's ``limits`` object field by field over the command line's, or ``None``."""
    own = obj.get("limits")
    if own is None:
        return default
    if not isinstance(own, dict):
        raise OpenCodeConfigError(
            f"{where}: 'limits' must be an object with some of {', '.join(LIMIT_KEYS)}, got {own!r}"
        )
    unknown = sorted(set(own) - set(LIMIT_KEYS))
    if unknown:
        raise OpenCodeConfigError(
            f"{where}: unknown key {unknown[0]!r} in 'limits'; expected {', '.join(LIMIT_KEYS)}"
        )
    fields = dataclasses.asdict(default) if default is not None else {}
    fields.update(own)
    try:
        limits = Limits(**fields)
    except OpenCodeConfigError as exc:
        raise OpenCodeConfigError(f"{where}: {exc}") from exc
    return None if limits.empty else limits
