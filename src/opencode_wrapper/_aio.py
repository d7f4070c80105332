"""asyncio helpers shared by the run-mode client and the server/session code."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

_T = TypeVar("_T")


async def complete(awaitable: Awaitable[_T]) -> tuple[_T, bool]:
    """Await ``awaitable`` to its end even if the caller is cancelled meanwhile.

    Returns the result and whether the caller was cancelled while waiting; the caller decides
    what to do about that cancellation (see :func:`finish`).
    """
    task = asyncio.ensure_future(awaitable)
    cancelled = False
    while True:
        try:
            return await asyncio.shield(task), cancelled
        except asyncio.CancelledError:
            if task.done():
                raise
            cancelled = True


async def finish(awaitable: Awaitable[_T]) -> _T:
    """Await ``awaitable`` to its end even if the caller is cancelled meanwhile; then re-raise that.

    For clean-up that must not be cut short (ending processes, aborting a turn).
    """
    result, cancelled = await complete(awaitable)
    if cancelled:
        raise asyncio.CancelledError
    return result


async def wait_within(awaitable: Awaitable[_T], timeout: float | None) -> _T:
    """``asyncio.wait_for`` without its flaw before Python 3.12.

    There, a cancellation that arrives just as the awaitable finishes is swallowed: ``wait_for``
    returns the result and the cancelled caller carries on (a cancelled ``async_stream`` consumer
    would keep reading the run). Here the cancellation always wins. On timeout the awaitable is
    cancelled and awaited, then ``asyncio.TimeoutError`` is raised, as ``wait_for`` does.
    """
    if timeout is None:
        return await awaitable
    task = asyncio.ensure_future(awaitable)
    try:
        done, _ = await asyncio.wait({task}, timeout=timeout)
    except asyncio.CancelledError:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        raise
    if not done:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        raise asyncio.TimeoutError
    return task.result()
