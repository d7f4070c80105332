"""The one accumulator: events of either transport folded into the fields of a ``RunResult``.

:class:`Fold` takes typed events one at a time (``add``) and keeps running totals (``usage``,
``cost``, ``steps``: what per-run limits watch) and everything a result needs. The two
transports describe a run differently, and the fold reads each the way opencode means it:

* run mode (``opencode run --format json``): one line per finished part; a *step* is a
  ``step_finish`` event, whose tokens and cost are that step's; the answer is the text of the last
  step.
* server mode (``opencode serve``): parts are sent again on every change and text streams as
  deltas; a *step* is an assistant message (its ``tokens``/``cost`` are re-sent whole on each
  update, so each message counts once, in its latest state); only assistant messages that answer
  the turn's own user message count (``parentID``), so a late event of the previous turn never
  lands in this one's result; the answer is the text parts of the last assistant message.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from opencode_wrapper._model.event import Event, EventError, TokenUsage, ToolCall
from opencode_wrapper._model.run_error import PermissionRejection, RunError, server_error_kind

__all__ = ["Fold", "diagnose_run", "parse_auto_rejections", "strip_ansi"]

_REJECTED = "rejected permission"


class Fold:
    """Events of one run or turn, folded as they arrive.

    Args:
        session_id: the session the run belongs to; server events of other sessions (sub-agents)
            are kept in ``events`` but not counted. ``None``: learnt from the first event.
        user_message_id: server mode: the id of the turn's own user message. Only assistant
            messages answering it count, and session errors from before it was stored belong to
            the previous turn. ``None``: every assistant message counts (seed behaviour).
    """

    def __init__(self, *, session_id: str | None = None, user_message_id: str | None = None) -> None:
        self.events: list[Event] = []
        self.session_id = session_id
        self._server = False
        # run mode
        self._step_texts: list[str] = []
        self._run_text = ""
        self._run_steps = 0
        self._run_usage = TokenUsage()
        self._run_cost = 0.0
        self._run_tools: list[ToolCall] = []
        self._run_error: RunError | None = None
        # server mode
        self._user_id = user_message_id
        self._seen_user = user_message_id is None
        self._user_messages: set[str] = set()
        self._infos: dict[str, dict[str, Any]] = {}
        self._parts: dict[str, dict[str, Any]] = {}
        self._session_errors: list[EventError] = []

    # ------------------------------------------------------------------ feeding

    def add(self, event: Event) -> None:
        """Fold one event (in arrival order)."""
        self.events.append(event)
        if self.session_id is None:
            self.session_id = event.session_id
        if event.is_server_event:
            self._server = True
            self._add_server(event)
        else:
            self._add_run(event)

    def add_final_messages(self, messages: list[dict[str, Any]]) -> None:
        """Server mode: ``GET /session/{id}/message`` entries (``{"info", "parts"}``), which override
        what the events said about the same messages and parts."""
        self._server = True
        for number, message in enumerate(messages):
            info = message.get("info") if isinstance(message, dict) else None
            if not isinstance(info, dict) or not self._wanted(info):
                continue
            mid = str(info.get("id") or f"~final{number}")
            self._infos[mid] = info
            for index, part in enumerate(message.get("parts") or []):
                if isinstance(part, dict):
                    pid = str(part.get("id") or f"{mid}~{index}")
                    self._parts[pid] = {**part, "messageID": part.get("messageID") or mid}

    def _add_run(self, event: Event) -> None:
        kind = event.kind
        if kind == "step_start":
            self._step_texts = []
            self._run_text = ""  # the answer is the text of the *last* step, even if it has none
        elif kind in ("text", "text_delta"):
            text = event.text
            if text is not None:
                self._step_texts.append(text)
                self._run_text = "".join(self._step_texts)
        elif kind == "tool":
            call = event.tool
            if call is not None:
                self._run_tools.append(call)
        elif kind == "step_finish":
            self._run_steps += 1
            tokens = event.tokens
            if tokens is not None:
                self._run_usage += tokens
            self._run_cost += event.cost or 0.0
        elif kind == "error" and event.error is not None and self._run_error is None:
            self._run_error = RunError.from_event_error(event.error)

    def _counted(self, event: Event) -> bool:
        return self.session_id is None or event.session_id in (self.session_id, None)

    def _wanted(self, info: Mapping[str, Any]) -> bool:
        return info.get("role") == "assistant" and (
            self._user_id is None or info.get("parentID") == self._user_id
        )

    def _add_server(self, event: Event) -> None:
        if not self._counted(event):
            return
        props = event.properties
        kind = event.type
        if kind == "message.updated":
            info = props.get("info")
            if not isinstance(info, dict) or not isinstance(info.get("id"), str):
                return
            if info["id"] == self._user_id:
                self._seen_user = True
            elif info.get("role") == "user":
                self._user_messages.add(info["id"])
            elif self._wanted(info):
                self._seen_user = True
                self._infos[info["id"]] = info
        elif kind == "message.part.updated":
            part = props.get("part")
            if isinstance(part, dict):
                pid = part.get("id")
                self._parts[pid if isinstance(pid, str) else f"~{len(self._parts)}"] = dict(part)
        elif kind == "message.part.delta":
            # A part streams as deltas and is normally re-sent whole at its end; an aborted part
            # may never be, so the deltas are applied to the last snapshot.
            target = self._parts.get(str(props.get("partID")))
            name, delta = props.get("field"), props.get("delta")
            if target is not None and isinstance(name, str) and isinstance(delta, str):
                before = target.get(name)
                target[name] = (before if isinstance(before, str) else "") + delta
        elif kind == "session.error" and event.error is not None and self._seen_user:
            self._session_errors.append(event.error)

    # ------------------------------------------------------------------ running totals

    @property
    def usage(self) -> TokenUsage:
        """Tokens so far (a copy)."""
        if not self._server:
            return TokenUsage(**vars(self._run_usage))
        total = TokenUsage()
        for info in self._infos.values():
            tokens = info.get("tokens")
            if isinstance(tokens, dict):
                total.add(tokens)
        return total

    @property
    def cost(self) -> float:
        """Cost so far."""
        if not self._server:
            return self._run_cost
        total = 0.0
        for info in self._infos.values():
            cost = info.get("cost")
            if isinstance(cost, (int, float)) and not isinstance(cost, bool):
                total += float(cost)
        return total

    @property
    def steps(self) -> int:
        """Model steps so far."""
        return len(self._infos) if self._server else self._run_steps

    @property
    def model_was_called(self) -> bool:
        """Whether a model step started (a retry would send the prompt a second time)."""
        return bool(self._infos) or any(ev.kind == "step_start" for ev in self.events)

    # ------------------------------------------------------------------ result fields

    def fields(self) -> dict[str, Any]:
        """The ``RunResult`` fields the events determine (``error``: what the events say went wrong)."""
        if not self._server:
            rejections = [
                PermissionRejection(permission=call.name or "", message=call.error)
                for call in self._run_tools
                if call.status == "error" and _REJECTED in (call.error or "")
            ]
            return {
                "events": list(self.events),
                "final_text": self._run_text,
                "tool_calls": list(self._run_tools),
                "token_usage": self.usage,
                "total_cost": self._run_cost,
                "turns": self._run_steps,
                "session_id": self.session_id,
                "error": self._run_error,
                "permission_rejections": rejections,
            }
        return self._server_fields()

    def _server_fields(self) -> dict[str, Any]:
        order = sorted(self._infos)  # opencode's ids ascend in creation order
        by_message: dict[str, list[dict[str, Any]]] = {mid: [] for mid in order}
        loose: list[dict[str, Any]] = []
        for pid in sorted(self._parts):
            part = self._parts[pid]
            owner = part.get("messageID")
            if isinstance(owner, str) and owner in by_message:
                by_message[owner].append(part)
            elif self._user_id is None and owner not in self._user_messages:
                loose.append(part)  # seed-built events: parts without their message
        counted = [p for mid in order for p in by_message[mid]] or loose
        tool_calls: list[ToolCall] = []
        rejections: list[PermissionRejection] = []
        for part in counted:
            if part.get("type") != "tool":
                continue
            call = ToolCall(
                {
                    "type": "tool",
                    "tool": part.get("tool"),
                    "callID": part.get("callID"),
                    "state": part.get("state") if isinstance(part.get("state"), dict) else {},
                    "id": part.get("id"),
                    "messageID": part.get("messageID"),
                }
            )
            tool_calls.append(call)
            if call.status == "error" and _REJECTED in (call.error or ""):
                rejections.append(PermissionRejection(permission=call.name or "", message=call.error))
        last_parts = by_message[order[-1]] if order else loose
        final_text = "".join(
            str(p.get("text") or "") for p in last_parts if p.get("type") == "text" and not p.get("ignored")
        ).strip()
        structured = None
        for mid in order:
            if "structured" in self._infos[mid]:
                structured = self._infos[mid]["structured"]
        return {
            "events": list(self.events),
            "final_text": final_text,
            "tool_calls": tool_calls,
            "token_usage": self.usage,
            "total_cost": self.cost,
            "turns": len(order),
            "session_id": self.session_id,
            "structured": structured,
            "error": _diagnose_server([self._infos[mid] for mid in order], last_parts, self._session_errors),
            "permission_rejections": rejections,
        }


def _is_stack_trace(message: str) -> bool:
    # prompt_async's own error handler re-publishes the failure as "UnknownError: ...\n    at ...".
    return "\n    at " in message


def telling_error(errors: list[EventError]) -> EventError | None:
    """The most telling of several opencode errors (stack-trace re-publications come last)."""
    for error in errors:
        if not _is_stack_trace(error.message):
            return error
    return errors[0] if errors else None


def _diagnose_server(
    infos: list[dict[str, Any]], last_parts: list[dict[str, Any]], session_errors: list[EventError]
) -> RunError | None:
    for info in reversed(infos):
        error = info.get("error")
        if isinstance(error, dict):
            typed = EventError(error)
            return RunError.from_event_error(typed, kind=server_error_kind(typed))
    telling = telling_error(session_errors)
    if telling is not None:
        return RunError.from_event_error(telling, kind=server_error_kind(telling))
    if infos and infos[-1].get("finish") == "tool-calls":
        # The turn stopped right after a tool step: a refused request is why, if there was one.
        for part in last_parts:
            state = part.get("state")
            if part.get("type") != "tool" or not isinstance(state, dict) or state.get("status") != "error":
                continue
            text = str(state.get("error") or "")
            if _REJECTED in text:
                return RunError(
                    kind="permission_rejected",
                    message=f"the {part.get('tool')} tool call was refused and the turn stopped: {text}",
                )
            if part.get("tool") == "question":
                return RunError(
                    kind="question_rejected",
                    message=f"the model's question was dismissed and the turn stopped: {text}",
                )
    return None


# ----------------------------------------------------------------------------- run mode's end

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def strip_ansi(text: str) -> str:
    return _ANSI.sub("", text).strip()


def parse_auto_rejections(stderr: str) -> list[PermissionRejection]:
    """Parse opencode's ``! permission requested: bash (echo hi); auto-rejecting`` stderr lines."""
    found: list[PermissionRejection] = []
    marker = "permission requested: "
    for raw in stderr.splitlines():
        line = strip_ansi(raw)
        if marker not in line or not line.endswith("auto-rejecting"):
            continue
        body = line.split(marker, 1)[1].rsplit(";", 1)[0].strip()
        name, _, rest = body.partition(" (")
        found.append(
            PermissionRejection(permission=name.strip(), pattern=rest[:-1] if rest.endswith(")") else None)
        )
    return found


