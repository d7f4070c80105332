"""Isolated runs: each agent works in its own git worktree (or private copy), and you get its diff.

::

    async with isolate("/path/to/repo", isolation="worktree", keep="on_change") as iso:
        await client.async_run(prompt, iso.path, run_cfg=cfg)   # the agent works in iso.path
    print(iso.changes.diff)                                       # what it changed, computed with git

* ``isolation="worktree"``: a new git worktree of the workspace's repository, at ``HEAD`` or at
  ``base=`` (any commit-ish), on a new branch ``ocw/<name>-<8 hex>``. A workspace that is a
  subdirectory of its repository gives the same subdirectory inside the worktree as
  :attr:`IsolatedWorkspace.path`. The worktree starts from the *commit*: uncommitted changes of
  your checkout are not in it. Your checkout, its index and its HEAD are never touched.
* ``isolation="copy"``: for a folder that is not a git repository (or whose uncommitted state
  the run must see): a private copy (see :data:`DEFAULT_COPY_EXCLUDE` for what is left out;
  nested ``.git`` entries never are copied) made a repository with one baseline commit.

When it ends (:meth:`IsolatedWorkspace.close`, or leaving the ``async with``), :class:`Changes`
holds the unified diff from the base to the files as the run left them (new untracked files
included, ``.gitignore``-d ones not, binary files marked) and a :class:`FileChange` per file.
``keep`` decides what stays, however the run ended (normally, by an error, a timeout or a
cancellation): ``"never"``, ``"on_change"`` (only if something changed) or ``"always"``. A kept
run's changes are committed (one commit, no hooks) on its branch, so ``git merge`` or
``git cherry-pick`` take them; the worktree (or copy) stays where :attr:`Changes.path` says.
Removed means: no directory, no branch, and no ``git worktree`` registration left.

If this process dies (even by SIGKILL) while an isolated workspace exists, a guard process
removes it all, kept or not: nothing of ours is left alive to decide. A run started in it with
``OwnedProcess.start(..., cleanup=iso.cleanup)`` does the same from its own supervisor, after
the run's process tree is gone, so that no tool process can write into a removed worktree.

**Wiring contract** (for a backend's run request): validate early with :func:`check_options`;
``iso = await IsolatedWorkspace.create(...)``; run in ``iso.path`` passing ``cleanup=iso.cleanup``
to ``OwnedProcess.start``; then, in a ``finally``, ``changes = await iso.close()``: it always
completes (then re-raises a cancellation that arrived meanwhile) and may raise
:class:`IsolationError`. ``create`` raises :class:`~opencode_wrapper.errors.OpenCodeConfigError`
for bad options (before spawning anything, except the git commands that check the workspace and
``base``), and a cancelled ``create`` leaves nothing behind.

Git commands that register or remove worktrees of one repository take a per-repository lock
(git is not safe against doing those concurrently); checkouts and diffs run in parallel.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager as AsyncContextManager
from pathlib import Path
from types import TracebackType

from opencode_wrapper._aio import complete, finish
from opencode_wrapper._isolation import git as g
from opencode_wrapper._isolation.changes import Changes, FileChange, FileStatus
from opencode_wrapper._isolation.copy import DEFAULT_COPY_EXCLUDE, copy_folder
from opencode_wrapper._isolation.diff import baseline, commit_kept, diff_trees, write_tree
from opencode_wrapper._isolation.errors import ApplyConflictError, ApplyError, IsolationError
from opencode_wrapper._isolation.options import (
    BRANCH_PREFIX,
    ISOLATION_CHOICES,
    KEEP_POLICIES,
    IsolationMode,
    KeepPolicy,
    check_options,
    checked_dirs,
    refuse_inside,
    repository_of,
    resolve_base,
)
from opencode_wrapper._isolation.processes import end_processes_in
from opencode_wrapper._proc.cleanup import CleanupAction, RemoveGitWorktree, RemoveTree
from opencode_wrapper._proc.guard import CleanupGuard
from opencode_wrapper._proc.reaper import remove_git_worktree
from opencode_wrapper.errors import OpenCodeConfigError

__all__ = [
    "DEFAULT_COPY_EXCLUDE",
    "ISOLATION_CHOICES",
    "KEEP_POLICIES",
    "ApplyConflictError",
    "ApplyError",
    "Changes",
    "FileChange",
    "FileStatus",
    "IsolatedWorkspace",
    "IsolationError",
    "IsolationMode",
    "KeepPolicy",
    "check_options",
    "isolate",
]

_LOG = logging.getLogger("opencode_wrapper")


class IsolatedWorkspace:
    """A private worktree (or copy) for one run; create it with :meth:`create`, end it with :meth:`close`.

    Attributes:
        isolation: ``"worktree"`` or ``"copy"``.
        source: the workspace it isolates (resolved).
        root: the root of the isolated tree (the worktree, or the copy).
        path: where the run works: ``root``, or the workspace's subdirectory inside the worktree.
        branch: ``ocw/<name>-<8 hex>`` (for ``copy``, in the copy's own repository).
        base_commit: the commit it started from.
        keep: the keep policy applied by :meth:`close`.
        cleanup: the actions to pass as ``OwnedProcess.start(..., cleanup=...)`` for a run in it.
        changes: the result of :meth:`close` once it has run, else ``None``.
    """

    def __init__(
        self,
        *,
        isolation: IsolationMode,
        source: Path,
        repository: Path,
        scratch: Path,
        root: Path,
        path: Path,
        branch: str,
        keep: KeepPolicy,
        name: str,
        tag: str,
    ) -> None:
        self.isolation: IsolationMode = isolation
        self.source = source
        self.root = root
        self.path = path
        self.branch = branch
        self.keep: KeepPolicy = keep
        self.name = name
        self.base_commit = ""
        self.changes: Changes | None = None
        self._repository = repository
        self._scratch = scratch
        self._tag = tag
        self._git_dir = ""
        self._guard: CleanupGuard | None = None
        self._close_task: asyncio.Task[Changes] | None = None
        self._removed = False
        self._tree = ""  # the tree object of the last measurement

    # ------------------------------------------------------------------------------- creating

    @classmethod
    async def create(
        cls,
        workspace: str | os.PathLike[str],
        *,
        isolation: IsolationMode = "worktree",
        base: str | None = None,
        keep: KeepPolicy = "on_change",
        name: str | None = None,
        directory: str | os.PathLike[str] | None = None,
        copy_exclude: Sequence[str] = DEFAULT_COPY_EXCLUDE,
    ) -> IsolatedWorkspace:
        """Make the isolated tree for a run in ``workspace`` (see the module docs).

        Args:
            workspace: an existing directory: in a git repository with a commit (``worktree``),
                or any folder (``copy``).
            isolation: ``"worktree"`` or ``"copy"``.
            base: worktree mode: the commit-ish to start from (default ``HEAD``).
            keep: ``"never"``, ``"on_change"`` or ``"always"`` (applied by :meth:`close`).
            name: readable part of the branch and directory names (default ``"run"``).
            directory: where the isolated tree is made (default: the temp dir). It must not be
                inside the workspace's repository (worktree) or folder (copy).
            copy_exclude: copy mode: ``fnmatch`` patterns of names not to copy.

        Raises:
            OpenCodeConfigError: a bad option, a workspace that is not a directory, not in a
                repository or without a commit (worktree mode), or a ``base`` git cannot resolve.
            IsolationError: a git or file-system step failed (nothing is left behind).
        """
        if isolation not in ("worktree", "copy"):
            raise OpenCodeConfigError(f"isolation must be 'worktree' or 'copy'; got {isolation!r}")
        check_options(isolation, keep=keep, base=base, name=name, copy_exclude=copy_exclude)
        source, parent_dir = checked_dirs(workspace, directory)
        name = name or "run"
        tag = uuid.uuid4().hex
        task = asyncio.ensure_future(
            cls._make(source, isolation, base, keep, name, tag, parent_dir, copy_exclude)
        )
        made, cancelled = await complete(task)
        if cancelled:
            await finish(made.discard())
            raise asyncio.CancelledError
        return made

    @classmethod
    async def _make(
        cls,
        source: Path,
        isolation: IsolationMode,
        base: str | None,
        keep: KeepPolicy,
        name: str,
        tag: str,
        parent_dir: Path,
        copy_exclude: Sequence[str],
    ) -> IsolatedWorkspace:
        branch = f"{BRANCH_PREFIX}{name}-{tag[:8]}"
        top = prefix = common = base_commit = ""
        if isolation == "worktree":
            top, prefix, common = await repository_of(source, tag)
            refuse_inside(parent_dir, Path(top), "the workspace's repository")
            base_commit = await resolve_base(top, base, tag)
        else:
            refuse_inside(parent_dir, source, "the workspace")
        scratch = Path(
            tempfile.mkdtemp(
                prefix=f"ocw_{'wt' if isolation == 'worktree' else 'copy'}_{name}_", dir=parent_dir
            )
        )
        worktree = isolation == "worktree"
        root = scratch / (Path(top).name if worktree else (source.name or "workspace"))
        made = cls(
            isolation=isolation,
            source=source,
            repository=Path(top) if worktree else root,
            scratch=scratch,
            root=root,
            path=root / prefix if worktree else root,
            branch=branch,
            keep=keep,
            name=name,
            tag=tag,
        )
        try:
            made._guard = await CleanupGuard.start(made.cleanup, kill_tag=tag)
            if isolation == "worktree":
                made.base_commit = base_commit
                await made._add_worktree(common)
            else:
                await copy_folder(str(source), str(root), copy_exclude)
                made.base_commit = await baseline(str(root), branch, tag)
                made._git_dir = str(root / ".git")
        except BaseException:
            await finish(made.discard())
            raise
        return made

    async def _add_worktree(self, common: str) -> None:
        root, top = str(self.root), str(self._repository)
        async with g.worktree_lock(common):
            await g.git(
                "worktree",
                "add",
                "--quiet",
                "--no-checkout",
                "-b",
                self.branch,
                root,
                self.base_commit,
                cwd=top,
                tag=self._tag,
            )
        # The checkout outside the lock: it is the slow part, and touches only the new worktree.
        await g.git("reset", "--quiet", "--hard", cwd=root, tag=self._tag)
        self._git_dir = await g.text("rev-parse", "--absolute-git-dir", cwd=root, tag=self._tag)
        self.path.mkdir(parents=True, exist_ok=True)  # a subdirectory the base commit does not have

    @property
    def cleanup(self) -> tuple[CleanupAction, ...]:
        """What a supervisor must do if we die: for ``OwnedProcess.start(..., cleanup=...)``."""
        if self.isolation == "worktree":
            return (
                RemoveGitWorktree(str(self._repository), str(self.root), self.branch),
                RemoveTree(str(self._scratch)),
            )
        return (RemoveTree(str(self._scratch)),)

    @property
    def tag(self) -> str:
        """The tag our git commands for this workspace carry (``$OPENCODE_WRAPPER_TAGS``)."""
        return self._tag

    # ------------------------------------------------------------------------------- measuring

    async def current_changes(self) -> Changes:
        """The changes so far, without ending anything (``branch``/``path`` are ``None``)."""
        if self._removed:
            raise IsolationError(f"the isolated workspace {self.root} is already removed")
        return await self._measure()

    async def _measure(self) -> Changes:
        root = str(self.root)
        tree = await write_tree(root, self._git_dir, str(self._scratch), self._tag)
        diff, files, binary_patch = await diff_trees(root, self.base_commit, tree, self._tag)
        self._tree = tree
        return Changes(
            diff=diff,
            files=files,
            base_commit=self.base_commit,
            isolation=self.isolation,
            binary_patch=binary_patch,
        )

    # ------------------------------------------------------------------------------- ending

    async def close(self) -> Changes:
        """Measure the changes, then keep or remove the tree (per :attr:`keep`); return the changes.

        Processes still working inside the tree (a tool the run left behind) are killed first.
        Idempotent (later calls return the same :class:`Changes`, or raise the same error).
        Always completes: a cancellation arriving meanwhile is raised afterwards, and
        :attr:`changes` is set all the same. If measuring fails, the tree is removed (kept with
        ``keep="always"``) and :class:`IsolationError` raised.
        """
        if self._close_task is None:
            self._close_task = asyncio.ensure_future(self._close())
        changes, cancelled = await complete(self._close_task)
        if cancelled:
            raise asyncio.CancelledError
        return changes

    async def _close(self) -> Changes:
        if self._removed:
            raise IsolationError(f"the isolated workspace {self.root} was discarded before close()")
        # A tool of the run may still be working in the tree (see _isolation.processes): the
        # changes are measured, and the tree kept or removed, once nothing writes into it.
        await asyncio.to_thread(end_processes_in, str(self._scratch))
        try:
            measured = await self._measure()
        except BaseException:
            await (self._release() if self.keep == "always" else self.discard())
            raise
        if self.keep == "always" or (self.keep == "on_change" and measured):
            try:
                if measured:
                    message = f"opencode-wrapper: changes of {self.name}\n\nBase: {self.base_commit}\n"
                    await commit_kept(str(self.root), self.branch, self._tree, message, self._tag)
            finally:
                await self._release()
            path = self.root
            self.changes = Changes(
                diff=measured.diff,
                files=measured.files,
                base_commit=self.base_commit,
                isolation=self.isolation,
                branch=self.branch,
                path=path,
                repository=self._repository,
                binary_patch=measured.binary_patch,
            )
        else:
            await self.discard()
            self.changes = measured
        return self.changes

    async def discard(self) -> None:
        """Remove the tree, its branch and its registration now, whatever :attr:`keep` says.

        Idempotent; always completes (a cancellation is raised afterwards). Also removes what
        :meth:`close` kept.
        """
        await finish(self._remove())

    async def _remove(self) -> None:
        if not self._removed:
            await asyncio.to_thread(end_processes_in, str(self._scratch))
            if self.isolation == "worktree":
                await asyncio.to_thread(
                    remove_git_worktree, str(self._repository), str(self.root), self.branch
                )
            await asyncio.to_thread(shutil.rmtree, self._scratch, True)
            self._removed = True
        await self._release()

    async def _release(self) -> None:
        guard, self._guard = self._guard, None
        if guard is not None:
            await finish(guard.release())

    async def __aenter__(self) -> IsolatedWorkspace:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        if error is None:
            await self.close()
            return
        try:
            await self.close()
        except IsolationError as failed:  # the body's error is the one to raise
            _LOG.warning("closing the isolated workspace %s failed: %s", self.root, failed)


def isolate(
    workspace: str | os.PathLike[str],
    *,
    isolation: IsolationMode = "worktree",
    base: str | None = None,
    keep: KeepPolicy = "on_change",
    name: str | None = None,
    directory: str | os.PathLike[str] | None = None,
    copy_exclude: Sequence[str] = DEFAULT_COPY_EXCLUDE,
) -> AsyncContextManager[IsolatedWorkspace]:
    """``async with isolate(workspace, ...) as iso``: :meth:`IsolatedWorkspace.create` (same
    arguments) on entry, :meth:`IsolatedWorkspace.close` on exit; ``iso.changes`` then holds the
    result. An error of the block wins over one of ``close`` (which is logged)."""
    return _Isolating(
        lambda: IsolatedWorkspace.create(
            workspace,
            isolation=isolation,
            base=base,
            keep=keep,
            name=name,
            directory=directory,
            copy_exclude=copy_exclude,
        )
    )


class _Isolating:
    def __init__(self, make: Callable[[], Awaitable[IsolatedWorkspace]]) -> None:
        self._make = make
        self._made: IsolatedWorkspace | None = None

    async def __aenter__(self) -> IsolatedWorkspace:
        self._made = await self._make()
        return self._made

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._made is not None
        await self._made.__aexit__(kind, error, tb)
