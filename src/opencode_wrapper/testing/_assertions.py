"""Strict mode and what a test asserts about its offline model: the dedicated errors, the answer to
an unexpected request, and the one-line descriptions of requests and replies.

:class:`UnexpectedModelCall` (a strict model got a chat request that nothing scripted) and
:class:`UnconsumedModelSteps` (script entries or faults were never used) are both
:class:`OfflineModelAssertionError`, an ``AssertionError``, so pytest reports them as test failures.
Both carry one line per offending request or step (:func:`describe_request`, :func:`describe_reply`),
which is also what the offline model's ``/_offline/report`` route returns to another process.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from opencode_wrapper.testing._replies import (
    AnyReply,
    Completion,
    ComputedReply,
    ErrorReply,
    HangReply,
)
from opencode_wrapper.testing._request import RecordedRequest

#: The HTTP status a strict model answers unexpected requests with. opencode 1.18.33 does not retry
#: a 400 (measured; 5xx and 429 are retried for ~70 s), so the run or turn fails at once.
STRICT_STATUS = 400
#: The error ``code`` of that answer.
STRICT_ERROR_CODE = "offline_model_unexpected_request"


def strict_error(request: RecordedRequest) -> ErrorReply:
    """The answer to an unexpected request. The message does not quote the user's text: opencode
    reads provider error messages (context-overflow detection), and a prompt must not steer that."""
    return ErrorReply(
        STRICT_STATUS,
        f"offline model (strict): unexpected chat request #{request.index}; no script entry or rule "
        "answers it (the test's assert_complete() names it)",
        type="invalid_request_error",
        code=STRICT_ERROR_CODE,
    )


#: Characters of a message or a tool output quoted in a description.
QUOTE_LIMIT = 200
_SHORT_QUOTE = 80


def _quote(text: str, limit: int = QUOTE_LIMIT) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "…")


def describe_request(request: RecordedRequest) -> str:
    """One line naming a chat request: its number, session, and what it ends with.

    E.g. ``request #3 (session ses_1): last user message 'deploy now'``, or, for a conversation
    ending with tool results, ``request #4: tool results bash: 'hi\\n' (after user message 'go')``.
    Quoted texts are cut to :data:`QUOTE_LIMIT` characters.
    """
    head = f"request #{request.index}"
    if request.session_id:
        head += f" (session {request.session_id})"
    results = request.tool_results
    if results:
        quoted = ", ".join(f"{r.name or '?'}: {_quote(r.output, _SHORT_QUOTE)}" for r in results)
        return f"{head}: tool results {quoted} (after user message {_quote(request.last_user_text)})"
    if request.last_is_user:
        return f"{head}: last user message {_quote(request.last_user_text)}"
    last = request.last_message
    role = last.get("role") if last is not None else None
    return f"{head}: ends with a {role!r} message (last user message {_quote(request.last_user_text)})"


def describe_reply(reply: AnyReply) -> str:
    """One line naming a reply: ``text 'Done.'``, ``tool call bash {"command": "ls"}``, ``HTTP 500 error``…"""
    if isinstance(reply, ErrorReply):
        message = f" {_quote(reply.message, _SHORT_QUOTE)}" if reply.message else ""
        return f"HTTP {reply.status} error{message}"
    if isinstance(reply, HangReply):
        return "hang (never answers)"
    if isinstance(reply, ComputedReply):
        return f"computed reply {getattr(reply.fn, '__qualname__', repr(reply.fn))}"
    return _describe_completion(reply)


def _describe_completion(reply: Completion) -> str:
    pieces = []
    if reply.tool_calls:
        calls = ", ".join(f"{c.name} {c.arguments_json()[:_SHORT_QUOTE]}" for c in reply.tool_calls)
        pieces.append(f"tool call{'s' if len(reply.tool_calls) > 1 else ''} {calls}")
    if reply.text:
        pieces.append(f"text {_quote(reply.text, _SHORT_QUOTE)}")
    if reply.reasoning:
        pieces.append(f"reasoning {_quote(reply.reasoning, _SHORT_QUOTE)}")
    if reply.cut_after is not None:
        pieces.append(f"cut after {reply.cut_after} chunk(s)")
    return ", ".join(pieces) or "empty completion"


class OfflineModelAssertionError(AssertionError):
    """The offline model was not used the way the test scripted it.

    Attributes:
        descriptions: one line per unexpected request or unused step.
    """

    def __init__(self, message: str, descriptions: Sequence[str]) -> None:
        super().__init__(message)
        self.descriptions = list(descriptions)


def _bullets(lines: Sequence[str]) -> str:
    return "".join(f"\n  - {line}" for line in lines)


class UnexpectedModelCall(OfflineModelAssertionError):
    """A strict offline model got chat requests that no script entry or rule answers.

    Each was answered with HTTP 400, which opencode does not retry, so the run or turn failed at once.

    Attributes:
        descriptions: one line per unexpected request (:func:`describe_request`).
        requests: the requests themselves (empty when the report came from another process).
        unused: descriptions of the steps that were not used either (see :class:`UnconsumedModelSteps`).
    """

    def __init__(
        self,
        descriptions: Sequence[str],
        *,
        requests: Sequence[RecordedRequest] = (),
        unused: Sequence[str] = (),
    ) -> None:
        message = (
            f"the strict offline model got {len(descriptions)} unexpected chat request(s) that no "
            f"script entry or rule answers:{_bullets(descriptions)}\n"
            "Script them (script=..., enqueue(...)), add a rule (rules=..., add_rule(...)), "
            "or use strict=False."
        )
        if unused:
            message += f"\nAlso never used:{_bullets(unused)}"
        super().__init__(message, descriptions)
        self.requests = list(requests)
        self.unused = list(unused)


class UnconsumedModelSteps(OfflineModelAssertionError):
    """Script entries (or injected faults) of the offline model were never used.

    Attributes:
        descriptions: one line per unused step, e.g. ``script entry 2 of 2: text 'Done.'`` or
            ``fault HTTP 500 error on route 'chat' (served 0 of 1)``.
    """

    def __init__(self, descriptions: Sequence[str]) -> None:
        super().__init__(
            f"{len(descriptions)} scripted step(s) of the offline model were never used:"
            f"{_bullets(descriptions)}",
            descriptions,
        )


def raise_for_report(
    report: Mapping[str, Any], *, complete: bool, requests: Sequence[RecordedRequest] = ()
) -> None:
    """Raise what a report (``{"unexpected": [...], "unused": [...]}``) calls for.

    :class:`UnexpectedModelCall` (carrying ``requests``) if there are unexpected requests; else,
    when ``complete``, :class:`UnconsumedModelSteps` if there are unused steps.
    """
    unexpected = [str(line) for line in report.get("unexpected") or []]
    unused = [str(line) for line in report.get("unused") or []]
    if unexpected:
        raise UnexpectedModelCall(unexpected, requests=requests, unused=unused if complete else ())
    if complete and unused:
        raise UnconsumedModelSteps(unused)
