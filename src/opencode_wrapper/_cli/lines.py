"""Reading what the person types, line by line, without blocking the event loop.

A terminal or pipe is watched with ``loop.add_reader`` (no thread is left blocked in ``input()``
when the program ends); a regular file, which cannot be watched, is read in a worker thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from typing import TextIO


class LineReader:
    """``await reader.readline()`` gives the next line without its newline, or ``None`` at EOF."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream if stream is not None else sys.stdin
        self._fd = self._stream.fileno()
        self._lines: asyncio.Queue[str | None] = asyncio.Queue()
        self._pending = b""
        self._watching = False
        self._eof = False
        loop = asyncio.get_running_loop()
        try:
            loop.add_reader(self._fd, self._on_readable)
            self._watching = True
        except (PermissionError, ValueError, OSError, NotImplementedError):
            self._watching = False  # a regular file: read it in a thread

    def close(self) -> None:
        if self._watching:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self._fd)
            self._watching = False

    @property
    def is_terminal(self) -> bool:
        """Whether the person types here (a terminal echoes what is typed; a pipe does not)."""
        try:
            return self._stream.isatty()
        except (AttributeError, ValueError):
            return False

    def interrupt(self) -> None:
        """Make the waiting (or next) ``readline`` return ``None``, as at EOF."""
        self._lines.put_nowait(None)

    def _on_readable(self) -> None:
        try:
            chunk = os.read(self._fd, 65536)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:
            if self._pending:
                self._lines.put_nowait(self._pending.decode("utf-8", errors="replace"))
                self._pending = b""
            self._lines.put_nowait(None)
            self.close()
            return
        self._pending += chunk
        *complete, self._pending = self._pending.split(b"\n")
        for line in complete:
            self._lines.put_nowait(line.decode("utf-8", errors="replace").rstrip("\r"))

    async def readline(self) -> str | None:
        if self._eof:
            return None
        if not self._watching and self._lines.empty() and not self._eof:
            line: str = await asyncio.to_thread(self._stream.readline)
            if not line:
                self._eof = True
                return None
            return line.rstrip("\r\n")
        value = await self._lines.get()
        if value is None:
            self._eof = True
        return value
