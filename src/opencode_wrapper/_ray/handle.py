"""``RayRun``: one run on a cluster, as a :class:`RunHandle` on the driver.

The request goes to the live node agent with the most free sessions; its events stream back
(a Ray streaming generator) and pass through this handle's ``_emit`` on the driver, so
``on_event``, ``log_file``, watchers, limits and the live view see them as on one host. A try
whose node or actor was lost is retried on another node (up to ``max_attempts`` tries in all); a
run that failed on its own (the agent's error, a timeout, a refused permission) never is.

Stopping the handle (its timeout, ``abort()``, ``fail_fast``, a budget, leaving a batch early)
cancels ``_produce``; that calls ``ray.cancel`` on the remote generator (cancelling the local
``await`` alone would leave the remote run going) and waits until the remote run has ended.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import ray
import ray.exceptions

from opencode_wrapper._aio import finish
from opencode_wrapper._model.fold import Fold
from opencode_wrapper._model.outcome import RunResult
from opencode_wrapper._model.run_error import Attempt, RunError
from opencode_wrapper._ray.router import AgentSlot, Router
from opencode_wrapper.backends.handle import RunHandle
from opencode_wrapper.backends.request import RunRequest

__all__ = ["LOST_ERRORS", "RayRun"]

_LOG = logging.getLogger("opencode_wrapper")

#: Ray's ways of saying that a node agent, its worker or its node is gone (or unreachable).
#: Ray's memory monitor killing the agent's worker counts as node loss too.
LOST_ERRORS: tuple[type[BaseException], ...] = (
    ray.exceptions.RayActorError,  # ActorDiedError, ActorUnavailableError
    ray.exceptions.WorkerCrashedError,
    ray.exceptions.NodeDiedError,
    ray.exceptions.ObjectLostError,  # OwnerDiedError, ...
    ray.exceptions.LocalRayletDiedError,
    ray.exceptions.OutOfMemoryError,
)

#: How long a stopped run may take to end on its node before its agent is killed instead.
STOP_WAIT_S = 60.0


class _Lost(Exception):
    """A try ended because its node agent was lost (``error`` says how)."""

    def __init__(self, error: RunError) -> None:
        super().__init__(error.message)
        self.error = error


class RayRun(RunHandle):
    """One run on a cluster (see the module docstring).

    Args:
        request: the run.
        router: picks the node agent; :func:`start` returns it once the engine is up.
        start: starts the engine if needed (shared by every handle).
        lose: called with an agent that was lost (the engine kills it and forgets it).
        max_attempts: tries in all, when nodes are lost.
    """

    backend = "ray"

    def __init__(
        self,
        request: RunRequest,
        *,
        start: Callable[[], Awaitable[Router]],
        lose: Callable[[AgentSlot, BaseException | None], Awaitable[None]],
        max_attempts: int,
    ) -> None:
        super().__init__(request)
        self._fold = Fold()
        self._start_engine = start
        self._lose = lose
        self._max_attempts = max_attempts
        self._final: RunResult | None = None
        self._failure: RunError | None = None
        # What the node gets: callbacks and the log stay here; the timeout is this handle's.
        self._remote_request = dataclasses.replace(
            request, on_event=None, log_file=None, timeout_s=None, on_permission=None, on_question=None
        )

    async def _produce(self) -> None:
        router = await self._start_engine()
        for number in range(1, self._max_attempts + 1):
            slot = await router.acquire()
            if slot is None:
                self._failure = RunError(
                    kind="server_failure",
                    message="no node agent is alive: every node of the engine was lost",
                    retryable=True,
                )
                self.attempts.append(Attempt(number, self._failure, 0.0, None))
                return
            self.placement = slot.node_id
            self._fold = Fold()
            self._final = None
            self._failure = None
            started = time.monotonic()
            try:
                await self._try_on(slot)
            except _Lost as lost:
                self.attempts.append(Attempt(number, lost.error, time.monotonic() - started, slot.node_id))
                self._failure = lost.error
                continue
            except asyncio.CancelledError:
                self.attempts.append(
                    Attempt(number, self._stop_reason, time.monotonic() - started, slot.node_id)
                )
                raise
            finally:
                await finish(router.release(slot))
            error = self._final.error if self._final is not None else self._failure
            self.attempts.append(Attempt(number, error, time.monotonic() - started, slot.node_id))
            return
        assert self._failure is not None
        self._failure = dataclasses.replace(
            self._failure, message=f"{self._failure.message} (tried {self._max_attempts} times)"
        )

    async def _try_on(self, slot: AgentSlot) -> None:
        """One try on ``slot``'s agent; raises :class:`_Lost` if the agent or its node is lost."""
        stream = slot.actor.run.options(num_returns="streaming").remote(self._remote_request)
        try:
            async for ref in stream:
                self._take(await ref)
        except asyncio.CancelledError:
            ray.cancel(stream)
            await finish(self._wait_stopped(slot, stream))
            raise
        except LOST_ERRORS as exc:
            await finish(self._lose(slot, exc))
            raise _Lost(
                RunError(
                    kind="server_failure",
                    message=f"node {slot.node_id} was lost during the run ({type(exc).__name__}: {exc})"[
                        :2000
                    ],
                    detail={"node_id": slot.node_id, "ray_error": type(exc).__name__},
                    retryable=True,
                )
            ) from exc
        except ray.exceptions.RayTaskError as exc:
            # The agent itself raised outside its protocol: a failure of this run, not a lost node.
            self._failure = RunError(
                kind="internal_error",
                message=f"the node agent on {slot.node_id} failed: {exc}"[:4000],
                detail={"node_id": slot.node_id},
            )

    def _take(self, item: tuple[Any, ...]) -> None:
        kind = item[0]
        if kind == "events":
            for event in item[1]:
                self._fold.add(event)
                self._emit(event)
        elif kind == "result":
            result: RunResult = item[1]
            if item[2]:
                result.events = list(self._fold.events)
            self._final = result
        elif kind == "raise":
            raise item[1]
        else:
            raise AssertionError(f"unknown item from the node agent: {kind!r}")

    async def _wait_stopped(self, slot: AgentSlot, stream: Any) -> None:
        """After ``ray.cancel``: wait until the remote run has ended (its next item says so)."""

        async def drain() -> bool:
            """``False`` if the agent was lost meanwhile."""
            try:
                async for ref in stream:
                    await ref
            except ray.exceptions.TaskCancelledError:
                return True  # the remote generator ended by the cancellation: the run has ended
            except LOST_ERRORS:
                return False
            except ray.exceptions.RayError:
                return True  # it ended with an error of its own
            return True

        try:
            ended = await asyncio.wait_for(drain(), STOP_WAIT_S)
        except asyncio.TimeoutError:
            _LOG.warning(
                "a run on node %s did not end within %s s of ray.cancel; killing its node agent",
                slot.node_id,
                STOP_WAIT_S,
            )
            ended = False
        if not ended:
            await self._lose(slot, None)

    def _partial(self) -> RunResult:
        if self._final is not None:
            return self._final
        result = RunResult.from_fold(self._fold, exit_code=0)
        if self._failure is not None:
            result.error = self._failure
        elif result.error is None:
            result.error = RunError(kind="aborted", message="the run ended before it had a result")
        return result
