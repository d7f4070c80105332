"""The views of a batch: a live table on a terminal, plain lines otherwise.

Both are told of every start, event and finish (see ``observe.TaskObserver``) and keep a
:class:`~opencode_wrapper._cli.agents.Board`. The live view redraws from the event loop (a
ticker task, no thread), so the board is never read while it changes.
"""

from __future__ import annotations

import asyncio
import contextlib
from types import TracebackType
from typing import TYPE_CHECKING, Protocol

from opencode_wrapper._cli.agents import AgentRow, Board, short_path
from opencode_wrapper._cli.output import Output
from opencode_wrapper._cli.render import status_style, tool_summary
from opencode_wrapper.batch import Task, TaskOutcome
from opencode_wrapper.events import Event, RunError

if TYPE_CHECKING:
    from rich.console import RenderableType
    from rich.live import Live
    from rich.text import Text

#: Redraws per second of the live view.
REFRESH_PER_SECOND = 4
_STATE_STYLES = {"running": "yellow", "retrying": "yellow", "verifying": "cyan"}


class BatchView(Protocol):
    board: Board

    async def __aenter__(self) -> BatchView: ...

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...

    def task_started(self, index: int, task: Task) -> None: ...

    def task_event(self, index: int, event: Event) -> None: ...

    def task_attempt(self, index: int, number: int, previous: RunError | None) -> None: ...

    def task_finished(self, outcome: TaskOutcome) -> None: ...

    def note(self, text: str) -> None: ...


def make_view(out: Output, total: int) -> BatchView:
    """The live table on a terminal, plain lines on a pipe or file."""
    board = Board(total=total)
    return LiveView(out, board) if out.is_terminal else PlainView(out, board)


