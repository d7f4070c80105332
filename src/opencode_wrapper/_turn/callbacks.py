"""Permission and question callbacks: their types, the checks on them, and reading their answers.

A session asks its callbacks when opencode pauses on a ``permission.asked`` or ``question.asked``
event. Whatever a callback does (answers, raises, answers nonsense, never answers), the request is
answered: a bad or missing answer becomes a rejection, and the reason is kept for the result.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

from opencode_wrapper.errors import OpenCodeConfigError

__all__ = [
    "DEFAULT_CALLBACK_TIMEOUT_S",
    "PermissionCallback",
    "PermissionDecision",
    "PermissionReply",
    "QuestionCallback",
    "check_callback",
    "read_answers",
    "read_permission_reply",
]

PermissionDecision: TypeAlias = Literal["once", "always", "reject"]

#: How long a permission or question callback may take before the request is rejected.
DEFAULT_CALLBACK_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class PermissionReply:
    """A permission callback's answer, when a plain ``"once"``/``"always"``/``"reject"`` is not enough.

    ``PermissionReply.reject("Use the read tool instead.")`` refuses the tool call *and* tells
    the model why: opencode then continues the turn with that feedback (a plain ``"reject"``
    stops the turn).

    Attributes:
        decision: ``"once"`` (allow this call), ``"always"`` (allow calls matching the request's
            ``always`` patterns for the rest of the server's life) or ``"reject"``.
        message: feedback for the model; only with ``"reject"``.
    """

    decision: PermissionDecision
    message: str | None = None

    def __post_init__(self) -> None:
        if self.decision not in ("once", "always", "reject"):
            raise OpenCodeConfigError(
                f"PermissionReply decision must be 'once', 'always' or 'reject', got {self.decision!r}"
            )
        if self.message is not None and (self.decision != "reject" or not isinstance(self.message, str)):
            raise OpenCodeConfigError("PermissionReply.message is a str and goes only with decision='reject'")

    @classmethod
    def once(cls) -> PermissionReply:
        return cls("once")

    @classmethod
    def always(cls) -> PermissionReply:
        return cls("always")

    @classmethod
    def reject(cls, message: str | None = None) -> PermissionReply:
        return cls("reject", message)


#: ``async def on_permission(request: dict) -> "once" | "always" | "reject" | PermissionReply``.
#: ``request`` is the ``permission.asked`` payload: ``{"id", "sessionID", "permission": "bash",
#: "patterns": [...], "metadata": {...}, "always": [...], "tool": {"messageID", "callID"}}``.
PermissionCallback: TypeAlias = Callable[[dict[str, Any]], Awaitable[str | PermissionReply]]

#: ``async def on_question(request: dict) -> list[list[str]] | None``: one list of chosen option
#: labels per question (in order), or ``None`` to dismiss the questions. ``request`` is the
#: ``question.asked`` payload: ``{"id", "sessionID", "questions": [{"question", "header",
#: "options": [{"label", "description"}], "multiple"?}], "tool": {...}}``.
QuestionCallback: TypeAlias = Callable[[dict[str, Any]], Awaitable[list[list[str]] | None]]


def check_callback(callback: object, name: str) -> None:
    """Refuse anything but ``None`` or an ``async def`` callable (checked before anything starts).

    A plain function would block the event loop that carries every session's events, and a
    lambda returning a coroutine hides mistakes; both are refused with a hint.
    """
    if callback is None:
        return
    if not callable(callback):
        raise OpenCodeConfigError(f"{name} must be an async function or None, got {callback!r}")
    call = getattr(callback, "__call__", None)  # noqa: B004 - async callable objects count too
    if inspect.iscoroutinefunction(callback) or inspect.iscoroutinefunction(call):
        return
    raise OpenCodeConfigError(
        f"{name} must be an async function (async def ...), got {callback!r}; "
        "wrap blocking code with asyncio.to_thread inside an async def"
    )


def read_permission_reply(value: object) -> tuple[PermissionDecision, str | None]:
    """``(decision, message)`` from a callback's return value.

    Raises:
        ValueError: the value is not a valid answer (the caller rejects and reports it).
    """
    if isinstance(value, PermissionReply):
        return value.decision, value.message
    if value in ("once", "always", "reject"):
        return value, None
    raise ValueError(
        "a permission callback must return 'once', 'always', 'reject' or a PermissionReply, "
        f"got {value!r:.200}"
    )


def read_answers(value: object, questions: list[Any]) -> list[list[str]] | None:
    """The answers to send for a callback's return value (``None``: dismiss the questions).

    Raises:
        ValueError: not ``None`` and not one list of strings per question.
    """
    if value is None:
        return None
    if not isinstance(value, (list, tuple)) or not all(
        isinstance(answer, (list, tuple)) and all(isinstance(label, str) for label in answer)
        for answer in value
    ):
        raise ValueError(
            "a question callback must return None or a list with one list of option labels per question, "
            f"got {value!r:.200}"
        )
    if len(value) != len(questions):
        raise ValueError(
            f"a question callback must answer each of the {len(questions)} question(s), "
            f"got {len(value)} answer(s)"
        )
    return [list(answer) for answer in value]
