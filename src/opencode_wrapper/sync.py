"""The blocking API: runs, streams, batches and sessions for code that does not ``await``.

::

    from opencode_wrapper import sync

    result = sync.run("Fix the failing test", ".")
    for event in sync.stream("Explain src/app.py", "."):
        print(event.type)
    with sync.Session(None, ".") as session:
        session.send("My name is Bob.")

Each function and class takes the arguments of its async counterpart and returns and raises the
same things: :func:`run` is ``AsyncOpenCodeClient.async_run``, :func:`stream` is ``async_stream``,
:func:`run_many`/:func:`iter_run_many` are ``opencode_wrapper.run_many``/``iter_run_many``,
:class:`Session` is ``OpenCodeSession``. A :class:`Client` mirrors ``AsyncOpenCodeClient``
(``binary``, ``warm_servers``, ``lean``...); the module-level functions use :func:`default_client`.

Each :class:`Client` owns a private asyncio event loop in a daemon thread, started by its first
call and ended by :meth:`Client.close` (also at the interpreter's exit, or when the client is
garbage collected) with every run, session and server it started. So these functions work where
an event loop already runs in your thread (a Jupyter cell, a sync callback inside async code),
and nothing is patched; they block your thread (and its loop) while they run.

Ctrl-C (``KeyboardInterrupt`` in the waiting thread) cancels the run in the loop thread, waits
until its processes are gone, then raises ``KeyboardInterrupt``; a second Ctrl-C stops that wait.
A stream closed (``close()``, leaving ``with``) or garbage collected before its end ends its run.

Callbacks: ``on_event`` (and ``run_many``'s ``on_event``, and a plain ``on_progress``) are plain
functions run in *your* thread, in order, while you wait (for a stream: as you iterate); they never
hold up the run. ``on_permission``/``on_question`` may be plain functions, each call run in a
worker thread (a human may take minutes to answer: the loop is never blocked), or ``async def``
functions, run on the client's loop (they must not block, nor call this sync API).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from opencode_wrapper import batch
from opencode_wrapper._sync.callbacks import (
    ProgressCallback,
    SyncPermissionCallback,
    SyncQuestionCallback,
    SyncRunOptions,
    TaskEventCallback,
    check_plain_callback,
    posted,
    posted_progress,
)
from opencode_wrapper._sync.client import Client, default_client
from opencode_wrapper._sync.loop import Call
from opencode_wrapper._sync.session import Session
from opencode_wrapper._sync.streams import EventStream, OutcomeStream
from opencode_wrapper.batch import Task, TaskLike, TaskOutcome
from opencode_wrapper.errors import OpenCodeConfigError
from opencode_wrapper.events import RunResult

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = [
    "Client",
    "EventStream",
    "OutcomeStream",
    "Session",
    "SyncPermissionCallback",
    "SyncQuestionCallback",
    "SyncRunOptions",
    "Task",
    "TaskOutcome",
    "default_client",
    "iter_run_many",
    "run",
    "run_many",
    "stream",
]

# Shown (in reprs, tracebacks and the API reference) under the module that exports them.
for _exported in (Client, Session, EventStream, OutcomeStream):
    _exported.__module__ = __name__


def run(prompt: str, workspace: str | os.PathLike[str], **options: Unpack[SyncRunOptions]) -> RunResult:
    """:meth:`Client.run` on :func:`default_client`: ``AsyncOpenCodeClient().async_run``, blocking."""
    return default_client().run(prompt, workspace, **options)


def stream(prompt: str, workspace: str | os.PathLike[str], **options: Unpack[SyncRunOptions]) -> EventStream:
    """:meth:`Client.stream` on :func:`default_client`: the run's events as a plain iterator."""
    return default_client().stream(prompt, workspace, **options)


def _host(client: object, on_event: object, on_progress: object) -> Client:
    if client is not None and not isinstance(client, Client):
        raise OpenCodeConfigError(f"client must be a sync.Client or None, got {client!r}")
    check_plain_callback(on_event, "on_event", "taking (task_index, event)")
    if on_progress is not None and not callable(on_progress):
        raise OpenCodeConfigError(
            f"on_progress must be a function (plain or async def) or None, got {on_progress!r}"
        )
    return client if client is not None else default_client()


def _batch_options(
    call: Call[Any],
    client: Client | None,
    options: dict[str, Any],
    on_event: TaskEventCallback | None,
    on_progress: ProgressCallback | None,
) -> dict[str, Any]:
    return {
        **options,
        "client": client._aio if client is not None else None,
        "on_event": posted(call, on_event),
        "on_progress": posted_progress(call, on_progress),
    }


def run_many(
    tasks: Iterable[TaskLike],
    *,
    client: Client | None = None,
    on_event: TaskEventCallback | None = None,
    on_progress: ProgressCallback | None = None,
    **options: Any,
) -> list[TaskOutcome]:
    """``opencode_wrapper.run_many``, blocking: every :class:`TaskOutcome`, in input order.

    Takes the keyword arguments of the async ``run_many``/``iter_run_many`` (``concurrency``,
    ``fail_fast``, ``budget``, ``backend``, ``run_cfg``, ``limits``, ``retries``, ``hooks``...;
    passed on as they are, and refused as there), with these three changed:

    Args:
        client: a :class:`Client`: its backend runs the tasks (without one, this call makes its
            own backend, per ``backend``, and ends it before returning).
        on_event: ``on_event(task_index, event)``, a plain function run in this thread.
        on_progress: a plain function, run in this thread with a snapshot of the
            :class:`~opencode_wrapper.Progress`; or an ``async def``, run on the client's loop.

    ``pool=``/``engine=``: objects that no other event loop uses.
    """
    host = _host(client, on_event, on_progress)
    listed = list(tasks)  # consumed here, not in the loop thread

    async def body(call: Call[list[TaskOutcome]]) -> list[TaskOutcome]:
        return await batch.run_many(listed, **_batch_options(call, client, options, on_event, on_progress))

    return host._submit(body).result()


def iter_run_many(
    tasks: Iterable[TaskLike],
    *,
    client: Client | None = None,
    on_event: TaskEventCallback | None = None,
    on_progress: ProgressCallback | None = None,
    **options: Any,
) -> OutcomeStream:
    """``opencode_wrapper.iter_run_many`` as a plain iterator: each outcome as its task completes.

    Arguments as for :func:`run_many`. The tasks start with the iteration; a bad argument or task
    raises from the first ``next()``, before any task starts.
    """
    host = _host(client, on_event, on_progress)
    listed = list(tasks)

    async def body(call: Call[None]) -> None:
        # Cancelling this (close, Ctrl-C) raises inside the generator's own await: its clean-up
        # stops the running tasks.
        async for outcome in batch.iter_run_many(
            listed, **_batch_options(call, client, options, on_event, on_progress)
        ):
            call.emit(outcome)

    return OutcomeStream(host, body)
