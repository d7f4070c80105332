"""Many agents at once: ``run_many`` / ``iter_run_many`` with a concurrency limit and a budget.

Each task is one :class:`~opencode_wrapper.backends.request.RunRequest` for a backend: warm
``opencode serve`` processes by default (a :class:`~opencode_wrapper.ServerPool`), one
``opencode run`` each (``backend="run"``), a pool or client of yours, or any other
:class:`~opencode_wrapper.Backend` (``engine=``). Every task is checked before the first one
starts; every task gets an outcome (one failure never loses the others' results), and nothing
keeps running after the call returns or is cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from opencode_wrapper._model.event import Event, TokenUsage
from opencode_wrapper._model.outcome import RunResult, exception_for
from opencode_wrapper._model.run_error import Attempt, RunError
from opencode_wrapper._observers import EventCallback, notify
from opencode_wrapper.backends.base import Backend
from opencode_wrapper.backends.handle import RunHandle
from opencode_wrapper.backends.pool import ServerPool
from opencode_wrapper.backends.process import ProcessBackend
from opencode_wrapper.backends.request import RunRequest
from opencode_wrapper.client import AsyncOpenCodeClient
from opencode_wrapper.config import RunConfig
from opencode_wrapper.errors import (
    OpenCodeCancelledError,
    OpenCodeConfigError,
    OpenCodeError,
    OpenCodeRunError,
    OpenCodeServerError,
    OpenCodeTimeoutError,
)

__all__ = ["Budget", "Progress", "Task", "TaskOutcome", "error_for_exception", "iter_run_many", "run_many"]

#: The built-in backends of ``run_many``: warm servers, or one ``opencode run`` per task.
BackendName = Literal["server", "run"]


@dataclass(frozen=True)
class Task:
    """One agent run: a prompt in a workspace, with its own config and timeout.

    ``run_cfg`` fields that are server-global (permission, mcp, instructions, provider config)
    decide which warm server the task runs on; tasks with equal ones share a server.
    """

    prompt: str
    workspace: str | os.PathLike[str]
    run_cfg: RunConfig | None = None
    timeout_s: float | None = None
    name: str | None = None


TaskLike = Task | tuple[str, str | os.PathLike[str]]


def error_for_exception(exc: BaseException) -> RunError:
    """The :class:`RunError` an exception stands for (its result's error, when it carries one)."""
    if isinstance(exc, OpenCodeRunError) and exc.result is not None and exc.result.error is not None:
        return exc.result.error
    if isinstance(exc, OpenCodeTimeoutError):
        return RunError(kind="timeout", message=str(exc))
    if isinstance(exc, OpenCodeCancelledError):
        return RunError(kind="cancelled", message=str(exc))
    if isinstance(exc, OpenCodeServerError):
        return RunError(kind="server_failure", message=str(exc))
    return RunError(kind="internal_error", message=f"{type(exc).__name__}: {exc}")


@dataclass
class TaskOutcome:
    """What became of one task.

    Attributes:
        index: the task's position in the input.
        task: the task.
        result: its result (also for failures: a timed-out or failed run keeps what it did).
        exception: what ``async_run`` would have raised for this result, or the exception that
            stopped the task before it had one.
        elapsed_s: wall time from start to end.
        started: ``False`` for a task that was skipped (fail-fast, budget exhausted).
        attempts: every try of the task, in order, with its error (the last one is ``result``'s).
    """

    index: int
    task: Task
    result: RunResult | None = None
    exception: BaseException | None = None
    elapsed_s: float = 0.0
    started: bool = True
    attempts: list[Attempt] = field(default_factory=list)

    @property
    def node_id(self) -> str | None:
        """Where the last try ran, when the backend says (a cluster node)."""
        return self.attempts[-1].node_id if self.attempts else None

    @property
    def ok(self) -> bool:
        return self.exception is None and self.result is not None and self.result.ok

    @property
    def error(self) -> RunError | None:
        """Why the task did not succeed (``None`` when it did)."""
        if self.result is not None and self.result.error is not None:
            return self.result.error
        if self.exception is not None:
            return error_for_exception(self.exception)
        return None


@dataclass
class Progress:
    """A snapshot of a batch, passed to ``on_progress`` after every start and finish.

    ``last`` is the outcome that triggered a "finished" call; ``last_started`` the index of the
    task whose start triggered the latest "started" call.
    """

    total: int
    started: int = 0
    finished: int = 0
    failed: int = 0
    skipped: int = 0
    usage: TokenUsage = field(default_factory=TokenUsage)
    cost: float = 0.0
    last: TaskOutcome | None = None
    last_started: int | None = None

    @property
    def running(self) -> int:
        return self.started - self.finished

    @property
    def pending(self) -> int:
        """Tasks neither finished nor skipped yet (running ones included)."""
        return self.total - self.finished - self.skipped


class Budget:
    """A token and/or cost budget shared by every task of one or more batches.

    When a finished task takes the total to a limit, no new task starts (those get an error of
    kind ``budget_exhausted``); with ``abort_running=True`` the running ones are stopped too.
    """

    def __init__(
        self, *, max_tokens: int | None = None, max_cost: float | None = None, abort_running: bool = False
    ) -> None:
        if max_tokens is None and max_cost is None:
            raise OpenCodeConfigError("Budget needs max_tokens and/or max_cost")
        if max_tokens is not None and (
            isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens <= 0
        ):
            raise OpenCodeConfigError(f"max_tokens must be a positive integer, got {max_tokens!r}")
        if max_cost is not None and (
            isinstance(max_cost, bool) or not isinstance(max_cost, (int, float)) or max_cost <= 0
        ):
            raise OpenCodeConfigError(f"max_cost must be a positive number, got {max_cost!r}")
        self.max_tokens = max_tokens
        self.max_cost = max_cost
        self.abort_running = abort_running
        self.usage = TokenUsage()
        self.cost = 0.0

    def charge(self, result: RunResult) -> None:
        self.usage += result.token_usage
        self.cost += result.total_cost

    @property
    def exhausted(self) -> bool:
        return (self.max_tokens is not None and self.usage.total >= self.max_tokens) or (
            self.max_cost is not None and self.cost >= self.max_cost
        )

    def __repr__(self) -> str:
        return (
            f"Budget(max_tokens={self.max_tokens}, max_cost={self.max_cost}, "
            f"used_tokens={self.usage.total}, used_cost={self.cost:.4f})"
        )


ProgressCallback = Callable[[Progress], Awaitable[None] | None]
#: ``on_event(task_index, event)``: each typed event of each task as it arrives.
TaskEventCallback = Callable[[int, Event], None]


def _observer(on_event: TaskEventCallback | None, index: int) -> EventCallback | None:
    if on_event is None:
        return None
    return lambda event: notify(on_event, index, event)


def _as_task(item: TaskLike, index: int) -> Task:
    if isinstance(item, Task):
        return item
    if isinstance(item, tuple) and len(item) == 2:
        return Task(prompt=item[0], workspace=item[1])
    raise OpenCodeConfigError(
        f"task #{index} must be a Task or a (prompt, workspace) tuple, got {item!r:.100}"
    )


def _choose_backend(
    *,
    engine: Backend | None,
    pool: ServerPool | None,
    client: AsyncOpenCodeClient | None,
    backend: BackendName,
    binary: str | os.PathLike[str],
    lean: bool,
    max_servers: int | None,
) -> tuple[Backend, Backend | None]:
    """The backend to use, and the one this call owns (and closes), if it made it."""
    if backend not in ("server", "run"):
        raise OpenCodeConfigError(f"backend must be 'server' or 'run', got {backend!r}")
    chosen = [
        name for name, value in (("engine", engine), ("pool", pool), ("client", client)) if value is not None
    ]
    if len(chosen) > 1:
        raise OpenCodeConfigError(f"give one of engine=, pool=, client=, not {' and '.join(chosen)}")
    if engine is not None:
        if not isinstance(engine, Backend):
            raise OpenCodeConfigError(f"engine must be a Backend (e.g. a RayEngine), got {engine!r}")
        return engine, None
    if pool is not None:
        return pool, None
    if client is not None:
        return client.backend, None
    if backend == "run":
        return ProcessBackend(binary), None
    made = ServerPool(binary=binary, lean=lean, max_servers=max_servers)
    return made, made


def _default_concurrency(backend: Backend) -> int:
    return backend.capacity or max(4, 8 * (os.cpu_count() or 1))


async def iter_run_many(
    tasks: Iterable[TaskLike],
    *,
    concurrency: int | None = None,
    fail_fast: bool = False,
    on_progress: ProgressCallback | None = None,
    budget: Budget | None = None,
    backend: BackendName = "server",
    run_cfg: RunConfig | None = None,
    pool: ServerPool | None = None,
    client: AsyncOpenCodeClient | None = None,
    engine: Backend | None = None,
    binary: str | os.PathLike[str] = "opencode",
    lean: bool = False,
    max_servers: int | None = None,
    on_event: TaskEventCallback | None = None,
) -> AsyncIterator[TaskOutcome]:
    """Run tasks concurrently and yield each :class:`TaskOutcome` as it completes.

    Args:
        tasks: :class:`Task` objects or ``(prompt, workspace)`` tuples; all checked (by the
            backend too) before any starts.
        concurrency: most tasks running at once (default: the backend's capacity, else
            ``max(4, 8 * CPUs)``).
        fail_fast: on the first failed task, stop the running ones and start no more.
        on_progress: called (sync or async) with a :class:`Progress` after each start and finish.
        budget: a shared :class:`Budget`; once exhausted no task starts.
        backend: ``"server"`` (warm ``opencode serve`` processes, the fast default) or ``"run"``
            (one ``opencode run`` per task).
        run_cfg: the base config; each task's ``run_cfg`` is merged over it.
        pool: an existing :class:`ServerPool` to use (left open).
        client: an existing :class:`AsyncOpenCodeClient`: its backend is used (run mode, or its
            warm servers).
        engine: any other :class:`Backend` (e.g. ``opencode_wrapper.ray.RayEngine``), left open.
        binary, lean, max_servers: for the pool or run-mode backend this call creates.
        on_event: called as ``on_event(task_index, event)`` with every typed event of every task
            as it arrives (a live view); an exception in it is logged and ignored.

    Leaving the loop early (or cancelling) stops the running tasks and ends their processes.
    """
    if concurrency is not None and (
        isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1
    ):
        raise OpenCodeConfigError(f"concurrency must be an integer >= 1, got {concurrency!r}")
    chosen, owned = _choose_backend(
        engine=engine,
        pool=pool,
        client=client,
        backend=backend,
        binary=binary,
        lean=lean,
        max_servers=max_servers,
    )
    base = run_cfg or RunConfig()
    checked: list[tuple[Task, RunRequest]] = []
    for index, item in enumerate(tasks):
        task = _as_task(item, index)
        merged = base.merged_with(task.run_cfg)
        try:
            request = RunRequest.create(
                task.prompt,
                task.workspace,
                run_cfg=merged,
                timeout_s=task.timeout_s,
                on_event=_observer(on_event, index),
                workspace_is_local=chosen.local_workspaces,
            )
            chosen.check(request)
        except OpenCodeConfigError as exc:
            raise OpenCodeConfigError(f"task #{index}: {exc}") from exc
        checked.append((Task(task.prompt, task.workspace, merged, task.timeout_s, task.name), request))
    try:
        async for outcome in _schedule(
            checked,
            chosen,
            concurrency=concurrency or _default_concurrency(chosen),
            fail_fast=fail_fast,
            on_progress=on_progress,
            budget=budget,
        ):
            yield outcome
    finally:
        if owned is not None:
            await owned.aclose()


async def run_many(tasks: Iterable[TaskLike], **options: Any) -> list[TaskOutcome]:
    """Run tasks concurrently; return every :class:`TaskOutcome` in input order.

    Takes the same keyword arguments as :func:`iter_run_many`.
    """
    outcomes: list[TaskOutcome] = []
    async for outcome in iter_run_many(tasks, **options):
        outcomes.append(outcome)
    return sorted(outcomes, key=lambda o: o.index)


async def _schedule(
    tasks: Sequence[tuple[Task, RunRequest]],
    backend: Backend,
    *,
    concurrency: int,
    fail_fast: bool,
    on_progress: ProgressCallback | None,
    budget: Budget | None,
) -> AsyncIterator[TaskOutcome]:
    """Start tasks in input order under a limit; yield outcomes as they complete.

    Owns every run it starts: on exit (normal, early break, error or cancellation) the still-running
    ones are stopped and awaited, which ends their processes.
    """
    progress = Progress(total=len(tasks))
    done: asyncio.Queue[TaskOutcome] = asyncio.Queue()
    runners: dict[int, asyncio.Task[None]] = {}
    handles: dict[int, RunHandle] = {}
    limit = asyncio.Semaphore(concurrency)
    stop_starting: RunError | None = None

    async def report(outcome: TaskOutcome | None = None) -> None:
        if outcome is not None:
            progress.last = outcome
        if on_progress is not None:
            maybe = on_progress(progress)
            if inspect.isawaitable(maybe):
                await maybe

    def stop_running(reason: RunError, but: int) -> None:
        for index, handle in list(handles.items()):
            if index != but:
                handle.stop(reason)

    async def run_one(index: int, task: Task, handle: RunHandle) -> None:
        nonlocal stop_starting
        started = time.monotonic()
        outcome = TaskOutcome(index=index, task=task)
        try:
            async with handle:
                result = outcome.result = await handle.wait()
            if result.error is not None and result.error.raised:
                outcome.exception = exception_for(result)
            outcome.attempts = list(handle.attempts) or [
                Attempt(1, result.error, time.monotonic() - started, handle.placement)
            ]
        except asyncio.CancelledError:
            # The batch itself is being left: the handle ended the run; keep what it did.
            with contextlib.suppress(Exception):
                outcome.result = handle.result
            outcome.exception = OpenCodeCancelledError("the task was cancelled", result=outcome.result)
        except (OpenCodeError, OSError) as exc:
            outcome.exception = exc
        finally:
            handles.pop(index, None)
            outcome.elapsed_s = time.monotonic() - started
            # Decide before freeing the slot, so the next start already sees this outcome.
            if budget is not None and outcome.result is not None:
                budget.charge(outcome.result)
                if budget.exhausted and budget.abort_running:
                    stop_running(RunError(kind="budget_exhausted", message=f"stopped: {budget!r}"), but=index)
            if fail_fast and not outcome.ok and stop_starting is None:
                stop_starting = RunError(
                    kind="cancelled", message=f"stopped: task #{index} failed (fail_fast)"
                )
                stop_running(stop_starting, but=index)
            limit.release()
            done.put_nowait(outcome)

    def skip(index: int, task: Task, error: RunError) -> None:
        done.put_nowait(TaskOutcome(index=index, task=task, result=RunResult(error=error), started=False))

    async def starter() -> None:
        for index, (task, request) in enumerate(tasks):
            await limit.acquire()
            if stop_starting is not None:
                limit.release()
                skip(
                    index,
                    task,
                    RunError(kind="cancelled", message="not started: an earlier task failed (fail_fast)"),
                )
                continue
            if budget is not None and budget.exhausted:
                limit.release()
                skip(index, task, RunError(kind="budget_exhausted", message=f"not started: {budget!r}"))
                continue
            # Registered before the runner starts, so a stop (fail_fast, budget) always reaches it.
            handle = handles[index] = backend.open(request)
            runners[index] = asyncio.ensure_future(run_one(index, task, handle))
            progress.started += 1
            progress.last_started = index
            await report()

    starter_task = asyncio.ensure_future(starter())
    try:
        for _ in range(len(tasks)):
            outcome = await done.get()
            runners.pop(outcome.index, None)
            if not outcome.started:
                progress.skipped += 1
            else:
                progress.finished += 1
                progress.failed += 0 if outcome.ok else 1
                if outcome.result is not None:
                    progress.usage += outcome.result.token_usage
                    progress.cost += outcome.result.total_cost
            await report(outcome)
            yield outcome
    finally:
        starter_task.cancel()
        for runner in runners.values():
            runner.cancel()
        await asyncio.gather(*runners.values(), starter_task, return_exceptions=True)
