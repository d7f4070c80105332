"""A private asyncio event loop in a daemon thread, and the blocking calls made into it.

:class:`LoopThread` is what a ``sync.Client`` owns: its loop starts in a thread of its own on the
first call, so a loop already running in the caller's thread (Jupyter, a sync callback inside
async code) never matters, and nothing is patched. :meth:`LoopThread.submit` runs a coroutine
there and returns a :class:`Call`; the calling thread then waits on the call's *inbox*, a queue
that carries, in order, what the coroutine posts for it (user callbacks to run in the caller's
thread, items of a stream) and finally the end. So the loop never runs user code that blocks,
and the caller's thread runs its own callbacks.

Ctrl-C: a ``KeyboardInterrupt`` in the waiting thread cancels the coroutine in the loop thread,
waits until the cancellation has ended everything it started (processes included), then goes on.
A second Ctrl-C during that wait stops waiting (the clean-up goes on in the loop thread, and
:meth:`LoopThread.close`, also run at exit, waits for it).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import itertools
import logging
import queue
import threading
from collections.abc import Awaitable, Callable
from typing import Any, Generic, Literal, ParamSpec, TypeVar

from opencode_wrapper.errors import OpenCodeCancelledError

__all__ = ["Call", "DaemonExecutor", "LoopThread", "call_logged"]

_T = TypeVar("_T")
_P = ParamSpec("_P")
_LOG = logging.getLogger("opencode_wrapper")

#: How often a waiting main thread wakes up to notice a pending Ctrl-C that came without a real
#: signal (``_thread.interrupt_main()``, IPython's interrupt on some platforms); a real SIGINT
#: interrupts the wait at once.
_POLL_S = 0.1

_Kind = Literal["call", "item", "end"]


def call_logged(callback: Callable[..., object], *args: object) -> None:
    """Run a user callback; an ``Exception`` in it is logged and ignored, as the async API does
    with ``on_event`` (a view must never fail a run). ``KeyboardInterrupt`` goes through."""
    try:
        callback(*args)
    except Exception:
        _LOG.exception("a callback (%r) raised; ignored", callback)


def _wait(flag: threading.Event) -> None:
    """Wait until ``flag`` is set; interruptible by Ctrl-C in the main thread."""
    if threading.current_thread() is threading.main_thread():
        while not flag.wait(_POLL_S):
            pass
    else:
        flag.wait()


class DaemonExecutor(concurrent.futures.ThreadPoolExecutor):
    """Runs each job in a new daemon thread: the default executor of the private loop.

    ``asyncio.to_thread`` uses it: the core ends processes through it (a sweep of orphans), also
    while the interpreter exits, when a plain ``ThreadPoolExecutor`` refuses new jobs; and a
    plain permission callback waiting for a human never holds up the interpreter's exit. (A
    subclass only because asyncio accepts nothing else as a default executor.)
    """

    def __init__(self, name: str) -> None:
        super().__init__(max_workers=1, thread_name_prefix=name)
        self._name = name
        self._count = itertools.count(1)

    def submit(
        self, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs
    ) -> concurrent.futures.Future[_T]:
        future: concurrent.futures.Future[_T] = concurrent.futures.Future()

        def work() -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                value = fn(*args, **kwargs)
            except BaseException as exc:  # handed to whoever awaits the job
                future.set_exception(exc)
            else:
                future.set_result(value)

        name = f"{self._name}-worker-{next(self._count)}"
        threading.Thread(target=work, name=name, daemon=True).start()
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Nothing to end: each job owns its (daemon) thread, and an abandoned one dies at exit."""


