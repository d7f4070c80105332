"""``sync.Client``: an ``AsyncOpenCodeClient`` driven from a private event loop thread.

The client owns a :class:`~opencode_wrapper._sync.loop.LoopThread` and what runs on it: the
``AsyncOpenCodeClient`` (entered on first use, so warm servers have an owner) and the sessions
opened through it. Closing the loop closes them (:class:`_Owned`), whoever triggers it:
:meth:`Client.close`, the exit of the interpreter, or the collection of a client nobody uses.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import threading
import weakref
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import TYPE_CHECKING, TypeVar

from opencode_wrapper._sync.callbacks import SyncRunOptions, run_options
from opencode_wrapper._sync.loop import Call, LoopThread
from opencode_wrapper._sync.streams import EventStream, Relay, Source
from opencode_wrapper.client import AsyncOpenCodeClient
from opencode_wrapper.events import RunResult
from opencode_wrapper.session import OpenCodeSession

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["Client", "default_client"]

_T = TypeVar("_T")
_numbers = itertools.count(1)


class _Owned:
    """What a client's loop keeps open. It holds no :class:`Client`, so that a client nobody
    references can be collected (and so closed)."""

    def __init__(self, aio: AsyncOpenCodeClient) -> None:
        self.aio = aio
        self.entered = False
        self.sessions: set[OpenCodeSession] = set()

    async def enter(self) -> None:
        if not self.entered:
            self.entered = True
            await self.aio.__aenter__()

    async def aclose(self) -> None:
        try:
            for session in list(self.sessions):
                with contextlib.suppress(Exception):  # one bad session must not keep servers alive
                    await session.aclose()
        finally:
            self.sessions.clear()
            if self.entered:
                await self.aio.__aexit__(None, None, None)


class Client:
    """The blocking twin of :class:`~opencode_wrapper.AsyncOpenCodeClient`; safe to share between threads.

    Arguments are those of ``AsyncOpenCodeClient``, checked now. With ``warm_servers=True`` the
    servers start with the first run and end with :meth:`close`: use ``with sync.Client(...) as
    client:`` (or let the interpreter's exit close it).

    Its event loop runs in a daemon thread that its first call starts. :meth:`close` ends the
    runs still going on (their callers get ``OpenCodeCancelledError``), the sessions and the
    servers, then the thread; it also happens at the interpreter's exit and when the client is
    garbage collected. Closing is final: a closed client refuses calls (``RuntimeError``).
    """

    def __init__(
        self,
        binary: str | os.PathLike[str] = "opencode",
        startup_concurrency: int = 1,
        startup_delay_s: float = 0.3,
        isolate_db: bool = True,
        *,
        shared_data_concurrency: int = 4,
        warm_servers: bool = False,
        max_servers: int | None = None,
        lean: bool = False,
    ) -> None:
        self._aio = AsyncOpenCodeClient(
            binary,
            startup_concurrency,
            startup_delay_s,
            isolate_db,
            shared_data_concurrency=shared_data_concurrency,
            warm_servers=warm_servers,
            max_servers=max_servers,
            lean=lean,
        )
        self._owned = _Owned(self._aio)
        self._loop = LoopThread(f"opencode-wrapper-sync-{next(_numbers)}", self._owned.aclose)
        self._finalizer = weakref.finalize(self, self._loop.close)

    def __repr__(self) -> str:
        return f"sync.Client({self._aio!r}, {self._loop!r})"

    @property
    def binary(self) -> str:
        """The ``binary`` argument, as a string."""
        return self._aio.binary

    @property
    def isolate_db(self) -> bool:
        """Whether each run (or warm server) gets a private data dir."""
        return self._aio.isolate_db

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called (or started by the interpreter's exit)."""
        return self._loop.closed

    def resolved_binary(self) -> str:
        """The absolute path of the opencode binary (resolved and version-checked once)."""
        return self._aio.resolved_binary()

    def close(self) -> None:
        """End every run, session and server of this client, then its loop thread; idempotent.

        Waits for all of it, through a first Ctrl-C (re-raised afterwards).
        """
        self._finalizer.detach()
        self._loop.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _submit(self, body: Callable[[Call[_T]], Awaitable[_T]]) -> Call[_T]:
        """Run ``body(call)`` on the loop, after the async client was entered."""
        owned = self._owned

        async def entered(call: Call[_T]) -> _T:
            await owned.enter()
            return await body(call)

        return self._loop.submit(entered)

    def run(
        self, prompt: str, workspace: str | os.PathLike[str], **options: Unpack[SyncRunOptions]
    ) -> RunResult:
        """``AsyncOpenCodeClient.async_run``, blocking: the same options, result and exceptions.

        ``on_event`` runs in this thread; ``on_permission``/``on_question`` (warm servers only)
        may be plain functions, run in a worker thread.
        """
        converted, on_event = run_options(options)
        aio, relay = self._aio, Relay(on_event)

        async def body(call: Call[RunResult]) -> RunResult:
            relay.call = call
            return await aio.async_run(prompt, workspace, **converted, on_event=relay.callback())

        return self._submit(body).result()

    def stream(
        self, prompt: str, workspace: str | os.PathLike[str], **options: Unpack[SyncRunOptions]
    ) -> EventStream:
        """``AsyncOpenCodeClient.async_stream`` as a plain iterator of events; options checked now.

        The run starts with the iteration. After the last event the iteration raises what
        :meth:`run` raises; ``stream.result`` is then the result. Closing the stream early
        (``close()``, leaving ``with``, garbage collection) ends the run.
        """
        converted, on_event = run_options(options)
        aio, relay = self._aio, Relay(on_event)

        async def prepare(call: Call[Source]) -> Source:
            handle = aio.start(prompt, workspace, **converted, on_event=relay.callback())
            return Source(handle, handle)

        return EventStream(self, prepare, relay)


_default_lock = threading.Lock()
_default: Client | None = None


def default_client() -> Client:
    """The :class:`Client` of the module-level functions: ``Client()`` (run mode; ``opencode`` is
    found as ``AsyncOpenCodeClient`` finds it), made on first use, and again once it was closed."""
    global _default
    with _default_lock:
        if _default is None or _default.closed:
            _default = Client()
        return _default