def _last_step_stopped_on_tools(events: list[Event]) -> bool:
    for ev in reversed(events):
        if ev.kind == "step_finish":
            part = ev.part
            return part is not None and part.reason == "tool-calls"
    return False


def diagnose_run(
    fields: dict[str, Any], *, exit_code: int | None, stderr: str
) -> tuple[RunError | None, list[PermissionRejection]]:
    """Why a finished ``opencode run`` failed (if it did), from its exit code, events and stderr.

    Returns the error and the permission rejections (stderr names the pattern, tool events only the
    tool: the richer record wins).
    """
    rejections: list[PermissionRejection] = parse_auto_rejections(stderr) or fields["permission_rejections"]
    events: list[Event] = fields["events"]
    error: RunError | None = fields["error"]
    if error is not None:
        return error, rejections
    if exit_code not in (0, None):
        lines = [ln for ln in stderr.strip().splitlines() if ln.strip()]
        reason = strip_ansi(lines[-1]) if lines else "no error message"
        return RunError(
            kind="process_exit", message=f"opencode exited with {exit_code}: {reason}"
        ), rejections
    if rejections and _last_step_stopped_on_tools(events):
        refused = ", ".join(
            f"{r.permission} ({r.pattern})" if r.pattern else r.permission for r in rejections
        )
        return (
            RunError(
                kind="permission_rejected",
                message=f"opencode auto-rejected a permission request and stopped: {refused}. "
                "Allow the tool (RunConfig(permission={...: 'allow'})) or use a session with on_permission.",
            ),
            rejections,
        )
    if exit_code == 0 and _last_step_stopped_on_tools(events):
        return RunError(
            kind="process_exit", message="opencode stopped after a tool step without an answer"
        ), rejections
    if exit_code == 0 and not any(ev.kind == "step_finish" for ev in events):
        return RunError(
            kind="process_exit", message="opencode exited 0 without finishing a model step"
        ), rejections
    return None, rejections