class Call(Generic[_T]):
    """One coroutine running on a :class:`LoopThread`, seen from the thread that waits for it.

    The loop side uses :meth:`post` and :meth:`emit`; the waiting side uses :meth:`result`
    (plain calls) or :meth:`next_item` (streams). One thread waits on a call at a time.
    """

    def __init__(self, owner: LoopThread) -> None:
        self._owner = owner
        self._inbox: queue.SimpleQueue[tuple[_Kind, Any, tuple[object, ...]]] = queue.SimpleQueue()
        self._ended = threading.Event()
        self._task: asyncio.Future[_T] | None = None
        self._value: _T | None = None
        self._error: BaseException | None = None
        self._cancelled = False

    # ------------------------------------------------------------------ loop side

    def post(self, callback: Callable[..., object], *args: object) -> None:
        """Have the waiting thread run ``callback(*args)`` (in order with the items; thread-safe)."""
        self._inbox.put(("call", callback, args))

    def emit(self, item: object) -> None:
        """Hand one item of a stream to the waiting thread (thread-safe)."""
        self._inbox.put(("item", item, ()))

    def _begin(self, make: Callable[[Call[_T]], Awaitable[_T]]) -> None:
        try:
            self._task = asyncio.ensure_future(make(self))
        except BaseException as exc:
            self._error = exc
            self._end()
            return
        self._owner._calls.add(self)
        self._task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Future[_T]) -> None:
        self._owner._calls.discard(self)
        if task.cancelled():
            self._cancelled = True
        elif task.exception() is not None:
            self._error = task.exception()
        else:
            self._value = task.result()
        self._end()

    def _end(self) -> None:
        self._ended.set()
        self._inbox.put(("end", None, ()))

    def _cancel_in_loop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    # ------------------------------------------------------------------ waiting side

    @property
    def done(self) -> bool:
        """Whether the coroutine has ended (whatever ended it)."""
        return self._ended.is_set()

    def result(self, *, cancel_on_interrupt: bool = True) -> _T:
        """Run what the coroutine posts, until it ends; return its value or raise its exception.

        A ``KeyboardInterrupt`` (or any ``BaseException`` from a posted callback) cancels the
        coroutine and waits for its end before going on. With ``cancel_on_interrupt=False`` (a
        clean-up that must finish), a first Ctrl-C only stops the waiting after the end, a second
        one at once.
        """
        if not cancel_on_interrupt:
            self.wait_out("a clean-up")
            return self.outcome()
        while True:
            kind, payload, args = self._take()
            if kind == "call":
                self._run(payload, args)
            elif kind == "end":
                return self.outcome()

    def next_item(self) -> tuple[bool, Any]:
        """``(True, item)`` for the next item, or ``(False, None)`` once the coroutine ended (then
        :meth:`outcome` says how). Runs posted callbacks on the way; Ctrl-C as for :meth:`result`."""
        while True:
            kind, payload, args = self._take()
            if kind == "call":
                self._run(payload, args)
            elif kind == "item":
                return True, payload
            else:
                return False, None

    def outcome(self) -> _T:
        """The ended coroutine's value, or its exception raised."""
        if self._error is not None:
            raise self._error
        if self._cancelled:
            raise OpenCodeCancelledError(
                f"{self._owner.name} was closed while this call ran; everything it started was ended"
            )
        return self._value  # type: ignore[return-value]  # set, since it ended without an error

    def cancel(self) -> None:
        """Ask the loop to cancel the coroutine (returns at once; thread-safe; idempotent)."""
        if not self._ended.is_set():
            self._owner._call_soon(self._cancel_in_loop)

    def cancel_and_wait(self) -> None:
        """Cancel the coroutine and wait until it ended (a second Ctrl-C stops the wait)."""
        self.cancel()
        if self._owner.in_loop_thread():
            return  # the loop cannot wait for itself; the cancellation still happens
        try:
            _wait(self._ended)
        except KeyboardInterrupt:
            _LOG.warning("interrupted again: not waiting for the cancelled run to end (it is still ending)")
            raise

    def wait_out(self, what: str) -> None:
        """Wait for the end through a first Ctrl-C (re-raised after the end); a second one stops it."""
        interrupted = False
        while True:
            try:
                _wait(self._ended)
                break
            except KeyboardInterrupt:
                if interrupted:
                    _LOG.warning("interrupted again: not waiting for %s to finish", what)
                    raise
                interrupted = True
                _LOG.warning("waiting for %s to finish (press Ctrl-C again to stop waiting)", what)
        if interrupted:
            raise KeyboardInterrupt

    def _take(self) -> tuple[_Kind, Any, tuple[object, ...]]:
        try:
            if threading.current_thread() is threading.main_thread():
                while True:
                    with contextlib.suppress(queue.Empty):
                        return self._inbox.get(timeout=_POLL_S)
            return self._inbox.get()
        except BaseException:
            self.cancel_and_wait()
            raise

    def _run(self, callback: Callable[..., object], args: tuple[object, ...]) -> None:
        try:
            call_logged(callback, *args)
        except BaseException:  # Ctrl-C (or SystemExit) inside a callback: the run ends first
            self.cancel_and_wait()
            raise


