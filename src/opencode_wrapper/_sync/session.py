"""``sync.Session``: an ``OpenCodeSession`` driven from a client's loop thread."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from types import TracebackType
from typing import Any

from opencode_wrapper._sync.callbacks import SyncPermissionCallback, SyncQuestionCallback, as_async_callback
from opencode_wrapper._sync.client import Client, default_client
from opencode_wrapper._sync.loop import Call
from opencode_wrapper._sync.streams import EventStream, Relay, Source
from opencode_wrapper.config import RunConfig
from opencode_wrapper.errors import OpenCodeConfigError
from opencode_wrapper.events import RunResult
from opencode_wrapper.server import DEFAULT_CALLBACK_TIMEOUT_S
from opencode_wrapper.session import OpenCodeSession

__all__ = ["Session"]

_UNSET: Any = object()


class Session:
    """The blocking twin of :class:`~opencode_wrapper.OpenCodeSession`: ``with Session(client, ws) as s:``.

    Arguments are those of ``OpenCodeSession`` (checked now), with ``client`` a ``sync.Client``
    (``None``: ``sync.default_client()``). ``on_permission``/``on_question`` may be plain
    functions (each call runs in a worker thread of its own, so it may wait for a human, within
    ``callback_timeout_s``) or ``async def`` functions (run on the client's loop: they must not
    block, nor call the sync API). Entering the block starts the session's private server;
    leaving it (or :meth:`close`, or closing the client) aborts a running turn, deletes the
    session and ends the server with every process it started.

    One turn runs at a time (:meth:`send` or :meth:`stream`); :meth:`abort` may be called from
    any other thread (a watchdog, a plain callback) while a turn runs.
    """

    def __init__(
        self,
        client: Client | None,
        workspace: str | os.PathLike[str],
        *,
        run_cfg: RunConfig | None = None,
        timeout_s: float | None = None,
        on_permission: SyncPermissionCallback | None = None,
        on_question: SyncQuestionCallback | None = None,
        log_file: str | os.PathLike[str] | None = None,
        log_exclude_types: Iterable[str] | None = None,
        session_id: str | None = None,
        callback_timeout_s: float | None = DEFAULT_CALLBACK_TIMEOUT_S,
        delete_on_exit: bool | None = None,
        title: str | None = None,
    ) -> None:
        if client is not None and not isinstance(client, Client):
            raise OpenCodeConfigError(
                f"client must be a sync.Client or None (the default client), got {client!r}"
            )
        self._client = client if client is not None else default_client()
        self._aio = OpenCodeSession(
            self._client._aio,
            workspace,
            run_cfg=run_cfg,
            timeout_s=timeout_s,
            on_permission=as_async_callback(on_permission, "on_permission"),
            on_question=as_async_callback(on_question, "on_question"),
            log_file=log_file,
            log_exclude_types=log_exclude_types,
            session_id=session_id,
            callback_timeout_s=callback_timeout_s,
            delete_on_exit=delete_on_exit,
            title=title,
        )
        self._entered = False

    def __repr__(self) -> str:
        return f"sync.{self._aio!r}"

    @property
    def session_id(self) -> str | None:
        """The opencode session's id (once open)."""
        return self._aio.session_id

    @property
    def workspace(self) -> str:
        """The session's directory (absolute)."""
        return self._aio.workspace

    def __enter__(self) -> Session:
        aio, owned = self._aio, self._client._owned

        async def open_session(call: Call[None]) -> None:
            await aio.__aenter__()
            owned.sessions.add(aio)

        self._entered = True
        self._client._submit(open_session).result()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Abort a running turn, delete the session (see ``delete_on_exit``), end its server.

        Idempotent. Waits for all of it, through a first Ctrl-C (re-raised afterwards).
        """
        if self._client.closed:
            return  # closing the client closed its sessions
        aio, owned = self._aio, self._client._owned

        async def close_session(call: Call[None]) -> None:
            owned.sessions.discard(aio)
            await aio.aclose()

        self._client._submit(close_session).result(cancel_on_interrupt=False)

    def send(
        self,
        prompt: str,
        *,
        run_cfg: RunConfig | None = None,
        timeout_s: float | None = _UNSET,
        on_permission: SyncPermissionCallback | None = _UNSET,
        on_question: SyncQuestionCallback | None = _UNSET,
        files: Sequence[str | os.PathLike[str]] | None = None,
        output_schema: Any = None,
    ) -> RunResult:
        """``OpenCodeSession.send``, blocking: one turn and its result; the same arguments and errors."""
        options = _turn_options(run_cfg, timeout_s, on_permission, on_question, files, output_schema)
        aio = self._require_entered("send")
        return self._client._submit(lambda call: aio.send(prompt, **options)).result()

    def stream(
        self,
        prompt: str,
        *,
        run_cfg: RunConfig | None = None,
        timeout_s: float | None = _UNSET,
        on_permission: SyncPermissionCallback | None = _UNSET,
        on_question: SyncQuestionCallback | None = _UNSET,
        files: Sequence[str | os.PathLike[str]] | None = None,
        output_schema: Any = None,
    ) -> EventStream:
        """``OpenCodeSession.stream`` as a plain iterator (text deltas included), then ``.result``.

        Arguments and errors as for :meth:`send`; errors are raised by the iteration. Unlike the
        async ``TurnStream``, closing the stream before its end (``close()``, leaving ``with``,
        garbage collection) aborts the turn.
        """
        options = _turn_options(run_cfg, timeout_s, on_permission, on_question, files, output_schema)
        aio = self._require_entered("stream")

        async def prepare(call: Call[Source]) -> Source:
            turn = aio.stream(prompt, **options)
            return Source(turn.handle, turn)

        return EventStream(self._client, prepare, Relay(None))

    def abort(self) -> None:
        """``OpenCodeSession.abort``: stop the running turn, if any; the session stays usable."""
        aio = self._require_entered("abort")
        self._client._submit(lambda call: aio.abort()).result()

    def _require_entered(self, method: str) -> OpenCodeSession:
        if not self._entered:
            raise RuntimeError(
                f"sync.Session.{method}() must be called inside 'with sync.Session(...) as s:'"
            )
        return self._aio


def _turn_options(
    run_cfg: RunConfig | None,
    timeout_s: object,
    on_permission: object,
    on_question: object,
    files: Sequence[str | os.PathLike[str]] | None,
    output_schema: object,
) -> dict[str, Any]:
    """The keyword arguments for the async turn: only those given (the session's defaults apply
    to the others), with plain callbacks made async."""
    options: dict[str, Any] = {"run_cfg": run_cfg, "files": files, "output_schema": output_schema}
    if timeout_s is not _UNSET:
        options["timeout_s"] = timeout_s
    if on_permission is not _UNSET:
        options["on_permission"] = as_async_callback(on_permission, "on_permission")
    if on_question is not _UNSET:
        options["on_question"] = as_async_callback(on_question, "on_question")
    return options
