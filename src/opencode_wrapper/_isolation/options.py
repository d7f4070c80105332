"""Options of isolated runs: their values, checks, and what git says about the workspace."""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from opencode_wrapper._isolation import git as g
from opencode_wrapper._isolation.copy import DEFAULT_COPY_EXCLUDE
from opencode_wrapper.errors import OpenCodeConfigError

IsolationMode = Literal["worktree", "copy"]
KeepPolicy = Literal["never", "on_change", "always"]
ISOLATION_CHOICES: tuple[str, ...] = ("none", "worktree", "copy")
"""Values of a run request's ``isolation=`` (``"none"``: the run works in the workspace itself)."""
KEEP_POLICIES: tuple[str, ...] = ("never", "on_change", "always")
BRANCH_PREFIX = "ocw/"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def check_options(
    isolation: str | None = "worktree",
    *,
    keep: str = "on_change",
    base: str | None = None,
    name: str | None = None,
    copy_exclude: Sequence[str] = DEFAULT_COPY_EXCLUDE,
) -> None:
    """Raise :class:`OpenCodeConfigError` naming the bad value and what is allowed; no I/O.

    ``isolation`` may be ``"none"`` here (a run request's default), not in :meth:`IsolatedWorkspace.create`.
    """
    if isolation not in ISOLATION_CHOICES:
        raise OpenCodeConfigError(
            f"isolation must be one of {', '.join(map(repr, ISOLATION_CHOICES))}; got {isolation!r}"
        )
    if keep not in KEEP_POLICIES:
        raise OpenCodeConfigError(f"keep must be one of {', '.join(map(repr, KEEP_POLICIES))}; got {keep!r}")
    if base is not None:
        if not isinstance(base, str) or not base.strip() or base.startswith("-") or "\0" in base:
            raise OpenCodeConfigError(
                f"base must be a git commit-ish such as 'HEAD~1' or 'main'; got {base!r}"
            )
        if isolation == "copy":
            raise OpenCodeConfigError(
                "base= needs isolation='worktree' (a copy starts from the folder as it is)"
            )
    if name is not None and (
        not isinstance(name, str)
        or not _NAME.fullmatch(name)
        or ".." in name
        or name.endswith((".", ".lock"))
    ):
        raise OpenCodeConfigError(
            f"name must be 1-64 characters of letters, digits, '.', '_' or '-', starting with a letter or "
            f"digit, without '..' and not ending in '.' or '.lock' (it becomes part of a branch name); "
            f"got {name!r}"
        )
    if isinstance(copy_exclude, str) or not all(isinstance(p, str) and p for p in copy_exclude):
        raise OpenCodeConfigError(
            f"copy_exclude must be a sequence of non-empty fnmatch patterns of names; got {copy_exclude!r}"
        )


async def repository_of(source: Path, tag: str) -> tuple[str, str, str]:
    """``(toplevel, prefix, common git dir)`` of the repository ``source`` is in."""
    found = await g.git(
        "rev-parse",
        "--show-toplevel",
        "--show-prefix",
        "--git-common-dir",
        cwd=str(source),
        tag=tag,
        check=False,
    )
    lines = found.stdout.decode("utf-8", "surrogateescape").split("\n")
    if found.code != 0 or len(lines) < 3:
        raise OpenCodeConfigError(
            f"isolation='worktree' needs a git repository with a work tree: {str(source)!r} is not in one "
            f"(use isolation='copy' for a plain folder)"
        )
    top, prefix, common = lines[0], lines[1], lines[2]
    return top, prefix.rstrip("/"), _real(os.path.join(source, common))


async def resolve_base(top: str, base: str | None, tag: str) -> str:
    ref = base if base is not None else "HEAD"
    found = await g.git(
        "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}", cwd=top, tag=tag, check=False
    )
    if found.code != 0:
        if base is None:
            raise OpenCodeConfigError(
                f"isolation='worktree' starts from a commit, and the repository {top!r} has none yet "
                f"(commit first, or use isolation='copy')"
            )
        raise OpenCodeConfigError(f"base={base!r} is not a commit in the repository {top!r}")
    return found.stdout.decode().strip()


def checked_dirs(
    workspace: str | os.PathLike[str], directory: str | os.PathLike[str] | None
) -> tuple[Path, Path]:
    """The resolved workspace and parent directory, both existing directories."""
    source = Path(os.fspath(workspace)).resolve()
    if not source.is_dir():
        raise OpenCodeConfigError(f"workspace must be an existing directory; got {os.fspath(workspace)!r}")
    parent = (
        Path(os.fspath(directory)).resolve()
        if directory is not None
        else Path(tempfile.gettempdir()).resolve()
    )
    if not parent.is_dir():
        raise OpenCodeConfigError(f"directory must be an existing directory; got {os.fspath(parent)!r}")
    return source, parent


def _real(path: str) -> str:
    return os.path.realpath(path)


def refuse_inside(directory: Path, tree: Path, what: str) -> None:
    resolved = directory.resolve()
    if resolved == tree or tree in resolved.parents:
        raise OpenCodeConfigError(
            f"the isolated tree would be made inside {what} ({str(tree)!r}): pass directory= a folder "
            f"outside it (got {str(resolved)!r})"
        )
