"""``OpenCodeServer``: one ``opencode serve`` process (or an existing server) shared by sessions and runs.

An owned server is started like a run-mode process (same config injection and user-config
isolation, a private data dir by default) under the process-tree supervisor, listens on
127.0.0.1 only, and is always protected by a random password; see
:class:`~opencode_wrapper._server.base.ServerBase` for the process, its event bus and failures.
This class adds what users do on a server: sessions (:meth:`OpenCodeServer.session`) and one-shot
runs (:meth:`OpenCodeServer.run`, :meth:`OpenCodeServer.stream`), both thin uses of the
:class:`~opencode_wrapper.backends.server.ServerBackend`.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterable
from typing import TYPE_CHECKING, Any

from opencode_wrapper._model.event import Event
from opencode_wrapper._model.outcome import RunResult
from opencode_wrapper._server.base import ServerBase
from opencode_wrapper._turn.callbacks import DEFAULT_CALLBACK_TIMEOUT_S, PermissionCallback, QuestionCallback
from opencode_wrapper.backends.base import run_request, stream_request
from opencode_wrapper.backends.request import RunOptions, RunRequest
from opencode_wrapper.backends.server import ServerBackend
from opencode_wrapper.config import RunConfig
from opencode_wrapper.errors import OpenCodeError
from opencode_wrapper.hooks import Hooks
from opencode_wrapper.session import OpenCodeSession

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["DEFAULT_CALLBACK_TIMEOUT_S", "OpenCodeServer"]


class OpenCodeServer(ServerBase):
    """An ``opencode serve`` process owned by this object, or an existing server (:meth:`attach`).

    Use ``async with OpenCodeServer(run_cfg=cfg) as server:`` and open sessions on it with
    :meth:`session`, or run one-shot prompts with :meth:`run`; leaving the block aborts running
    turns, ends the process and every process it started, and removes its temp dirs.

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
    """

    def session(
        self,
        workspace: str | os.PathLike[str],
        *,
        run_cfg: RunConfig | None = None,
        on_permission: PermissionCallback | None = None,
        on_question: QuestionCallback | None = None,
        timeout_s: float | None = None,
        log_file: str | os.PathLike[str] | None = None,
        log_exclude_types: Iterable[str] | None = None,
        session_id: str | None = None,
        callback_timeout_s: float | None = DEFAULT_CALLBACK_TIMEOUT_S,
        delete_on_exit: bool | None = None,
        title: str | None = None,
        hooks: Hooks | None = None,
    ) -> OpenCodeSession:
        """A session on this server in ``workspace``, to use as ``async with server.session(ws) as s``.

        Arguments are those of :class:`~opencode_wrapper.OpenCodeSession`, plus:

        Args:
            session_id: resume this existing opencode session (its history is kept) instead of
                creating one.
            delete_on_exit: delete the opencode session when the block ends. Default: ``True``
                for a new session, ``False`` for a resumed one. Pass ``False`` to resume it later.

        ``run_cfg`` gives the session's ``model``/``agent``/``tools``; a field that configures the
        server (``permission``, ``mcp``...) and differs from the server's own is refused.
        """
        if self.closing:
            raise OpenCodeError("the OpenCodeServer is closing")
        return OpenCodeSession(
            None,
            workspace,
            run_cfg=run_cfg,
            timeout_s=timeout_s,
            on_permission=on_permission,
            on_question=on_question,
            log_file=log_file,
            log_exclude_types=log_exclude_types,
            session_id=session_id,
            callback_timeout_s=callback_timeout_s,
            delete_on_exit=delete_on_exit,
            title=title,
            hooks=hooks,
            _server=self,
        )

    def _request(self, prompt: str, workspace: str | os.PathLike[str], options: dict[str, Any]) -> RunRequest:
        # The server's own config is the base: a run changes model/agent/tools over it.
        options["run_cfg"] = self.run_cfg.merged_with(options.get("run_cfg"))
        return RunRequest.create(prompt, workspace, **options)

    async def run(
        self, prompt: str, workspace: str | os.PathLike[str], **options: Unpack[RunOptions]
    ) -> RunResult:
        """One prompt in a fresh session (deleted afterwards), with the options, result and errors of
        ``async_run``.

        Permission requests and questions go to ``on_permission``/``on_question`` (none: they
        are rejected, as ``opencode run`` does); ``output_schema`` and ``files`` work as for
        :meth:`OpenCodeSession.send`.
        """
        return await run_request(ServerBackend(self), self._request(prompt, workspace, dict(options)))

    def stream(
        self, prompt: str, workspace: str | os.PathLike[str], **options: Unpack[RunOptions]
    ) -> AsyncIterator[Event]:
        """:meth:`run`, yielding the events live (text deltas included); raises like it at the end."""
        return stream_request(ServerBackend(self), self._request(prompt, workspace, dict(options)))
