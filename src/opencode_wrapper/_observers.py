"""Event observers: user callbacks that watch a run's events without being able to break it."""

from __future__ import annotations

import logging
from collections.abc import Callable

from opencode_wrapper._model.event import Event

_LOG = logging.getLogger("opencode_wrapper")

#: Called synchronously with each typed event as it arrives (keep it quick: it runs on the loop).
EventCallback = Callable[[Event], None]


def notify(callback: Callable[..., object] | None, *args: object) -> None:
    """Call an observer; an exception in it is logged and ignored (a view must never fail a run)."""
    if callback is None:
        return
    try:
        callback(*args)
    except Exception:
        _LOG.exception("an on_event callback raised; ignored")
