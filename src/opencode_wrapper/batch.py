"""Many agents at once: ``run_many`` / ``iter_run_many`` with a concurrency limit and a budget.

Tasks run on warm ``opencode serve`` processes by default (a :class:`~opencode_wrapper.pool.ServerPool`),
or one ``opencode run`` each (``backend="run"``). Every task gets an outcome: one failure never
loses the others' results, and nothing keeps running after the call returns or is cancelled.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from opencode_wrapper._observers import EventCallback, notify
from opencode_wrapper._validation import check_prompt, check_timeout, check_workspace
from opencode_wrapper.config import RunConfig, validate_config
from opencode_wrapper.errors import (
    OpenCodeCancelledError,
    OpenCodeConfigError,
    OpenCodeError,
    OpenCodeProcessError,
    OpenCodeTimeoutError,
)
from opencode_wrapper.events import Event, RunError, RunResult, TokenUsage

if TYPE_CHECKING:
    from opencode_wrapper.client import AsyncOpenCodeClient
    from opencode_wrapper.pool import ServerPool

__all__ = ["Budget", "Progress", "Task", "TaskOutcome", "iter_run_many", "run_many"]

Backend = Literal["server", "run"]


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


@dataclass
class TaskOutcome:
    """What became of one task.

    Attributes:
        index: the task's position in the input.
        task: the task.
        result: its result (also for most failures: a timed-out or failed run keeps what it did).
        exception: the exception the run raised, if any.
        elapsed_s: wall time from start to end.
        started: ``False`` for a task that was skipped (fail-fast, budget exhausted).
    """

    index: int
    task: Task
    result: RunResult | None = None
    exception: BaseException | None = None
    elapsed_s: float = 0.0
    started: bool = True

    @property
    def ok(self) -> bool:
        return self.exception is None and self.result is not None and self.result.ok

    @property
    def error(self) -> RunError | None:
        """Why the task did not succeed (``None`` when it did)."""
        if self.result is not None and self.result.error is not None:
            return self.result.error
        if self.exception is not None:
            return RunError(kind="process_exit", message=str(self.exception) or type(self.exception).__name__)
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
    kind ``budget_exhausted``); with ``abort_running=True`` the running ones are cancelled too.
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
Executor = Callable[[int, Task], Awaitable[RunResult]]
#: ``on_event(task_index, event)``: each typed event of each task as it arrives.
TaskEventCallback = Callable[[int, Event], None]


def _observer(on_event: TaskEventCallback | None, index: int) -> EventCallback | None:
    if on_event is None:
        return None
    return lambda event: notify(on_event, index, event)


def _as_task(item: TaskLike, index: int) -> Task:
    if isinstance(item, Task):
        task = item
    elif isinstance(item, tuple) and len(item) == 2:
        task = Task(prompt=item[0], workspace=item[1])
    else:
        raise OpenCodeConfigError(
            f"task #{index} must be a Task or a (prompt, workspace) tuple, got {item!r:.100}"
        )
    check_prompt(task.prompt)
    check_workspace(task.workspace)
    check_timeout(task.timeout_s)
    if task.run_cfg is not None:
        validate_config(task.run_cfg, allow_ask=False)
    return task


def _default_concurrency() -> int:
    return max(4, 8 * (os.cpu_count() or 1))


async def iter_run_many(
    tasks: Iterable[TaskLike],
    *,
    concurrency: int | None = None,
    fail_fast: bool = False,
    on_progress: ProgressCallback | None = None,
    budget: Budget | None = None,
    backend: Backend = "server",
    run_cfg: RunConfig | None = None,
    pool: ServerPool | None = None,
    client: AsyncOpenCodeClient | None = None,
    binary: str | os.PathLike[str] = "opencode",
    lean: bool = False,
    max_servers: int | None = None,
    on_event: TaskEventCallback | None = None,
) -> AsyncIterator[TaskOutcome]:
    """Run tasks concurrently and yield each :class:`TaskOutcome` as it completes.

    Args:
        tasks: :class:`Task` objects or ``(prompt, workspace)`` tuples; all checked before any start.
        concurrency: most tasks running at once (default ``max(4, 8 * CPUs)``).
        fail_fast: on the first failed task, cancel the running ones and start no more.
        on_progress: called (sync or async) with a :class:`Progress` after each start and finish.
        budget: a shared :class:`Budget`; once exhausted no task starts.
        backend: ``"server"`` (warm ``opencode serve`` processes, the fast default) or ``"run"``
            (one ``opencode run`` per task).
        run_cfg: the base config; each task's ``run_cfg`` is merged over it.
        pool: an existing :class:`ServerPool` to use (left open); by default one is created and
            closed when the batch ends.
        client: the run-mode client for ``backend="run"`` (default: a new one).
        binary, lean, max_servers: passed to the pool this call creates.
        on_event: called as ``on_event(task_index, event)`` with every typed event of every task
            as it arrives (a live view); an exception in it is logged and ignored.

    Leaving the loop early (or cancelling) cancels the running tasks and ends their processes.
    """
    if backend not in ("server", "run"):
        raise OpenCodeConfigError(f"backend must be 'server' or 'run', got {backend!r}")
    if concurrency is not None and (
        isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1
    ):
        raise OpenCodeConfigError(f"concurrency must be an integer >= 1, got {concurrency!r}")
    base = run_cfg or RunConfig()
    checked: list[Task] = []
    for index, item in enumerate(tasks):
        task = _as_task(item, index)
        merged = base.merged_with(task.run_cfg)
        validate_config(merged, allow_ask=False)
        if backend == "server" and merged.cli_kwargs:
            raise OpenCodeConfigError(
                f"task #{index} sets cli_kwargs {sorted(merged.cli_kwargs)}, which only `opencode run` "
                "understands; use backend='run' for it"
            )
        checked.append(Task(task.prompt, task.workspace, merged, task.timeout_s, task.name))

    own_pool = None
    executor: Executor
    if backend == "server":
        if pool is None:
            from opencode_wrapper.pool import ServerPool

            own_pool = pool = ServerPool(binary=binary, lean=lean, max_servers=max_servers)
        active_pool = pool

        async def executor(index: int, task: Task) -> RunResult:
            return await active_pool.run(
                task.prompt,
                task.workspace,
                run_cfg=task.run_cfg,
                timeout_s=task.timeout_s,
                on_event=_observer(on_event, index),
            )

    else:
        if client is None:
            from opencode_wrapper.client import AsyncOpenCodeClient

            client = AsyncOpenCodeClient(binary)
        run_client = client

        async def executor(index: int, task: Task) -> RunResult:
            return await run_client.async_run(
                task.prompt,
                task.workspace,
                run_cfg=task.run_cfg,
                timeout_s=task.timeout_s,
                on_event=_observer(on_event, index),
            )

    try:
        async for outcome in _schedule(
            checked,
            executor,
            concurrency=concurrency or _default_concurrency(),
            fail_fast=fail_fast,
            on_progress=on_progress,
            budget=budget,
        ):
            yield outcome
    finally:
        if own_pool is not None:
            await own_pool.aclose()


async def run_many(tasks: Iterable[TaskLike], **options: object) -> list[TaskOutcome]:
    """Run tasks concurrently; return every :class:`TaskOutcome` in input order.

    Takes the same keyword arguments as :func:`iter_run_many`.
    """
    outcomes: list[TaskOutcome] = []
    async for outcome in iter_run_many(tasks, **options):  # type: ignore[arg-type]
        outcomes.append(outcome)
    return sorted(outcomes, key=lambda o: o.index)


async def _schedule(
    tasks: Sequence[Task],
    executor: Executor,
    *,
    concurrency: int,
    fail_fast: bool,
    on_progress: ProgressCallback | None,
    budget: Budget | None,
) -> AsyncIterator[TaskOutcome]:
    """Start tasks in input order under a limit; yield outcomes as they complete.

    Owns every task it starts: on exit (normal, early break, error or cancellation) the
    still-running ones are cancelled and awaited, which ends their opencode sessions.
    """
    progress = Progress(total=len(tasks))
    done: asyncio.Queue[TaskOutcome] = asyncio.Queue()
    running: dict[int, asyncio.Task[None]] = {}
    limit = asyncio.Semaphore(concurrency)
    stop_starting = False

    async def report(outcome: TaskOutcome | None = None) -> None:
        if outcome is not None:
            progress.last = outcome
        if on_progress is not None:
            maybe = on_progress(progress)
            if inspect.isawaitable(maybe):
                await maybe

    async def run_one(index: int, task: Task) -> None:
        nonlocal stop_starting
        started = time.monotonic()
        outcome = TaskOutcome(index=index, task=task)
        try:
            outcome.result = await executor(index, task)
        except asyncio.CancelledError:
            outcome.result = RunResult(
                error=RunError(kind="cancelled", message="cancelled before it finished")
            )
            outcome.exception = OpenCodeCancelledError("the task was cancelled")
        except (OpenCodeProcessError, OpenCodeTimeoutError, OpenCodeCancelledError) as exc:
            outcome.exception = exc
            outcome.result = exc.result
        except (OpenCodeError, OSError) as exc:
            outcome.exception = exc
        finally:
            outcome.elapsed_s = time.monotonic() - started
            # Decide before freeing the slot, so the next start already sees this outcome.
            if budget is not None and outcome.result is not None:
                budget.charge(outcome.result)
                if budget.exhausted and budget.abort_running:
                    _cancel_all(running, but=index)
            if fail_fast and not outcome.ok and not stop_starting:
                stop_starting = True
                _cancel_all(running, but=index)
            limit.release()
            done.put_nowait(outcome)

    def cancelled_before_start(runner: asyncio.Task[None], index: int, task: Task) -> None:
        # A task cancelled before its first step never runs run_one's body: account for it here.
        if runner.cancelled():
            limit.release()
            outcome = TaskOutcome(
                index=index,
                task=task,
                result=RunResult(error=RunError(kind="cancelled", message="cancelled before it started")),
                exception=OpenCodeCancelledError("the task was cancelled"),
            )
            done.put_nowait(outcome)

    def finish_without_running(index: int, task: Task, error: RunError) -> None:
        done.put_nowait(TaskOutcome(index=index, task=task, result=RunResult(error=error), started=False))

    async def starter() -> None:
        nonlocal stop_starting
        for index, task in enumerate(tasks):
            await limit.acquire()
            if stop_starting:
                limit.release()
                finish_without_running(
                    index,
                    task,
                    RunError(kind="cancelled", message="not started: an earlier task failed (fail_fast)"),
                )
                continue
            if budget is not None and budget.exhausted:
                limit.release()
                finish_without_running(
                    index, task, RunError(kind="budget_exhausted", message=f"not started: {budget!r}")
                )
                continue
            runner = asyncio.ensure_future(run_one(index, task))
            runner.add_done_callback(functools.partial(cancelled_before_start, index=index, task=task))
            running[index] = runner
            progress.started += 1
            progress.last_started = index
            await report()

    starter_task = asyncio.ensure_future(starter())
    try:
        for _ in range(len(tasks)):
            outcome = await done.get()
            running.pop(outcome.index, None)
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
        _cancel_all(running)
        pending = [*running.values(), starter_task]
        await asyncio.gather(*pending, return_exceptions=True)


def _cancel_all(running: dict[int, asyncio.Task[None]], but: int | None = None) -> None:
    for index, task in running.items():
        if index != but:
            task.cancel()
