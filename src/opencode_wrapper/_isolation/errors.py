"""Errors of isolated runs (re-exported by :mod:`opencode_wrapper.isolation`).

They pickle with their attributes: a result and its error may cross process boundaries.
"""

from __future__ import annotations

from typing import Any

from opencode_wrapper._model.errors_base import OpenCodeError


class IsolationError(OpenCodeError):
    """A git or file-system step of an isolated run failed (creating, diffing or removing it).

    Attributes:
        stderr: what the failing git command wrote to stderr ("" if none was involved).
    """

    def __init__(self, message: str, stderr: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.stderr = stderr

    def __str__(self) -> str:
        tail = self.stderr.strip()[-2000:]
        return f"{self.message}\ngit said:\n{tail}" if tail else self.message

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.message, self.stderr))


class ApplyError(IsolationError):
    """``Changes.apply`` could not apply the diff (e.g. the target's files differ from the base).

    Attributes:
        target: the checkout or folder it was applied to.
    """

    def __init__(self, message: str, stderr: str = "", target: str = "") -> None:
        super().__init__(message, stderr)
        self.target = target

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.message, self.stderr, self.target))


class ApplyConflictError(ApplyError):
    """``Changes.apply`` merged with conflicts: the files in :attr:`conflicts` have conflict
    markers and unmerged index entries, exactly as ``git apply --3way`` left them; the other
    files of the diff are applied (and staged). Resolve, or undo with ``git checkout``/``git reset``.

    Attributes:
        conflicts: the paths in conflict, relative to the repository's root.
    """

    def __init__(
        self, message: str, stderr: str = "", target: str = "", conflicts: tuple[str, ...] = ()
    ) -> None:
        super().__init__(message, stderr, target)
        self.conflicts = tuple(conflicts)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.message, self.stderr, self.target, self.conflicts))


# Shown (and pickled) under the public module that lists every exception.
for _exported in (IsolationError, ApplyError, ApplyConflictError):
    _exported.__module__ = "opencode_wrapper.errors"
