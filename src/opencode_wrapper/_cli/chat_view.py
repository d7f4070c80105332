"""Printing one session turn as it happens: streamed text, tool calls, errors (``chat``).

Server events differ from run mode's: text arrives as ``message.part.delta`` pieces and parts
are updated several times (a tool goes pending -> running -> completed).
"""

from __future__ import annotations

from typing import Any

from opencode_wrapper._cli.output import Output
from opencode_wrapper._cli.render import error_line, tool_lines, tool_summary
from opencode_wrapper.events import Event, RunError


class TurnPrinter:
    """Feed it every event of a turn; it prints each thing once, in order."""

    def __init__(self, out: Output) -> None:
        self.out = out
        self._user_messages: set[str] = set()
        self._kinds: dict[str, str] = {}
        self._shown: dict[str, str] = {}
        self._announced: set[str] = set()
        self._finished: set[str] = set()
        self._open_line = False

    def _write(self, text: str) -> None:
        if text:
            self.out.raw(text)
            self._open_line = not text.endswith("\n")

    def _line(self, text: Any) -> None:
        self.end_line()
        self.out.line(text)

    def end_line(self) -> None:
        if self._open_line:
            self.out.raw("\n")
            self._open_line = False

    def event(self, event: Event) -> None:
        kind = event.type
        props = event.properties
        if kind == "message.updated":
            info = props.get("info")
            if isinstance(info, dict) and info.get("role") == "user" and isinstance(info.get("id"), str):
                self._user_messages.add(info["id"])
        elif kind == "message.part.delta":
            part_id = str(props.get("partID") or "")
            if props.get("messageID") in self._user_messages or self._kinds.get(part_id, "text") != "text":
                return
            if props.get("field", "text") == "text" and isinstance(props.get("delta"), str):
                self._shown[part_id] = self._shown.get(part_id, "") + props["delta"]
                self._write(props["delta"])
        elif kind == "message.part.updated":
            self._part(event)
        elif kind == "session.error":
            error = event.error
            if error is None:
                return
            if error.name == "MessageAbortedError":
                self._line("[aborted]")
            else:
                self._line(error_line(RunError.from_event_error(error)))

    def _part(self, event: Event) -> None:
        part = event.part
        if part is None or part.message_id in self._user_messages:
            return
        part_id = part.id or ""
        self._kinds[part_id] = part.type or ""
        time = part.get("time")
        done = isinstance(time, dict) and time.get("end") is not None
        if part.type == "text":
            full = part.text or ""
            shown = self._shown.get(part_id, "")
            if full.startswith(shown) and len(full) > len(shown):
                self._write(full[len(shown) :])
                self._shown[part_id] = full
            if done:
                self.end_line()
        elif part.type == "reasoning" and done and part.text and part_id not in self._finished:
            self._finished.add(part_id)
            from rich.text import Text

            self._line(Text("[thinking] " + part.text.strip(), "dim italic"))
        elif part.type == "tool":
            status = part.state.status
            if status == "running" and part_id not in self._announced:
                self._announced.add(part_id)
                from rich.text import Text

                self._line(
                    Text.assemble(
                        ("[tool] ", "bold cyan"),
                        (part.tool or "?", "bold cyan"),
                        (" running" + (f": {tool_summary(part)}" if tool_summary(part) else ""), "dim"),
                    )
                )
            elif status in ("completed", "error") and part_id not in self._finished:
                self._finished.add(part_id)
                for line in tool_lines(part):
                    self._line(line)
