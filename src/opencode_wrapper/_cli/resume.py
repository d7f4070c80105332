"""``batch --resume``: which tasks an earlier results file says are done, and which lines to keep.

A task is done when a line of the results file says ``"ok": true`` for it. A task with a
``name`` is matched by name; one without by its line position (``index``) together with
:func:`~opencode_wrapper._cli.results.task_hash` (its prompt and workspace), so an edited or
moved unnamed line runs again. Done tasks are skipped and their lines kept; every other line
(failures, lines of tasks no longer in the tasks file) is dropped, and those tasks run again.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opencode_wrapper._cli.results import task_hash
from opencode_wrapper.batch import Task
from opencode_wrapper.errors import OpenCodeConfigError


@dataclass
class ResumePlan:
    """What a resumed batch does.

    Attributes:
        kept: the lines of the done tasks, in task order (one per task).
        todo: the positions of the tasks to run, in order.
    """

    kept: list[dict[str, Any]] = field(default_factory=list)
    todo: list[int] = field(default_factory=list)


def read_records(path: str) -> list[dict[str, Any]]:
    """The result lines of ``path`` (none if it does not exist); lines that are not JSON objects
    (cut by a crash) are ignored."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise OpenCodeConfigError(
            f"--resume: cannot read the results file {path}: {exc.strerror or exc}"
        ) from exc
    records = []
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def check_unique_names(tasks: Sequence[Task], why: str) -> None:
    """Refuse two tasks with the same name (``why``: the option that needs names to be unique)."""
    seen: dict[str, int] = {}
    for position, task in enumerate(tasks):
        if task.name is None:
            continue
        if task.name in seen:
            raise OpenCodeConfigError(
                f"{why} needs unique task names: tasks #{seen[task.name]} and #{position} "
                f"are both named {task.name!r}"
            )
        seen[task.name] = position


def plan_resume(tasks: Sequence[Task], records: Sequence[dict[str, Any]]) -> ResumePlan:
    """Match ``records`` (an earlier run's lines) to ``tasks`` (names must be unique)."""
    by_name: dict[str, dict[str, Any]] = {}
    by_position: dict[tuple[int, str], dict[str, Any]] = {}
    for record in records:
        if record.get("ok") is not True:
            continue
        name = record.get("name")
        if isinstance(name, str):
            by_name.setdefault(name, record)
        elif isinstance(record.get("index"), int) and isinstance(record.get("task_hash"), str):
            by_position.setdefault((record["index"], record["task_hash"]), record)
    plan = ResumePlan()
    for position, task in enumerate(tasks):
        if task.name is not None:
            done = by_name.get(task.name)
        else:
            done = by_position.get((position, task_hash(task)))
        if done is None:
            plan.todo.append(position)
        else:
            plan.kept.append(done)
    return plan
