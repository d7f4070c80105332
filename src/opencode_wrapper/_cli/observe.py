"""Batches whose starts and events are reported as they arrive (the live view's data source)."""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import AsyncIterator, Sequence
from typing import Any, Protocol, TypeVar

from opencode_wrapper._cli.attempts import AttemptTracker
from opencode_wrapper.backends.base import Backend
from opencode_wrapper.batch import BackendName, Progress, Task, TaskOutcome, iter_run_many
from opencode_wrapper.events import Event, RunError

_T = TypeVar("_T")


class TaskObserver(Protocol):
    """What a batch view is told, on the event loop's thread."""

    def task_started(self, index: int, task: Task) -> None: ...

    def task_event(self, index: int, event: Event) -> None: ...


class AttemptObserver(TaskObserver, Protocol):
    """A view that is also told when a task is tried again."""

    def task_attempt(self, index: int, number: int, previous: RunError | None) -> None: ...


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
    positions: Sequence[int] | None = None,
) -> AsyncIterator[TaskOutcome]:
    """``iter_run_many`` over ``tasks``, telling ``observer`` of every start and event.

    ``engine``: run on it instead (a backend you made: a pool, a ``RayEngine``...; left open);
    an observer with ``task_attempt`` then also hears of every retry. ``positions``: the index
    each task has for the observer and in the outcomes (default: its place in ``tasks``), e.g.
    its line in the tasks file when only some of them run.
    """
    where = list(positions) if positions is not None else list(range(len(tasks)))
    if len(where) != len(tasks):
        raise ValueError(f"{len(tasks)} tasks but {len(where)} positions")
    started: set[int] = set()

    def start(index: int) -> None:
        if 0 <= index < len(tasks) and index not in started:
            started.add(index)
            observer.task_started(where[index], tasks[index])

    def on_progress(progress: Progress) -> None:
        if progress.last_started is not None:
            start(progress.last_started)

    def on_event(index: int, event: Event) -> None:
        start(index)
        observer.task_event(where[index], event)

    options: dict[str, Any] = {"concurrency": concurrency, "backend": backend, "binary": binary}
    if engine is not None:
        task_attempt = getattr(observer, "task_attempt", None)
        if task_attempt is not None:
            engine = AttemptTracker(
                engine, tasks, lambda index, number, previous: task_attempt(where[index], number, previous)
            )
        options["engine"] = engine
    outcomes = iter_run_many(tasks, on_event=on_event, on_progress=on_progress, **options)
    async with closing(outcomes):
        async for outcome in outcomes:
            yield outcome if positions is None else dataclasses.replace(outcome, index=where[outcome.index])
