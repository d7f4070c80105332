"""Clean-up actions that the supervisor (``reaper.py``) carries out if its owner dies.

An owner that lives does its own clean-up; these describe what it would have done, so that a
process that outlives it (a run's supervisor, or a :class:`~opencode_wrapper._proc.guard.CleanupGuard`)
can do it instead. Paths must be absolute: the supervisor's working directory is not ours.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from opencode_wrapper.errors import OpenCodeConfigError


def _absolute(what: str, value: str) -> str:
    if not isinstance(value, str) or not os.path.isabs(value):
        raise OpenCodeConfigError(f"{what} must be an absolute path (str), got {value!r}")
    return value


@dataclass(frozen=True)
class RemoveTree:
    """Remove the directory tree ``path`` (``reaper.py --rm PATH``)."""

    path: str

    def __post_init__(self) -> None:
        _absolute("RemoveTree.path", self.path)

    def reaper_args(self) -> list[str]:
        return ["--rm", self.path]


@dataclass(frozen=True)
class RemoveGitWorktree:
    """Remove the linked worktree ``path`` of the repository at ``repo`` (its files, its
    registration) and the branch ``branch`` unless empty (``reaper.py --git-worktree REPO PATH BRANCH``).
    """

    repo: str
    path: str
    branch: str = ""

    def __post_init__(self) -> None:
        _absolute("RemoveGitWorktree.repo", self.repo)
        _absolute("RemoveGitWorktree.path", self.path)
        if not isinstance(self.branch, str):
            raise OpenCodeConfigError(f"RemoveGitWorktree.branch must be a str, got {self.branch!r}")

    def reaper_args(self) -> list[str]:
        return ["--git-worktree", self.repo, self.path, self.branch]


CleanupAction = RemoveTree | RemoveGitWorktree
"""One clean-up action; the supervisor does them in the order given."""


def reaper_args(actions: tuple[CleanupAction, ...] | list[CleanupAction], kill_tag: str = "") -> list[str]:
    """The supervisor's arguments for ``actions`` (and ``--kill-tag`` first, if given)."""
    args = ["--kill-tag", kill_tag] if kill_tag else []
    for action in actions:
        if not isinstance(action, (RemoveTree, RemoveGitWorktree)):
            raise OpenCodeConfigError(
                f"a clean-up action must be RemoveTree or RemoveGitWorktree, got {type(action).__name__}"
            )
        args += action.reaper_args()
    return args
