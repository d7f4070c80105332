"""The state of many agents, folded from their events: what the live view shows.

Works with run-mode events (``tool_use`` once per finished call) and server events (parts
that update, e.g. a tool going ``pending`` -> ``running`` -> ``completed``).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from opencode_wrapper.batch import Task, TaskOutcome
from opencode_wrapper.events import Event, EventError

_STATE_BY_PART = {"step-start": "thinking", "reasoning": "thinking", "text": "answering"}


@dataclass
class AgentRow:
    """One running agent."""

    index: int
    label: str
    workspace: str
    started: float = field(default_factory=time.monotonic)
    state: str = "starting"
    tool: str | None = None
    tool_status: str | None = None
    tools_run: int = 0
    tokens: int = 0
    cost: float = 0.0
    #: Which try of the task this is (a batch with retries starts failed tries again).
    attempt: int = 1
    #: Whether a verify check runs after the agent (its last step then shows as "verifying").
    verifies: bool = False
    _finished_steps: set[str] = field(default_factory=set, repr=False)
    _finished_tools: set[str] = field(default_factory=set, repr=False)

    @property
    def elapsed_s(self) -> float:
        return time.monotonic() - self.started

    def apply(self, event: Event) -> None:
        """Fold one event into the row."""
        error = event.error
        if isinstance(error, EventError) and event.type in ("error", "session.error"):
            self.state = "error"
            return
        part = event.part
        if part is None:
            return
        kind = part.type
        if kind == "tool":
            self.tool = part.tool
            self.tool_status = part.state.status
            running = self.tool_status in ("pending", "running")
            self.state = f"running {part.tool}" if running else "thinking"
            if not running and (part.id or part.call_id or "") not in self._finished_tools:
                self._finished_tools.add(part.id or part.call_id or str(len(self._finished_tools)))
                self.tools_run += 1
        elif kind == "step-finish":
            key = part.id or str(len(self._finished_steps))
            if key in self._finished_steps:
                return  # a server may send a finished part again
            self._finished_steps.add(key)
            total = part.tokens.get("total")
            if isinstance(total, (int, float)) and not isinstance(total, bool):
                self.tokens += int(total)
            self.cost += part.cost or 0.0
            if part.reason == "tool-calls":
                self.state = "thinking"
            else:
                self.state = "verifying" if self.verifies else "finishing"
        elif kind in _STATE_BY_PART:
            self.state = _STATE_BY_PART[kind]


def task_label(task: Task, index: int) -> str:
    """A task's short name: its ``name``, else its workspace folder's name, else ``#index``."""
    if task.name:
        return task.name
    name = Path(os.fspath(task.workspace)).name
    return name or f"#{index + 1}"


def short_path(path: str, limit: int = 32) -> str:
    """A path for a narrow column: relative to the current directory or ``~``, cut on the left."""
    shown = path
    try:
        relative = os.path.relpath(path)
        if not relative.startswith(".."):
            shown = relative
        else:
            home = str(Path.home())
            if path.startswith(home + os.sep):
                shown = "~" + path[len(home) :]
    except ValueError:
        pass
    return shown if len(shown) <= limit else "..." + shown[-(limit - 3) :]


@dataclass
class Board:
    """Every agent of a batch: the running rows and the totals of the finished ones."""

    total: int
    started_at: float = field(default_factory=time.monotonic)
    rows: dict[int, AgentRow] = field(default_factory=dict)
    finished: int = 0
    failed: int = 0
    tokens: int = 0
    cost: float = 0.0
    #: Finished tasks whose verify check passed / failed.
    verified: int = 0
    verify_failed: int = 0
    #: Finished tasks that took more than one try.
    retried: int = 0

    @property
    def running(self) -> int:
        return len(self.rows)

    @property
    def elapsed_s(self) -> float:
        return time.monotonic() - self.started_at

    def start(self, index: int, task: Task) -> AgentRow:
        row = self.rows.get(index)
        if row is None:
            row = AgentRow(
                index=index,
                label=task_label(task, index),
                workspace=os.fspath(task.workspace),
                verifies=task.verify is not None,
            )
            self.rows[index] = row
        return row

    def attempt(self, index: int, number: int) -> AgentRow | None:
        """The task's try ``number`` is starting (its earlier try failed in a way worth retrying)."""
        row = self.rows.get(index)
        if row is not None:
            row.attempt = number
            row.state = "retrying"
            row.tool = row.tool_status = None
        return row

    def event(self, index: int, event: Event) -> AgentRow | None:
        row = self.rows.get(index)
        if row is not None:
            row.apply(event)
        return row

    def finish(self, outcome: TaskOutcome) -> AgentRow:
        """Take the task's row off the board and count its outcome; returns the last row state."""
        row = self.rows.pop(outcome.index, None)
        if row is None:
            row = AgentRow(
                index=outcome.index,
                label=task_label(outcome.task, outcome.index),
                workspace=os.fspath(outcome.task.workspace),
            )
        self.finished += 1
        if not outcome.ok:
            self.failed += 1
        if outcome.verified is not None:
            self.verified += outcome.verified
            self.verify_failed += not outcome.verified
        if len(outcome.attempts) > 1:
            self.retried += 1
            row.attempt = len(outcome.attempts)
        result = outcome.result
        if result is not None:
            # The result's sums are exact; the row may have missed events.
            row.tokens = result.token_usage.total
            row.cost = result.total_cost
        self.tokens += row.tokens
        self.cost += row.cost
        row.state = "ok" if outcome.ok else "failed"
        return row
