"""When one session turn is over, decided from its events without I/O; and the user message ids.

Kept free of network code so that the rules can be tested with made-up event sequences,
including the ones opencode 1.18.33 really produces (measured, see the project notes):

* idle events arrive twice (abort, model errors), late (after the next prompt was sent), or not
  at all (an unknown agent only produces ``session.error``);
* a fresh instance may take seconds before it even stores the user message, while
  ``GET /session/status`` already (still) says "idle";
* prompts sent to a busy session are merged into the running loop.

So a turn is identified by the user message id *we* choose, and it is over only when opencode
has stored that message, worked on it (busy), and is idle again with every assistant message of
the turn complete.
"""

from __future__ import annotations

import secrets
import string
import time
from collections.abc import Mapping
from typing import Any

from opencode_wrapper._model.event import Event, EventError
from opencode_wrapper._model.fold import telling_error

__all__ = ["TurnTracker", "format_message_id", "new_message_id"]

# ----------------------------------------------------------------------------- message ids

_BASE62 = string.digits + string.ascii_uppercase + string.ascii_lowercase
_last_id_value = 0


def new_message_id(now_ms: int | None = None) -> str:
    """A user message id in opencode's own format, ascending like the ones the server makes.

    opencode's ids are ``msg_`` + 12 hex digits of ``(milliseconds * 4096 + counter)`` (its low
    48 bits) + 14 random base-62 characters, and it orders messages by id. Ours use the same
    clock, so the assistant messages opencode creates after our prompt sort after it; they are
    strictly increasing within this process even if the clock stalls.
    """
    global _last_id_value
    millis = int(time.time() * 1000) if now_ms is None else now_ms
    value = max(millis * 0x1000 + 1, _last_id_value + 1)
    _last_id_value = value
    return format_message_id(value)


def format_message_id(value: int) -> str:
    """``msg_`` + the low 48 bits of ``value`` in hex + 14 random base-62 characters."""
    random_part = "".join(secrets.choice(_BASE62) for _ in range(14))
    return f"msg_{value & 0xFFFFFFFFFFFF:012x}{random_part}"


# ----------------------------------------------------------------------------- end of a turn


def _status_type(props: Mapping[str, Any]) -> str | None:
    status = props.get("status")
    if isinstance(status, Mapping) and isinstance(status.get("type"), str):
        return str(status["type"])
    return None


def _is_complete(info: Mapping[str, Any]) -> bool:
    times = info.get("time")
    completed = isinstance(times, Mapping) and times.get("completed") is not None
    return completed or info.get("error") is not None


class TurnTracker:
    """Decides when the turn whose user message has id ``message_id`` is over.

    Feed it every event of the session (in order) with :meth:`feed`; :attr:`finished` says when
    the turn is over. Events of other sessions (e.g. sub-agent sessions) are ignored.

    The turn is over when all of these hold:

    1. opencode stored our user message (``message.updated`` with our id), so nothing that came
       before it (a late idle of the previous turn) can count;
    2. after that, the session was ``busy`` (our prompt was actually worked on);
    3. the latest status since then is ``idle``;
    4. every assistant message answering our message (``parentID`` = our id) is complete
       (``time.completed`` or ``error`` set): after an abort the first idle comes *before* the
       aborted message is finalised, and a second idle follows.

    Two situations need a question to the server, which the caller asks and reports back:

    * :attr:`refused`: a ``session.error`` arrived while our message was still unknown. Either
      opencode refused the prompt before storing it (unknown agent: no idle ever follows), or
      the error is a late one of the previous turn. The caller checks whether the message
      exists (:meth:`message_exists`); if it never appears, the turn ended with that error.
    * the heartbeat safety net: if an idle event were lost, :meth:`server_idle` (the session is
      absent from ``GET /session/status``) ends the turn.
    """

    def __init__(self, session_id: str, message_id: str) -> None:
        self.session_id = session_id
        self.message_id = message_id
        self.seen_user = False
        self.busy_after_user = False
        self.status: str | None = None
        self.assistants: dict[str, dict[str, Any]] = {}
        self.errors: list[EventError] = []
        self.early_errors: list[EventError] = []
        self.ended_without_message = False
        #: Set by the caller once it asked opencode to abort the turn.
        self.abort_requested = False
        self._idle_reports = 0

    def feed(self, event: Event) -> None:
        """Update the state with one event (any session's; others are ignored)."""
        if event.session_id != self.session_id:
            return
        kind = event.type
        props = event.properties
        if kind == "message.updated":
            info = props.get("info")
            if not isinstance(info, dict):
                return
            if info.get("id") == self.message_id:
                self._see_user()
            elif info.get("role") == "assistant" and info.get("parentID") == self.message_id:
                self._see_user()
                self.assistants[str(info.get("id"))] = info
        elif kind == "message.part.updated":
            part = event.part
            if part is not None and part.message_id == self.message_id:
                self._see_user()
        elif kind == "session.status":
            status = _status_type(props)
            if self.seen_user and status is not None:
                self.status = status
                if status != "idle":
                    self.busy_after_user = True
                    self._idle_reports = 0
        elif kind == "session.idle":
            if self.seen_user:
                self.status = "idle"
        elif kind == "session.error":
            error = event.error or EventError({"name": "UnknownError"})
            (self.errors if self.seen_user else self.early_errors).append(error)

    def _see_user(self) -> None:
        self.seen_user = True

    @property
    def finished(self) -> bool:
        if self.ended_without_message:
            return True
        return (
            self.seen_user
            # An abort that lands while opencode sets the prompt up ends it before it ever is
            # busy: stored message, then idle.
            and (self.busy_after_user or self.abort_requested)
            and self.status == "idle"
            and all(_is_complete(info) for info in self.assistants.values())
        )

    @property
    def refused(self) -> bool:
        """A ``session.error`` came and our message is still unknown (ask the server)."""
        return not self.seen_user and bool(self.early_errors) and not self.ended_without_message

    def message_exists(self, exists: bool) -> None:
        """Report whether ``GET /session/{id}/message/{message_id}`` found our message.

        ``False`` ends the turn: opencode refused the prompt (the error says why).
        """
        if exists:
            self._see_user()
        elif not self.seen_user:
            self.ended_without_message = True

    def server_idle(self) -> None:
        """Report that ``GET /session/status`` does not list the session (it is not busy).

        Ends the turn if every assistant message is complete and the turn has visibly run (an
        assistant message or an error) or was aborted. Otherwise opencode may just not have
        started the loop yet (a matter of milliseconds), so only a second report (a heartbeat
        later) with no busy status in between ends it: the prompt was stored but never run.
        """
        if not self.seen_user or not all(_is_complete(info) for info in self.assistants.values()):
            return
        self._idle_reports += 1
        if self.assistants or self.errors or self.abort_requested or self._idle_reports >= 2:
            self.busy_after_user = True
            self.status = "idle"

    def refusal(self) -> EventError | None:
        """The most telling error that came before our message (stack traces come last)."""
        return telling_error(self.early_errors)
