"""``Backend``: where runs happen. The contract every backend keeps.

* :meth:`Backend.open` takes a validated :class:`~opencode_wrapper.backends.request.RunRequest`
  and first *checks* it: an option the backend cannot honour raises ``OpenCodeConfigError``
  before anything starts (never silently dropped). It returns a
  :class:`~opencode_wrapper.backends.handle.RunHandle` that has not started anything yet.
* A handle's failures come back in its result (``result.error``), the same kinds on every
  backend; what the public entry points raise is decided once, from the result
  (``RunError.raised``).
* :meth:`Backend.aclose` ends every process the backend started; handles still running are
  ended first.

Backends: ``ProcessBackend`` (one ``opencode run`` per run), ``ServerBackend`` (runs on one
warm server, or turns of one session), ``ServerPool`` (lazily started, shared warm servers).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from types import TracebackType

from opencode_wrapper._model.event import Event
from opencode_wrapper._model.outcome import RunResult, raise_for_run
from opencode_wrapper.backends.handle import RunHandle
from opencode_wrapper.backends.request import RunRequest
from opencode_wrapper.backends.watch import watchers_for
from opencode_wrapper.errors import OpenCodeConfigError

__all__ = ["Backend", "refuse", "run_request", "stream_request"]


def refuse(backend: str, option: str, why: str) -> OpenCodeConfigError:
    """The error for an option ``backend`` cannot honour."""
    return OpenCodeConfigError(f"{option} cannot be honoured by the {backend} backend: {why}")


class Backend(ABC):
    """Where runs happen (see the module docstring)."""

    #: Short name, as in results and error messages (``"run"``, ``"server"``, ``"pool"``).
    name: str = "?"
    #: Whether workspaces must exist on this machine (``False`` for a cluster that makes them on
    #: its nodes): ``run_many`` checks them before any task starts only then.
    local_workspaces: bool = True

    @abstractmethod
    def check(self, request: RunRequest) -> None:
        """Raise ``OpenCodeConfigError`` for an option of ``request`` this backend cannot honour."""

    @abstractmethod
    def _handle(self, request: RunRequest) -> RunHandle:
        """A handle for ``request`` (already checked), not started."""

    def open(self, request: RunRequest) -> RunHandle:
        """Check ``request`` and return its handle (not started: enter, iterate or wait it)."""
        self.check(request)
        handle = self._handle(request)
        handle.watchers = watchers_for(request)
        return handle

    @property
    def capacity(self) -> int | None:
        """How many runs this backend runs well at once (``run_many``'s default concurrency)."""
        return None

    async def aclose(self) -> None:  # noqa: B027 - most backends start nothing of their own
        """End every process this backend started."""

    async def __aenter__(self) -> Backend:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


async def run_request(backend: Backend, request: RunRequest) -> RunResult:
    """Open, drain and return the result, raising as the run entry points do (``RunError.raised``)."""
    async with backend.open(request) as handle:
        result = await handle.wait()
    return raise_for_run(result)


def stream_request(backend: Backend, request: RunRequest) -> AsyncIterator[Event]:
    """Open (checking the request now) and return the events; after the last one, raise as the
    run entry points do.

    Leaving the loop early ends the run (``contextlib.aclosing`` makes that immediate).
    """
    return _events_then_policy(backend.open(request))


async def _events_then_policy(handle: RunHandle) -> AsyncIterator[Event]:
    async with handle:
        async for event in handle:
            yield event
    raise_for_run(handle.result)
