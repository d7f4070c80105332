"""Asking the person at the keyboard: permission requests and the model's questions (``chat``)."""

from __future__ import annotations

import asyncio
from typing import Any

from opencode_wrapper._cli.lines import LineReader
from opencode_wrapper._cli.output import Output
from opencode_wrapper.session import PermissionReply

PERMISSION_CHOICES = "[y]es once, [a]lways, [n]o, or type a reason to refuse"


def describe_permission(request: dict[str, Any]) -> str:
    """``bash: echo hi`` from a ``permission.asked`` request."""
    name = str(request.get("permission") or "a tool")
    metadata = request.get("metadata")
    detail = ""
    if isinstance(metadata, dict):
        for key in ("command", "filepath", "filePath", "path", "url", "pattern"):
            value = metadata.get(key)
            if isinstance(value, str) and value:
                detail = value
                break
    if not detail:
        patterns = request.get("patterns")
        if isinstance(patterns, list):
            detail = ", ".join(str(p) for p in patterns)
    return f"{name}: {detail}" if detail else name


def read_permission_answer(text: str) -> str | PermissionReply | None:
    """The reply for what was typed; ``None`` when it means nothing (ask again)."""
    answer = text.strip()
    lowered = answer.lower()
    if lowered in ("y", "yes", "o", "once"):
        return "once"
    if lowered in ("a", "always"):
        return "always"
    if lowered in ("n", "no", "reject"):
        return "reject"
    if not answer:
        return None
    return PermissionReply.reject(answer)


def read_question_answer(text: str, options: list[str], multiple: bool) -> list[str] | None:
    """Chosen labels from ``2`` / ``1,3`` / a label / free text; ``None`` for an invalid choice."""
    answer = text.strip()
    pieces = [p.strip() for p in answer.split(",")] if multiple else [answer]
    chosen = []
    for piece in pieces:
        if piece.isdigit() and 1 <= int(piece) <= len(options):
            chosen.append(options[int(piece) - 1])
        elif piece.isdigit():
            return None
        elif piece:
            match = [label for label in options if label.lower() == piece.lower()]
            chosen.append(match[0] if match else piece)  # free text: opencode accepts custom answers
    return chosen or None


async def ask(out: Output, reader: LineReader, prompt: str) -> str | None:
    """Show ``prompt`` and read the answer (echoed when it does not come from a terminal)."""
    out.raw(prompt)
    line = await reader.readline()
    if line is not None and not reader.is_terminal:
        out.raw(line + "\n")
    return line


class HumanPrompter:
    """The ``on_permission`` / ``on_question`` callbacks of ``chat``: they ask on the terminal.

    One question at a time (a lock): requests of parallel tool calls queue up.
    """

    def __init__(self, out: Output, reader: LineReader) -> None:
        self.out = out
        self.reader = reader
        self._lock = asyncio.Lock()

    async def _ask(self, prompt: str) -> str | None:
        return await ask(self.out, self.reader, prompt)

    async def on_permission(self, request: dict[str, Any]) -> str | PermissionReply:
        from rich.text import Text

        async with self._lock:
            self.out.line(Text.assemble(("\n[permission] ", "bold magenta"), describe_permission(request)))
            while True:
                typed = await self._ask(f"  allow? {PERMISSION_CHOICES}: ")
                if typed is None:
                    self.out.line("  (no answer: refused)")
                    return "reject"
                reply = read_permission_answer(typed)
                if reply is not None:
                    return reply

    async def on_question(self, request: dict[str, Any]) -> list[list[str]] | None:
        from rich.text import Text

        questions = request.get("questions")
        if not isinstance(questions, list):
            return None
        answers: list[list[str]] = []
        async with self._lock:
            for question in questions:
                if not isinstance(question, dict):
                    return None
                header = str(question.get("header") or "question")
                self.out.line(
                    Text.assemble(
                        ("\n[question] ", "bold magenta"),
                        (f"{header}: ", "bold"),
                        str(question.get("question") or ""),
                    )
                )
                raw_options = question.get("options")
                options = (
                    [o for o in raw_options if isinstance(o, dict)] if isinstance(raw_options, list) else []
                )
                labels = [str(o.get("label") or "") for o in options]
                for number, option in enumerate(options, start=1):
                    description = option.get("description")
                    self.out.line(
                        f"  {number}) {option.get('label')}" + (f" - {description}" if description else "")
                    )
                multiple = bool(question.get("multiple"))
                hint = "numbers separated by commas" if multiple else "a number"
                while True:
                    typed = await self._ask(f"  answer ({hint}, or your own words; empty to dismiss): ")
                    if typed is None or not typed.strip():
                        self.out.line("  (dismissed)")
                        return None
                    chosen = read_question_answer(typed, labels, multiple)
                    if chosen is not None:
                        answers.append(chosen)
                        break
        return answers
