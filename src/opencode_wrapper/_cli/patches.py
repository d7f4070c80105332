"""``batch --diff-dir DIR``: each isolated task's diff as ``DIR/NAME.patch`` (``git apply`` takes it).

``NAME`` is the task's name (characters other than letters, digits, ``.``, ``_`` and ``-``
become ``_``), or its line position from 0 for a task without one. Only a non-empty diff is
written; a task that runs again and changes nothing removes its earlier patch.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path

from opencode_wrapper.batch import Task
from opencode_wrapper.errors import OpenCodeConfigError
from opencode_wrapper.isolation import Changes

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def patch_name(task: Task, position: int) -> str:
    """The file name of a task's patch."""
    if task.name is None:
        return f"{position}.patch"
    safe = _UNSAFE.sub("_", task.name)
    if not safe or safe.startswith("."):
        safe = "_" + safe
    return f"{safe}.patch"


class PatchWriter:
    """Writes the patches of one batch into ``folder`` (made if missing).

    Raises:
        OpenCodeConfigError: two tasks would write the same file, or ``folder`` cannot be made.
    """

    def __init__(self, folder: str, tasks: Sequence[Task]) -> None:
        self.folder = Path(folder)
        self._names: list[str] = []
        owners: dict[str, int] = {}
        for position, task in enumerate(tasks):
            name = patch_name(task, position)
            if name in owners:
                raise OpenCodeConfigError(
                    f"--diff-dir: tasks #{owners[name]} and #{position} would both write {name}; "
                    "give them distinct names"
                )
            owners[name] = position
            self._names.append(name)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OpenCodeConfigError(f"--diff-dir: cannot make {folder}: {exc.strerror or exc}") from exc

    def path_for(self, position: int) -> Path:
        return self.folder / self._names[position]

    def write(self, position: int, changes: Changes | None) -> Path | None:
        """Write the task's patch (whole: a new file renamed into place); return its path, or
        ``None`` when it changed nothing (an earlier patch of it is removed)."""
        target = self.path_for(position)
        if changes is None or not changes.patch:
            with contextlib.suppress(FileNotFoundError):
                target.unlink()
            return None
        fd, temporary = tempfile.mkstemp(prefix=".patch-", dir=self.folder)
        try:
            with os.fdopen(fd, "w", encoding="utf-8", errors="surrogateescape", newline="") as out:
                out.write(changes.patch)
            os.replace(temporary, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
        return target
