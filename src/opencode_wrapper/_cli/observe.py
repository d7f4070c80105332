"""Runs and batches whose events are reported as they arrive (the live view's data source).

The library hooks this relies on, when present (asked of ``client``/``batch``):

* ``AsyncOpenCodeClient.async_run(..., on_event=callback)``: ``callback(event)`` per event;
* ``iter_run_many(..., on_event=callback)``: ``callback(task_index, event)`` per event of
  every task, for both backends; ``Progress.last_started``: the index of the task whose start
  triggered an ``on_progress`` call.

Until they exist, a run-mode stand-in gives the same information: events come from
``async_stream`` and batches run with ``backend="run"``.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import os
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, Protocol, TypeVar, cast

from opencode_wrapper.batch import Backend, Progress, Task, TaskOutcome, iter_run_many
from opencode_wrapper.client import AsyncOpenCodeClient
from opencode_wrapper.config import RunConfig
from opencode_wrapper.events import Event, RunResult, aggregate_run_result

EventCallback = Callable[[Event], None]
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


def accepts(func: Callable[..., Any], name: str) -> bool:
    """Whether ``func`` takes a keyword argument ``name``."""
    try:
        return name in inspect.signature(func).parameters
    except (TypeError, ValueError):
        return False


def server_backend_available() -> bool:
    """Whether warm servers can run batches here (``opencode_wrapper.server`` is installed)."""
    try:
        import opencode_wrapper.pool  # noqa: F401
    except ImportError:
        return False
    return True


async def stream_run(
    client: AsyncOpenCodeClient,
    prompt: str,
    workspace: str | os.PathLike[str],
    *,
    run_cfg: RunConfig | None,
    timeout_s: float | None,
    on_event: EventCallback,
) -> RunResult:
    """``async_stream`` folded into a :class:`RunResult`, reporting each event.

    Raises like ``async_run`` (``OpenCodeProcessError``/``OpenCodeTimeoutError`` carry the result).
    Unlike ``async_run`` it cannot see opencode's stderr (only the tool events tell of rejected
    permissions) and does not retry SQLite start-up crashes.
    """
    events: list[Event] = []
    stream = client.async_stream(prompt, workspace, run_cfg=run_cfg, timeout_s=timeout_s)
    async with closing(stream):
        async for event in stream:
            events.append(event)
            on_event(event)
    return aggregate_run_result(
        events=list(events),
        raw_stdout_lines=[json.dumps(event, ensure_ascii=False) for event in events],
        exit_code=0,
        stderr="",
    )


async def run_observed(
    client: AsyncOpenCodeClient,
    prompt: str,
    workspace: str | os.PathLike[str],
    *,
    run_cfg: RunConfig | None,
    timeout_s: float | None,
    on_event: EventCallback,
) -> RunResult:
    """One run to completion, calling ``on_event`` with every event as it arrives."""
    if accepts(client.async_run, "on_event"):
        run = cast(Any, client.async_run)
        result: RunResult = await run(
            prompt, workspace, run_cfg=run_cfg, timeout_s=timeout_s, on_event=on_event
        )
        return result
    return await stream_run(
        client, prompt, workspace, run_cfg=run_cfg, timeout_s=timeout_s, on_event=on_event
    )


def _key(prompt: str, workspace: str | os.PathLike[str]) -> tuple[str, str]:
    return prompt, os.path.realpath(os.fspath(workspace))


class _ObservingClient(AsyncOpenCodeClient):
    """Run mode that tells an observer which task started and what it does.

    ``run_many`` calls ``async_run(prompt, workspace, ...)`` without the task's index; tasks are
    matched by prompt and workspace, in input order (the order ``run_many`` starts them in).
    """

    def __init__(self, binary: str | os.PathLike[str], tasks: Sequence[Task], observer: TaskObserver) -> None:
        super().__init__(binary)
        self._tasks = tasks
        self._observer = observer
        self._waiting: dict[tuple[str, str], deque[int]] = {}
        for index, task in enumerate(tasks):
            self._waiting.setdefault(_key(task.prompt, task.workspace), deque()).append(index)

    async def async_run(
        self,
        prompt: str,
        workspace: str | os.PathLike[str],
        *,
        run_cfg: RunConfig | None = None,
        timeout_s: float | None = None,
        **options: Any,
    ) -> RunResult:
        queue = self._waiting.get(_key(prompt, workspace))
        if not queue or options:
            return await super().async_run(prompt, workspace, run_cfg=run_cfg, timeout_s=timeout_s, **options)
        index = queue.popleft()
        self._observer.task_started(index, self._tasks[index])

        def report(event: Event) -> None:
            self._observer.task_event(index, event)

        return await stream_run(
            self, prompt, workspace, run_cfg=run_cfg, timeout_s=timeout_s, on_event=report
        )


def batch_reports_events() -> bool:
    """Whether ``iter_run_many`` takes ``on_event`` (live events for both backends)."""
    return accepts(iter_run_many, "on_event")


def choose_backend(requested: Backend | None) -> Backend:
    """The backend for a batch with a live view.

    Default: warm servers when they exist *and* report live events; otherwise run mode, whose
    events this module can observe itself. An explicit choice is kept.
    """
    if requested is not None:
        return requested
    return "server" if server_backend_available() and batch_reports_events() else "run"


async def iter_observed(
    tasks: Sequence[Task],
    observer: TaskObserver,
    *,
    backend: Backend,
    concurrency: int | None,
    binary: str | os.PathLike[str],
) -> AsyncIterator[TaskOutcome]:
    """``iter_run_many`` over ``tasks``, telling ``observer`` of every start and event.

    Without ``on_event`` in ``iter_run_many``, run mode is observed through ``async_stream``,
    and warm servers report only starts (rows show no tool or tokens until their task ends).
    """
    started: set[int] = set()

    def start(index: int) -> None:
        if 0 <= index < len(tasks) and index not in started:
            started.add(index)
            observer.task_started(index, tasks[index])

    def on_progress(progress: Progress) -> None:
        index = getattr(progress, "last_started", None)
        if isinstance(index, int):
            start(index)
        elif progress.started > len(started):
            # Tasks start in input order (nothing is skipped without fail_fast or a budget).
            start(progress.started - 1)

    if batch_reports_events():

        def on_event(index: int, event: Event) -> None:
            start(index)
            observer.task_event(index, event)

        options: dict[str, Any] = {"on_event": on_event, "on_progress": on_progress}
        if backend == "run":
            options["client"] = AsyncOpenCodeClient(binary)
        outcomes = iter_run_many(tasks, concurrency=concurrency, backend=backend, binary=binary, **options)
    elif backend == "server":
        outcomes = iter_run_many(
            tasks, concurrency=concurrency, backend="server", binary=binary, on_progress=on_progress
        )
    else:
        outcomes = iter_run_many(
            tasks,
            concurrency=concurrency,
            backend="run",
            client=_ObservingClient(binary, tasks, observer),
        )
    async with closing(outcomes):
        async for outcome in outcomes:
            yield outcome
