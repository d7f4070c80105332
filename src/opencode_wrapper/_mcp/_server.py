"""The tool server: tools served over MCP streamable HTTP on loopback, with a bearer token.

Built from the ``mcp`` SDK's low-level ``Server`` and ``StreamableHTTPSessionManager`` (one MCP
session per connected opencode process), served by uvicorn inside the caller's event loop.
Two background tasks run while the server is up: the session manager (its task group owns every
session and every tool call) and uvicorn. Stopping ends the session manager first, which cancels
the calls in flight and closes their streams, then uvicorn, then waits for worker threads.
"""

from __future__ import annotations

import asyncio
import math
import secrets
import socket
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import anyio
import mcp_types as types
import uvicorn
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from starlette.types import Receive, Scope, Send

from opencode_wrapper._mcp._calls import CallRunner, ToolCallRecord, logger
from opencode_wrapper._mcp._definition import Tool, as_tools, check_server_name
from opencode_wrapper._mcp._http import EmbeddedUvicorn, Exchange, end_idle_sse_watcher, plain_response
from opencode_wrapper.errors import OpenCodeConfigError

HOST = "127.0.0.1"
PATH = "/mcp"
#: The scope key under which each HTTP exchange carries its :class:`Exchange`.
_EXCHANGE = "opencode_wrapper.exchange"
_SERVER_NAME = "opencode-wrapper-tools"


def _check_positive(name: str, value: float | None, *, allow_none: bool = True) -> None:
    if value is None and allow_none:
        return
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value <= 0
    ):
        allowed = "a positive number of seconds" + (" or None" if allow_none else "")
        raise OpenCodeConfigError(f"{name} must be {allowed}, got {value!r}")


