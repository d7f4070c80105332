"""The root of the exception tree and the errors that are not about a run (no result to carry).

Below every other module (only the standard library), so that any layer can raise them.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "OpenCodeBinaryNotFoundError",
    "OpenCodeConfigError",
    "OpenCodeError",
    "OpenCodeVersionError",
]


def _rebuild(cls: type[OpenCodeError], args: tuple[Any, ...], state: dict[str, Any]) -> OpenCodeError:
    exc = cls.__new__(cls)
    Exception.__init__(exc, *args)
    exc.__dict__.update(state)
    return exc


class OpenCodeError(Exception):
    """Base class of every error raised by this package.

    Attributes:
        result: the run's (partial) result, for an error about a run (an ``OpenCodeRunError``);
            ``None`` otherwise.
    """

    result: Any = None

    def __reduce__(self) -> tuple[Any, ...]:
        # Exceptions pickle as ``cls(*args)``, which breaks keyword-only constructors: rebuild
        # from the stored attributes instead.
        return (_rebuild, (type(self), self.args, dict(self.__dict__)))


class OpenCodeBinaryNotFoundError(OpenCodeError):
    """No usable ``opencode`` executable: missing, not executable, or not opencode."""


class OpenCodeVersionError(OpenCodeBinaryNotFoundError):
    """The opencode binary or server is a version this package does not support.

    Attributes:
        version: the version found (``"2.1.0"``), or ``None`` when it could not be read.
        supported: the supported range, e.g. ``">=1.18.0, <2.0.0"``.
    """

    def __init__(self, message: str, *, version: str | None = None, supported: str = "") -> None:
        super().__init__(message)
        self.version = version
        self.supported = supported


class OpenCodeConfigError(OpenCodeError, ValueError):
    """Bad input (a config value, an argument), detected before any process is spawned.

    Also a ``ValueError``, so seed code that catches ``ValueError`` keeps working.
    """
