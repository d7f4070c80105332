"""Measuring an isolated tree with git: its files as a tree object, and the diff against the base.

The tree is written through a *temporary* index (a copy of the worktree's own, for its stat
cache), so neither the worktree's index nor its HEAD change: whatever the agent did with git
(staged, committed, switched branches), the diff is from the base commit to the files as they
are. The diff comes from plumbing (``git diff-tree``), which ignores diff settings of the
user's config (colour, prefixes, external drivers, textconv).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid

from opencode_wrapper._isolation import git as g
from opencode_wrapper._isolation.changes import FileChange, FileStatus

_STATUS: dict[str, FileStatus] = {
    "A": "added",
    "C": "added",
    "D": "deleted",
    "M": "modified",
    "T": "modified",
    "R": "renamed",
}
# Stable output whatever the user's config says (-c goes before the subcommand).
_DIFF_CONFIG = ("-c", "core.quotePath=false", "-c", "diff.renameLimit=10000")


async def write_tree(root: str, git_dir: str, scratch: str, tag: str) -> str:
    """The tree object of ``root``'s files as they are now (``.gitignore``-d files left out)."""
    index = _index_copy(git_dir, scratch)
    env = {"GIT_INDEX_FILE": index}
    try:
        await g.git("add", "--all", "--", ".", cwd=root, tag=tag, env=env)
        return await g.text("write-tree", cwd=root, tag=tag, env=env)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(index)


def _index_copy(git_dir: str, scratch: str) -> str:
    """A fresh path in ``scratch`` holding a copy of ``git_dir``'s index (if it has one)."""
    index = os.path.join(scratch, f"ocw-index-{uuid.uuid4().hex}")
    with contextlib.suppress(FileNotFoundError):
        shutil.copyfile(os.path.join(git_dir, "index"), index)
    return index


async def diff_trees(
    root: str, base: str, tree: str, tag: str
) -> tuple[str, tuple[FileChange, ...], str | None]:
    """``(diff, files, binary_patch)`` from tree-ish ``base`` to ``tree``."""
    common = (*_DIFF_CONFIG, "diff-tree", "-r", "-M", "--no-ext-diff", "--no-textconv")
    status = await g.git(*common, "-z", "--name-status", base, tree, cwd=root, tag=tag)
    counts = await g.git(*common, "-z", "--numstat", base, tree, cwd=root, tag=tag)
    files = _files(status.stdout, counts.stdout)
    if not files:
        return "", (), None
    diff = await g.git(*common, "-p", "--full-index", base, tree, cwd=root, tag=tag)
    binary_patch = None
    if any(f.binary for f in files):
        full = await g.git(*common, "-p", "--full-index", "--binary", base, tree, cwd=root, tag=tag)
        binary_patch = full.stdout.decode("utf-8", "surrogateescape")
    return diff.stdout.decode("utf-8", "surrogateescape"), files, binary_patch


def _files(name_status: bytes, numstat: bytes) -> tuple[FileChange, ...]:
    """Join ``--name-status -z`` and ``--numstat -z`` output (same pairs, same order)."""
    statuses: list[tuple[FileStatus, str, str | None]] = []
    fields = name_status.split(b"\0")
    i = 0
    while i < len(fields) and fields[i]:
        letter = fields[i][:1].decode()
        if letter in ("R", "C"):
            old, new = os.fsdecode(fields[i + 1]), os.fsdecode(fields[i + 2])
            statuses.append((_STATUS[letter], new, old if letter == "R" else None))
            i += 3
        else:
            statuses.append((_STATUS.get(letter, "modified"), os.fsdecode(fields[i + 1]), None))
            i += 2
    counts: list[tuple[int | None, int | None]] = []
    fields = numstat.split(b"\0")
    i = 0
    while i < len(fields) and fields[i]:
        added, deleted, path = fields[i].split(b"\t", 2)
        counts.append((None, None) if added == b"-" else (int(added), int(deleted)))
        i += 3 if path == b"" else 1  # a rename: "A\tD\t", then old and new as their own fields
    return tuple(
        FileChange(path=path, status=state, additions=a, deletions=d, old_path=old)
        for (state, path, old), (a, d) in zip(statuses, counts, strict=True)
    )


async def commit_kept(root: str, branch: str, tree: str, message: str, tag: str) -> str:
    """Commit ``tree`` on ``branch`` (on top of the worktree's HEAD), make the worktree show it clean.

    Plumbing only (``commit-tree``, ``update-ref``): no hook runs, no signing is attempted.
    Uses the user's git identity, or ``opencode-wrapper`` where none is configured.
    """
    parent = await g.text("rev-parse", "--verify", "HEAD^{commit}", cwd=root, tag=tag)
    env = await _identity(root, tag)
    if await g.text("rev-parse", f"{parent}^{{tree}}", cwd=root, tag=tag) == tree:
        commit = parent  # the agent committed everything itself
    else:
        commit = await g.text(
            "commit-tree", "--no-gpg-sign", "-p", parent, "-m", message, tree, cwd=root, tag=tag, env=env
        )
    await g.git(
        "update-ref", "-m", "opencode-wrapper: keep", f"refs/heads/{branch}", commit, cwd=root, tag=tag
    )
    await g.git("symbolic-ref", "HEAD", f"refs/heads/{branch}", cwd=root, tag=tag)
    await g.git("reset", "--quiet", cwd=root, tag=tag)  # the index = the commit; files as they are
    return commit


async def baseline(root: str, branch: str, tag: str) -> str:
    """Make ``root`` (a fresh copy) a repository whose branch ``branch`` has one commit of its files."""
    await g.git("init", "--quiet", cwd=root, tag=tag)
    await g.git("symbolic-ref", "HEAD", f"refs/heads/{branch}", cwd=root, tag=tag)
    await g.git("add", "--all", "--", ".", cwd=root, tag=tag)
    tree = await g.text("write-tree", cwd=root, tag=tag)
    commit = await g.text(
        "commit-tree", "--no-gpg-sign", "-m", "opencode-wrapper: baseline of the copy", tree,
        cwd=root, tag=tag, env=_FALLBACK_IDENTITY,
    )  # fmt: skip
    await g.git("update-ref", f"refs/heads/{branch}", commit, cwd=root, tag=tag)
    return commit


_FALLBACK_IDENTITY = {
    "GIT_AUTHOR_NAME": "opencode-wrapper",
    "GIT_AUTHOR_EMAIL": "opencode-wrapper@localhost",
    "GIT_COMMITTER_NAME": "opencode-wrapper",
    "GIT_COMMITTER_EMAIL": "opencode-wrapper@localhost",
}


async def _identity(root: str, tag: str) -> dict[str, str] | None:
    """``None`` if git knows who commits here; else the fallback identity."""
    known = await g.git("var", "GIT_COMMITTER_IDENT", cwd=root, tag=tag, check=False)
    return None if known.code == 0 else dict(_FALLBACK_IDENTITY)
