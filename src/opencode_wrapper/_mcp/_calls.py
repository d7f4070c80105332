"""Running one tool call: validation, the function (awaited, or in a worker thread), the record.

Transport-free: the MCP server hands a call's name and arguments to :class:`CallRunner` and
turns the ``(text, is_error)`` it returns into an MCP ``CallToolResult``.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import itertools
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

import anyio
import pydantic_core

from opencode_wrapper._mcp._definition import Tool, ToolArgumentsError

logger = logging.getLogger("opencode_wrapper.tools")

Outcome = Literal["ok", "error", "invalid_arguments", "cancelled", "unknown_tool"]
#: Sends one progress notification for the call (``progress`` grows by one each time).
ProgressFn = Callable[[float], Awaitable[None]]


@dataclass(frozen=True)
class ToolCallRecord:
    """One call the agent made, as the tool server saw it.

    Attributes:
        tool: the tool's name on the server (without opencode's ``<server>_`` prefix).
        arguments: the arguments exactly as received (before validation).
        outcome: ``"ok"``; ``"error"`` (the function raised); ``"invalid_arguments"`` (refused
            before the function ran); ``"cancelled"`` (the call was cancelled while running);
            ``"unknown_tool"``.
        output: the text the model was given (``"ok"`` only).
        error: the error text the model was given, or why the call was cancelled
            (``"cancelled by the client"``, ``"client disconnected"``, ``"server stopped"``).
        exception: the exception the function raised (``"error"`` only).
        started_at: when the call arrived (``time.time()``).
        duration_s: how long it ran until it ended (or was cancelled).
        session_id: the MCP session it came in on (one per opencode process and server name).
    """

    tool: str
    arguments: Any
    outcome: Outcome
    output: str | None
    error: str | None
    exception: BaseException | None
    started_at: float
    duration_s: float
    session_id: str | None


def render_output(value: Any) -> str:
    """The text a return value becomes for the model: a ``str`` as is, ``None`` as ``""``, else JSON."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return pydantic_core.to_json(value, fallback=str).decode()


class CallRunner:
    """Runs calls of a fixed set of tools and records every call.

    Plain functions run on ``executor``; :meth:`wait_threads` waits for those still running
    (a thread cannot be interrupted: a cancelled call's thread runs to its end).
    """

    def __init__(
        self,
        tools: Iterable[Tool],
        *,
        executor: ThreadPoolExecutor,
        records: deque[ToolCallRecord],
        on_call: Callable[[ToolCallRecord], None] | None = None,
        progress_interval_s: float | None = None,
    ) -> None:
        self.tools: Mapping[str, Tool] = {t.name: t for t in tools}
        self._executor = executor
        self._records = records
        self._on_call = on_call
        self._progress_interval_s = progress_interval_s
        self._threads: set[Future[Any]] = set()
        self._running: dict[int, str] = {}
        self._keys = itertools.count()

    async def run(
        self,
        name: str,
        arguments: Any,
        *,
        session_id: str | None,
        cancel_reason: Callable[[], str],
        progress: ProgressFn | None = None,
    ) -> tuple[str, bool]:
        """Run one call; return ``(text for the model, is_error)``.

        Cancellation (``asyncio.CancelledError``) propagates after the call is recorded as
        ``"cancelled"`` with ``cancel_reason()``.
        """
        started, clock = time.time(), time.monotonic()

        def record(
            outcome: Outcome, output: str | None, error: str | None, exc: BaseException | None
        ) -> None:
            entry = ToolCallRecord(
                name, arguments, outcome, output, error, exc, started, time.monotonic() - clock, session_id
            )
            self._records.append(entry)
            if self._on_call is not None:
                try:
                    self._on_call(entry)
                except Exception:
                    logger.exception("on_call callback failed for tool %r", name)

        tool = self.tools.get(name)
        if tool is None:
            text = f"Unknown tool {name!r}; this server has: {', '.join(sorted(self.tools)) or 'no tools'}"
            record("unknown_tool", None, text, None)
            return text, True
        try:
            args, kwargs = tool.bind(arguments)
        except ToolArgumentsError as exc:
            record("invalid_arguments", None, str(exc), None)
            return str(exc), True
        key = next(self._keys)
        self._running[key] = name
        try:
            value, raised = await self._with_heartbeat(self._invoke(tool, args, kwargs), progress)
        except BaseException:
            # Cancelled (CancelledError, or anyio's cancellation of this task): record, then let it go.
            record("cancelled", None, cancel_reason(), None)
            raise
        finally:
            del self._running[key]
        if raised is not None:
            text = f"{type(raised).__name__}: {raised}"
            logger.info("tool %r raised %s", name, text, exc_info=raised)
            record("error", None, text, raised)
            return text, True
        try:
            text = render_output(value)
        except Exception as render_exc:
            text = f"Tool {name!r} returned a value that cannot be sent as text: {render_exc}"
            record("error", None, text, render_exc)
            return text, True
        record("ok", text, None, None)
        return text, False

    async def _invoke(
        self, tool: Tool, args: list[Any], kwargs: dict[str, Any]
    ) -> tuple[Any, BaseException | None]:
        """``(return value, None)`` or ``(None, the exception)``; only cancellation propagates.

        ``SystemExit`` counts as the tool's error: a tool calling ``sys.exit()`` must not end the
        server. ``KeyboardInterrupt`` propagates.
        """
        try:
            if tool.is_async:
                return await tool.fn(*args, **kwargs), None
            call = functools.partial(contextvars.copy_context().run, tool.fn, *args, **kwargs)
            future = self._executor.submit(call)
            self._threads = {f for f in self._threads if not f.done()}
            self._threads.add(future)
            return await asyncio.wrap_future(future), None
        except (Exception, SystemExit) as exc:
            return None, exc

    async def _with_heartbeat(
        self, work: Awaitable[tuple[Any, BaseException | None]], progress: ProgressFn | None
    ) -> tuple[Any, BaseException | None]:
        # opencode's MCP client times a call out after 60 s (or the configured timeout) but resets
        # that clock on every progress notification: a long call sends one now and then.
        interval = self._progress_interval_s
        if progress is None or interval is None:
            return await work

        async def beat() -> None:
            count = 0
            while True:
                await anyio.sleep(interval)
                count += 1
                with contextlib.suppress(Exception):
                    await progress(count)

        async with anyio.create_task_group() as group:
            group.start_soon(beat)
            try:
                outcome = await work
            finally:
                group.cancel_scope.cancel()
        return outcome

    def running(self) -> list[str]:
        """The names of the tools whose calls are running (awaited or in a thread), one per call."""
        return sorted(self._running.values())

    async def wait_threads(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` until no worker thread runs a tool function; ``True`` if none does."""
        running = [f for f in self._threads if not f.done()]
        if running:
            _, pending = await asyncio.wait([asyncio.wrap_future(f) for f in running], timeout=timeout_s)
            if pending:
                logger.warning(
                    "tool server: %d worker thread(s) still running a tool function after %.1f s; "
                    "they end when their function returns",
                    len(pending),
                    timeout_s,
                )
                return False
        self._threads.clear()
        return True
