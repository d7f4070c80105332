"""Where the commands write: rich styling on a terminal, plain lines (flushed) otherwise."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from rich.console import Console, RenderableType
    from rich.text import Text


class Output:
    """One output stream. ``is_terminal`` decides between the live view and plain lines.

    ``OPENCODE_WRAPPER_PLAIN=1`` forces plain lines even on a terminal.
    """

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stdout
        forced_plain = os.environ.get("OPENCODE_WRAPPER_PLAIN", "") not in ("", "0")
        self.is_terminal = not forced_plain and _isatty(self.stream)
        self._console: Console | None = None

    @property
    def console(self) -> Console:
        """The rich console on this stream (created on first use)."""
        if self._console is None:
            from rich.console import Console

            # No markup or emoji codes: prompts and outputs such as "[[bash: ls]]" print verbatim.
            self._console = Console(
                file=self.stream,
                highlight=False,
                markup=False,
                emoji=False,
                soft_wrap=not self.is_terminal,
            )
        return self._console

    def line(self, text: Text | str = "") -> None:
        """One line: styled on a terminal, plain text otherwise."""
        if self.is_terminal:
            self.console.print(text)
        else:
            plain = text if isinstance(text, str) else text.plain
            self.stream.write(plain + "\n")
            self.stream.flush()

    def render(self, renderable: RenderableType) -> None:
        """A rich renderable (tables...); on a pipe it is printed without styles."""
        self.console.print(renderable)

    def raw(self, text: str) -> None:
        """Text exactly as given (JSON lines), flushed."""
        self.stream.write(text)
        self.stream.flush()


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
