"""Which watchers look at a run (limits, tracing, tool hooks): decided in one place, from its request.

See :class:`~opencode_wrapper.backends.handle.RunWatcher` for what a watcher is told.
"""

from __future__ import annotations

from opencode_wrapper import tracing
from opencode_wrapper.backends.handle import RunWatcher
from opencode_wrapper.backends.limits import LimitWatcher
from opencode_wrapper.backends.request import RunRequest

__all__ = ["watchers_for"]


def watchers_for(request: RunRequest) -> list[RunWatcher]:
    """The watchers of a run of ``request``.

    Limits: a :class:`~opencode_wrapper.backends.limits.LimitWatcher` when the request has any.
    Tracing: an OpenTelemetry watcher when runs are traced (:func:`opencode_wrapper.tracing.run_watcher`),
    none otherwise, so an untraced run pays nothing per event.
    """
    watchers: list[RunWatcher] = []
    if request.limits is not None and not request.limits.empty:
        watchers.append(LimitWatcher(request.limits))
    traced = tracing.run_watcher(request)
    if traced is not None:
        watchers.append(traced)
    return watchers
