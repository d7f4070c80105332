"""Batches whose starts and events are reported as they arrive (the live view's data source)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Sequence
from typing import Protocol, TypeVar

from opencode_wrapper.backends.base import Backend
from opencode_wrapper.batch import BackendName, Progress, Task, TaskOutcome, iter_run_many
from opencode_wrapper.events import Event

_T = TypeVar("_T")


class TaskObserver(Protocol):
    """What a batch view is told, on the event loop's thread."""

    def task_started(self, index: int, task: Task) -> None: ...

    def task_event(self, index: int, event: Event) -> None: ...


@contextlib.asynccontextmanager
async def closing(iterator: AsyncIterator[_T]) -> AsyncIterator[AsyncIterator[_T]]:
    """Like ``contextlib.aclosing`` for anything typed ``AsyncIterator`` (generators have ``aclose``).

    Leaving the block closes the iterator at once, which ends the runs it owns.
    """
    try:
        yield iterator
    finally:
        aclose = getattr(iterator, "aclose", None)
        if aclose is not None:
            await aclose()


def choose_backend(requested: BackendName | None) -> BackendName:
    """The backend of a batch: warm servers unless ``--backend run`` was asked for."""
    return requested or "server"


async def iter_observed(
    tasks: Sequence[Task],
    observer: TaskObserver,
    *,
    backend: BackendName,
    concurrency: int | None,
    binary: str | os.PathLike[str],
    engine: Backend | None = None,
) -> AsyncIterator[TaskOutcome]:
    """``iter_run_many`` over ``tasks``, telling ``observer`` of every start and event.

    ``engine``: run on it instead (e.g. a ``RayEngine``; left open).
    """
    started: set[int] = set()

    def start(index: int) -> None:
        if 0 <= index < len(tasks) and index not in started:
            started.add(index)
            observer.task_started(index, tasks[index])

    def on_progress(progress: Progress) -> None:
        if progress.last_started is not None:
            start(progress.last_started)

    def on_event(index: int, event: Event) -> None:
        start(index)
        observer.task_event(index, event)

    outcomes = iter_run_many(
        tasks,
        concurrency=concurrency,
        backend=backend,
        binary=binary,
        engine=engine,
        on_event=on_event,
        on_progress=on_progress,
    )
    async with closing(outcomes):
        async for outcome in outcomes:
            yield outcome
