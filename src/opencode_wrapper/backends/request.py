"""``RunRequest``: everything one run needs, validated once, before anything starts.

Every entry point (``async_run``, ``async_stream``, ``OpenCodeServer.run``, ``ServerPool.run``,
a session turn, a ``run_many`` task) builds one with :meth:`RunRequest.create` and hands it to a
backend. A backend then honours each option or refuses it (``Backend.check``), also before
anything starts; no option is ever dropped on the way.
"""

from __future__ import annotations

import mimetypes
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

from opencode_wrapper._isolation.options import check_options
from opencode_wrapper._observers import EventCallback
from opencode_wrapper._proc.environment import check_data_home
from opencode_wrapper._turn.callbacks import (
    DEFAULT_CALLBACK_TIMEOUT_S,
    PermissionCallback,
    QuestionCallback,
    check_callback,
)
from opencode_wrapper._turn.structured import StructuredSpec, structured_spec
from opencode_wrapper._validation import (
    check_non_negative,
    check_prompt,
    check_timeout,
    check_type_names,
    check_workspace,
)
from opencode_wrapper.backends.verify import DEFAULT_VERIFY_TIMEOUT_S, VerifySpec, check_verify
from opencode_wrapper.config import RunConfig, validate_config
from opencode_wrapper.errors import OpenCodeConfigError
from opencode_wrapper.hooks import Hooks
from opencode_wrapper.limits import Limits

__all__ = ["ONE_SHOT_TITLE", "RunOptions", "RunRequest", "RunSettings"]

#: The title of the session a one-shot run uses: a titled session costs no title request to the
#: model (opencode would otherwise ask the model for one; nobody sees it).
ONE_SHOT_TITLE = "opencode-wrapper one-shot run"


class RunSettings(TypedDict, total=False):
    """The options of a run that are data, not callbacks (``RunOptions`` adds the callbacks)."""

    run_cfg: RunConfig | None
    timeout_s: float | None
    log_file: str | os.PathLike[str] | None
    log_exclude_types: Iterable[str] | None
    data_home: str | os.PathLike[str] | None
    max_retries: int | None
    retry_delay_s: float | None
    files: Sequence[str | os.PathLike[str]] | None
    output_schema: Any
    callback_timeout_s: float | None
    title: str | None
    limits: Limits | None
    isolation: str | None
    keep: str | None
    base: str | None
    verify: VerifySpec | None
    verify_timeout_s: float | None
    hooks: Hooks | None


class RunOptions(RunSettings, total=False):
    """The options every run entry point takes as keyword arguments (see :class:`RunRequest`)."""

    on_event: EventCallback | None
    on_permission: PermissionCallback | None
    on_question: QuestionCallback | None


