"""A backend whose runs are an async function of (index, task): for testing the batch scheduler."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from opencode_wrapper._batch.schedule import RetryPolicy
from opencode_wrapper._model.fold import Fold
from opencode_wrapper.backends.base import Backend
from opencode_wrapper.backends.handle import RunHandle
from opencode_wrapper.backends.request import RunRequest
from opencode_wrapper.batch import Task
from opencode_wrapper.errors import OpenCodeRunError
from opencode_wrapper.results import RunError, RunResult

Executor = Callable[[int, Task], Awaitable[RunResult]]


class ExecutorBackend(Backend):
    """Runs each request with ``executor``; a raised ``OpenCodeRunError`` becomes its result."""

    name = "executor"

    def __init__(self, executor: Executor, tasks: Sequence[Task]) -> None:
        self.executor = executor
        self.tasks = tasks
        self.requests: dict[int, int] = {}
        self.cleaned: list[int] = []

    def check(self, request: RunRequest) -> None:
        return None

    def _handle(self, request: RunRequest) -> RunHandle:
        return _ExecutorRun(self, request)

    def pairs(self, policy: RetryPolicy | None = None) -> list[tuple[Task, RunRequest, RetryPolicy]]:
        """The (task, request, retry policy) triples the scheduler takes."""
        out = []
        for index, task in enumerate(self.tasks):
            request = RunRequest.create(task.prompt, task.workspace)
            self.requests[id(request)] = index
            out.append((task, request, policy or RetryPolicy()))
        return out


class _ExecutorRun(RunHandle):
    backend = "executor"

    def __init__(self, owner: ExecutorBackend, request: RunRequest) -> None:
        super().__init__(request)
        self._owner = owner
        self._fold = Fold()
        self._done: RunResult | None = None

    async def _produce(self) -> None:
        index = self._owner.requests[id(self.request)]
        try:
            self._done = await self._owner.executor(index, self._owner.tasks[index])
        except OpenCodeRunError as exc:
            self._done = exc.result
        finally:
            self._owner.cleaned.append(index)

    def _partial(self) -> RunResult:
        if self._done is not None:
            return self._done
        return RunResult(error=RunError(kind="aborted", message="ended before the executor returned"))
