"""What an isolated run changed: :class:`Changes` and :class:`FileChange` (plain, picklable data).

Re-exported by :mod:`opencode_wrapper.isolation`; see there for how they are made.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from opencode_wrapper._isolation.errors import ApplyConflictError, ApplyError
from opencode_wrapper._proc.reaper import git_env

FileStatus = Literal["added", "modified", "deleted", "renamed"]
IsolationKind = Literal["worktree", "copy"]


@dataclass(frozen=True)
class FileChange:
    """One changed file.

    Attributes:
        path: the path after the change (for ``deleted``: the path that was removed), relative
            to the root of the isolated tree (the repository's root in worktree mode, the copied
            folder in copy mode), with ``/`` separators.
        status: ``added``, ``modified`` (content, mode or type), ``deleted`` or ``renamed``.
        additions: lines added; ``None`` for a binary file.
        deletions: lines removed; ``None`` for a binary file.
        old_path: for ``renamed``, the path before; else ``None``.
    """

    path: str
    status: FileStatus
    additions: int | None
    deletions: int | None
    old_path: str | None = None

    @property
    def binary(self) -> bool:
        """Whether git treats the file as binary (no line counts, no text hunks in ``diff``)."""
        return self.additions is None


@dataclass(frozen=True)
class Changes:
    """The changes of one isolated run against its base commit, computed with git.

    Attributes:
        diff: unified diff (``git diff`` format, ``a/``/``b/`` prefixes, renames detected) from
            the base to the run's final files, untracked new files included, files ignored by
            ``.gitignore`` not. A binary file shows as ``Binary files a/X and b/X differ``.
        files: one :class:`FileChange` per changed file, in path order.
        base_commit: the commit the run started from (in the private repository for ``copy``).
        isolation: ``"worktree"`` or ``"copy"``.
        branch: when kept, the branch holding the run's changes as one commit on top of
            ``base_commit`` (in ``repository``); ``None`` when removed.
        path: when kept, the root of the isolated tree (worktree or copy); ``None`` when removed.
        repository: when kept, the repository that has ``branch``: yours (worktree) or the
            copy's own (copy); ``None`` when removed.
        binary_patch: the diff with binary contents (``git diff --binary``) when some file is
            binary; ``None`` otherwise. :meth:`apply` uses it.
    """

    diff: str
    files: tuple[FileChange, ...]
    base_commit: str
    isolation: IsolationKind
    branch: str | None = None
    path: Path | None = None
    repository: Path | None = None
    binary_patch: str | None = None

    @property
    def empty(self) -> bool:
        """True when the run changed nothing (``bool(changes)`` is the opposite)."""
        return not self.files

    def __bool__(self) -> bool:
        return bool(self.files)

    @property
    def patch(self) -> str:
        """What :meth:`apply` applies: :attr:`binary_patch` if there is one, else :attr:`diff`."""
        return self.binary_patch if self.binary_patch is not None else self.diff

    @property
    def additions(self) -> int:
        """Lines added over all text files."""
        return sum(f.additions or 0 for f in self.files)

    @property
    def deletions(self) -> int:
        """Lines removed over all text files."""
        return sum(f.deletions or 0 for f in self.files)

    def apply(self, target: str | os.PathLike[str]) -> None:
        """Apply these changes to ``target`` with ``git apply --3way``.

        ``target`` is a directory standing for the root of the isolated tree: in worktree mode,
        any directory of a checkout of the repository (the diff applies at its root); in copy
        mode, the folder that was copied (inside a git repository or not). With a repository,
        the changes are applied to the work tree and staged (``--3way`` implies ``--index``);
        where a hunk does not apply, git merges three-way using the base blobs if it has them.
        Without one, it is a plain ``git apply``. Nothing to do for empty changes.

        Raises:
            ApplyConflictError: the merge left conflicts (``.conflicts`` names the files); the
                checkout is as git left it: conflict markers, unmerged entries, other files applied.
            ApplyError: the diff does not apply (and no three-way merge was possible), or
                ``target`` is not a directory.
        """
        if self.empty:
            return
        where = Path(target)
        if not where.is_dir():
            raise ApplyError(f"cannot apply changes: {str(where)!r} is not a directory", target=str(where))
        top = _git_text(where, "rev-parse", "--show-toplevel")
        if top is None:
            self._apply_to_folder(where)
            return
        prefix = _git_text(where, "rev-parse", "--show-prefix") or ""
        args = ["apply", "--3way", "--whitespace=nowarn"]
        if self.isolation == "copy" and prefix:
            args.append(f"--directory={prefix.rstrip('/')}")
        before = _unmerged(top)
        done = _run_git(Path(top), args, self.patch)
        if done.returncode == 0:
            return
        stderr = done.stderr.decode("utf-8", errors="replace")
        conflicts = tuple(sorted(_unmerged(top) - before))
        if conflicts:
            raise ApplyConflictError(
                f"applying the changes to {top} left conflicts in: {', '.join(conflicts)}",
                stderr,
                top,
                conflicts,
            )
        raise ApplyError(f"the changes do not apply to {top}", stderr, top)

    async def async_apply(self, target: str | os.PathLike[str]) -> None:
        """:meth:`apply` without blocking the event loop (it runs in a thread)."""
        await asyncio.to_thread(self.apply, target)

    def _apply_to_folder(self, where: Path) -> None:
        done = _run_git(where, ["apply", "--whitespace=nowarn"], self.patch)
        if done.returncode != 0:
            stderr = done.stderr.decode("utf-8", errors="replace")
            raise ApplyError(f"the changes do not apply to {where}", stderr, str(where))


def _run_git(cwd: Path, args: list[str], patch: str | None = None) -> subprocess.CompletedProcess[bytes]:
    env = git_env()
    env["LC_ALL"] = "C"
    return subprocess.run(
        ["git", *args],
        cwd=cwd,
        env=env,
        input=patch.encode("utf-8", "surrogateescape") if patch is not None else None,
        stdin=subprocess.DEVNULL if patch is None else None,
        capture_output=True,
        check=False,
    )


def _git_text(cwd: Path, *args: str) -> str | None:
    done = _run_git(cwd, list(args))
    return done.stdout.decode("utf-8", "surrogateescape").strip() if done.returncode == 0 else None


def _unmerged(top: str) -> set[str]:
    """Paths with unmerged (conflict) entries in the index of the checkout at ``top``."""
    done = _run_git(Path(top), ["ls-files", "--unmerged", "-z"])
    paths = set()
    for entry in done.stdout.split(b"\0"):
        if b"\t" in entry:
            paths.add(os.fsdecode(entry.split(b"\t", 1)[1]))
    return paths