@dataclass(frozen=True)
class RunRequest:
    """One run: the prompt, where, how, and who watches it. Build it with :meth:`create`.

    Attributes:
        prompt: the message, sent to the model byte for byte.
        workspace: the absolute, resolved workspace directory.
        config: the run's :class:`RunConfig` (already merged over any base config).
        timeout_s: end the run after this many seconds (error kind ``timeout``).
        log_file: where each event goes as a JSON line (0600), or ``None``.
        log_exclude_types: event types kept out of ``log_file``.
        on_event: called with each event as it arrives.
        data_home: an ``XDG_DATA_HOME`` to use (shared history) instead of a private one.
        max_retries: extra attempts after opencode crashed while starting, before the model was
            called (so a prompt is never sent twice).
        retry_delay_s: pause between those attempts.
        files: files or directories to attach (absolute paths).
        structured: the requested structured output, if any.
        on_permission, on_question: callbacks answering opencode's requests (warm backends).
        callback_timeout_s: how long a callback may take before its request is rejected.
        title: the session's title (``None``: the one-shot title, so no title request is made).
        limits: per-run ceilings (cost, tokens, steps, silence); crossing one ends the run.
        isolation: ``"none"``, ``"worktree"`` (a git worktree of the workspace's repository on a
            new branch) or ``"copy"`` (a private copy): the agent works there, and the result's
            ``changes`` say what it changed.
        keep: what of an isolated run stays: ``"never"``, ``"on_change"``, ``"always"``.
        base: the commit-ish an isolated worktree starts from (default ``HEAD``).
        name: a readable name for the run (isolated branches and directories use it).
        verify: a check after the agent, in its workspace: a shell command (passes on exit 0) or a
            callable (see ``backends.verify``); a failed check makes ``verification_failed``.
        verify_timeout_s: how long the check may take (default 600 s).
        hooks: tool hooks (``before_tool`` needs a warm backend); ``config`` then asks opencode to
            ask permission for the tools they match (see :class:`~opencode_wrapper.Hooks`).
        user_permission: the caller's own ``permission`` map (``config``'s may carry the hooks').
        given: the options the caller gave explicitly (a backend refuses only those it cannot honour).
    """

    prompt: str
    workspace: str
    config: RunConfig
    timeout_s: float | None = None
    log_file: str | None = None
    log_exclude_types: frozenset[str] = frozenset()
    on_event: EventCallback | None = None
    data_home: str | None = None
    max_retries: int = 2
    retry_delay_s: float = 1.0
    files: tuple[str, ...] = ()
    structured: StructuredSpec | None = None
    on_permission: PermissionCallback | None = None
    on_question: QuestionCallback | None = None
    callback_timeout_s: float | None = DEFAULT_CALLBACK_TIMEOUT_S
    title: str | None = None
    limits: Limits | None = None
    isolation: str = "none"
    keep: str = "on_change"
    base: str | None = None
    name: str | None = None
    verify: VerifySpec | None = None
    verify_timeout_s: float | None = DEFAULT_VERIFY_TIMEOUT_S
    hooks: Hooks | None = None
    user_permission: Any = None
    given: frozenset[str] = frozenset()

    @classmethod
    def create(
        cls,
        prompt: object,
        workspace: object,
        *,
        run_cfg: RunConfig | None = None,
        timeout_s: object = None,
        log_file: str | os.PathLike[str] | None = None,
        log_exclude_types: Iterable[str] | None = None,
        on_event: EventCallback | None = None,
        data_home: str | os.PathLike[str] | None = None,
        max_retries: object = None,
        retry_delay_s: object = None,
        files: Sequence[str | os.PathLike[str]] | None = None,
        output_schema: object = None,
        on_permission: PermissionCallback | None = None,
        on_question: QuestionCallback | None = None,
        callback_timeout_s: object = DEFAULT_CALLBACK_TIMEOUT_S,
        title: str | None = None,
        limits: Limits | None = None,
        isolation: str | None = None,
        keep: str | None = None,
        base: str | None = None,
        name: str | None = None,
        verify: VerifySpec | None = None,
        verify_timeout_s: object = DEFAULT_VERIFY_TIMEOUT_S,
        hooks: Hooks | None = None,
        workspace_is_local: bool = True,
    ) -> RunRequest:
        """Check every argument; raise :class:`OpenCodeConfigError` naming the first bad one.

        ``None`` for an option means "not given" (its default applies). ``workspace_is_local=False``
        (for a backend whose workspaces live elsewhere, ``Backend.local_workspaces``) skips the
        check that the workspace exists here.
        """
        given = {
            name
            for name, value in (
                ("log_file", log_file),
                ("on_event", on_event),
                ("data_home", data_home),
                ("max_retries", max_retries),
                ("retry_delay_s", retry_delay_s),
                ("files", files),
                ("output_schema", output_schema),
                ("on_permission", on_permission),
                ("on_question", on_question),
                ("title", title),
                ("limits", limits),
                ("isolation", isolation),
                ("keep", keep),
                ("base", base),
                ("verify", verify),
                ("hooks", hooks),
                ("timeout_s", timeout_s),
            )
            if value is not None
        }
        check_prompt(prompt)
        assert isinstance(prompt, str)
        cfg = RunConfig() if run_cfg is None else run_cfg
        validate_config(cfg, allow_ask=True)
        if log_file is not None and not isinstance(log_file, (str, os.PathLike)):
            raise OpenCodeConfigError(f"log_file must be a path or None, got {log_file!r}")
        if on_event is not None and not callable(on_event):
            raise OpenCodeConfigError(
                f"on_event must be a callable taking one event, or None, got {on_event!r}"
            )
        check_callback(on_permission, "on_permission")
        check_callback(on_question, "on_question")
        if title is not None and (not isinstance(title, str) or not title.strip()):
            raise OpenCodeConfigError(f"title must be a non-empty string or None, got {title!r}")
        if limits is not None and not isinstance(limits, Limits):
            raise OpenCodeConfigError(
                f"limits must be a Limits(...) or None, got {type(limits).__name__} {limits!r}"
            )
        isolation = "none" if isolation is None else isolation
        keep = "on_change" if keep is None else keep
        check_options(isolation, keep=keep, base=base)
        check_verify(verify)
        if hooks is not None and not isinstance(hooks, Hooks):
            raise OpenCodeConfigError(
                f"hooks must be a Hooks(...) or None, got {type(hooks).__name__} {hooks!r}"
            )
        if name is not None and (not isinstance(name, str) or not name.strip()):
            raise OpenCodeConfigError(f"name must be a non-empty string or None, got {name!r}")
        retries = 2 if max_retries is None else max_retries
        check_non_negative(retries, "max_retries", integer=True)
        delay = 1.0 if retry_delay_s is None else retry_delay_s
        check_non_negative(delay, "retry_delay_s")
        return cls(
            prompt=prompt,
            workspace=check_workspace(workspace, must_exist=workspace_is_local),
            config=hooks.server_config(cfg) if hooks is not None else cfg,
            timeout_s=check_timeout(timeout_s),
            log_file=os.fspath(log_file) if log_file is not None else None,
            log_exclude_types=check_type_names(log_exclude_types, "log_exclude_types"),
            on_event=on_event,
            data_home=os.fspath(check_data_home(data_home)) if data_home is not None else None,
            max_retries=int(retries),  # type: ignore[call-overload]
            retry_delay_s=float(delay),  # type: ignore[arg-type]
            files=_files(files),
            structured=structured_spec(output_schema) if output_schema is not None else None,
            on_permission=on_permission,
            on_question=on_question,
            callback_timeout_s=check_timeout(callback_timeout_s, "callback_timeout_s"),
            title=title,
            limits=limits,
            isolation=isolation,
            keep=keep,
            base=base,
            name=name,
            verify=verify,
            verify_timeout_s=check_timeout(verify_timeout_s, "verify_timeout_s"),
            hooks=hooks,
            user_permission=cfg.permission,
            given=frozenset(given),
        )

    @property
    def session_title(self) -> str:
        return self.title or ONE_SHOT_TITLE

    def file_parts(self) -> list[dict[str, Any]]:
        """The attached files as server prompt parts (opencode inlines them into the prompt)."""
        parts = []
        for item in self.files:
            path = Path(item)
            mime = (
                "application/x-directory"
                if path.is_dir()
                else mimetypes.guess_type(path.name)[0] or "text/plain"
            )
            parts.append({"type": "file", "mime": mime, "filename": path.name, "url": path.as_uri()})
        return parts


def _files(files: Sequence[str | os.PathLike[str]] | None) -> tuple[str, ...]:
    if files is None:
        return ()
    if isinstance(files, (str, bytes, os.PathLike)):
        raise OpenCodeConfigError(f"files must be a list of paths, not a single path {files!r}")
    resolved = []
    for item in files:
        if not isinstance(item, (str, os.PathLike)):
            raise OpenCodeConfigError(f"files must contain paths (str or os.PathLike), got {item!r}")
        path = Path(os.fspath(item)).expanduser().resolve()
        if not path.exists():
            raise OpenCodeConfigError(f"file to attach {os.fspath(item)!r} does not exist")
        resolved.append(str(path))
    return tuple(resolved)
