"""All exceptions raised by opencode_wrapper, in one hierarchy.

``OpenCodeError`` is the root. ``OpenCodeRunError`` and its subclasses are about a run and
carry its (partial) ``result``, so a failure never loses what the agent did before it failed;
every exception survives a pickle round trip with its result::

    OpenCodeError
    ├── OpenCodeBinaryNotFoundError
    │   └── OpenCodeVersionError
    ├── OpenCodeConfigError (also a ValueError)
    ├── IsolationError                    a git step of an isolated run failed
    │   └── ApplyError                    Changes.apply could not apply a diff
    │       └── ApplyConflictError        .conflicts
    └── OpenCodeRunError                  .result, .error, .retryable
        ├── OpenCodeProcessError          .exit_code, .stderr, .events, .raw_stdout_lines
        │   └── OpenCodeServerError
        │       └── ServerHTTPError       .status_code, .body
        ├── OpenCodeTimeoutError          .timeout_s (also a TimeoutError)
        └── OpenCodeCancelledError
"""

from opencode_wrapper._isolation.errors import ApplyConflictError, ApplyError, IsolationError
from opencode_wrapper._model.outcome import (
    OpenCodeBinaryNotFoundError,
    OpenCodeCancelledError,
    OpenCodeConfigError,
    OpenCodeError,
    OpenCodeProcessError,
    OpenCodeRunError,
    OpenCodeServerError,
    OpenCodeTimeoutError,
    OpenCodeVersionError,
    ServerHTTPError,
)

__all__ = [
    "ApplyConflictError",
    "ApplyError",
    "IsolationError",
    "OpenCodeBinaryNotFoundError",
    "OpenCodeCancelledError",
    "OpenCodeConfigError",
    "OpenCodeError",
    "OpenCodeProcessError",
    "OpenCodeRunError",
    "OpenCodeServerError",
    "OpenCodeTimeoutError",
    "OpenCodeVersionError",
    "ServerHTTPError",
]
