"""The OpenAI chat-completions wire format: a :class:`Completion` as SSE frames or as one JSON body."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from opencode_wrapper.testing._replies import Completion


@dataclass(frozen=True)
class WireContext:
    """Per-response identifiers.

    Attributes:
        completion_id: the ``id`` of every chunk (``chatcmpl-offline-<request index>``).
        created: the ``created`` Unix time.
        model: the model name echoed back.
        chunk_size: characters per text/reasoning chunk when the reply sets none.
        call_id_prefix: tool calls without an id get ``<prefix><n>`` (n from 0).
    """

    completion_id: str
    created: int
    model: str
    chunk_size: int
    call_id_prefix: str


@dataclass(frozen=True)
class StreamFrames:
    """A streamed answer, in three groups so that it can be cut between content chunks.

    Attributes:
        head: the role chunk.
        content: reasoning, text and tool-call chunks, in that order.
        tail: the ``finish_reason`` chunk, the ``usage`` chunk and ``data: [DONE]``.
    """

    head: list[bytes]
    content: list[bytes]
    tail: list[bytes]


def _frame(payload: Any) -> bytes:
    return b"data: " + json.dumps(payload, ensure_ascii=False).encode() + b"\n\n"


def _pieces(text: str, size: int) -> list[str]:
    size = max(1, size)
    return [text[i : i + size] for i in range(0, len(text), size)]


def _tool_calls_json(reply: Completion, ctx: WireContext) -> list[dict[str, Any]]:
    return [
        {
            "id": call.id or f"{ctx.call_id_prefix}{n}",
            "type": "function",
            "function": {"name": call.name, "arguments": call.arguments_json()},
        }
        for n, call in enumerate(reply.tool_calls)
    ]


def stream_frames(reply: Completion, ctx: WireContext) -> StreamFrames:
    """The SSE ``data:`` frames of ``reply``."""

    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        return _frame(
            {
                "id": ctx.completion_id,
                "object": "chat.completion.chunk",
                "created": ctx.created,
                "model": ctx.model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
            }
        )

    size = reply.chunk_size or ctx.chunk_size
    # No empty "content" in the role chunk: the AI SDK would open an empty text part for it,
    # which opencode then reports as a text event with "" before a tool call.
    head = [chunk({"role": "assistant"})]
    content = [chunk({"reasoning_content": p}) for p in _pieces(reply.reasoning or "", size)]
    content += [chunk({"content": p}) for p in _pieces(reply.text or "", size)]
    # One chunk per call with the complete arguments: the simplest shape every client accepts.
    content += [
        chunk({"tool_calls": [{"index": n, **call}]}) for n, call in enumerate(_tool_calls_json(reply, ctx))
    ]
    usage = {
        "id": ctx.completion_id,
        "object": "chat.completion.chunk",
        "created": ctx.created,
        "model": ctx.model,
        "choices": [],
        "usage": reply.effective_usage().to_json(),
    }
    tail = [chunk({}, reply.effective_finish_reason()), _frame(usage), b"data: [DONE]\n\n"]
    return StreamFrames(head, content, tail)


def completion_json(reply: Completion, ctx: WireContext) -> dict[str, Any]:
    """The non-streamed (``stream: false``) response body of ``reply``."""
    message: dict[str, Any] = {"role": "assistant", "content": reply.text or None}
    if reply.reasoning:
        message["reasoning_content"] = reply.reasoning
    if reply.tool_calls:
        message["tool_calls"] = _tool_calls_json(reply, ctx)
    return {
        "id": ctx.completion_id,
        "object": "chat.completion",
        "created": ctx.created,
        "model": ctx.model,
        "choices": [{"index": 0, "message": message, "finish_reason": reply.effective_finish_reason()}],
        "usage": reply.effective_usage().to_json(),
    }
