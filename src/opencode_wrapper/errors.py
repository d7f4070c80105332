"""All exceptions raised by opencode_wrapper, in one hierarchy.

``OpenCodeError`` is the root. Errors about a finished run carry the (partial) result, so a
failure never loses what the agent did before it failed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opencode_wrapper.events import RunResult


class OpenCodeError(Exception):
    """Base class of every error raised by this package."""


class OpenCodeBinaryNotFoundError(OpenCodeError):
    """No usable ``opencode`` executable: missing, not executable, or not opencode."""


class OpenCodeConfigError(OpenCodeError, ValueError):
    """Bad input (a config value, an argument), detected before any process is spawned.

    Also a ``ValueError``, so seed code that catches ``ValueError`` keeps working.
    """


class OpenCodeProcessError(OpenCodeError):
    """``opencode`` exited with a non-zero status, was killed, or its server failed.

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
        self.result = result
        self.message = message
        super().__init__(str(self))

    def __str__(self) -> str:
        parts = [self.message or f"opencode exited with code {self.exit_code!r}"]
        if self.result is not None and self.result.error is not None and self.message is None:
            parts.append(f"cause: {self.result.error}")
        if self.stderr.strip():
            parts.append(f"stderr (tail):\n{self.stderr.strip()[-2000:]}")
        return "\n".join(parts)


class OpenCodeServerError(OpenCodeProcessError):
    """The ``opencode serve`` process died, refused a request, or its event stream broke."""


class OpenCodeTimeoutError(OpenCodeError, TimeoutError):
    """The run or turn did not finish within its ``timeout_s``; everything it started was ended.

    Attributes:
        timeout_s: the timeout that expired.
        result: what the run produced before the timeout (``result.error.kind == "timeout"``).
    """

    def __init__(self, message: str, *, timeout_s: float | None = None, result: RunResult | None = None):
        super().__init__(message)
        self.timeout_s = timeout_s
        self.result = result


class OpenCodeCancelledError(OpenCodeError):
    """opencode was stopped from outside (SIGINT/SIGTERM/SIGHUP); everything it started was ended.

    (Cancelling the asyncio task that awaits a run raises ``asyncio.CancelledError`` as usual,
    after the process tree is ended.)

    Attributes:
        result: what the run produced before it was stopped (``result.error.kind == "cancelled"``).
    """

    def __init__(self, message: str, *, result: RunResult | None = None):
        super().__init__(message)
        self.result = result
