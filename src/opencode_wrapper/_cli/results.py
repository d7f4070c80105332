"""A batch's results file: one JSON line per finished task, written whole the moment it finishes."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from types import TracebackType
from typing import Any

from opencode_wrapper._cli.render import error_record, result_record
from opencode_wrapper.batch import TaskOutcome
from opencode_wrapper.events import RunResult


def outcome_record(outcome: TaskOutcome) -> dict[str, Any]:
    """The result line of one task."""
    result = outcome.result if outcome.result is not None else RunResult()
    record: dict[str, Any] = {
        "index": outcome.index,
        "name": outcome.task.name,
        "workspace": os.fspath(outcome.task.workspace),
    }
    record.update(result_record(result, outcome.elapsed_s))
    record["ok"] = outcome.ok
    record["error"] = error_record(outcome.error)
    return record


class ResultWriter:
    """Appends result lines to a file (``-``: standard output).

    Each line goes out in one ``write`` and is synced to disk before the next task is reported,
    so an interruption (Ctrl-C, SIGTERM, even SIGKILL) leaves only whole lines behind.
    """

    def __init__(self, target: str) -> None:
        self.target = target
        self.written = 0
        if target == "-":
            self._fd = sys.stdout.fileno()
            self._own = False
        else:
            self._fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o600)
            self._own = True

    def __enter__(self) -> ResultWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def write(self, record: dict[str, Any]) -> None:
        data = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
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