def format_elapsed(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def state_text(row: AgentRow) -> str:
    """What a row is doing, with its try when it is not the first: ``thinking (try 2)``."""
    return row.state if row.attempt <= 1 else f"{row.state} (try {row.attempt})"


def retry_text(row: AgentRow, number: int, previous: RunError | None) -> Text:
    """``retry  api            try 2 after api_error (HTTP 425): too early``."""
    from rich.text import Text

    text = Text()
    text.append("retry  ", "bold yellow")
    text.append(f"{row.label:<14} ", "bold")
    text.append(f"try {number}")
    if previous is not None:
        text.append(f" after {previous}", "yellow")
    return text


def finished_text(row: AgentRow, outcome: TaskOutcome, board: Board) -> Text:
    """``ok     api   0:03  25 tokens  $0.0000  tools: bash  verified  2 tries  (2/3)`` or the
    failure's reason."""
    from rich.text import Text

    result = outcome.result
    tools = sorted(set(result.tools)) if result else []
    counts = f"({board.finished}/{board.total})"
    text = Text()
    if outcome.ok:
        text.append("ok     ", "bold green")
    else:
        text.append("failed ", "bold red")
    text.append(f"{row.label:<14} ", "bold")
    text.append(f"{format_elapsed(outcome.elapsed_s):>6}  {row.tokens:>7,} tokens  ${row.cost:.4f}")
    if tools:
        text.append(f"  tools: {', '.join(tools)}", "cyan")
    if outcome.verified is True:
        text.append("  verified", "green")
    elif outcome.verified is False:
        text.append("  verify failed", "red")
    if len(outcome.attempts) > 1:
        text.append(f"  {len(outcome.attempts)} tries", "yellow")
    if not outcome.ok and outcome.error is not None:
        text.append(f"  {outcome.error}", "red")
    text.append(f"  {counts}", "dim")
    return text


class PlainView:
    """One line per start, finished tool call and finish; for pipes, files and CI logs."""

    def __init__(self, out: Output, board: Board) -> None:
        self.out = out
        self.board = board
        self._tools_seen: set[str] = set()

    async def __aenter__(self) -> PlainView:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None

    def task_started(self, index: int, task: Task) -> None:
        row = self.board.start(index, task)
        self.out.line(f"start  {row.label:<14} {row.workspace}")

    def task_event(self, index: int, event: Event) -> None:
        row = self.board.event(index, event)
        part = event.part
        if row is None or part is None or part.type != "tool":
            return
        status = part.state.status
        key = f"{index}:{part.id or part.call_id}"
        if status in ("completed", "error") and key not in self._tools_seen:
            self._tools_seen.add(key)
            summary = tool_summary(part)
            self.out.line(
                f"tool   {row.label:<14} {part.tool} {status}" + (f": {summary}" if summary else "")
            )

    def task_attempt(self, index: int, number: int, previous: RunError | None) -> None:
        row = self.board.attempt(index, number)
        if row is not None:
            self.out.line(retry_text(row, number, previous))

    def task_finished(self, outcome: TaskOutcome) -> None:
        row = self.board.finish(outcome)
        self.out.line(finished_text(row, outcome, self.board))

    def note(self, text: str) -> None:
        self.out.line(text)


class LiveView:
    """A table of the running agents over a progress bar, redrawn in place (rich ``Live``)."""

    def __init__(self, out: Output, board: Board) -> None:
        self.out = out
        self.board = board
        self._live: Live | None = None
        self._ticker: asyncio.Task[None] | None = None

    async def __aenter__(self) -> LiveView:
        from rich.live import Live

        self._live = Live(
            self,
            console=self.out.console,
            auto_refresh=False,
            transient=False,
            vertical_overflow="crop",
        )
        self._live.start()
        self._ticker = asyncio.ensure_future(self._tick())
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        if self._live is not None:
            self._live.refresh()
            self._live.stop()

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(1 / REFRESH_PER_SECOND)
            if self._live is not None:
                self._live.refresh()

    def task_started(self, index: int, task: Task) -> None:
        self.board.start(index, task)

    def task_event(self, index: int, event: Event) -> None:
        self.board.event(index, event)

    def task_attempt(self, index: int, number: int, previous: RunError | None) -> None:
        row = self.board.attempt(index, number)
        if row is not None:
            self.out.console.print(retry_text(row, number, previous))

    def task_finished(self, outcome: TaskOutcome) -> None:
        row = self.board.finish(outcome)
        self.out.console.print(finished_text(row, outcome, self.board))

    def note(self, text: str) -> None:
        self.out.console.print(text)

    def __rich__(self) -> RenderableType:
        return render_board(self.board, max_rows=max(3, self.out.console.height - 6))


def render_board(board: Board, *, max_rows: int = 40) -> RenderableType:
    """The running agents' table and the overall progress line."""
    from rich import box
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    table.add_column("#", justify="right", style="dim")
    table.add_column("Agent", style="bold", max_width=20, no_wrap=True, overflow="ellipsis")
    table.add_column("Workspace", no_wrap=True)
    table.add_column("Elapsed", justify="right")
    table.add_column("Tool", no_wrap=True)
    table.add_column("Tokens", justify="right")
    table.add_column("Cost", justify="right")
    table.add_column("State", no_wrap=True)
    rows = sorted(board.rows.values(), key=lambda r: r.index)
    for row in rows[:max_rows]:
        tool = Text()
        if row.tool:
            tool.append(row.tool, "cyan")
            tool.append(f" {row.tool_status or ''}", status_style(row.tool_status))
        table.add_row(
            str(row.index + 1),
            row.label,
            short_path(row.workspace),
            format_elapsed(row.elapsed_s),
            tool,
            f"{row.tokens:,}",
            f"${row.cost:.4f}",
            Text(state_text(row), _STATE_STYLES.get(row.state.split(" ", 1)[0], "")),
        )
    if len(rows) > max_rows:
        table.add_row("", f"... {len(rows) - max_rows} more", "", "", "", "", "", "")
    return Group(table, progress_line(board))


def progress_line(board: Board) -> RenderableType:
    """``━━━━━━━╸━━━━  3/10  0:12  ETA 0:25  2 running  1 failed  250 tokens  $0.0012``."""
    from rich.progress_bar import ProgressBar
    from rich.table import Table
    from rich.text import Text

    elapsed = board.elapsed_s
    done = board.finished
    if 0 < done < board.total:
        eta = format_elapsed(elapsed / done * (board.total - done))
    else:
        eta = "0:00" if done >= board.total else "-:--"
    line = Table.grid(padding=(0, 2))
    line.add_column(width=20)
    line.add_column(no_wrap=True, overflow="ellipsis")
    info = Text.assemble(
        (f"{done}/{board.total}", "bold"),
        f"  {format_elapsed(elapsed)}  ETA {eta}  {board.running} running  ",
        (f"{board.failed} failed", "red" if board.failed else ""),
        f"  {board.tokens:,} tokens  ${board.cost:.4f}",
    )
    line.add_row(ProgressBar(total=max(board.total, 1), completed=done, width=20), info)
    return line
