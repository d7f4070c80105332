"""Plain iterators fed by a coroutine on a client's loop: :class:`EventStream`, :class:`OutcomeStream`.

A stream's coroutine (its *pump*) runs on the loop and hands each item to the iterating thread
through its :class:`~opencode_wrapper._sync.loop.Call`; ``next()`` waits for the next one. The
pump owns the run: cancelling it (``close()``, Ctrl-C while waiting, garbage collection) leaves
the run's ``async with`` block, which ends the run and its processes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from types import TracebackType
from typing import Any, Generic, Protocol, TypeVar

from opencode_wrapper._sync.callbacks import EventCallback
from opencode_wrapper._sync.loop import Call
from opencode_wrapper.backends.handle import RunHandle
from opencode_wrapper.batch import TaskOutcome
from opencode_wrapper.events import Event, RunResult
from opencode_wrapper.session import TurnStream

__all__ = ["EventStream", "Host", "OutcomeStream", "Relay", "Source"]

_T = TypeVar("_T")


class Host(Protocol):
    """What a stream needs of its client: running coroutines on its loop."""

    @property
    def closed(self) -> bool: ...

    def _submit(self, body: Callable[[Call[_T]], Awaitable[_T]]) -> Call[_T]: ...


class Relay:
    """Posts ``on_event`` calls to the call that pumps a stream (known only once the pump starts)."""

    def __init__(self, on_event: EventCallback | None) -> None:
        self.on_event = on_event
        self.call: Call[Any] | None = None

    def callback(self) -> Callable[[Event], None] | None:
        """The ``on_event`` for the async API (``None`` without one)."""
        on_event = self.on_event
        if on_event is None:
            return None

        def post(event: Event) -> None:
            if self.call is not None:
                self.call.post(on_event, event)

        return post


class Source:
    """A run that has not started: its handle, and what to enter around the iteration (its exit
    ends the run: the handle itself, or a session's ``TurnStream``)."""

    def __init__(self, handle: RunHandle, context: RunHandle | TurnStream) -> None:
        self.handle = handle
        self.context = context

    async def pump(self, call: Call[RunResult], relay: Relay) -> RunResult:
        relay.call = call
        async with self.context:
            async for event in self.handle:
                call.emit(event)
        return self.handle.result

    async def discard(self) -> None:
        await self.context.aclose()


class _Stream(Generic[_T]):
    """A plain iterator fed by a coroutine on a client's loop (see the module docstring)."""

    def __init__(self, host: Host) -> None:
        self._host = host
        self._call: Call[Any] | None = None
        self._finished = False

    def _start(self) -> Call[Any]:
        raise NotImplementedError

    def _ended(self, call: Call[Any]) -> None:
        """The pump ended: raise what it raised."""
        call.outcome()

    def __iter__(self) -> Iterator[_T]:
        return self

    def __next__(self) -> _T:
        if self._finished:
            raise StopIteration
        if self._call is None:
            self._call = self._start()
        try:
            more, item = self._call.next_item()
            if more:
                return item  # type: ignore[no-any-return]
            self._finished = True
            self._ended(self._call)
        except BaseException:
            self._finished = True
            raise
        raise StopIteration

    def close(self) -> None:
        """End the run now if it still runs, and wait until it (and its processes) ended."""
        self._finished = True
        if self._call is not None:
            self._call.cancel_and_wait()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __del__(self) -> None:
        call = getattr(self, "_call", None)
        if call is not None and not call.done:
            call.cancel()  # no waiting: a collection may happen in any thread, the loop's too


class EventStream(_Stream[Event]):
    """The events of one run or turn as a plain iterator, then its :attr:`result`.

    ``for event in stream: ...``; after the last event the iteration raises what the blocking
    ``run``/``send`` would raise. ``with ... as stream:`` ends the run at the end of the block if
    it still runs; so do ``close()`` and garbage collection. Iterate it from one thread.
    """

    def __init__(
        self, host: Host, prepare: Callable[[Call[Source]], Awaitable[Source]], relay: Relay
    ) -> None:
        super().__init__(host)
        self._relay = relay
        self._result: RunResult | None = None
        # Checked now, as the async API does; nothing starts before the iteration.
        self._source: Source | None = host._submit(prepare).result()

    def _start(self) -> Call[RunResult]:
        source, relay = self._source, self._relay
        assert source is not None
        return self._host._submit(lambda call: source.pump(call, relay))

    def _ended(self, call: Call[Any]) -> None:
        result: RunResult = call.outcome()
        self._result = result
        if result.error is not None and result.error.raised:
            result.raise_for_error()

    @property
    def result(self) -> RunResult:
        """The run's result (for a failed run: its partial result), once the iteration ended."""
        if self._result is None:
            raise RuntimeError("the run has not ended yet: iterate the stream to its end")
        return self._result

    def __enter__(self) -> EventStream:
        return self

    def close(self) -> None:
        """End the run now if it still runs (a session's turn is aborted) and wait for its end."""
        started = self._call is not None
        super().close()
        source, self._source = self._source, None
        if not started and source is not None and not self._host.closed:
            self._host._submit(lambda call: source.discard()).result(cancel_on_interrupt=False)


class OutcomeStream(_Stream[TaskOutcome]):
    """``iter_run_many``'s outcomes as a plain iterator, each as its task completes.

    The tasks start with the iteration. Closing it early (``close()``, leaving ``with``, garbage
    collection) stops the running tasks and ends their processes.
    """

    def __init__(self, host: Host, body: Callable[[Call[None]], Awaitable[None]]) -> None:
        super().__init__(host)
        self._body = body

    def _start(self) -> Call[None]:
        return self._host._submit(self._body)

    def __enter__(self) -> OutcomeStream:
        return self
