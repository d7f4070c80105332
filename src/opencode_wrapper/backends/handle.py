"""``RunHandle``: one run in progress, whatever the backend.

A handle is an async iterator of the run's events, an async context manager that ends the run
(and every process it started) on exit, ``abort()``, and the :class:`RunResult` at the end::

    async with backend.open(request) as run:      # starts the run
        async for event in run:                   # live events (optional)
            ...
    result = run.result                           # never raises for a failed run: see result.error

The run is one task owned by the handle. Every event passes through one place (``_emit``): the
result's accumulator, the log file, ``on_event`` and the iterator. Stopping a run for any reason
(its ``timeout_s``, ``abort()``, leaving the ``async with`` block early, the caller being
cancelled) cancels that task: the backend's clean-up ends the processes or aborts the turn, and
the result says why it stopped.

Contract for backends (subclasses): implement ``_produce`` (do the run, calling ``_emit`` with
each event; failures of the run end up in the result, not as exceptions) and ``_partial`` (the
result so far: called once ``_produce`` has ended, normally or by cancellation). An exception
from ``_produce`` that is not about the run's outcome (bad set-up: no binary, unsupported version)
is raised to whoever waits for the handle.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import re
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any

from opencode_wrapper._aio import finish
from opencode_wrapper._eventlog import EventLog
from opencode_wrapper._model.event import Event, TokenUsage
from opencode_wrapper._model.fold import Fold
from opencode_wrapper._model.outcome import RunResult
from opencode_wrapper._model.run_error import Attempt, RunError, Verification
from opencode_wrapper._observers import notify
from opencode_wrapper._proc.cleanup import CleanupAction
from opencode_wrapper.backends.request import RunRequest
from opencode_wrapper.backends.verify import VerifyContext, run_verify
from opencode_wrapper.isolation import Changes, IsolatedWorkspace, IsolationError

__all__ = ["RunHandle", "RunWatcher"]

_LOG = logging.getLogger("opencode_wrapper")


class RunWatcher:
    """Looks at one run from inside its handle (per-run limits, tracing, tool hooks).

    Told of the run's start, of each event as it passes through the handle (after the result's
    accumulator took it: ``handle.usage``/``cost``/``steps`` count it; before ``on_event`` and
    the iterator see it), and of its end. It may end the run with ``handle.stop(error)``. A
    watcher that raises is logged and ignored: watching never breaks a run. This base class does
    nothing in each hook.
    """

    def started(self, handle: RunHandle) -> None:
        """The run is starting (nothing has been spawned yet)."""

    def event(self, handle: RunHandle, event: Event) -> None:
        """One event of the run."""

    def finished(self, handle: RunHandle, result: RunResult) -> None:
        """The run ended with ``result`` (its processes are gone)."""


def _call(watchers: list[RunWatcher], hook: str, *args: object) -> None:
    for watcher in watchers:
        try:
            getattr(watcher, hook)(*args)
        except Exception:
            _LOG.exception("a run watcher (%s.%s) raised; ignored", type(watcher).__name__, hook)


class RunHandle(ABC):
    """One run in progress (see the module docstring).

    Attributes:
        request: what the run was asked to do.
        backend: the name of the backend running it (``"run"``, ``"server"``, ``"pool"``...).
    """

    backend: str = "?"
    #: Where the run happens, when the backend knows more than its name (a cluster node's id).
    placement: str | None = None
    #: The run's accumulator (backends keep it current: running totals and the result come from it).
    _fold: Fold
    #: Whether this handle makes the isolated workspace itself (a cluster's handle lets its node do it).
    isolates_here: bool = True
    #: Whether the run is a turn of an open session (not a one-shot run).
    session_turn: bool = False

    def __init__(self, request: RunRequest) -> None:
        self.request = request
        self.watchers: list[RunWatcher] = []
        #: Tries the backend made itself (a cluster retrying a lost node), if it made more than one.
        self.attempts: list[Attempt] = []
        self._buffer: collections.deque[Event] = collections.deque()
        self._buffering = True
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._log: EventLog | None = None
        self._stop_reason: RunError | None = None
        self._result: RunResult | None = None
        self._exception: BaseException | None = None
        self._isolated: IsolatedWorkspace | None = None
        self._changes: Changes | None = None
        self._isolation_error: RunError | None = None
        self._verification: Verification | None = None
        self._running = False
        self._hook_tasks: set[asyncio.Task[None]] = set()
        self._reported_calls: set[str] = set()

    def __repr__(self) -> str:
        state = "new" if self._task is None else "done" if self.done else "running"
        return f"<{type(self).__name__} backend={self.backend!r} {state}>"

    # ------------------------------------------------------------------ backend contract

    @abstractmethod
    async def _produce(self) -> None:
        """Do the run; call :meth:`_emit` with each event as it arrives."""

    @abstractmethod
    def _partial(self) -> RunResult:
        """The result of what was done (after ``_produce`` ended, however it ended)."""

    def _after_tool(self, event: Event) -> None:
        call = event.tool
        if call is None or call.status not in ("completed", "error"):
            return
        key = call.call_id or call.part_id or str(len(self._reported_calls))
        if key in self._reported_calls:
            return  # a server may send a finished part again
        self._reported_calls.add(key)
        assert self.request.hooks is not None
        for hook in self.request.hooks.after(call.name or ""):
            task = asyncio.ensure_future(_run_hook("after_tool", hook, call))
            self._hook_tasks.add(task)
            task.add_done_callback(self._hook_tasks.discard)

    async def _end_hooks(self, result: RunResult) -> None:
        """Wait for the ``after_tool`` hooks still running, then run ``on_turn_end``."""
        if self._hook_tasks:
            await asyncio.gather(*list(self._hook_tasks), return_exceptions=True)
        hooks = self.request.hooks
        for _, hook in hooks.on_turn_end if hooks is not None else ():
            await _run_hook("on_turn_end", hook, result)

    @property
    def workspace(self) -> str:
        """Where the agent works: the isolated worktree or copy, if the run is isolated."""
        return str(self._isolated.path) if self._isolated is not None else self.request.workspace

    @property
    def cleanup_actions(self) -> tuple[CleanupAction, ...]:
        """What the run's process supervisor must remove if we die (the isolated workspace)."""
        return self._isolated.cleanup if self._isolated is not None else ()

    @property
    def usage(self) -> TokenUsage:
        """Tokens used so far."""
        return self._fold.usage

    @property
    def cost(self) -> float:
        """Cost so far."""
        return self._fold.cost

    @property
    def steps(self) -> int:
        """Model steps so far."""
        return self._fold.steps

    def _emit(self, event: Event) -> None:
        """Pass one event of the run on (the backend already folded it): watchers, log file,
        ``on_event``, the iterator."""
        if self.watchers:
            _call(self.watchers, "event", self, event)
        hooks = self.request.hooks
        if hooks is not None and hooks.after_tool and event.kind == "tool":
            self._after_tool(event)
        if self._log is not None:
            self._log.write(event)
        notify(self.request.on_event, event)
        if self._buffering:
            self._buffer.append(event)
            self._wakeup.set()

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> RunHandle:
        """Start the run now (entering, iterating or waiting start it too). Idempotent.

        Raises:
            OpenCodeConfigError: ``log_file`` cannot be opened (nothing was started).
        """
        if self._task is not None:
            return self
        if self.request.log_file is not None:
            self._log = EventLog(self.request.log_file, self.request.log_exclude_types)
        _call(self.watchers, "started", self)
        loop = asyncio.get_running_loop()
        self._task = loop.create_task(self._main())
        timeout = self.request.timeout_s
        if timeout is not None:
            self._timer = loop.call_later(
                timeout,
                self.stop,
                RunError(
                    kind="timeout",
                    message=f"no result within timeout_s={timeout!r}; the run was ended",
                    detail={"timeout_s": timeout},
                ),
            )
        return self

    async def _main(self) -> None:
        self._running = True
        try:
            try:
                if self._stop_reason is None:  # stopped before it started: nothing to do
                    await self._produce_isolated()
            except asyncio.CancelledError:
                if self._stop_reason is None:
                    # Not one of ours (the loop is shutting down): keep what was done, then go on.
                    self._stop_reason = RunError(kind="cancelled", message="the run's task was cancelled")
                    self._result = self._finished_result()
                    raise
                task = asyncio.current_task()
                uncancel = getattr(task, "uncancel", None)
                if uncancel is not None:  # Python >= 3.11: this cancellation was ours, and is handled
                    uncancel()
            except Exception as exc:
                self._exception = exc
                # Watchers (a trace's span) still hear of the end; the caller gets the exception.
                failed = RunResult(
                    error=RunError(kind="internal_error", message=f"{type(exc).__name__}: {exc}")
                )
                _call(self.watchers, "finished", self, failed)
            if self._exception is None:
                self._result = self._finished_result()
                if self.request.hooks is not None:
                    await finish(self._end_hooks(self._result))
        finally:
            if self._result is not None:
                _call(self.watchers, "finished", self, self._result)
            if self._timer is not None:
                self._timer.cancel()
            if self._log is not None:
                self._log.close()
            self._wakeup.set()

    async def _produce_verified(self) -> None:
        """The run, then its verification (while the workspace, isolated or not, is still there)."""
        await self._produce()
        verify = self.request.verify
        if verify is None or not self.isolates_here or self._stop_reason is not None:
            return
        so_far = self._partial()
        if not so_far.ok:
            return
        self._verification = await run_verify(
            verify,
            VerifyContext(result=so_far, workspace=self.workspace, name=self.request.name),
            timeout_s=self.request.verify_timeout_s,
        )

    async def _produce_isolated(self) -> None:
        request = self.request
        if request.isolation == "none" or not self.isolates_here:
            await self._produce_verified()
            return
        self._isolated = await IsolatedWorkspace.create(
            request.workspace,
            isolation=request.isolation,  # type: ignore[arg-type]  # checked by RunRequest.create
            base=request.base,
            keep=request.keep,  # type: ignore[arg-type]
            name=_branch_name(request.name),
        )
        try:
            await self._produce_verified()
        finally:
            try:
                self._changes = await self._isolated.close()  # always completes, then re-raises a cancel
            except IsolationError as exc:
                self._isolation_error = RunError(kind="internal_error", message=f"isolation: {exc}")

    def _finished_result(self) -> RunResult:
        result = self._partial()
        if self._stop_reason is not None:
            result.error = self._stop_reason
        if self._changes is not None:
            result.changes = self._changes
        if self._isolation_error is not None and result.error is None:
            result.error = self._isolation_error
        if self._verification is not None:
            result.verification = self._verification
            if not self._verification.passed and result.error is None:
                result.error = RunError(
                    kind="verification_failed",
                    message="the run's verify check failed: "
                    + (self._verification.output.strip()[-500:] or "no output"),
                    detail={"exit_code": self._verification.exit_code},
                )
        return result

    def stop(self, reason: RunError) -> None:
        """End the run now (or, before it started, make it end at once); ``reason`` becomes its error.

        Does nothing once the run ended or was already told to stop.
        """
        if self.done or self._stop_reason is not None:
            return
        self._stop_reason = reason
        # A task cancelled before its first step would never run _main (no result, no clean-up):
        # one that has not started yet sees the reason when it does, and does nothing.
        if self._task is not None and self._running:
            self._task.cancel()

    @property
    def done(self) -> bool:
        """Whether the run has ended (and its processes with it)."""
        return self._task is not None and self._task.done()

    @property
    def result(self) -> RunResult:
        """The run's result, once it ended (its ``error`` says whether and why it failed)."""
        if not self.done:
            raise RuntimeError("the run has not ended yet: await run.wait() or iterate it to its end")
        if self._exception is not None:
            raise self._exception
        if self._result is None:
            raise RuntimeError("the run's task was cancelled before it had a result")
        return self._result

    async def wait(self) -> RunResult:
        """Wait for the end of the run and return its result (events are no longer buffered).

        If the caller is cancelled meanwhile, the run is ended first, then the cancellation goes on.
        """
        self.start()
        self._buffering = False
        self._buffer.clear()
        assert self._task is not None
        try:
            await asyncio.shield(self._task)
        except asyncio.CancelledError:
            if not self._task.done():
                self.stop(RunError(kind="cancelled", message="the caller was cancelled; the run was ended"))
                await finish(asyncio.shield(self._task))
            raise
        return self.result

    async def abort(self) -> RunResult:
        """End the run now (``error.kind == "aborted"``) and return its result."""
        self.stop(RunError(kind="aborted", message="the run was aborted"))
        return await self.wait()

    async def aclose(self) -> None:
        """End the run if it still runs, and wait until it (and its processes) ended."""
        if self._task is None or self._task.done():
            return
        self.stop(RunError(kind="aborted", message="the run was closed before it ended"))
        await finish(asyncio.shield(self._task))

    async def __aenter__(self) -> RunHandle:
        return self.start()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    # ------------------------------------------------------------------ events

    def __aiter__(self) -> RunHandle:
        return self

    async def __anext__(self) -> Event:
        self.start()
        assert self._task is not None
        while True:
            if self._buffer:
                return self._buffer.popleft()
            if self._task.done():
                if self._exception is not None:
                    raise self._exception
                raise StopAsyncIteration
            self._wakeup.clear()
            await self._wakeup.wait()


def _branch_name(name: str | None) -> str | None:
    """A task name made fit for a branch name (letters, digits, ``._-``; at most 40 characters)."""
    if not name:
        return None
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip(".-_")[:40].rstrip(".-_")
    slug = slug.replace("..", ".").removesuffix(".lock")
    return slug or None


async def _run_hook(what: str, hook: Callable[[Any], Awaitable[Any]], arg: object) -> None:
    """A hook that raises is logged and ignored: it never breaks the run."""
    try:
        await hook(arg)
    except asyncio.CancelledError:
        raise
    except Exception:
        _LOG.exception("a %s hook raised; ignored", what)
