"""The batch scheduler: tasks started in input order under a limit, retried when worth it, all owned.

Each task's runs are handles of one backend. A task is retried (``retries``) only when its
failure is worth retrying (``RunError.retryable``: rate limits, provider 5xx, connection
failures, a server that died, start-up crashes) and a retry cannot repeat side effects: a run
that was not isolated and already ran a tool is not retried unless ``retry_side_effects``. The
pause before a retry is ``retry_backoff_s`` doubling per attempt, or the provider's
``retry-after`` when that is longer.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from opencode_wrapper._aio import wait_within
from opencode_wrapper._batch.types import Budget, Progress, ProgressCallback, Task, TaskOutcome
from opencode_wrapper._model.outcome import RunResult, exception_for
from opencode_wrapper._model.run_error import Attempt, RunError
from opencode_wrapper.backends.base import Backend
from opencode_wrapper.backends.handle import RunHandle
from opencode_wrapper.backends.request import RunRequest
from opencode_wrapper.errors import OpenCodeCancelledError, OpenCodeError

__all__ = ["RetryPolicy", "schedule", "worth_retrying"]

_LOG = logging.getLogger("opencode_wrapper")


@dataclass(frozen=True)
class RetryPolicy:
    """How one task is retried (see the module docstring)."""

    retries: int = 0
    backoff_s: float = 5.0
    side_effects: bool = False

    def delay_s(self, attempt: int, error: RunError) -> float:
        """The pause before the try after ``attempt`` (1-based)."""
        delay = self.backoff_s * float(2 ** (attempt - 1))
        after = error.retry_after_s
        return max(delay, after) if after is not None else delay


def worth_retrying(result: RunResult, request: RunRequest, policy: RetryPolicy) -> bool:
    """Whether a fresh try can help and cannot repeat a side effect."""
    error = result.error
    if error is None or not error.retryable:
        return False
    ran_tools = bool(result.tool_calls)
    return request.isolation != "none" or not ran_tools or policy.side_effects


async def schedule(
    tasks: Sequence[tuple[Task, RunRequest, RetryPolicy]],
    backend: Backend,
    *,
    concurrency: int,
    fail_fast: bool,
    on_progress: ProgressCallback | None,
    budget: Budget | None,
) -> AsyncIterator[TaskOutcome]:
    """Start tasks in input order under a limit; yield outcomes as they complete.

    Owns every run it starts: on exit (normal, early break, error or cancellation) the
    still-running ones are stopped and awaited, which ends their processes.
    """
    progress = Progress(total=len(tasks))
    done: asyncio.Queue[TaskOutcome] = asyncio.Queue()
    runners: dict[int, asyncio.Task[None]] = {}
    handles: dict[int, RunHandle] = {}
    limit = asyncio.Semaphore(concurrency)
    stopping = asyncio.Event()  # wakes tasks waiting to retry
    stop_starting: RunError | None = None
    budget_stop: RunError | None = None

    async def report(outcome: TaskOutcome | None = None) -> None:
        if outcome is not None:
            progress.last = outcome
        if on_progress is None:
            return
        try:
            maybe = on_progress(progress)
            if inspect.isawaitable(maybe):
                await maybe
        except Exception:
            # An observer never breaks the batch (a starter that died would leave it waiting forever).
            _LOG.exception("an on_progress callback raised; ignored")

    def stop_running(reason: RunError, but: int) -> None:
        stopping.set()
        for index, handle in list(handles.items()):
            if index != but:
                handle.stop(reason)

    def charge(index: int, result: RunResult) -> None:
        nonlocal budget_stop
        if budget is None:
            return
        budget.charge(result)
        if budget.exhausted and budget.abort_running and budget_stop is None:
            budget_stop = RunError(kind="budget_exhausted", message=f"stopped: {budget!r}")
            stop_running(budget_stop, but=index)

    async def run_one(
        index: int, task: Task, request: RunRequest, policy: RetryPolicy, first: RunHandle
    ) -> None:
        nonlocal stop_starting
        started = time.monotonic()
        outcome = TaskOutcome(index=index, task=task)
        handle = first
        try:
            for number in range(1, policy.retries + 2):
                began = time.monotonic()
                async with handle:
                    result = outcome.result = await handle.wait()
                charge(index, result)
                tries = handle.attempts or [
                    Attempt(1, result.error, time.monotonic() - began, handle.placement)
                ]
                for attempt in tries:
                    attempt.number = len(outcome.attempts) + 1
                    outcome.attempts.append(attempt)
                error = result.error
                if error is None or number > policy.retries or stopping.is_set():
                    break
                if not worth_retrying(result, request, policy):
                    break
                with contextlib.suppress(asyncio.TimeoutError):
                    await wait_within(stopping.wait(), policy.delay_s(number, error))
                if stopping.is_set():
                    break
                handle = handles[index] = backend.open(request)
            if (
                outcome.result is not None
                and outcome.result.error is not None
                and outcome.result.error.raised
            ):
                outcome.exception = exception_for(outcome.result)
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
        for index, (task, request, policy) in enumerate(tasks):
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
            runners[index] = asyncio.ensure_future(run_one(index, task, request, policy, handle))
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
