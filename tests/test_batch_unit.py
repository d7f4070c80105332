"""The batch scheduler with a fake executor: ordering, limits, fail-fast, budget, progress, cleanup."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from fakes.backend import ExecutorBackend
from opencode_wrapper import OpenCodeConfigError, OpenCodeProcessError, RunConfig
from opencode_wrapper._batch.schedule import schedule as _schedule
from opencode_wrapper.batch import Budget, Progress, Task, TaskOutcome, iter_run_many, run_many
from opencode_wrapper.events import RunError, RunResult, TokenUsage


def _tasks(n: int, workspace: Path) -> list[Task]:
    return [Task(prompt=f"task {i}", workspace=workspace) for i in range(n)]


def _result(tokens: int = 10, cost: float = 0.0) -> RunResult:
    return RunResult(final_text="done", token_usage=TokenUsage(total=tokens), total_cost=cost)


def _with(tasks: list[Task], executor: object) -> tuple[object, ExecutorBackend]:
    backend = ExecutorBackend(executor, tasks)  # type: ignore[arg-type]
    return backend.pairs(), backend


async def _collect(gen: object) -> list[TaskOutcome]:
    return [o async for o in gen]  # type: ignore[attr-defined]


async def test_concurrency_limit_is_respected_and_every_task_has_an_outcome(tmp_path: Path) -> None:
    running = 0
    peak = 0
    gate = asyncio.Event()

    async def executor(index: int, task: Task) -> RunResult:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        if running == 3:
            gate.set()
        await gate.wait()
        await asyncio.sleep(0)
        running -= 1
        return _result()

    outcomes = await _collect(
        _schedule(
            *_with(_tasks(10, tmp_path), executor),
            concurrency=3,
            fail_fast=False,
            on_progress=None,
            budget=None,
        )
    )
    assert peak == 3
    assert sorted(o.index for o in outcomes) == list(range(10))
    assert all(o.ok and o.started for o in outcomes)


async def test_outcomes_come_as_completed(tmp_path: Path) -> None:
    releases = [asyncio.Event() for _ in range(3)]

    async def executor(index: int, task: Task) -> RunResult:
        await releases[int(task.prompt.split()[1])].wait()
        return _result()

    gen = _schedule(
        *_with(_tasks(3, tmp_path), executor), concurrency=3, fail_fast=False, on_progress=None, budget=None
    )
    order = []
    for index in (2, 0, 1):
        releases[index].set()
        order.append((await gen.__anext__()).index)
    await gen.aclose()
    assert order == [2, 0, 1]


async def test_one_failure_keeps_the_others_and_carries_its_result(tmp_path: Path) -> None:
    async def executor(index: int, task: Task) -> RunResult:
        if task.prompt == "task 1":
            failed = RunResult(error=RunError(kind="api_error", message="boom", status_code=500))
            raise OpenCodeProcessError(1, "stderr", result=failed)
        return _result()

    outcomes = await _collect(
        _schedule(
            *_with(_tasks(3, tmp_path), executor),
            concurrency=2,
            fail_fast=False,
            on_progress=None,
            budget=None,
        )
    )
    by_index = {o.index: o for o in outcomes}
    assert [by_index[i].ok for i in range(3)] == [True, False, True]
    assert by_index[1].error is not None and by_index[1].error.status_code == 500
    assert isinstance(by_index[1].exception, OpenCodeProcessError)


async def test_fail_fast_cancels_running_and_skips_the_rest(tmp_path: Path) -> None:
    cancelled = []

    async def executor(index: int, task: Task) -> RunResult:
        if task.prompt == "task 0":
            raise OpenCodeProcessError(1, "bad")
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append(task.prompt)
            raise
        raise AssertionError("unreachable")

    outcomes = await _collect(
        _schedule(
            *_with(_tasks(5, tmp_path), executor),
            concurrency=2,
            fail_fast=True,
            on_progress=None,
            budget=None,
        )
    )
    assert len(outcomes) == 5
    assert "task 1" not in [o.task.prompt for o in outcomes if o.ok]  # cancelled, started or not
    skipped = [o for o in outcomes if not o.started]
    assert {o.index for o in skipped} == {2, 3, 4}
    assert all(o.error is not None and o.error.kind == "cancelled" for o in outcomes if o.index != 0)


async def test_budget_stops_new_tasks_and_reports_usage(tmp_path: Path) -> None:
    budget = Budget(max_tokens=25)

    async def executor(index: int, task: Task) -> RunResult:
        return _result(tokens=10, cost=0.5)

    outcomes = await _collect(
        _schedule(
            *_with(_tasks(6, tmp_path), executor),
            concurrency=1,
            fail_fast=False,
            on_progress=None,
            budget=budget,
        )
    )
    ran = [o for o in outcomes if o.started]
    assert len(ran) == 3  # 10, 20, 30 >= 25: the third crosses the limit, none after it
    assert all(o.error is not None and o.error.kind == "budget_exhausted" for o in outcomes if not o.started)
    assert budget.usage.total == 30 and budget.cost == pytest.approx(1.5)
    assert budget.exhausted


async def test_budget_can_abort_running_tasks(tmp_path: Path) -> None:
    budget = Budget(max_cost=1.0, abort_running=True)

    async def executor(index: int, task: Task) -> RunResult:
        if task.prompt == "task 0":
            return _result(cost=2.0)
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    outcomes = await _collect(
        _schedule(
            *_with(_tasks(3, tmp_path), executor),
            concurrency=3,
            fail_fast=False,
            on_progress=None,
            budget=budget,
        )
    )
    assert sorted((o.index, o.ok) for o in outcomes) == [(0, True), (1, False), (2, False)]
    # Stopped by the budget: that is their error (0.4.0 said "cancelled").
    assert all(o.error is not None and o.error.kind == "budget_exhausted" for o in outcomes if o.index)
    assert all(o.started for o in outcomes)


async def test_progress_callback_sync_and_async(tmp_path: Path) -> None:
    snapshots: list[tuple[int, int, int]] = []

    async def on_progress(progress: Progress) -> None:
        snapshots.append((progress.started, progress.finished, progress.running))

    async def executor(index: int, task: Task) -> RunResult:
        return _result(tokens=3)

    outcomes = await _collect(
        _schedule(
            *_with(_tasks(2, tmp_path), executor),
            concurrency=1,
            fail_fast=False,
            on_progress=on_progress,
            budget=None,
        )
    )
    assert len(outcomes) == 2
    assert snapshots[-1] == (2, 2, 0)
    assert (1, 0, 1) in snapshots


async def test_leaving_early_cancels_what_runs(tmp_path: Path) -> None:
    cancelled = asyncio.Event()
    started = asyncio.Event()

    async def executor(index: int, task: Task) -> RunResult:
        if task.prompt == "task 0":
            return _result()
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise
        raise AssertionError("unreachable")

    gen = _schedule(
        *_with(_tasks(2, tmp_path), executor), concurrency=2, fail_fast=False, on_progress=None, budget=None
    )
    first = await gen.__anext__()
    await started.wait()
    await gen.aclose()
    assert first.index == 0
    assert cancelled.is_set()


async def test_bad_tasks_are_refused_before_anything_runs(tmp_path: Path) -> None:
    with pytest.raises(OpenCodeConfigError, match="does not exist"):
        await run_many([("hi", tmp_path / "missing")], backend="run")
    with pytest.raises(OpenCodeConfigError, match="cli_kwargs"):
        await run_many([Task("hi", tmp_path, RunConfig(cli_kwargs={"title": "x"}))])
    with pytest.raises(OpenCodeConfigError, match="concurrency"):
        await run_many([("hi", tmp_path)], concurrency=0)
    with pytest.raises(OpenCodeConfigError, match="backend"):
        await run_many([("hi", tmp_path)], backend="threads")
    with pytest.raises(OpenCodeConfigError, match="task #0"):
        await run_many(["just a prompt"])  # type: ignore[list-item]
    with pytest.raises(OpenCodeConfigError, match="'ask' is not supported"):
        await run_many([Task("hi", tmp_path, RunConfig(permission={"bash": "ask"}))], backend="run")
    with pytest.raises(OpenCodeConfigError):
        Budget()
    with pytest.raises(OpenCodeConfigError, match="max_tokens"):
        Budget(max_tokens=0)


async def test_iter_run_many_is_lazy_about_validation_order(tmp_path: Path) -> None:
    gen = iter_run_many([("hi", tmp_path / "nope")], backend="run")
    with pytest.raises(OpenCodeConfigError):
        await gen.__anext__()


# ----------------------------------------------------------------------------- retries


def _failure(kind: str = "api_error", status: int | None = 429, tools: bool = False) -> RunResult:
    from opencode_wrapper.events import ToolCall

    calls = [ToolCall({"type": "tool", "tool": "bash", "state": {"status": "completed"}})] if tools else []
    return RunResult(error=RunError(kind=kind, message="flaky", status_code=status), tool_calls=calls)  # type: ignore[arg-type]


async def test_a_retryable_failure_is_retried_from_a_fresh_start(tmp_path: Path) -> None:
    from opencode_wrapper._batch.schedule import RetryPolicy

    tries: list[int] = []

    async def executor(index: int, task: Task) -> RunResult:
        tries.append(index)
        return _failure() if len(tries) == 1 else _result()

    backend = ExecutorBackend(executor, _tasks(1, tmp_path))
    [outcome] = await _collect(
        _schedule(
            backend.pairs(RetryPolicy(retries=2, backoff_s=0.0)),
            backend,
            concurrency=1,
            fail_fast=False,
            on_progress=None,
            budget=None,
        )
    )
    assert outcome.ok and tries == [0, 0]
    assert [(a.number, a.error.kind if a.error else None) for a in outcome.attempts] == [
        (1, "api_error"),
        (2, None),
    ]


@pytest.mark.parametrize(
    ("failure", "policy_kwargs", "expected_tries"),
    [
        (_failure(status=401), {}, 1),  # bad credentials: a retry cannot help
        (_failure(kind="permission_rejected", status=None), {}, 1),
        (_failure(tools=True), {}, 1),  # not isolated and a tool ran: its side effects would repeat
        (_failure(tools=True), {"side_effects": True}, 3),  # ... unless the caller says so
        (_failure(status=503), {}, 3),  # retryable: every retry used, then the failure stands
    ],
)
async def test_what_is_retried(
    tmp_path: Path, failure: RunResult, policy_kwargs: dict[str, bool], expected_tries: int
) -> None:
    from opencode_wrapper._batch.schedule import RetryPolicy

    tries = 0

    async def executor(index: int, task: Task) -> RunResult:
        nonlocal tries
        tries += 1
        return failure

    backend = ExecutorBackend(executor, _tasks(1, tmp_path))
    [outcome] = await _collect(
        _schedule(
            backend.pairs(RetryPolicy(retries=2, backoff_s=0.0, **policy_kwargs)),
            backend,
            concurrency=1,
            fail_fast=False,
            on_progress=None,
            budget=None,
        )
    )
    assert tries == expected_tries and len(outcome.attempts) == expected_tries
    assert not outcome.ok


def test_the_pause_doubles_and_honours_retry_after() -> None:
    from opencode_wrapper._batch.schedule import RetryPolicy

    policy = RetryPolicy(retries=3, backoff_s=2.0)
    plain = RunError(kind="api_error", message="slow down", status_code=429)
    told = RunError(
        kind="api_error",
        message="slow down",
        status_code=429,
        detail={"data": {"responseHeaders": {"Retry-After": "30"}}},
    )
    assert [policy.delay_s(n, plain) for n in (1, 2, 3)] == [2.0, 4.0, 8.0]
    assert told.retry_after_s == 30.0 and policy.delay_s(1, told) == 30.0


async def test_fail_fast_during_a_retry_pause_stops_the_retry(tmp_path: Path) -> None:
    from opencode_wrapper._batch.schedule import RetryPolicy

    tries: list[int] = []

    async def executor(index: int, task: Task) -> RunResult:
        tries.append(index)
        if index == 0:
            return _failure()  # waits 60 s before its retry ...
        return RunResult(error=RunError(kind="session_error", message="broken"))  # ... when this fails

    backend = ExecutorBackend(executor, _tasks(2, tmp_path))
    outcomes = await asyncio.wait_for(
        _collect(
            _schedule(
                backend.pairs(RetryPolicy(retries=3, backoff_s=60.0)),
                backend,
                concurrency=2,
                fail_fast=True,
                on_progress=None,
                budget=None,
            )
        ),
        30,
    )
    assert sorted(tries) == [0, 1]  # no retry of task 0 after the batch was told to stop
    assert all(not o.ok for o in outcomes)


async def test_an_on_progress_that_raises_never_stalls_the_batch(tmp_path: Path) -> None:
    def on_progress(progress: Progress) -> None:
        raise RuntimeError("a broken view")

    async def executor(index: int, task: Task) -> RunResult:
        return _result()

    outcomes = await asyncio.wait_for(
        _collect(
            _schedule(
                *_with(_tasks(3, tmp_path), executor),
                concurrency=1,
                fail_fast=False,
                on_progress=on_progress,
                budget=None,
            )
        ),
        30,
    )
    assert sorted(o.index for o in outcomes) == [0, 1, 2] and all(o.ok for o in outcomes)