class LoopThread:
    """An event loop running in a daemon thread of its own, started by the first :meth:`submit`.

    :meth:`close` cancels every call still running and waits for their end, then awaits
    ``on_close`` (which closes what the owner keeps open), cancels anything left, and stops the
    thread. A closed ``LoopThread`` refuses new calls.
    """

    def __init__(self, name: str, on_close: Callable[[], Awaitable[None]]) -> None:
        self.name = name
        self._on_close = on_close
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopped = threading.Event()
        self._closed = False
        self._calls: set[Call[Any]] = set()  # touched only in the loop thread
        self._shutdown_task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        state = "closed" if self._closed else "running" if self._thread is not None else "not started"
        return f"<LoopThread {self.name!r} {state}>"

    @property
    def thread(self) -> threading.Thread | None:
        """The loop's thread (``None`` until the first call)."""
        return self._thread

    @property
    def closed(self) -> bool:
        return self._closed

    def in_loop_thread(self) -> bool:
        return self._thread is not None and threading.current_thread() is self._thread

    def submit(self, make: Callable[[Call[_T]], Awaitable[_T]]) -> Call[_T]:
        """Run ``make(call)`` on the loop (starting it if needed) and return the :class:`Call`.

        Raises:
            RuntimeError: the loop is closed, or this is its own thread (waiting there would
                block the loop forever).
        """
        if self.in_loop_thread():
            raise RuntimeError(
                f"the sync API of {self.name} was called from its own event loop thread (inside an "
                "async callback?): waiting there would block that loop forever; await the async API instead"
            )
        call: Call[_T] = Call(self)
        with self._lock:
            if self._closed:
                raise RuntimeError(f"{self.name} is closed")
            if self._loop is None:
                self._start()
            assert self._loop is not None
            # Under the lock: close() schedules its shutdown after this, so the call is seen by it.
            self._loop.call_soon_threadsafe(call._begin, make)
        return call

    def _start(self) -> None:
        loop = asyncio.new_event_loop()
        loop.set_default_executor(DaemonExecutor(self.name))
        self._loop = loop
        self._thread = threading.Thread(target=self._main, args=(loop,), name=self.name, daemon=True)
        self._thread.start()

    def _main(self, loop: asyncio.AbstractEventLoop) -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
        finally:
            loop.close()
            self._stopped.set()

    def _call_soon(self, callback: Callable[[], object]) -> None:
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nothing left to cancel
                loop.call_soon_threadsafe(callback)

    def close(self) -> None:
        """Cancel running calls, await ``on_close``, stop the loop and its thread (idempotent).

        Waits for all of it, through a first Ctrl-C (re-raised afterwards); from the loop's own
        thread (a garbage collection there) it only starts the shutdown.
        """
        with self._lock:
            first = not self._closed
            self._closed = True
            loop = self._loop
            if first and loop is not None:
                loop.call_soon_threadsafe(self._begin_shutdown, loop)
        if loop is None or self.in_loop_thread():
            return
        interrupted = False
        while True:
            try:
                _wait(self._stopped)
                break
            except KeyboardInterrupt:
                if interrupted:
                    _LOG.warning("interrupted again: not waiting for %s to close", self.name)
                    raise
                interrupted = True
                _LOG.warning("closing %s (press Ctrl-C again to stop waiting)", self.name)
        assert self._thread is not None
        self._thread.join()
        if interrupted:
            raise KeyboardInterrupt

    def _begin_shutdown(self, loop: asyncio.AbstractEventLoop) -> None:
        self._shutdown_task = loop.create_task(self._shutdown(loop))

    async def _shutdown(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            tasks = [call._task for call in self._calls if call._task is not None]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            try:
                await self._on_close()
            except Exception:
                _LOG.exception("closing %s failed", self.name)
            # Whatever is left (tasks nobody awaits any more), as asyncio.run() does at its end.
            current = asyncio.current_task()
            left = [task for task in asyncio.all_tasks() if task is not current]
            for task in left:
                task.cancel()
            await asyncio.gather(*left, return_exceptions=True)
            await loop.shutdown_asyncgens()
        finally:
            loop.stop()
