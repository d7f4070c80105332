"""The HTTP side of the tool server: uvicorn embedded in the caller's loop, and per-request state."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator

import anyio
import uvicorn
from starlette.types import Send


class Exchange:
    """One HTTP request to the MCP endpoint; closing it cancels the tool call it carried, if any.

    A call's answer travels on the response stream of the POST that made it: when that request
    ends before the answer (the client went away), no one can read the answer any more. This
    server keeps no event store, so a client cannot resume the stream either.
    """

    def __init__(self) -> None:
        self.closed = False
        self.call_scope: anyio.CancelScope | None = None

    def close(self) -> None:
        self.closed = True
        if self.call_scope is not None:
            self.call_scope.cancel()


class EmbeddedUvicorn(uvicorn.Server):
    """uvicorn that leaves the host application's signal handlers alone and says when it listens."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.listening = asyncio.Event()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        self.listening.set()


async def plain_response(
    send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"text/plain; charset=utf-8"), *(headers or [])],
        }
    )
    await send({"type": "http.response.body", "body": body})


def end_idle_sse_watcher() -> None:
    """End sse-starlette's per-thread shutdown poller if no SSE response in this thread needs it.

    sse-starlette starts that task (a 0.5 s poll, forever) with the first SSE response on a loop;
    it would outlive the server. It restarts by itself with the next SSE response. Relies on
    sse-starlette internals: if they change, this does nothing.
    """
    try:
        from sse_starlette import sse

        if sse._get_shutdown_state().events:
            return
        for task in asyncio.all_tasks():
            if getattr(task.get_coro(), "cr_code", None) is sse._shutdown_watcher.__code__:
                task.cancel()
    except Exception:
        return
