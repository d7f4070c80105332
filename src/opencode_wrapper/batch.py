"""Many agents at once: ``run_many`` / ``iter_run_many`` with a concurrency limit, retries and a budget.

Each task is one :class:`~opencode_wrapper.backends.request.RunRequest` for a backend: warm
``opencode serve`` processes by default (a :class:`~opencode_wrapper.ServerPool`), one
``opencode run`` each (``backend="run"``), a pool or client of yours, or any other
:class:`~opencode_wrapper.Backend` (``engine=``). Every task is checked before the first one
starts; every task gets an outcome (one failure never loses the others' results), and nothing
keeps running after the call returns or is cancelled.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import AsyncGenerator, AsyncIterator, Iterable
from typing import Any, Literal, cast

from opencode_wrapper._batch.schedule import RetryPolicy, schedule
from opencode_wrapper._batch.types import (
    Budget,
    Progress,
    ProgressCallback,
    Task,
    TaskEventCallback,
    TaskLike,
    TaskOutcome,
    error_for_exception,
)
from opencode_wrapper._observers import EventCallback, notify
from opencode_wrapper._validation import check_non_negative
from opencode_wrapper.backends.base import Backend
from opencode_wrapper.backends.process import ProcessBackend
from opencode_wrapper.backends.request import RunRequest
from opencode_wrapper.backends.verify import DEFAULT_VERIFY_TIMEOUT_S as _DEFAULT_VERIFY_TIMEOUT_S
from opencode_wrapper.backends.verify import VerifySpec
from opencode_wrapper.client import AsyncOpenCodeClient
from opencode_wrapper.config import RunConfig
from opencode_wrapper.errors import OpenCodeConfigError
from opencode_wrapper.hooks import Hooks
from opencode_wrapper.limits import Limits
from opencode_wrapper.pool import ServerPool
from opencode_wrapper.tracing import batch_span

__all__ = [
    "BackendName",
    "Budget",
    "Progress",
    "ProgressCallback",
    "Task",
    "TaskEventCallback",
    "TaskLike",
    "TaskOutcome",
    "error_for_exception",
    "iter_run_many",
    "run_many",
]

#: The built-in backends of ``run_many``: warm servers, or one ``opencode run`` per task.
BackendName = Literal["server", "run"]


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


def _retry_policy(task: Task, retries: int, backoff_s: float, side_effects: bool) -> RetryPolicy:
    count = task.retries if task.retries is not None else retries
    pause = task.retry_backoff_s if task.retry_backoff_s is not None else backoff_s
    check_non_negative(count, "retries", integer=True)
    check_non_negative(pause, "retry_backoff_s")
    return RetryPolicy(retries=int(count), backoff_s=float(pause), side_effects=bool(side_effects))


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
    limits: Limits | None = None,
    isolation: str | None = None,
    keep: str | None = None,
    verify: VerifySpec | None = None,
    verify_timeout_s: float | None = None,
    retries: int = 0,
    retry_backoff_s: float = 5.0,
    retry_side_effects: bool = False,
    hooks: Hooks | None = None,
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
        limits, isolation, keep, verify, verify_timeout_s: each task's default (see :class:`Task`
            and ``async_run``).
        retries: extra attempts for a task whose failure is worth retrying
            (``RunError.retryable``), each from a fresh start (a fresh worktree when isolated);
            never for a run that was not isolated and already ran a tool (its side effects would
            happen twice) unless ``retry_side_effects=True``. ``TaskOutcome.attempts`` lists them.
        retry_backoff_s: the pause before the first retry, doubling after; a provider's
            ``retry-after`` wins when longer.
        hooks: tool hooks for every task (:class:`~opencode_wrapper.Hooks`; ``before_tool`` needs
            a warm backend).

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
    checked: list[tuple[Task, RunRequest, RetryPolicy]] = []
    for index, item in enumerate(tasks):
        task = _as_task(item, index)
        merged = base.merged_with(task.run_cfg)
        try:
            policy = _retry_policy(task, retries, retry_backoff_s, retry_side_effects)
            request = RunRequest.create(
                task.prompt,
                task.workspace,
                run_cfg=merged,
                timeout_s=task.timeout_s,
                on_event=_observer(on_event, index),
                limits=task.limits or limits,
                isolation=task.isolation or isolation,
                keep=task.keep or keep,
                base=task.base,
                name=task.name,
                verify=task.verify if task.verify is not None else verify,
                verify_timeout_s=task.verify_timeout_s or verify_timeout_s or _DEFAULT_VERIFY_TIMEOUT_S,
                hooks=hooks,
                workspace_is_local=chosen.local_workspaces,
            )
            chosen.check(request)
        except OpenCodeConfigError as exc:
            raise OpenCodeConfigError(f"task #{index}: {exc}") from exc
        checked.append((dataclasses.replace(task, run_cfg=merged), request, policy))
    try:
        # The batch's span is current only around each step of the scheduler (an async generator
        # runs in its consumer's context): runs nest under it, the caller's loop body does not.
        scheduled = batch_span(total=len(checked)).iterate(
            schedule(
                checked,
                chosen,
                concurrency=concurrency or _default_concurrency(chosen),
                fail_fast=fail_fast,
                on_progress=on_progress,
                budget=budget,
            )
        )
        # Closed here when this generator is (leaving the caller's loop), not once it is garbage
        # collected: the running tasks have ended when the caller's aclose() returns.
        async with contextlib.aclosing(cast("AsyncGenerator[TaskOutcome, None]", scheduled)):
            async for outcome in scheduled:
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
