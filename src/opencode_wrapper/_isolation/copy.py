"""The private copy of a folder for ``isolation="copy"``.

What is copied: everything, symlinks as symlinks (never followed: a link to a huge or outside
directory costs nothing), except entries named ``.git`` anywhere (a nested repository's or a
submodule's git data: copied, it would turn that folder into an embedded repository whose
changes the diff cannot see; its files are copied as plain files) and entries whose name
matches one of the ``exclude`` patterns (``fnmatch``; by default only regenerable caches).
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import shutil
import threading
from collections.abc import Sequence

DEFAULT_COPY_EXCLUDE: tuple[str, ...] = (
    "__pycache__",
    ".mypy_cache",
    ".pytest_cache",
    ".ruff_cache",
    ".tox",
    ".nox",
)
"""Names left out of a copy by default: caches that tools recreate, never needed by a run.

Not ``node_modules`` or ``.venv``: large, but a run that builds or tests needs them. Pass
``copy_exclude=(*DEFAULT_COPY_EXCLUDE, "node_modules")`` to leave them out."""


class _Stopped(Exception):
    pass


async def copy_folder(source: str, target: str, exclude: Sequence[str]) -> None:
    """Copy ``source`` to ``target`` (which must not exist) in a thread.

    Cancelled, it stops the copy at the next directory and returns once the thread is done
    (the caller removes the partial copy), then raises the cancellation.
    """
    stop = threading.Event()
    patterns = tuple(exclude)

    def ignore(_directory: str, names: list[str]) -> set[str]:
        if stop.is_set():
            raise _Stopped
        return {n for n in names if n == ".git" or any(fnmatch.fnmatch(n, p) for p in patterns)}

    def copy() -> None:
        # _Stopped is no OSError: copytree does not gather it as a file's error, it ends the copy.
        with contextlib.suppress(_Stopped):
            shutil.copytree(source, target, symlinks=True, ignore=ignore, copy_function=shutil.copy2)

    task = asyncio.ensure_future(asyncio.to_thread(copy))
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        stop.set()
        await asyncio.gather(task, return_exceptions=True)
        raise