class ToolServer:
    """Python tools served to opencode as an MCP server (streamable HTTP on 127.0.0.1).

    See :mod:`opencode_wrapper.tools` for the contract. Use as ``async with ToolServer(tools) as
    server:`` (or ``await start()`` / ``await stop()`` from one event loop); pass
    ``server.mcp_config("py")`` as ``RunConfig.mcp``.

    Args:
        tools: :class:`Tool` objects or plain functions (made tools as by ``@tool``); names unique.
        port: the TCP port on 127.0.0.1 (0: a free one).
        token: the bearer token clients must send (default: 32 random bytes, URL-safe).
        progress_interval_s: while a call runs, send a progress notification this often (it
            restarts opencode's request timeout); ``None``: never.
        max_threads: worker threads for plain (non-async) functions (default: Python's
            ``ThreadPoolExecutor`` default).
        session_idle_timeout_s: close an MCP session after this long with no request in flight.
            A live opencode process always holds one (its event stream), so this reaps the
            sessions of opencode processes that exited without closing theirs.
        max_recorded_calls: how many of the newest :class:`ToolCallRecord` to keep (``None``: all).
        on_call: called with each :class:`ToolCallRecord` as the call ends (exceptions are logged).
        shutdown_timeout_s: how long ``stop()`` waits for calls to end once cancelled (a coroutine
            that swallows ``CancelledError``), for worker threads, and for connections to close;
            past that it logs a warning and goes on without them.

    Raises:
        OpenCodeConfigError: a bad tool or setting (before anything starts).
    """

    def __init__(
        self,
        tools: Iterable[Tool | Callable[..., Any]],
        *,
        port: int = 0,
        token: str | None = None,
        progress_interval_s: float | None = 10.0,
        max_threads: int | None = None,
        session_idle_timeout_s: float | None = 300.0,
        max_recorded_calls: int | None = 10_000,
        on_call: Callable[[ToolCallRecord], None] | None = None,
        shutdown_timeout_s: float = 5.0,
    ) -> None:
        self.tools: tuple[Tool, ...] = as_tools(tools)
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise OpenCodeConfigError(f"port must be an int from 0 (any free port) to 65535, got {port!r}")
        if token is not None and (not isinstance(token, str) or len(token) < 16 or not token.isprintable()):
            raise OpenCodeConfigError("token must be a printable string of at least 16 characters, or None")
        _check_positive("progress_interval_s", progress_interval_s)
        _check_positive("session_idle_timeout_s", session_idle_timeout_s)
        _check_positive("shutdown_timeout_s", shutdown_timeout_s, allow_none=False)
        if max_threads is not None and (
            isinstance(max_threads, bool) or not isinstance(max_threads, int) or max_threads < 1
        ):
            raise OpenCodeConfigError(f"max_threads must be a positive int or None, got {max_threads!r}")
        if max_recorded_calls is not None and (
            isinstance(max_recorded_calls, bool)
            or not isinstance(max_recorded_calls, int)
            or max_recorded_calls < 0
        ):
            raise OpenCodeConfigError(
                f"max_recorded_calls must be an int >= 0 or None, got {max_recorded_calls!r}"
            )
        if on_call is not None and not callable(on_call):
            raise OpenCodeConfigError(f"on_call must be a function or None, got {on_call!r}")
        self.token: str = token or secrets.token_urlsafe(32)
        self._port = port
        self._progress_interval_s = progress_interval_s
        self._max_threads = max_threads
        self._idle_timeout_s = session_idle_timeout_s
        self._shutdown_timeout_s = shutdown_timeout_s
        self._on_call = on_call
        self._records: deque[ToolCallRecord] = deque(maxlen=max_recorded_calls)
        self._auth = f"Bearer {self.token}".encode()
        self._listing = types.ListToolsResult(
            tools=[
                types.Tool(name=t.name, description=t.description, input_schema=t.input_schema)
                for t in self.tools
            ]
        )
        self._bound_port: int | None = None
        self._accepting = False
        self._stopping = False
        self._runner: CallRunner | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._manager: StreamableHTTPSessionManager | None = None
        self._manager_stop = asyncio.Event()
        self._posts: set[Exchange] = set()  # POST requests being served: each carries at most one call
        self._posts_done = asyncio.Event()
        self._manager_task: asyncio.Task[None] | None = None
        self._uvicorn: EmbeddedUvicorn | None = None
        self._serve_task: asyncio.Task[None] | None = None
        self._stop_task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ what opencode is given

    @property
    def running(self) -> bool:
        """Whether the server is started and not stopped."""
        return self._accepting

    @property
    def port(self) -> int:
        """The TCP port on 127.0.0.1 (known once started)."""
        if self._bound_port is None:
            raise RuntimeError("the tool server is not started; use 'async with ToolServer(...)'")
        return self._bound_port

    @property
    def url(self) -> str:
        """The MCP endpoint, ``http://127.0.0.1:<port>/mcp``."""
        return f"http://{HOST}:{self.port}{PATH}"

    @property
    def headers(self) -> dict[str, str]:
        """The HTTP headers a client needs: ``{"Authorization": "Bearer <token>"}``."""
        return {"Authorization": f"Bearer {self.token}"}

    @property
    def calls(self) -> list[ToolCallRecord]:
        """Every recorded call so far, oldest first (a copy)."""
        return list(self._records)

    def mcp_entry(self, *, timeout_ms: int | None = None) -> dict[str, Any]:
        """One opencode ``mcp`` config entry for this server (see ``mcp_config``)."""
        if timeout_ms is not None and (
            isinstance(timeout_ms, bool) or not isinstance(timeout_ms, int) or timeout_ms < 1
        ):
            raise OpenCodeConfigError(
                f"timeout_ms must be a positive int (milliseconds) or None, got {timeout_ms!r}"
            )
        entry: dict[str, Any] = {
            "type": "remote",
            "url": self.url,
            "headers": self.headers,
            "enabled": True,
            # The token is in the headers; without this opencode would start OAuth discovery
            # against the server whenever a request is refused.
            "oauth": False,
        }
        if timeout_ms is not None:
            entry["timeout"] = timeout_ms
        return entry

    def mcp_config(self, name: str = "py", *, timeout_ms: int | None = None) -> dict[str, dict[str, Any]]:
        """``{name: entry}``, ready for ``RunConfig(mcp=...)``; opencode names the tools ``<name>_<tool>``.

        ``timeout_ms`` is opencode's per-request timeout for this server (its MCP client's default
        is 60 s; each progress notification this server sends restarts that clock).
        """
        check_server_name(name)
        return {name: self.mcp_entry(timeout_ms=timeout_ms)}

    def opencode_names(self, name: str = "py") -> dict[str, str]:
        """``{tool name: the name opencode gives the model}`` for the server name ``name``."""
        check_server_name(name)
        return {t.name: f"{name}_{t.name}" for t in self.tools}

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> ToolServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Bind a port, start serving; return once the server accepts connections."""
        if self._manager_task is not None:
            raise RuntimeError("this ToolServer is already started")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.bind((HOST, self._port))
            sock.listen(128)
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            raise OpenCodeConfigError(f"Cannot listen on {HOST}:{self._port}: {exc}") from None
        self._bound_port = port = sock.getsockname()[1]
        self._stopping = False
        self._executor = ThreadPoolExecutor(max_workers=self._max_threads, thread_name_prefix="opencode-tool")
        self._runner = CallRunner(
            self.tools,
            executor=self._executor,
            records=self._records,
            on_call=self._on_call,
            progress_interval_s=self._progress_interval_s,
        )
        server: Server[Any] = Server(
            _SERVER_NAME,
            on_list_tools=self._list_tools,
            on_call_tool=self._call_tool,
            get_tool_input_schema=lambda name: next(
                (t.input_schema for t in self.tools if t.name == name), None
            ),
        )
        self._manager = StreamableHTTPSessionManager(
            app=server,
            session_idle_timeout=self._idle_timeout_s,
            security_settings=TransportSecuritySettings(
                enable_dns_rebinding_protection=True,
                allowed_hosts=[f"{HOST}:{port}", f"localhost:{port}"],
                allowed_origins=[f"http://{HOST}:{port}", f"http://localhost:{port}"],
            ),
        )
        self._manager_stop = asyncio.Event()
        self._posts = set()
        self._posts_done = asyncio.Event()
        self._posts_done.set()
        ready = asyncio.Event()
        self._manager_task = asyncio.create_task(self._run_manager(ready), name="opencode-tools-mcp")
        config = uvicorn.Config(
            self._asgi,
            lifespan="off",
            log_config=None,
            log_level="warning",
            access_log=False,
            ws="none",
            http="h11",
            interface="asgi3",
            timeout_graceful_shutdown=math.ceil(self._shutdown_timeout_s),
        )
        self._uvicorn = EmbeddedUvicorn(config)
        self._serve_task = asyncio.create_task(
            self._uvicorn.serve(sockets=[sock]), name="opencode-tools-http"
        )
        try:
            await self._wait_started(ready)
        except BaseException:
            await self.stop()
            sock.close()  # asyncio owns (and closes) it only once uvicorn listened on it
            raise
        self._accepting = True

    async def _wait_started(self, manager_ready: asyncio.Event) -> None:
        assert self._uvicorn is not None and self._serve_task is not None and self._manager_task is not None
        waiters = [
            asyncio.ensure_future(manager_ready.wait()),
            asyncio.ensure_future(self._uvicorn.listening.wait()),
        ]
        try:
            pending: set[asyncio.Future[Any]] = {*waiters, self._serve_task, self._manager_task}
            while not (manager_ready.is_set() and self._uvicorn.listening.is_set()):
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in (self._serve_task, self._manager_task):
                    if task in done:
                        exc = task.exception()
                        raise RuntimeError(f"the tool server failed to start: {exc!r}") from exc
        finally:
            for waiter in waiters:
                waiter.cancel()

    async def _run_manager(self, ready: asyncio.Event) -> None:
        assert self._manager is not None
        async with self._manager.run():
            ready.set()
            await self._manager_stop.wait()

    async def stop(self) -> None:
        """Stop serving: cancel every call in flight, close every session, wait for worker threads.

        Idempotent; completes even if the caller is cancelled meanwhile (then re-raises that).
        """
        if self._manager_task is None:
            return
        if self._stop_task is None:
            self._stop_task = asyncio.ensure_future(self._shutdown())
        task = self._stop_task
        cancelled = False
        while not task.done():
            try:
                await asyncio.shield(task)
            except asyncio.CancelledError:
                if task.done():
                    break
                cancelled = True
        self._manager_task = self._serve_task = self._stop_task = None
        self._manager = self._uvicorn = self._runner = self._executor = None
        if cancelled:
            raise asyncio.CancelledError
        task.result()

    async def _shutdown(self) -> None:
        self._accepting = False
        self._stopping = True
        # Sessions first: that cancels the calls and ends their response streams, so uvicorn
        # finds its connections idle and closes them at once.
        # Calls first, while their sessions still stand: each cancelled call answers its POST
        # ("server stopped"), so no request is left for the SDK to fail on a closing transport.
        for exchange in list(self._posts):
            exchange.close()
        try:
            await asyncio.wait_for(self._posts_done.wait(), self._shutdown_timeout_s)
        except asyncio.TimeoutError:
            stuck = self._runner.running() if self._runner is not None else []
            logger.warning(
                "tool server: call(s) of %s did not end within %.1f s of being cancelled; "
                "stopping without them",
                ", ".join(stuck) or "no tool",
                self._shutdown_timeout_s,
            )
        self._manager_stop.set()
        if self._manager_task is not None:
            done, _ = await asyncio.wait({self._manager_task}, timeout=self._shutdown_timeout_s)
            if not done:
                logger.warning(
                    "tool server: MCP sessions did not close within %.1f s", self._shutdown_timeout_s
                )
        if self._uvicorn is not None and self._serve_task is not None:
            self._uvicorn.should_exit = True
            await asyncio.gather(self._serve_task, return_exceptions=True)
        threads_done = self._runner is None or await self._runner.wait_threads(self._shutdown_timeout_s)
        if self._executor is not None:
            # A thread still running keeps the function's work going; it ends when the function returns.
            self._executor.shutdown(wait=threads_done, cancel_futures=True)
        end_idle_sse_watcher()

    # ------------------------------------------------------------------ HTTP and MCP handlers

    async def _asgi(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        if scope["path"].rstrip("/") != PATH:
            await plain_response(send, 404, b"not found: the MCP endpoint is /mcp\n")
            return
        given = next((value for key, value in scope["headers"] if key == b"authorization"), b"")
        if not secrets.compare_digest(given, self._auth):
            await plain_response(
                send,
                401,
                b"unauthorized\n",
                [(b"www-authenticate", b'Bearer realm="opencode-wrapper-tools"')],
            )
            return
        manager = self._manager
        if not self._accepting or manager is None:
            await plain_response(send, 503, b"the tool server is stopping\n")
            return
        exchange = Exchange()
        post = scope["method"] == "POST"  # GET is the long-lived event stream: never waited for
        if post:
            self._posts.add(exchange)
            self._posts_done.clear()
        try:
            await manager.handle_request({**scope, _EXCHANGE: exchange}, receive, send)
        finally:
            exchange.close()
            if post:
                self._posts.discard(exchange)
                if not self._posts:
                    self._posts_done.set()

    async def _list_tools(
        self, ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        return self._listing

    async def _call_tool(
        self, ctx: ServerRequestContext[Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        runner = self._runner
        if runner is None:
            return types.CallToolResult(
                content=[types.TextContent(text="the tool server is stopping")], is_error=True
            )
        request = ctx.request
        scope = getattr(request, "scope", None)
        exchange = scope.get(_EXCHANGE) if isinstance(scope, dict) else None
        headers = getattr(request, "headers", None)
        session_id = headers.get("mcp-session-id") if headers is not None else None

        def reason() -> str:
            if self._stopping:
                return "server stopped"
            if isinstance(exchange, Exchange) and exchange.closed:
                return "client disconnected"
            return "cancelled by the client"

        async def progress(count: float) -> None:
            await ctx.session.report_progress(count)

        with anyio.CancelScope() as call_scope:
            if isinstance(exchange, Exchange):
                exchange.call_scope = call_scope
                if exchange.closed:
                    call_scope.cancel()
            try:
                text, is_error = await runner.run(
                    params.name,
                    params.arguments,
                    session_id=session_id,
                    cancel_reason=reason,
                    progress=progress,
                )
            finally:
                if isinstance(exchange, Exchange):
                    exchange.call_scope = None
            content: list[types.ContentBlock] = [types.TextContent(text=text)] if text else []
            return types.CallToolResult(content=content, is_error=is_error)
        # Reached when the call was cancelled here: the client went away, or the server is stopping.
        return types.CallToolResult(content=[types.TextContent(text=f"cancelled: {reason()}")], is_error=True)
