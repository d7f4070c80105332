"""A batch's results file: one JSON line per finished task, written whole the moment it finishes."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from opencode_wrapper._cli.render import error_record, result_record
from opencode_wrapper.batch import Task, TaskOutcome
from opencode_wrapper.events import RunResult
from opencode_wrapper.isolation import Changes


def task_hash(task: Task) -> str:
    """What identifies a task without a name across runs (``--resume``): its prompt and workspace."""
    data = json.dumps([task.prompt, os.fspath(task.workspace)], ensure_ascii=False)
    return hashlib.sha256(data.encode("utf-8")).hexdigest()[:16]


def changes_record(changes: Changes | None) -> dict[str, Any] | None:
    """What an isolated task changed (its diff goes to ``--diff-dir``, not into the line)."""
    if changes is None:
        return None
    return {
        "isolation": changes.isolation,
        "files": [
            {
                "path": f.path,
                "status": f.status,
                "additions": f.additions,
                "deletions": f.deletions,
                **({"old_path": f.old_path} if f.old_path is not None else {}),
            }
            for f in changes.files
        ],
        "additions": changes.additions,
        "deletions": changes.deletions,
        "base_commit": changes.base_commit,
        "branch": changes.branch,
        "path": None if changes.path is None else str(changes.path),
    }


def outcome_record(outcome: TaskOutcome) -> dict[str, Any]:
    """The result line of one task."""
    result = outcome.result if outcome.result is not None else RunResult()
    record: dict[str, Any] = {
        "index": outcome.index,
        "name": outcome.task.name,
        "workspace": os.fspath(outcome.task.workspace),
        "task_hash": task_hash(outcome.task),
    }
    record.update(result_record(result, outcome.elapsed_s))
    record["ok"] = outcome.ok
    record["error"] = error_record(outcome.error)
    record["changes"] = changes_record(result.changes)
    record["verified"] = outcome.verified
    record["verify_exit_code"] = outcome.verify_exit_code
    record["attempts"] = [
        {
            "number": attempt.number,
            "error": None if attempt.error is None else attempt.error.kind,
            "elapsed_s": round(attempt.elapsed_s, 3),
        }
        for attempt in outcome.attempts
    ]
    return record


class ResultWriter:
    """Appends result lines to a file (``-``: standard output).

    Each line goes out in one ``write`` and is synced to disk before the next task is reported,
    so an interruption (Ctrl-C, SIGTERM, even SIGKILL) leaves only whole lines behind.

    The file starts empty, or (``--resume``) with the ``kept`` lines only: it is replaced in one
    step (a new file renamed over it), so a crash meanwhile leaves the old file or the new one.
    """

    def __init__(self, target: str, *, kept: Sequence[dict[str, Any]] = ()) -> None:
        self.target = target
        self.written = 0
        self.kept = len(kept)
        if target == "-":
            if kept:
                raise ValueError("kept lines need a results file, not standard output")
            self._fd = sys.stdout.fileno()
            self._own = False
        else:
            if kept:
                _replace_with(target, kept)
                flags = os.O_WRONLY | os.O_APPEND
            else:
                flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND
            self._fd = os.open(target, flags, 0o600)
            self._own = True

    def __enter__(self) -> ResultWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def write(self, record: dict[str, Any]) -> None:
        data = _line(record)
        if not self._own:
            sys.stdout.flush()  # keep the order with what was printed before
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        if self._own:
            os.fsync(self._fd)
        self.written += 1

    def close(self) -> None:
        if self._own and self._fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = -1


def _line(record: dict[str, Any]) -> bytes:
    return (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")


def _replace_with(target: str, records: Sequence[dict[str, Any]]) -> None:
    folder = Path(target).resolve().parent
    fd, temporary = tempfile.mkstemp(prefix=".results-", dir=folder)  # mode 0600
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(b"".join(_line(record) for record in records))
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
