"""``RecordedRequest``: one HTTP request the offline model received, with helpers to read it.

What opencode 1.18.33 sends (measured), which the helpers rely on:

* A user message's ``content`` is a string for a plain prompt (byte for byte what was typed or
  written to ``opencode run``'s stdin, trailing newlines included), and a list of
  ``{"type": "text", "text": ...}`` parts when opencode adds something: attached files become
  synthetic parts before the prompt (``Called the Read tool with the following input: …``,
  ``<path>…</path>…``), and the plan agent appends a ``<system-reminder>…</system-reminder>`` part.
* Tool results are ``{"role": "tool", "tool_call_id": ..., "content": "<output>"}`` messages after the
  assistant message whose ``tool_calls`` carry the tool name.
* The session title is asked for by a separate request: a system message starting with
  ``You are a title generator``, a user message ``Generate a title for this conversation:\\n``, then
  the user's first message; no tools.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: How the system prompt of opencode's title-generation request starts.
TITLE_SYSTEM_PREFIX = "You are a title generator"


@dataclass(frozen=True)
class ToolResult:
    """A tool result message sent back to the model.

    Attributes:
        name: the tool's name, looked up from the assistant's ``tool_calls`` (``""`` if not found).
        call_id: the ``tool_call_id``.
        output: the tool output as text.
    """

    name: str
    call_id: str
    output: str


def content_text(content: Any) -> str:
    """The text of a message ``content``: a string as is, or the text parts joined by ``"\\n"``."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(p["text"] for p in content if _is_text_part(p))
    return ""


def user_text(content: Any) -> str:
    """Like :func:`content_text`, minus the parts that are only a ``<system-reminder>`` block.

    opencode appends such parts itself (plan mode, directory changes); they are not the user's words.
    """
    if isinstance(content, list):
        content = [p for p in content if _is_text_part(p) and not _is_system_reminder(p["text"])]
    return content_text(content)


def _is_text_part(part: Any) -> bool:
    return isinstance(part, Mapping) and part.get("type") == "text" and isinstance(part.get("text"), str)


def _is_system_reminder(text: str) -> bool:
    stripped = text.strip()
    return stripped.startswith("<system-reminder>") and stripped.endswith("</system-reminder>")


@dataclass(frozen=True)
class RecordedRequest:
    """One request the offline model received.

    Attributes:
        index: 0-based arrival number on this server.
        method: ``"POST"``, ``"GET"``, ….
        path: the request path, e.g. ``"/v1/chat/completions"``.
        headers: request headers, names lower-cased (opencode sends ``x-session-id``).
        body: the parsed JSON body (``None`` when there is no body or it is not JSON).
        raw_body: the body bytes.
        time: arrival time (``time.time()``).
    """

    index: int
    method: str
    path: str
    headers: Mapping[str, str]
    body: Any
    raw_body: bytes
    time: float

    @property
    def is_chat(self) -> bool:
        """A ``POST …/chat/completions`` request."""
        return self.method == "POST" and self.path.rstrip("/").endswith("/chat/completions")

    @property
    def messages(self) -> list[dict[str, Any]]:
        """The ``messages`` of the body (``[]`` if absent)."""
        messages = self.body.get("messages") if isinstance(self.body, Mapping) else None
        return [m for m in messages if isinstance(m, dict)] if isinstance(messages, list) else []

    @property
    def model(self) -> str | None:
        """The ``model`` field of the body."""
        model = self.body.get("model") if isinstance(self.body, Mapping) else None
        return model if isinstance(model, str) else None

    @property
    def stream(self) -> bool:
        """Whether a streamed (SSE) answer was asked for."""
        return isinstance(self.body, Mapping) and self.body.get("stream") is True

    @property
    def session_id(self) -> str | None:
        """opencode's session id (``x-session-id`` header), if sent."""
        return self.headers.get("x-session-id")

    @property
    def tools(self) -> list[dict[str, Any]]:
        """The tool definitions offered to the model."""
        tools = self.body.get("tools") if isinstance(self.body, Mapping) else None
        return [t for t in tools if isinstance(t, dict)] if isinstance(tools, list) else []

    @property
    def tool_names(self) -> list[str]:
        """Names of the tools offered to the model, in request order."""
        names = []
        for tool in self.tools:
            function = tool.get("function")
            if isinstance(function, Mapping) and isinstance(function.get("name"), str):
                names.append(function["name"])
        return names

    @property
    def system_text(self) -> str:
        """The text of all system messages, joined by ``"\\n"``."""
        return "\n".join(content_text(m.get("content")) for m in self.messages if m.get("role") == "system")

    @property
    def is_title_request(self) -> bool:
        """opencode's title-generation request (system prompt starts with :data:`TITLE_SYSTEM_PREFIX`)."""
        return any(
            m.get("role") == "system" and content_text(m.get("content")).startswith(TITLE_SYSTEM_PREFIX)
            for m in self.messages
        )

    @property
    def last_message(self) -> dict[str, Any] | None:
        """The last message of the conversation."""
        messages = self.messages
        return messages[-1] if messages else None

    @property
    def last_is_user(self) -> bool:
        """The conversation ends with a user message (a new user turn, not a tool result)."""
        last = self.last_message
        return last is not None and last.get("role") == "user"

    @property
    def user_texts(self) -> list[str]:
        """The text of every user message, oldest first (see :attr:`last_user_text`)."""
        return [user_text(m.get("content")) for m in self.messages if m.get("role") == "user"]

    @property
    def last_user_text(self) -> str:
        """The text of the last user message (``""`` if none).

        A string ``content`` is returned unchanged; for a list of parts, the text parts are joined
        with ``"\\n"``, leaving out parts that are only a ``<system-reminder>`` block.
        """
        texts = self.user_texts
        return texts[-1] if texts else ""

    @property
    def tool_results(self) -> list[ToolResult]:
        """The tool results at the end of the conversation (``[]`` unless the last message is one)."""
        messages = self.messages
        start = len(messages)
        while start > 0 and messages[start - 1].get("role") == "tool":
            start -= 1
        names: dict[str, str] = {}
        for message in messages[:start]:
            for call in message.get("tool_calls") or []:
                if isinstance(call, Mapping) and isinstance(call.get("function"), Mapping):
                    names[str(call.get("id"))] = str(call["function"].get("name", ""))
        results = []
        for message in messages[start:]:
            call_id = str(message.get("tool_call_id", ""))
            results.append(ToolResult(names.get(call_id, ""), call_id, content_text(message.get("content"))))
        return results
