"""Reading a batch's tasks: one JSON object per line (``prompt``, ``workspace``, ``RunConfig`` fields)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from opencode_wrapper._cli.common import RUN_CONFIG_FIELDS
from opencode_wrapper.batch import Task
from opencode_wrapper.config import RunConfig, validate_config
from opencode_wrapper.errors import OpenCodeConfigError

#: Keys of a task line besides the ``RunConfig`` fields.
TASK_KEYS = ("prompt", "workspace", "name", "timeout_s")


def load_tasks(source: str, *, base: RunConfig, default_timeout_s: float | None) -> list[Task]:
    """The tasks of ``source`` (a path, or ``-`` for standard input).

    A relative ``workspace`` is taken relative to the tasks file's folder (to the current
    directory for ``-``). Each task's config is ``base`` with the line's fields over it.

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
        tasks.append(_task(obj, where, folder, base, default_timeout_s))
    if not tasks:
        raise OpenCodeConfigError(f"{shown} has no tasks (one JSON object per line)")
    return tasks


def _task(
    obj: dict[str, Any], where: str, folder: Path, base: RunConfig, default_timeout_s: float | None
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
    )
