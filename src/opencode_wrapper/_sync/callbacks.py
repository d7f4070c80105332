"""Callbacks given to the sync API: their types, their checks, and what the async API gets instead.

* ``on_event`` (and ``run_many``'s ``on_event``/``on_progress``) are plain functions run in the
  thread that called the sync API: the loop side *posts* each call to that thread's
  :class:`~opencode_wrapper._sync.loop.Call`, in order, and never waits for it.
* ``on_permission``/``on_question`` may be plain functions: they become async functions that run
  the plain one in a worker thread of their own, so the loop is never blocked (a human may take
  minutes to answer). Async functions are passed on as they are and run on the loop.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, TypeAlias

from opencode_wrapper._sync.loop import Call
from opencode_wrapper.backends.request import RunSettings
from opencode_wrapper.batch import Progress
from opencode_wrapper.errors import OpenCodeConfigError
from opencode_wrapper.events import Event
from opencode_wrapper.session import PermissionReply

__all__ = [
    "EventCallback",
    "ProgressCallback",
    "SyncPermissionCallback",
    "SyncQuestionCallback",
    "SyncRunOptions",
    "TaskEventCallback",
    "as_async_callback",
    "check_plain_callback",
    "is_async_callable",
    "posted",
    "posted_progress",
    "run_options",
]

#: ``on_permission(request) -> "once" | "always" | "reject" | PermissionReply``: a plain function
#: (run in a worker thread) or an ``async def`` (run on the loop).
SyncPermissionCallback: TypeAlias = Callable[
    [dict[str, Any]], "str | PermissionReply | Awaitable[str | PermissionReply]"
]
#: ``on_question(request) -> list[list[str]] | None``: plain (worker thread) or ``async def``.
SyncQuestionCallback: TypeAlias = Callable[
    [dict[str, Any]], "list[list[str]] | Awaitable[list[list[str]] | None] | None"
]
#: ``on_event(event)``: a plain function, run in the calling thread.
EventCallback: TypeAlias = Callable[[Event], object]
#: ``run_many``'s ``on_event(task_index, event)``: a plain function, run in the calling thread.
TaskEventCallback: TypeAlias = Callable[[int, Event], object]
#: ``run_many``'s ``on_progress(progress)``: plain (calling thread, given a snapshot) or ``async def`` (loop).
ProgressCallback: TypeAlias = Callable[[Progress], "Awaitable[None] | None"]


class SyncRunOptions(RunSettings, total=False):
    """The options of ``sync.run``/``sync.stream``: those of the async API (``RunSettings`` plus the
    callbacks), with plain functions allowed as ``on_permission``/``on_question``. ``hooks`` and a
    ``verify`` callable are passed on as they are: they run on the client's loop, as in the async API."""

    on_event: EventCallback | None
    on_permission: SyncPermissionCallback | None
    on_question: SyncQuestionCallback | None


def is_async_callable(callback: object) -> bool:
    """An ``async def`` function, or an object whose ``__call__`` is one (as the core accepts)."""
    call = getattr(callback, "__call__", None)  # noqa: B004 - async callable objects count too
    return inspect.iscoroutinefunction(callback) or inspect.iscoroutinefunction(call)


def check_plain_callback(callback: object, name: str, signature: str) -> None:
    """Refuse anything but ``None`` or a plain (not ``async def``) callable, naming ``name``."""
    if callback is None:
        return
    if not callable(callback) or is_async_callable(callback):
        raise OpenCodeConfigError(
            f"{name} must be a plain function {signature} or None (it is called in your thread, "
            f"and an async def would never be awaited), got {callback!r}"
        )


def as_async_callback(callback: object, name: str) -> Any:
    """What the async API gets for a permission/question callback: ``None``, the ``async def``
    itself, or an async wrapper running the plain function in a worker thread."""
    if callback is None or is_async_callable(callback):
        return callback
    if not callable(callback):
        raise OpenCodeConfigError(f"{name} must be a function (plain or async def) or None, got {callback!r}")
    plain: Callable[[dict[str, Any]], Any] = callback

    async def in_worker_thread(request: dict[str, Any]) -> Any:
        # The loop's default executor gives each job a daemon thread. If the callback times out
        # (callback_timeout_s), this await is cancelled and the request rejected; the thread
        # runs on until the function returns, and its answer is dropped.
        return await asyncio.get_running_loop().run_in_executor(None, plain, request)

    in_worker_thread.__qualname__ = f"in_worker_thread({getattr(plain, '__qualname__', plain)!s})"
    return in_worker_thread


def run_options(options: SyncRunOptions) -> tuple[dict[str, Any], EventCallback | None]:
    """The async API's options for ``options`` (checked here), and the ``on_event`` to post.

    The returned dict has no ``on_event``: :func:`posted` makes the one for a given call.
    """
    converted: dict[str, Any] = dict(options)
    on_event = converted.pop("on_event", None)
    check_plain_callback(on_event, "on_event", "taking one event")
    for name in ("on_permission", "on_question"):
        if name in converted:
            converted[name] = as_async_callback(converted[name], name)
    return converted, on_event


def posted(call: Call[Any], callback: Callable[..., object] | None) -> Callable[..., None] | None:
    """A stand-in for ``callback`` that has ``call``'s waiting thread run it (``None`` for ``None``)."""
    if callback is None:
        return None

    def post(*args: object) -> None:
        call.post(callback, *args)

    return post


def posted_progress(call: Call[Any], callback: ProgressCallback | None) -> ProgressCallback | None:
    """``on_progress`` for the async ``run_many``: an ``async def`` as it is; a plain function is
    posted to the waiting thread with a snapshot (the batch changes its ``Progress`` as it goes)."""
    if callback is None or is_async_callable(callback):
        return callback

    def post(progress: Progress) -> None:
        snapshot = dataclasses.replace(progress, usage=dataclasses.replace(progress.usage))
        call.post(callback, snapshot)

    return post
