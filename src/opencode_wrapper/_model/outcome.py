"""What a run ends with: the :class:`RunResult` value, and the exceptions that carry it.

They live together because each needs the other: every exception about a run carries the run's
(partial) result, and ``RunResult.raise_for_error()`` raises the exception its error calls for.
``opencode_wrapper.errors`` and ``opencode_wrapper.results`` are the public faces of this module.

Every exception survives a pickle round trip (it may cross a worker process or a cluster), with
its result.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from opencode_wrapper._isolation.changes import Changes
from opencode_wrapper._model.errors_base import (
    OpenCodeBinaryNotFoundError,
    OpenCodeConfigError,
    OpenCodeError,
    OpenCodeVersionError,
)
from opencode_wrapper._model.event import Event, TokenUsage, ToolCall, as_event
from opencode_wrapper._model.fold import Fold
from opencode_wrapper._model.run_error import PermissionRejection, RunError, Verification

__all__ = [
    "OpenCodeBinaryNotFoundError",
    "OpenCodeCancelledError",
    "OpenCodeConfigError",
    "OpenCodeError",
    "OpenCodeProcessError",
    "OpenCodeRunError",
    "OpenCodeServerError",
    "OpenCodeTimeoutError",
    "OpenCodeVersionError",
    "RunResult",
    "ServerHTTPError",
    "exception_for",
    "raise_for_run",
]


@dataclass
class RunResult:
    """The outcome of one run (``async_run``) or one session turn (``send``).

    Seed-compatible fields (``events``, ``final_text``, ``tool_calls``, ``exit_code``, ``stderr``,
    ``raw_stdout_lines``, ``token_usage``, ``total_cost``, ``turns``, ``session_id``) plus the
    truth about success: ``ok`` and ``error``.

    Attributes:
        events: every event of the run, in order (typed dicts).
        final_text: the answer: the text of the run's last model step.
        tool_calls: one :class:`ToolCall` per tool call, in its last state.
        exit_code: ``opencode run``'s exit status (run mode; ``0`` on a server).
        turns: the number of model steps.
        error: why the run did not succeed, or ``None``.
        structured: the validated structured output, when one was requested.
        permission_rejections: tool permissions refused during the run.
        changes: what an isolated run (``isolation="worktree"``/``"copy"``) changed: its diff,
            files and branch; ``None`` for a run that was not isolated.
        verification: how the run's ``verify=`` check went (``None``: none was asked for, or the
            run failed before it).
    """

    events: list[Event] = field(default_factory=list)
    final_text: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    exit_code: int | None = None
    stderr: str = ""
    raw_stdout_lines: list[str] = field(default_factory=list)
    token_usage: TokenUsage = field(default_factory=TokenUsage)
    total_cost: float = 0.0
    turns: int = 0
    session_id: str | None = None
    error: RunError | None = None
    structured: Any = None
    permission_rejections: list[PermissionRejection] = field(default_factory=list)
    changes: Changes | None = None
    verification: Verification | None = None
    _fold: Fold | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Results built by hand (seed code, tests) may hold plain dicts: give them the typed view.
        self.events = [ev if isinstance(ev, Event) else as_event(ev) for ev in self.events]
        self.tool_calls = [c if isinstance(c, ToolCall) else ToolCall(c) for c in self.tool_calls]

    @classmethod
    def from_fold(cls, fold: Fold, **extra: Any) -> RunResult:
        """The result of the events ``fold`` has seen, with ``extra`` fields set over them."""
        values = fold.fields()
        values.update(extra)
        return cls(**values)

    @property
    def ok(self) -> bool:
        """``True`` only when the run finished without any error."""
        return self.error is None

    @property
    def tools(self) -> list[str]:
        """The name of each tool called, in order (run mode and sessions alike)."""
        return [name for name in (call.name for call in self.tool_calls) if name]

    @property
    def texts(self) -> list[str]:
        """Every finished text part of the run, in order (``final_text`` is only the last step's)."""
        return [text for text in (ev.text for ev in self.events if ev.kind == "text") if text]

    def append_event(self, ev: dict[str, Any]) -> None:
        """Fold one event into the result (seed API); the derived fields follow it."""
        if self._fold is None:
            self._fold = Fold(session_id=self.session_id)
            for earlier in self.events:
                self._fold.add(earlier)
        self._fold.add(ev if isinstance(ev, Event) else as_event(ev))
        for name, value in self._fold.fields().items():
            if name == "error" and self.error is not None:
                continue
            if name == "structured" and value is None:
                continue
            setattr(self, name, value)

    def raise_for_error(self) -> RunResult:
        """Raise the exception for ``error`` (any kind); return the result itself when it is ok.

        ``OpenCodeTimeoutError`` for ``timeout``, ``OpenCodeCancelledError`` for ``cancelled``,
        ``OpenCodeServerError`` for ``server_failure``, ``OpenCodeProcessError`` for opencode,
        provider and session errors, and :class:`OpenCodeRunError` for the agent's own outcomes
        (``permission_rejected``, ``aborted``, ``limit_exceeded``, ...). Each carries this result.
        """
        exc = exception_for(self)
        if exc is not None:
            raise exc
        return self


class OpenCodeRunError(OpenCodeError):
    """A run or turn did not succeed; ``result`` holds what it did and ``error`` says why.

    Raised as such by ``result.raise_for_error()`` for the agent's own outcomes (a refused
    permission, an abort, a limit...); its subclasses are what the run entry points raise.
    """

    result: RunResult | None

    def __init__(self, message: str, *, result: RunResult | None = None) -> None:
        super().__init__(message)
        self.result = result

    @property
    def error(self) -> RunError | None:
        return self.result.error if self.result is not None else None

    @property
    def retryable(self) -> bool:
        """Whether running again from a fresh start can help (see :attr:`RunError.retryable`)."""
        error = self.error
        return bool(error is not None and error.retryable)


class OpenCodeProcessError(OpenCodeRunError):
    """``opencode`` exited with a non-zero status, its model provider or session reported an error,
    or its server failed.

    Attributes:
        exit_code: the process exit status (negative: killed by that signal), or ``None``.
        stderr: what the process wrote to stderr (the tail, for a server).
        events: the events received before the failure.
        raw_stdout_lines: the stdout lines received before the failure (run mode).
        result: the run's result so far, with ``result.error`` saying why it failed.
    """

    def __init__(
        self,
        exit_code: int | None,
        stderr: str,
        events: list[Any] | None = None,
        raw_stdout_lines: list[str] | None = None,
        *,
        result: RunResult | None = None,
        message: str | None = None,
    ) -> None:
        self.exit_code = exit_code
        self.stderr = stderr
        self.events = list(events or [])
        self.raw_stdout_lines = list(raw_stdout_lines or [])
        self.message = message
        super().__init__("", result=result)
        self.args = (str(self),)

    def __str__(self) -> str:
        parts = [self.message or f"opencode exited with code {self.exit_code!r}"]
        if self.result is not None and self.result.error is not None and self.message is None:
            parts.append(f"cause: {self.result.error}")
        if self.stderr.strip():
            parts.append(f"stderr (tail):\n{self.stderr.strip()[-2000:]}")
        return "\n".join(parts)


class OpenCodeServerError(OpenCodeProcessError):
    """The ``opencode serve`` process died, refused a request, or its event stream broke."""


class ServerHTTPError(OpenCodeServerError):
    """The server answered a request with an HTTP error status.

    Attributes:
        status_code: the HTTP status (401: wrong credentials, 404: no such session...).
        body: the response body (opencode's JSON error, as text; at most 1000 characters).
    """

    def __init__(self, message: str, *, status_code: int, body: str, stderr: str = "") -> None:
        self.status_code = status_code
        self.body = body
        super().__init__(exit_code=None, stderr=stderr, message=message)


class OpenCodeTimeoutError(OpenCodeRunError, TimeoutError):
    """The run or turn did not finish within its ``timeout_s``; everything it started was ended.

    Attributes:
        timeout_s: the timeout that expired.
        result: what the run produced before the timeout (``result.error.kind == "timeout"``).
    """

    def __init__(self, message: str, *, timeout_s: float | None = None, result: RunResult | None = None):
        super().__init__(message, result=result)
        self.timeout_s = timeout_s


class OpenCodeCancelledError(OpenCodeRunError):
    """opencode was stopped from outside (SIGINT/SIGTERM/SIGHUP); everything it started was ended.

    (Cancelling the asyncio task that awaits a run raises ``asyncio.CancelledError`` as usual,
    after the process tree is ended.)
    """


def exception_for(result: RunResult) -> OpenCodeRunError | None:
    """The exception ``result.raise_for_error()`` raises (``None`` when the result is ok)."""
    error = result.error
    if error is None:
        return None
    kind = error.kind
    if kind == "timeout":
        timeout = error.detail.get("timeout_s")
        return OpenCodeTimeoutError(
            f"the run exceeded timeout_s={timeout!r}: {error.message}",
            timeout_s=timeout if isinstance(timeout, (int, float)) else None,
            result=result,
        )
    if kind == "cancelled":
        return OpenCodeCancelledError(f"the run was stopped: {error.message}", result=result)
    if kind in ("api_error", "error_event", "process_exit", "session_error", "internal_error"):
        return OpenCodeProcessError(
            exit_code=result.exit_code,
            stderr=result.stderr,
            events=result.events,
            raw_stdout_lines=result.raw_stdout_lines,
            result=result,
            message=None if kind == "process_exit" and result.exit_code not in (0, None) else str(error),
        )
    if kind == "server_failure":
        return OpenCodeServerError(
            exit_code=None, stderr=result.stderr, events=result.events, result=result, message=error.message
        )
    return OpenCodeRunError(f"the run did not succeed: {error}", result=result)


def raise_for_run(result: RunResult) -> RunResult:
    """The run entry points' policy: raise for the kinds they raise (``RunError.raised``), else return."""
    if result.error is not None and result.error.raised:
        exc = exception_for(result)
        assert exc is not None
        raise exc
    return result


# Shown (and pickled) under the public modules that export them.
for _exported in (
    OpenCodeError,
    OpenCodeBinaryNotFoundError,
    OpenCodeVersionError,
    OpenCodeConfigError,
    OpenCodeRunError,
    OpenCodeProcessError,
    OpenCodeServerError,
    ServerHTTPError,
    OpenCodeTimeoutError,
    OpenCodeCancelledError,
):
    _exported.__module__ = "opencode_wrapper.errors"
RunResult.__module__ = "opencode_wrapper.results"
