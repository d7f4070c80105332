"""Which directories' opencode instances a server keeps: those in use, and a few idle ones.

opencode keeps every directory's instance (project state, file watcher, MCP servers) for the
server's whole life (upstream #33720, #47727), so a server that sees many workspaces grows without
bound. :class:`Instances` counts the sessions of each directory and, past ``idle_limit`` idle
directories, names the least recently used one to dispose. Keeping a few idle ones means a
directory used again soon (one workspace, many runs in turn) does not pay its set-up again.
"""

from __future__ import annotations

import collections

from opencode_wrapper.errors import OpenCodeConfigError

__all__ = ["Instances"]


class Instances:
    """The sessions per directory, and the idle directories in least-recently-used order.

    Args:
        idle_limit: how many idle directories keep their instance (``None``: all of them).
    """

    def __init__(self, idle_limit: int | None) -> None:
        if idle_limit is not None and (
            isinstance(idle_limit, bool) or not isinstance(idle_limit, int) or idle_limit < 0
        ):
            raise OpenCodeConfigError(f"idle_instances must be an integer >= 0 or None, got {idle_limit!r}")
        self.idle_limit = idle_limit
        self._users: dict[str, int] = {}
        self._idle: collections.OrderedDict[str, None] = collections.OrderedDict()
        #: Directories disposed so far (for tests and benchmarks).
        self.disposed = 0

    def use(self, directory: str) -> None:
        """A session in ``directory`` opened: its instance must stay."""
        self._idle.pop(directory, None)
        self._users[directory] = self._users.get(directory, 0) + 1

    def release(self, directory: str) -> list[str]:
        """A session in ``directory`` ended; returns the directories to dispose now."""
        users = self._users.get(directory, 0) - 1
        if users > 0:
            self._users[directory] = users
            return []
        self._users.pop(directory, None)
        if self.idle_limit is None:
            return []
        self._idle[directory] = None
        disposing = []
        while len(self._idle) > self.idle_limit:
            oldest, _ = self._idle.popitem(last=False)
            disposing.append(oldest)
        return disposing

    def in_use(self, directory: str) -> bool:
        return directory in self._users
