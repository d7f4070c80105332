"""What the offline model answers: immutable reply values and the ``Reply`` factory.

A reply is one of four frozen dataclasses:

* :class:`Completion`: a normal answer (text, reasoning, tool calls, usage), optionally
  delayed, streamed slowly, or cut off mid-stream;
* :class:`ErrorReply`: an HTTP error with an OpenAI-style JSON body;
* :class:`HangReply`: never answers (the connection stays open until the server stops);
* :class:`ComputedReply`: a Python callable that builds the reply from the request.

Build them with the :class:`Reply` namespace (``Reply.text("hi")``, ``Reply.bash("ls")``, …), or
from JSON with :func:`reply_from_json` (what ``--rules FILE.json`` uses). Anywhere a reply is
accepted, a plain ``str`` means ``Reply.text(that_str)``.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeAlias

if TYPE_CHECKING:
    from opencode_wrapper.testing._request import RecordedRequest

#: Default ``prompt_tokens`` reported when a reply does not set its own usage.
DEFAULT_PROMPT_TOKENS = 10


@dataclass(frozen=True)
class Usage:
    """Token counts reported in the final stream chunk (``usage``).

    Attributes:
        prompt_tokens: input tokens.
        completion_tokens: output tokens.
        total_tokens: defaults to ``prompt_tokens + completion_tokens``.
        reasoning_tokens: if set, sent as ``completion_tokens_details.reasoning_tokens``.
        cached_tokens: if set, sent as ``prompt_tokens_details.cached_tokens``.
    """

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int | None = None
    reasoning_tokens: int | None = None
    cached_tokens: int | None = None

    def to_json(self) -> dict[str, Any]:
        """The OpenAI ``usage`` object."""
        total = self.total_tokens
        out: dict[str, Any] = {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens if total is None else total,
        }
        if self.reasoning_tokens is not None:
            out["completion_tokens_details"] = {"reasoning_tokens": self.reasoning_tokens}
        if self.cached_tokens is not None:
            out["prompt_tokens_details"] = {"cached_tokens": self.cached_tokens}
        return out


def default_usage(text: str | None) -> Usage:
    """The usage sent when a reply sets none.

    ``prompt_tokens`` is always :data:`DEFAULT_PROMPT_TOKENS` (10); ``completion_tokens`` is the
    number of whitespace-separated words of the reply text, at least 1 (so a tool-call-only reply
    reports 1).
    """
    return Usage(DEFAULT_PROMPT_TOKENS, max(1, len((text or "").split())))


@dataclass(frozen=True)
class ToolCall:
    """One tool call the model makes.

    Attributes:
        name: the tool name (``bash``, ``edit``, ``question``, ``StructuredOutput``, anything).
        arguments: a JSON-serialisable mapping, or an already-encoded JSON string (sent as is,
            which lets you send malformed arguments on purpose).
        id: the ``tool_call_id``; ``None`` lets the server number it (``call_<request>_<n>``).
    """

    name: str
    arguments: Mapping[str, Any] | str = field(default_factory=dict)
    id: str | None = None

    def arguments_json(self) -> str:
        """The arguments as the JSON string sent on the wire."""
        if isinstance(self.arguments, str):
            return self.arguments
        return json.dumps(dict(self.arguments), ensure_ascii=False)


@dataclass(frozen=True)
class Completion:
    """A normal (HTTP 200) answer.

    On the stream, reasoning comes first (``delta.reasoning_content``), then the text
    (``delta.content``), then the tool calls, then a chunk with ``finish_reason``, then a chunk
    with ``usage``, then ``data: [DONE]``.

    Attributes:
        text: the answer text (``None`` or ``""``: no text, e.g. tool calls only).
        tool_calls: tool calls, all in this one step.
        reasoning: reasoning text streamed before the answer.
        usage: token usage; ``None`` means :func:`default_usage` of ``text``.
        finish_reason: ``None`` means ``"tool_calls"`` if there are tool calls, else ``"stop"``.
        chunk_size: characters per text/reasoning chunk; ``None`` uses the server's default.
        delay: seconds to wait before sending anything (status line included).
        chunk_delay: seconds to wait between chunks (a slow stream).
        cut_after: if set, close the connection after this many content chunks (reasoning,
            text and tool-call chunks count; the leading role chunk does not), with no
            ``finish_reason``, no usage and no ``[DONE]``: a stream that dies mid-answer.
    """

    text: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    reasoning: str | None = None
    usage: Usage | None = None
    finish_reason: str | None = None
    chunk_size: int | None = None
    delay: float = 0.0
    chunk_delay: float = 0.0
    cut_after: int | None = None

    def effective_usage(self) -> Usage:
        """``usage`` or the documented default."""
        return self.usage if self.usage is not None else default_usage(self.text)

    def effective_finish_reason(self) -> str:
        """``finish_reason`` or the one implied by the content."""
        if self.finish_reason is not None:
            return self.finish_reason
        return "tool_calls" if self.tool_calls else "stop"


#: ``(type, code)`` of the OpenAI-style error body per HTTP status, when the reply sets none.
_ERROR_DEFAULTS: dict[int, tuple[str, str]] = {
    400: ("invalid_request_error", "bad_request"),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("invalid_request_error", "permission_denied"),
    404: ("invalid_request_error", "model_not_found"),
    429: ("rate_limit_error", "rate_limit_exceeded"),
}


@dataclass(frozen=True)
class ErrorReply:
    """An HTTP error answered with ``{"error": {"message", "type", "code"}}``.

    Note that opencode retries 429 and 5xx answers for about 70 s before giving up; 401 fails
    at once.

    Attributes:
        status: HTTP status code.
        message: defaults to ``"offline model: scripted <status> error"``.
        type: defaults by status (``invalid_request_error``, ``rate_limit_error``, ``server_error``).
        code: defaults by status (``invalid_api_key``, ``rate_limit_exceeded``, ``server_error``, …).
        delay: seconds to wait before answering.
    """

    status: int = 500
    message: str | None = None
    type: str | None = None
    code: str | None = None
    delay: float = 0.0

    def body(self) -> dict[str, Any]:
        """The JSON error body."""
        default_type, default_code = _ERROR_DEFAULTS.get(self.status, ("server_error", "server_error"))
        return {
            "error": {
                "message": self.message or f"offline model: scripted {self.status} error",
                "type": self.type or default_type,
                "code": self.code or default_code,
            }
        }


@dataclass(frozen=True)
class HangReply:
    """Never answer: no status line, the connection is held open until the server stops."""


@dataclass(frozen=True)
class ComputedReply:
    """A reply built per request by ``fn(request)`` (which may return a ``str`` or any reply).

    Attributes:
        fn: called on the server's handler thread with the :class:`RecordedRequest`.
    """

    fn: Callable[[RecordedRequest], ReplyLike]


#: The reply dataclasses.
AnyReply: TypeAlias = Completion | ErrorReply | HangReply | ComputedReply
#: What every API taking a reply accepts: a reply dataclass, or a ``str`` meaning ``Reply.text``.
ReplyLike: TypeAlias = AnyReply | str


def as_reply(reply: ReplyLike) -> AnyReply:
    """Turn the ``str`` shorthand into a :class:`Completion`; check the type of anything else."""
    if isinstance(reply, str):
        return Completion(text=reply)
    if isinstance(reply, (Completion, ErrorReply, HangReply, ComputedReply)):
        return reply
    raise TypeError(f"expected a reply (see opencode_wrapper.testing.Reply) or a str, got {reply!r}")


def _tool_call(call: ToolCall | tuple[str, Mapping[str, Any] | str] | Mapping[str, Any]) -> ToolCall:
    if isinstance(call, ToolCall):
        return call
    if isinstance(call, tuple):
        name, arguments = call
        return ToolCall(name, arguments)
    if isinstance(call, Mapping):
        unknown = set(call) - {"name", "arguments", "id"}
        if "name" not in call or unknown:
            raise ValueError(f"a tool call needs 'name' (and optional 'arguments', 'id'), got {dict(call)!r}")
        return ToolCall(str(call["name"]), call.get("arguments") or {}, call.get("id"))
    raise TypeError(f"expected a ToolCall, a (name, arguments) tuple or a mapping, got {call!r}")


class Reply:
    """Factories for every reply kind. Each returns a frozen dataclass you can also build directly.

    Example::

        script = [
            Reply.bash("ls -la"),                      # step 1: run a command
            Reply.text("Done.", reasoning="Easy."),    # step 2: answer
        ]
    """

    @staticmethod
    def text(
        text: str,
        *,
        reasoning: str | None = None,
        usage: Usage | None = None,
        chunk_size: int | None = None,
        delay: float = 0.0,
        chunk_delay: float = 0.0,
    ) -> Completion:
        """A text answer, streamed in ``chunk_size``-character chunks."""
        return Completion(
            text=text,
            reasoning=reasoning,
            usage=usage,
            chunk_size=chunk_size,
            delay=delay,
            chunk_delay=chunk_delay,
        )

    @staticmethod
    def tool_call(
        name: str,
        arguments: Mapping[str, Any] | str | None = None,
        *,
        id: str | None = None,
        text: str | None = None,
        reasoning: str | None = None,
        usage: Usage | None = None,
    ) -> Completion:
        """One call of any tool (``finish_reason: "tool_calls"``)."""
        return Completion(
            text=text,
            tool_calls=(ToolCall(name, {} if arguments is None else arguments, id),),
            reasoning=reasoning,
            usage=usage,
        )

    @staticmethod
    def tool_calls(
        *calls: ToolCall | tuple[str, Mapping[str, Any] | str],
        text: str | None = None,
        reasoning: str | None = None,
        usage: Usage | None = None,
    ) -> Completion:
        """Several tool calls in one step: ``Reply.tool_calls(("read", {...}), ("glob", {...}))``."""
        return Completion(
            text=text,
            tool_calls=tuple(_tool_call(c) for c in calls),
            reasoning=reasoning,
            usage=usage,
        )

    @staticmethod
    def bash(command: str, description: str = "Run a command", *, reasoning: str | None = None) -> Completion:
        """A call of opencode's ``bash`` tool."""
        return Completion(
            tool_calls=(ToolCall("bash", {"command": command, "description": description}),),
            reasoning=reasoning,
        )

    @staticmethod
    def error(
        status: int = 500,
        message: str | None = None,
        *,
        type: str | None = None,
        code: str | None = None,
        delay: float = 0.0,
    ) -> ErrorReply:
        """An HTTP error (401, 429, 500, …) with an OpenAI-style JSON body."""
        return ErrorReply(status=status, message=message, type=type, code=code, delay=delay)

    @staticmethod
    def hang() -> HangReply:
        """Never answer; the request stays open until the server stops."""
        return HangReply()

    @staticmethod
    def cut(text: str, *, after_chunks: int = 1, chunk_size: int | None = None) -> Completion:
        """Stream ``after_chunks`` chunks of ``text``, then drop the connection (no ``[DONE]``)."""
        return Completion(text=text, chunk_size=chunk_size, cut_after=after_chunks)

    @staticmethod
    def delayed(seconds: float, reply: ReplyLike) -> AnyReply:
        """``reply`` answered after ``seconds`` (a :class:`ComputedReply`'s result is delayed too)."""
        base = as_reply(reply)
        if isinstance(base, (Completion, ErrorReply)):
            return dataclasses.replace(base, delay=seconds)
        if isinstance(base, ComputedReply):
            fn = base.fn
            return ComputedReply(lambda request: Reply.delayed(seconds, fn(request)))
        return base  # a hang is already as delayed as it gets

    @staticmethod
    def compute(fn: Callable[[RecordedRequest], ReplyLike]) -> ComputedReply:
        """A reply computed from the request by ``fn`` (which may return a ``str``)."""
        return ComputedReply(fn)

    @staticmethod
    def from_json(data: Any) -> AnyReply:
        """Same as :func:`reply_from_json`."""
        return reply_from_json(data)


