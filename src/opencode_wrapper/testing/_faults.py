"""Fault injection: a reply that pre-empts the normal answer on one route, a given number of times.

A :class:`Fault` is checked before anything else the offline model does (title answer, script,
rules), and answering with it consumes nothing else, so ``model.fail(500)`` followed by opencode's
retry gives the retried request the answer it would have had. Faults record the requests they
answered.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any, Literal, TypeAlias, get_args

from opencode_wrapper.errors import OpenCodeConfigError
from opencode_wrapper.testing._assertions import describe_reply
from opencode_wrapper.testing._replies import (
    AnyReply,
    Completion,
    ErrorReply,
    HangReply,
    ReplyLike,
    as_reply,
    reply_from_json,
)
from opencode_wrapper.testing._request import RecordedRequest
from opencode_wrapper.testing._rules import Matcher, MatchLike, as_matcher, matcher_from_json

#: Where a fault applies: ``"chat"`` (chat requests except title generation), ``"title"``
#: (opencode's title-generation requests), ``"models"`` (``GET …/models``).
FaultRoute: TypeAlias = Literal["chat", "title", "models"]
FAULT_ROUTES: tuple[str, ...] = get_args(FaultRoute)


def route_of(request: RecordedRequest) -> FaultRoute | None:
    """The fault route ``request`` belongs to, or ``None`` (an unknown path)."""
    if request.is_chat:
        return "title" if request.is_title_request else "chat"
    if request.method == "GET" and request.path.rstrip("/").endswith("/models"):
        return "models"
    return None


def check_error_status(status: Any) -> int:
    """``status`` if it is an HTTP error status (an ``int`` in 400..599), else ``OpenCodeConfigError``."""
    if isinstance(status, bool) or not isinstance(status, int) or not 400 <= status <= 599:
        raise OpenCodeConfigError(f"status must be an HTTP error status (an int in 400..599), got {status!r}")
    return status


class Fault:
    """Answer the next ``times`` requests on ``route`` (that ``match`` accepts) with ``reply``.

    Build one with ``OfflineModelServer.fail(...)`` / ``.inject(...)``; read it back to see what it did.

    Args:
        reply: any reply; an :class:`ErrorReply` (e.g. ``Reply.error(500)``), ``Reply.cut(...)`` and
            ``Reply.hang()`` are the usual faults. On the ``"models"`` route only an error, a hang or
            a cut (the connection is closed without an answer) make sense, and only those are accepted.
        route: ``"chat"``, ``"title"`` or ``"models"`` (see :data:`FaultRoute`).
        times: how many requests get the fault (an ``int`` >= 1), or ``None`` for every one.
        match: also require this (a matcher, or a regex on the last user text; see ``Match``).

    Raises:
        OpenCodeConfigError: a bad ``route``, ``times`` or ``reply`` (the message names it).
    """

    def __init__(
        self,
        reply: ReplyLike,
        *,
        route: FaultRoute = "chat",
        times: int | None = 1,
        match: MatchLike | None = None,
    ) -> None:
        if route not in FAULT_ROUTES:
            raise OpenCodeConfigError(f"route must be one of {list(FAULT_ROUTES)}, got {route!r}")
        if times is not None and (isinstance(times, bool) or not isinstance(times, int) or times < 1):
            raise OpenCodeConfigError(f"times must be an int >= 1 or None (always), got {times!r}")
        try:
            converted = as_reply(reply)
            matcher = None if match is None else as_matcher(match)
        except TypeError as exc:
            raise OpenCodeConfigError(str(exc)) from None
        if route == "models" and not _fits_models_route(converted):
            raise OpenCodeConfigError(
                "a fault on route 'models' must be an error (Reply.error), a hang (Reply.hang) "
                f"or a cut (Reply.cut); got {describe_reply(converted)}"
            )
        self.reply: AnyReply = converted
        self.route: FaultRoute = route
        self.times = times
        self.match: Matcher | None = matcher
        self._lock = threading.Lock()
        self._served: list[RecordedRequest] = []

    def take(self, route: FaultRoute, request: RecordedRequest) -> bool:
        """If this fault applies to ``request`` on ``route`` and is not used up, count it and say so."""
        if route != self.route or self.exhausted:
            return False
        # The matcher is user code: it runs outside the lock.
        if self.match is not None and not self.match(request):
            return False
        with self._lock:
            if self.times is not None and len(self._served) >= self.times:
                return False  # another request took the last one meanwhile
            self._served.append(request)
            return True

    @property
    def served(self) -> list[RecordedRequest]:
        """The requests this fault answered, oldest first (a copy)."""
        with self._lock:
            return list(self._served)

    @property
    def remaining(self) -> int | None:
        """How many more requests will get it (``None``: unlimited)."""
        if self.times is None:
            return None
        with self._lock:
            return self.times - len(self._served)

    @property
    def exhausted(self) -> bool:
        """Whether it answered ``times`` requests already (never, for ``times=None``)."""
        remaining = self.remaining
        return remaining is not None and remaining <= 0

    def describe(self) -> str:
        """One line, e.g. ``fault HTTP 500 error on route 'chat' (served 0 of 1)``."""
        total = "unlimited" if self.times is None else str(self.times)
        served = len(self.served)
        return f"fault {describe_reply(self.reply)} on route {self.route!r} (served {served} of {total})"

    def __repr__(self) -> str:
        return f"<Fault {self.describe()}>"


def _fits_models_route(reply: AnyReply) -> bool:
    if isinstance(reply, (ErrorReply, HangReply)):
        return True
    return isinstance(reply, Completion) and reply.cut_after is not None


_FAULT_KEYS = {"reply", "status", "message", "route", "times", "match"}


def fault_from_json(data: Any) -> Fault:
    """A fault from ``{"status": 500, "message": ..., "route": "chat", "times": 1, "match": ...}``.

    ``"reply": <reply JSON>`` may replace ``status``/``message`` (e.g. ``{"reply": {"text": "x",
    "cut_after": 1}}``); ``route`` defaults to ``"chat"``, ``times`` to 1 (``null``: always),
    ``match`` is the JSON form of a matcher.

    Raises:
        OpenCodeConfigError: unknown keys, both or neither of ``reply``/``status``, bad values.
    """
    if not isinstance(data, Mapping):
        raise OpenCodeConfigError(f"a fault is a JSON object, got {data!r}")
    unknown = set(data) - _FAULT_KEYS
    if unknown or ("reply" in data) == ("status" in data):
        raise OpenCodeConfigError(
            f"a fault has 'status' (and optional 'message') or 'reply', plus optional 'route', "
            f"'times', 'match'; got {dict(data)!r}"
        )
    if "message" in data and "status" not in data:
        raise OpenCodeConfigError(f"'message' goes with 'status' in a fault, got {dict(data)!r}")
    try:
        if "status" in data:
            message = data.get("message")
            reply: AnyReply = ErrorReply(
                check_error_status(data["status"]), None if message is None else str(message)
            )
        else:
            reply = reply_from_json(data["reply"])
        match = matcher_from_json(data["match"]) if data.get("match") is not None else None
    except (TypeError, ValueError) as exc:
        raise OpenCodeConfigError(f"bad fault {dict(data)!r}: {exc}") from None
    return Fault(reply, route=data.get("route", "chat"), times=data.get("times", 1), match=match)


def faults_from_json(data: Any) -> list[Fault]:
    """Faults from a JSON list of fault objects (see :func:`fault_from_json`)."""
    if not isinstance(data, list):
        raise OpenCodeConfigError(f"'faults' must be a JSON list, got {type(data).__name__}")
    return [fault_from_json(item) for item in data]
