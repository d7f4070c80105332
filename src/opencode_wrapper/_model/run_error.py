"""Why a run did not succeed: :class:`RunError`, its kinds, and whether a retry can help."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from opencode_wrapper._model.event import EventError

__all__ = [
    "ERROR_KINDS",
    "RAISED_KINDS",
    "Attempt",
    "ErrorKind",
    "PermissionRejection",
    "RunError",
    "Verification",
]

ErrorKind = Literal[
    "api_error",
    "error_event",
    "process_exit",
    "session_error",
    "server_failure",
    "timeout",
    "cancelled",
    "aborted",
    "permission_rejected",
    "question_rejected",
    "callback_error",
    "structured_output",
    "budget_exhausted",
    "limit_exceeded",
    "stalled",
    "verification_failed",
    "internal_error",
]
ERROR_KINDS: tuple[str, ...] = get_args(ErrorKind)

#: Kinds that the run entry points (``async_run``, ``async_stream``, ``OpenCodeServer.run``,
#: ``ServerPool.run``, ``OpenCodeSession.send``/``stream``) raise as exceptions, as the seed
#: package did: opencode, its provider or its server failed, the run timed out, or somebody stopped
#: opencode from outside. The other kinds are outcomes of the agent's own work (a refused
#: permission, a dismissed question, an abort or a limit you asked for, an output that does not
#: match its schema) and come back as ``result.error``; ``result.raise_for_error()`` raises those too.
RAISED_KINDS: frozenset[str] = frozenset(
    {
        "api_error",
        "error_event",
        "process_exit",
        "session_error",
        "server_failure",
        "timeout",
        "cancelled",
        "internal_error",
    }
)

# Worth retrying from a fresh start: the cause is outside the agent and usually passes.
_RETRYABLE_STATUS = frozenset({408, 409, 425, 429})
_RETRYABLE_KINDS = frozenset({"server_failure"})


@dataclass
class RunError:
    """Why a run or turn did not succeed.

    Attributes:
        kind: the category (see the README's table of error kinds): ``api_error`` (the model
            provider answered with an HTTP error or could not be reached), ``error_event`` /
            ``session_error`` (opencode reported another error), ``process_exit`` (opencode exited
            non-zero without saying why), ``server_failure`` (the server died or its stream broke),
            ``timeout``, ``cancelled``, ``aborted``, ``permission_rejected``, ``question_rejected``,
            ``callback_error``, ``structured_output``, ``budget_exhausted``, ``limit_exceeded``,
            ``stalled``, ``verification_failed``, ``internal_error``.
        message: a human-readable explanation.
        status_code: the provider's HTTP status, for ``api_error``.
        name: opencode's error name (``APIError``, ``UnknownError``, ...), when it gave one.
        detail: the raw error object or extra data.
        retryable: whether running the task again from a fresh start can help (rate limits,
            provider 5xx, connection failures, a server that died, opencode start-up crashes); not
            for bad credentials, bad config, unknown models or agents, refused permissions, limits.
            Derived from the kind unless given.
    """

    kind: ErrorKind
    message: str
    status_code: int | None = None
    name: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    retryable: bool = None  # type: ignore[assignment]  # None: derived in __post_init__

    def __post_init__(self) -> None:
        if self.kind not in ERROR_KINDS:
            raise ValueError(f"RunError kind {self.kind!r} is not one of {list(ERROR_KINDS)}")
        if self.retryable is None:
            self.retryable = self._derived_retryable()

    def _derived_retryable(self) -> bool:
        if self.kind in _RETRYABLE_KINDS:
            return True
        if self.kind in ("api_error", "error_event"):
            status = self.status_code
            if status is not None:
                return status in _RETRYABLE_STATUS or status >= 500
            flagged = (
                self.detail.get("data", {}).get("isRetryable") if isinstance(self.detail, dict) else None
            )
            if isinstance(flagged, bool):
                return flagged
            # No status: the provider could not be reached (refused, reset, cut mid-stream).
            return self.name == "APIError"
        return False

    @property
    def retry_after_s(self) -> float | None:
        """The provider's ``retry-after`` (seconds), when its error response had one."""
        data = self.detail.get("data") if isinstance(self.detail, dict) else None
        headers = data.get("responseHeaders") if isinstance(data, dict) else None
        if not isinstance(headers, dict):
            return None
        for key, value in headers.items():
            if str(key).lower() == "retry-after":
                try:
                    seconds = float(value)
                except (TypeError, ValueError):
                    return None  # an HTTP date: rare from model providers, and not worth a parser
                return seconds if seconds >= 0 else None
        return None

    @property
    def raised(self) -> bool:
        """Whether the run entry points raise this error (see :data:`RAISED_KINDS`)."""
        return self.kind in RAISED_KINDS

    def __str__(self) -> str:
        code = f" (HTTP {self.status_code})" if self.status_code is not None else ""
        return f"{self.kind}{code}: {self.message}"

    @classmethod
    def from_event_error(cls, error: EventError, *, kind: ErrorKind | None = None) -> RunError:
        """The error for an opencode error object; ``kind`` defaults to ``api_error``/``error_event``."""
        status = error.status_code
        chosen: ErrorKind = kind or (
            "api_error" if error.name == "APIError" or status is not None else "error_event"
        )
        return cls(
            kind=chosen, message=error.message, status_code=status, name=error.name, detail=dict(error)
        )


def server_error_kind(error: EventError) -> ErrorKind:
    """The kind of an error that a server reported (``session.error``, ``info.error``)."""
    name = error.name
    if name == "MessageAbortedError":
        return "aborted"
    if name == "StructuredOutputError":
        return "structured_output"
    if name == "APIError" or error.status_code is not None:
        return "api_error"
    return "session_error"


@dataclass
class PermissionRejection:
    """A tool permission that was refused (by opencode's run mode, a callback, or a default)."""

    permission: str
    pattern: str | None = None
    message: str | None = None


@dataclass
class Attempt:
    """One try of a task: a batch retries a failed task from a fresh start, a cluster retries a task
    whose node was lost.

    Attributes:
        number: 1 for the first try.
        error: why this try failed (``None``: it succeeded).
        elapsed_s: its wall time.
        node_id: where it ran, when the backend says (a cluster node).
    """

    number: int
    error: RunError | None = None
    elapsed_s: float = 0.0
    node_id: str | None = None


@dataclass
class Verification:
    """How a run's verification went.

    Attributes:
        passed: whether it passed.
        output: the command's output (stdout and stderr, its last 20,000 characters), or the
            callable's reason.
        exit_code: the command's exit status (``None`` for a callable, or when it timed out).
        elapsed_s: how long it took.
    """

    passed: bool
    output: str = ""
    exit_code: int | None = None
    elapsed_s: float = 0.0


# Shown (and pickled) under the public module that exports them.
for _exported in (RunError, PermissionRejection, Attempt, Verification):
    _exported.__module__ = "opencode_wrapper.results"
