"""A backend wrapper that tells the batch view when a task's next attempt (a retry) starts.

``run_many`` retries a task by opening its request again on the backend; nothing else reports
it while the batch runs. :class:`AttemptTracker` sits between ``run_many`` and the real backend
and counts the opens of each task's request.

It learns which request is which task from ``check``: ``run_many`` checks every task's request,
in input order, before the first one starts. Each match is confirmed against the task's prompt,
so a change of that order makes the view lose the attempt numbers, never mislabel them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from opencode_wrapper.backends.base import Backend
from opencode_wrapper.backends.handle import RunHandle
from opencode_wrapper.backends.request import RunRequest
from opencode_wrapper.batch import Task
from opencode_wrapper.events import RunError

__all__ = ["AttemptCallback", "AttemptTracker"]

#: ``on_attempt(task_index, attempt_number, previous_error)``, for attempts 2 and later.
AttemptCallback = Callable[[int, int, "RunError | None"], None]


class AttemptTracker(Backend):
    """Runs everything on ``inner``; calls ``on_attempt`` when a task's request is opened again.

    ``tasks`` are the batch's tasks, in the order given to ``run_many``. Closing the tracker
    closes ``inner``.
    """

    name = "tracked"

    def __init__(self, inner: Backend, tasks: Sequence[Task], on_attempt: AttemptCallback) -> None:
        self.inner = inner
        self.local_workspaces = inner.local_workspaces
        self._tasks = list(tasks)
        self._on_attempt = on_attempt
        self._index: dict[int, int] = {}
        # The requests themselves are held so that their ids stay theirs for the batch's life.
        self._requests: list[RunRequest] = []
        self._held: set[int] = set()
        self._last: dict[int, RunHandle] = {}
        self._opens: dict[int, int] = {}

    @property
    def capacity(self) -> int | None:
        return self.inner.capacity

    def check(self, request: RunRequest) -> None:
        self.inner.check(request)
        key, position = id(request), len(self._requests)
        if key in self._held:
            return
        self._held.add(key)
        self._requests.append(request)
        if position < len(self._tasks) and self._tasks[position].prompt == request.prompt:
            self._index[key] = position

    def _handle(self, request: RunRequest) -> RunHandle:  # pragma: no cover - open() is overridden
        return self.inner.open(request)

    def open(self, request: RunRequest) -> RunHandle:
        handle = self.inner.open(request)
        position = self._index.get(id(request))
        if position is None:
            return handle
        previous = self._last.get(position)
        self._last[position] = handle
        number = self._opens[position] = self._opens.get(position, 0) + 1
        if previous is not None:
            self._on_attempt(position, number, _error_of(previous))
        return handle

    async def aclose(self) -> None:
        await self.inner.aclose()


def _error_of(handle: RunHandle) -> RunError | None:
    if not handle.done:
        return None
    try:
        return handle.result.error
    except Exception:  # a set-up error: the handle has no result
        return None