_COMPLETION_KEYS = {"text", "reasoning", "tool_calls", "bash", "usage", "finish_reason"} | {
    "chunk_size",
    "delay",
    "chunk_delay",
    "cut_after",
}


def _usage_from_json(data: Any) -> Usage:
    if not isinstance(data, Mapping):
        raise ValueError(f"'usage' must be an object, got {data!r}")
    known = {f.name for f in dataclasses.fields(Usage)}
    unknown = set(data) - known
    if unknown or "prompt_tokens" not in data or "completion_tokens" not in data:
        raise ValueError(
            f"'usage' needs prompt_tokens and completion_tokens (optional: total_tokens, "
            f"reasoning_tokens, cached_tokens), got {dict(data)!r}"
        )
    return Usage(**{k: int(v) for k, v in data.items()})


def reply_from_json(data: Any) -> AnyReply:
    """Build a reply from its JSON form (the ``reply`` of a rules file).

    Forms (every key optional unless stated)::

        "plain text"                                   # = {"text": "plain text"}
        {"text": "...", "reasoning": "...",
         "tool_calls": [{"name": "bash", "arguments": {...}, "id": "call_1"}],
         "bash": "echo hi",                            # shorthand: one more bash tool call
         "usage": {"prompt_tokens": 5, "completion_tokens": 2},
         "finish_reason": "stop", "chunk_size": 4, "delay": 0.5, "chunk_delay": 0.1,
         "cut_after": 2}
        {"error": 500, "message": "...", "type": "...", "code": "...", "delay": 0.5}  # error required
        {"hang": true}

    Raises:
        ValueError: unknown keys or wrong types (the message names them).
    """
    if isinstance(data, str):
        return Completion(text=data)
    if not isinstance(data, Mapping):
        raise ValueError(f"a reply must be a string or an object, got {data!r}")
    keys = set(data)
    if "hang" in data:
        if keys != {"hang"} or data["hang"] is not True:
            raise ValueError(f'a hang reply is exactly {{"hang": true}}, got {dict(data)!r}')
        return HangReply()
    if "error" in data:
        unknown = keys - {"error", "message", "type", "code", "delay"}
        if unknown:
            raise ValueError(f"unknown keys {sorted(unknown)} in error reply {dict(data)!r}")
        return ErrorReply(
            status=int(data["error"]),
            message=data.get("message"),
            type=data.get("type"),
            code=data.get("code"),
            delay=float(data.get("delay", 0.0)),
        )
    unknown = keys - _COMPLETION_KEYS
    if unknown:
        raise ValueError(
            f"unknown keys {sorted(unknown)} in reply {dict(data)!r}; "
            f"expected some of {sorted(_COMPLETION_KEYS)}, or 'error', or 'hang'"
        )
    raw_calls = data.get("tool_calls") or []
    if not isinstance(raw_calls, Sequence) or isinstance(raw_calls, str):
        raise ValueError(f"'tool_calls' must be a list, got {raw_calls!r}")
    calls = [_tool_call(c) for c in raw_calls]
    if "bash" in data:
        calls.append(ToolCall("bash", {"command": str(data["bash"]), "description": "Run a command"}))
    cut_after = data.get("cut_after")
    chunk_size = data.get("chunk_size")
    return Completion(
        text=data.get("text"),
        tool_calls=tuple(calls),
        reasoning=data.get("reasoning"),
        usage=_usage_from_json(data["usage"]) if "usage" in data else None,
        finish_reason=data.get("finish_reason"),
        chunk_size=None if chunk_size is None else int(chunk_size),
        delay=float(data.get("delay", 0.0)),
        chunk_delay=float(data.get("chunk_delay", 0.0)),
        cut_after=None if cut_after is None else int(cut_after),
    )
