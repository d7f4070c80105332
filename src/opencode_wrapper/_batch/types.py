"""The values of a batch: ``Task``, ``TaskOutcome``, ``Progress``, ``Budget``."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from opencode_wrapper._model.event import Event, TokenUsage
from opencode_wrapper._model.outcome import RunResult
from opencode_wrapper._model.run_error import Attempt, RunError
from opencode_wrapper.backends.verify import VerifySpec
from opencode_wrapper.config import RunConfig
from opencode_wrapper.errors import (
    OpenCodeCancelledError,
    OpenCodeConfigError,
    OpenCodeRunError,
    OpenCodeServerError,
    OpenCodeTimeoutError,
)
from opencode_wrapper.limits import Limits

__all__ = [
    "Budget",
    "Progress",
    "ProgressCallback",
    "Task",
    "TaskEventCallback",
    "TaskLike",
    "TaskOutcome",
    "error_for_exception",
]


@dataclass(frozen=True)
class Task:
    """One agent run: a prompt in a workspace, with its own config, timeout and options.

    ``run_cfg`` fields that are server-global (permission, mcp, instructions, provider config)
    decide which warm server the task runs on; tasks with equal ones share a server. Every other
    field left ``None`` takes the batch's value (the ``run_many`` argument of the same name).

    Attributes:
        prompt: the message.
        workspace: where the agent works.
        run_cfg: merged over the batch's ``run_cfg``.
        timeout_s: end the task's run after this long.
        name: a readable name (results, the live view, isolated branch names, ``--resume``).
        limits: per-run :class:`~opencode_wrapper.Limits`.
        isolation: ``"none"``, ``"worktree"`` or ``"copy"`` (see ``async_run``); ``keep``, ``base``.
        verify: a check after the agent (a shell command, or a callable); ``verify_timeout_s``.
        retries: extra attempts for failures worth retrying (``RunError.retryable``), each from a
            fresh start; ``retry_backoff_s`` before the first, doubling after.
    """

    prompt: str
    workspace: str | os.PathLike[str]
    run_cfg: RunConfig | None = None
    timeout_s: float | None = None
    name: str | None = None
    limits: Limits | None = None
    isolation: str | None = None
    keep: str | None = None
    base: str | None = None
    verify: VerifySpec | None = None
    verify_timeout_s: float | None = None
    retries: int | None = None
    retry_backoff_s: float | None = None


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
    def verified(self) -> bool | None:
        """Whether the task's ``verify`` check passed (``None``: no check ran)."""
        verification = self.result.verification if self.result is not None else None
        return None if verification is None else verification.passed

    @property
    def verify_output(self) -> str | None:
        """The check's output (or its callable's reason)."""
        verification = self.result.verification if self.result is not None else None
        return None if verification is None else verification.output

    @property
    def verify_exit_code(self) -> int | None:
        """The check command's exit status."""
        verification = self.result.verification if self.result is not None else None
        return None if verification is None else verification.exit_code

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

# Shown (and pickled) under the public module that exports them: outcomes cross worker processes.
for _exported in (Budget, Progress, Task, TaskOutcome):
    _exported.__module__ = "opencode_wrapper.batch"
