"""Which watchers look at a run (limits, tracing, tool hooks): decided in one place, from its request.

See :class:`~opencode_wrapper.backends.handle.RunWatcher` for what a watcher is told.
"""

from __future__ import annotations

from opencode_wrapper.backends.handle import RunWatcher
from opencode_wrapper.backends.request import RunRequest

__all__ = ["watchers_for"]


def watchers_for(request: RunRequest) -> list[RunWatcher]:
    """The watchers of a run of ``request``."""
    return []
