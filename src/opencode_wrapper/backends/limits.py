"""The watcher that enforces a run's :class:`~opencode_wrapper.Limits` (the same on every backend)."""

from __future__ import annotations

import asyncio

from opencode_wrapper._model.event import Event
from opencode_wrapper._model.outcome import RunResult
from opencode_wrapper._model.run_error import RunError
from opencode_wrapper.backends.handle import RunHandle, RunWatcher
from opencode_wrapper.limits import Limits

__all__ = ["LimitWatcher"]


class LimitWatcher(RunWatcher):
    """Stops the run (``handle.stop``) the moment it crosses one of ``limits``.

    Silence (``idle_timeout_s``) is counted from the run's first event: opencode's start-up, a
    wait for a warm server or a pool slot is not the run being quiet (``timeout_s`` bounds that).
    """

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self._steps_started = 0
        self._idle: asyncio.TimerHandle | None = None

    def finished(self, handle: RunHandle, result: RunResult) -> None:
        if self._idle is not None:
            self._idle.cancel()

    def event(self, handle: RunHandle, event: Event) -> None:
        self._arm(handle)
        limits = self.limits
        if event.kind == "step_start":
            self._steps_started += 1
            if limits.max_steps is not None and self._steps_started > limits.max_steps:
                self._stop(handle, "max_steps", self._steps_started, limits.max_steps, "model steps started")
                return
        if limits.max_tokens is not None:
            tokens = handle.usage.total
            if tokens > limits.max_tokens:
                self._stop(handle, "max_tokens", tokens, limits.max_tokens, "tokens used")
                return
        if limits.max_cost is not None:
            cost = handle.cost
            if cost > limits.max_cost:
                self._stop(handle, "max_cost", cost, limits.max_cost, "cost")

    def _stop(self, handle: RunHandle, limit: str, figure: float, allowed: float, what: str) -> None:
        handle.stop(
            RunError(
                kind="limit_exceeded",
                message=f"{limit}={allowed!r} exceeded: {figure!r} {what}; the run was ended",
                detail={"limit": limit, "value": figure, "allowed": allowed},
            )
        )

    def _arm(self, handle: RunHandle) -> None:
        timeout = self.limits.idle_timeout_s
        if timeout is None:
            return
        if self._idle is not None:
            self._idle.cancel()
        self._idle = asyncio.get_running_loop().call_later(
            timeout,
            handle.stop,
            RunError(
                kind="stalled",
                message=f"no event for idle_timeout_s={timeout!r}; the run was ended",
                detail={"limit": "idle_timeout_s", "allowed": timeout},
            ),
        )
