"""``ServerBase``: one ``opencode serve`` process (or an existing server), its HTTP transport and event bus.

An owned server is started like a run-mode process (same config injection and user-config
isolation, a private data dir by default) under the process-tree supervisor, listens on
127.0.0.1 only, and is always protected by a random password. One event stream
(``GET /global/event``, every directory) feeds every session of the server; a watcher turns the
death of the process, a broken stream or a silent one (no heartbeat) into an
:class:`OpenCodeServerError` for every waiting call, with the server's last stderr lines.

Sessions, one-shot runs and pools are built on top (``OpenCodeServer``, the server backends);
they register a closer with :meth:`ServerBase.on_close` so that closing the server first ends
their turns.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import re
import secrets
from collections.abc import Awaitable, Callable, Coroutine
from types import TracebackType
from typing import Any, TypeVar

from opencode_wrapper._aio import finish, wait_within
from opencode_wrapper._http import Transport
from opencode_wrapper._proc.binary import check_version, resolve_binary
from opencode_wrapper._proc.environment import PreparedEnvironment, prepare_environment
from opencode_wrapper._proc.process import OwnedProcess, iter_lines
from opencode_wrapper._server.bus import Bus, Subscription
from opencode_wrapper._server.instances import Instances
from opencode_wrapper._server.version import server_version
from opencode_wrapper._tool_lease import leased_tools
from opencode_wrapper._validation import check_timeout
from opencode_wrapper.config import RunConfig, validate_config
from opencode_wrapper.errors import (
    OpenCodeConfigError,
    OpenCodeError,
    OpenCodeServerError,
    ServerHTTPError,
)

__all__ = ["ServerBase"]

_LISTENING = re.compile(r"listening on (https?://\S+)")
_STDERR_TAIL_LINES = 50
# After the process or the stream fails, how long to wait for the other signal (and the last
# stderr lines) to arrive, so the error says why. Kept well inside the 2 s detection budget.
_SETTLE_S = 0.5
_DISPOSE_TIMEOUT_S = 5.0
_END_GRACE_S = 5.0

Closer = Callable[[], Awaitable[None]]
_S = TypeVar("_S", bound="ServerBase")


class ServerBase:
    """An ``opencode serve`` process owned by this object, or an existing server (:meth:`attach`).

    Args:
        binary: the opencode executable (``"opencode"``: ``OPENCODE_BINARY``, ``PATH``, then the
            per-user install).
        run_cfg: the server-global config: ``permission`` (``"ask"`` is allowed: sessions answer
            it), ``mcp``, ``instructions``, ``config_overrides`` (providers...), ``extra_env``.
            ``model``/``agent``/``tools`` here are only the defaults of sessions that set none.
        isolate_db: give the server a private data dir (its own SQLite DB), removed at the end.
        data_home: use this ``XDG_DATA_HOME`` instead (kept: sessions survive the server).
        startup_timeout_s: how long opencode may take to announce its URL.
        cwd: the server process's working directory (default: the current one). Sessions name
            their own workspace; this only matters for requests without one.
        username: the basic-auth user name.
        idle_instances: how many directories no session uses any more keep their opencode
            instance (project state, watcher, MCP servers); beyond that, the least recently used
            is disposed (``POST /instance/dispose``). opencode itself keeps every directory's
            instance for the server's whole life (upstream #33720, #47727), so a server that sees
            many workspaces grows without bound. ``None``: never dispose (the default for a
            server you own; a ``ServerPool``'s servers keep 8).
    """

    def __init__(
        self,
        *,
        binary: str | os.PathLike[str] = "opencode",
        run_cfg: RunConfig | None = None,
        isolate_db: bool = True,
        data_home: str | os.PathLike[str] | None = None,
        startup_timeout_s: float = 60.0,
        cwd: str | os.PathLike[str] | None = None,
        username: str = "opencode",
        idle_instances: int | None = None,
    ) -> None:
        cfg = RunConfig() if run_cfg is None else run_cfg
        validate_config(cfg, allow_ask=True)
        timeout = check_timeout(startup_timeout_s, "startup_timeout_s")
        if not isinstance(username, str) or not username or ":" in username:
            raise OpenCodeConfigError(f"username must be a non-empty string without ':', got {username!r}")
        self.run_cfg = cfg
        self._binary = os.fspath(binary)
        self._isolate_db = bool(isolate_db)
        self._data_home = os.fspath(data_home) if data_home is not None else None
        self._startup_timeout_s = timeout or 60.0
        self._cwd = os.fspath(cwd) if cwd is not None else None
        self._username = username
        self._password: str | None = secrets.token_urlsafe(24)
        self._owned = True
        self.url: str | None = None
        self.version: tuple[int, int, int] | None = None
        self._transport: Transport | None = None
        self._proc: OwnedProcess | None = None
        self._prepared: PreparedEnvironment | None = None
        self._stderr: collections.deque[str] = collections.deque(maxlen=_STDERR_TAIL_LINES)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._exited: asyncio.Future[int] | None = None
        self._stderr_done: asyncio.Event | None = None
        self._bus = Bus()
        self._closers: set[Closer] = set()
        self._failure: OpenCodeServerError | None = None
        self._failed: asyncio.Event | None = None
        self._state = "new"  # new -> starting -> running -> closed
        self._closing = False
        self._leases = contextlib.AsyncExitStack()
        self.instances = Instances(idle_instances)

    @classmethod
    def attach(cls: type[_S], url: str, *, username: str = "opencode", password: str | None = None) -> _S:
        """Use an existing ``opencode serve`` at ``url`` (started by you, maybe on another machine).

        Nothing is started or ended: :meth:`aclose` only closes this object's sessions and
        connections. ``password=None`` is for a server without a password.
        """
        if not isinstance(url, str) or not re.match(r"^https?://[^/\s]+", url):
            raise OpenCodeConfigError(f"url must be like 'http://host:port', got {url!r}")
        server = cls(username=username)
        server._owned = False
        server._password = password
        server.url = url.rstrip("/")
        return server

    def __repr__(self) -> str:
        owned = "owned" if self._owned else "attached"
        return f"{type(self).__name__}(url={self.url!r}, {owned}, state={self._state!r}, password=***)"

    # ------------------------------------------------------------------ properties

    @property
    def owned(self) -> bool:
        """Whether this object started the server (and ends it)."""
        return self._owned

    @property
    def alive(self) -> bool:
        """Started, not closed, and no failure noticed."""
        return self._state == "running" and self._failure is None

    @property
    def closing(self) -> bool:
        return self._closing or self._state == "closed"

    @property
    def pid(self) -> int | None:
        """PID of the supervisor process that owns opencode and its children (owned servers)."""
        return self._proc.pid if self._proc is not None else None

    @property
    def stderr_tail(self) -> str:
        """The server's last stderr lines (password removed)."""
        return self._scrub("".join(self._stderr))

    @property
    def username(self) -> str:
        return self._username

    @property
    def data_home(self) -> str | None:
        """The ``XDG_DATA_HOME`` given to the server (``None``: a private one, or the user's own)."""
        return self._data_home

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self: _S) -> _S:
        try:
            await self.start()
        except BaseException:
            await self.aclose()
            raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def start(self) -> None:
        """Start (or connect to) the server and its event stream; check its version. Idempotent.

        Raises:
            OpenCodeBinaryNotFoundError: no usable opencode.
            OpenCodeVersionError: opencode is a version this package does not support.
            OpenCodeServerError: opencode exited, did not announce its URL in time, or refused the
                event stream (``status_code == 401``: wrong credentials for an attached server).
        """
        if self._state != "new":
            if self._state == "closed":
                raise OpenCodeError("this OpenCodeServer was closed; create a new one")
            return
        self._state = "starting"
        self._failed = asyncio.Event()
        if self._owned:
            await self._spawn()
        assert self.url is not None
        self._transport = Transport(self.url, username=self._username, password=self._password)
        await self._check_api()
        connected: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._spawn_task(self._run_bus(connected))
        waiters: set[asyncio.Future[Any]] = {connected}
        if self._exited is not None:
            waiters.add(self._exited)
        done, _ = await asyncio.wait(
            waiters, timeout=self._startup_timeout_s, return_when=asyncio.FIRST_COMPLETED
        )
        if connected in done and connected.exception() is None:
            self._state = "running"
            return
        if self._failure is not None:
            raise self._failure
        if connected in done:
            raise connected.exception()  # type: ignore[misc]
        raise self._error(f"the opencode event stream did not connect within {self._startup_timeout_s:g} s")

    async def _check_api(self) -> None:
        assert self._transport is not None and self.url is not None
        self.version = await server_version(self._transport, self.url, self._startup_timeout_s)

    async def _spawn(self) -> None:
        binary = await asyncio.to_thread(_checked_binary, self._binary)
        cwd = self._cwd or os.getcwd()
        cfg = await self._leases.enter_async_context(leased_tools(self.run_cfg))  # released at close
        self._prepared = prepare_environment(
            cfg, cwd=cwd, private_data=self._isolate_db, data_home=self._data_home, prefix="ocw_srv_"
        )
        env = self._prepared.env
        assert self._password is not None
        env["OPENCODE_SERVER_PASSWORD"] = self._password
        env["OPENCODE_SERVER_USERNAME"] = self._username
        proc = await OwnedProcess.start(
            [binary, "serve", "--hostname", "127.0.0.1", "--port", "0"],
            cwd=cwd,
            env=env,
            stdin_data=None,
            cleanup_dirs=self._prepared.temp_dirs,
        )
        self._proc = proc
        loop = asyncio.get_running_loop()
        announced: asyncio.Future[str] = loop.create_future()
        self._exited = loop.create_future()
        self._stderr_done = asyncio.Event()
        self._spawn_task(self._read_stdout(proc, announced))
        self._spawn_task(self._read_stderr(proc))
        self._spawn_task(self._watch(proc))
        waiters: set[asyncio.Future[Any]] = {announced, self._exited}
        done, _ = await asyncio.wait(
            waiters, timeout=self._startup_timeout_s, return_when=asyncio.FIRST_COMPLETED
        )
        if announced in done:
            self.url = announced.result()
            return
        if self._exited in done:
            await self._settle_stderr()
            raise self._error(f"opencode serve exited with code {self._exited.result()} before listening")
        raise self._error(f"opencode serve did not announce its URL within {self._startup_timeout_s:g} s")

    async def aclose(self) -> None:
        """Abort running turns, close sessions, end the process tree, remove temp dirs. Idempotent."""
        if self._state == "closed" or self._closing:
            return
        self._closing = True
        await finish(self._close())

    async def _close(self) -> None:
        was_running = self.alive
        for closer in list(self._closers):
            # Aborts a session's running turn (and deletes it, if it should be) while the server
            # still answers.
            with contextlib.suppress(Exception):
                await closer()
        self._state = "closed"
        if self._owned and was_running and self._transport is not None:
            # Aborts every turn and kills every tool process before the process is signalled.
            with contextlib.suppress(OpenCodeError):
                await self._transport.request("POST", "/global/dispose", timeout_s=_DISPOSE_TIMEOUT_S)
        self._fail_all(
            OpenCodeServerError(exit_code=None, stderr="", message="the OpenCodeServer was closed")
        )
        if self._proc is not None:
            await self._proc.end(_END_GRACE_S)
        for task in list(self._tasks):
            task.cancel()
        pending = list(self._tasks)
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        if self._transport is not None:
            await self._transport.aclose()
        if self._prepared is not None:
            self._prepared.cleanup()
        await self._leases.aclose()  # the tool servers, now that opencode is gone

    def use_directory(self, directory: str) -> None:
        """A session in ``directory`` opened (its instance must stay)."""
        self.instances.use(directory)

    def release_directory(self, directory: str) -> None:
        """A session in ``directory`` ended: dispose idle instances over the limit."""
        for idle in self.instances.release(directory):
            if self.alive:
                self._spawn_task(self._dispose(idle))

    async def _dispose(self, directory: str) -> None:
        if self.instances.in_use(directory) or not self.alive:
            return  # used again meanwhile, or closing anyway
        params = {"directory": directory}
        with contextlib.suppress(OpenCodeError):
            await self.request("POST", "/instance/dispose", params=params, timeout_s=_DISPOSE_TIMEOUT_S)
            self.instances.disposed += 1

    def on_close(self, closer: Closer) -> Callable[[], None]:
        """Run ``closer`` first when the server closes; returns the function that unregisters it."""
        self._closers.add(closer)
        return lambda: self._closers.discard(closer)

    # ------------------------------------------------------------------ requests and events

    def check_usable(self) -> None:
        """Raise unless the server is running (its failure, if it failed)."""
        if self._failure is not None:
            raise self._failure
        if self._state != "running":
            if self._state == "closed":
                raise OpenCodeError("the OpenCodeServer was closed")
            raise OpenCodeError(
                "the OpenCodeServer is not running: use 'async with OpenCodeServer(...)' or call start()"
            )

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        json_body: Any = None,
        timeout_s: float | None = 60.0,
    ) -> Any:
        """One API request; the decoded JSON answer.

        Raises:
            ServerHTTPError: an HTTP error status (with the server's stderr tail for a 5xx).
            OpenCodeServerError: the server failed (why, if it is dying).
        """
        self.check_usable()
        assert self._transport is not None
        try:
            return await self._transport.request(
                method, path, params=params, json_body=json_body, timeout_s=timeout_s
            )
        except ServerHTTPError as exc:
            exc.stderr = self.stderr_tail if exc.status_code >= 500 else ""
            raise
        except OpenCodeServerError as exc:
            # The connection failed: if the server is dying, the watcher says why in a moment.
            failure = await self._wait_failure(_SETTLE_S * 2)
            if failure is not None:
                raise failure from exc
            exc.stderr = self.stderr_tail
            raise

    def subscribe(self, session_id: str) -> Subscription:
        """The events of ``session_id`` from now on (raises if the server is not usable)."""
        self.check_usable()
        return self._bus.subscribe(session_id)

    def unsubscribe(self, sub: Subscription) -> None:
        self._bus.unsubscribe(sub)

    # ------------------------------------------------------------------ background tasks

    def _spawn_task(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _read_stdout(self, proc: OwnedProcess, announced: asyncio.Future[str]) -> None:
        async for raw in iter_lines(proc.stdout):
            line = raw.decode("utf-8", errors="replace")
            if not announced.done():
                match = _LISTENING.search(line)
                if match:
                    announced.set_result(match.group(1))
                    continue
            self._stderr.append(line + "\n")  # nothing else is expected on stdout: keep it as a clue

    async def _read_stderr(self, proc: OwnedProcess) -> None:
        try:
            async for raw in iter_lines(proc.stderr):
                self._stderr.append(raw.decode("utf-8", errors="replace") + "\n")
        finally:
            assert self._stderr_done is not None
            self._stderr_done.set()

    async def _watch(self, proc: OwnedProcess) -> None:
        code = await proc.wait()
        assert self._exited is not None
        if not self._exited.done():
            self._exited.set_result(code)
        if self._state in ("running", "starting"):
            await self._settle_stderr()
            self._fail_all(self._error(f"the opencode server exited unexpectedly ({_describe_exit(code)})"))

    async def _settle_stderr(self) -> None:
        if self._stderr_done is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await wait_within(self._stderr_done.wait(), _SETTLE_S)

    async def _run_bus(self, connected: asyncio.Future[None]) -> None:
        assert self._transport is not None
        try:
            async for payload in self._transport.global_events():
                if not connected.done():
                    connected.set_result(None)
                self._bus.dispatch(payload)
            raise OpenCodeServerError(
                exit_code=None, stderr="", message="the opencode server closed its event stream"
            )
        except asyncio.CancelledError:
            raise
        except OpenCodeServerError as exc:
            if not connected.done():
                connected.set_exception(exc)
            if self._state not in ("running", "starting"):
                return
            if self._exited is not None:
                # A dying process breaks the stream first; wait a moment for the exit status.
                with contextlib.suppress(asyncio.TimeoutError):
                    await wait_within(asyncio.shield(self._exited), _SETTLE_S)
                if self._failure is not None:
                    return
                if self._exited.done():
                    await self._settle_stderr()
                    exc = self._error(
                        f"the opencode server exited unexpectedly ({_describe_exit(self._exited.result())})"
                    )
            if isinstance(exc, ServerHTTPError):
                self._fail_all(exc)
            else:
                self._fail_all(self._error(exc.message or str(exc)))

    # ------------------------------------------------------------------ failures

    def _error(self, message: str) -> OpenCodeServerError:
        code = self._exited.result() if self._exited is not None and self._exited.done() else None
        return OpenCodeServerError(exit_code=code, stderr=self.stderr_tail, message=message)

    def _fail_all(self, error: OpenCodeServerError) -> None:
        if self._failure is None and self._state != "closed":
            self._failure = error
        self._bus.fail_all(self._failure or error)
        if self._failed is not None:
            self._failed.set()

    async def _wait_failure(self, timeout_s: float) -> OpenCodeServerError | None:
        if self._failure is None and self._failed is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await wait_within(self._failed.wait(), timeout_s)
        return self._failure

    def _scrub(self, text: str) -> str:
        if self._password:
            text = text.replace(self._password, "***")
        return text


def _checked_binary(binary: str) -> str:
    path = resolve_binary(binary)
    check_version(path)
    return path


def _describe_exit(code: int) -> str:
    if code < 0:
        return f"killed by signal {-code}"
    if code > 128:
        return f"exit status {code} (signal {code - 128}?)"
    return f"exit status {code}"
