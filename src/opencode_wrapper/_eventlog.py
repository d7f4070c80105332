"""Event logs: one JSON line per event, flushed at once so partial progress survives a crash."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

from opencode_wrapper.errors import OpenCodeConfigError


class EventLog:
    """An owner-only (0600) JSON-lines file of events, truncated when opened."""

    def __init__(self, path: str | os.PathLike[str], exclude_types: frozenset[str] = frozenset()) -> None:
        try:
            fd = os.open(os.fspath(path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        except (OSError, TypeError) as exc:
            raise OpenCodeConfigError(f"log_file {path!r} cannot be opened for writing: {exc}") from exc
        try:
            os.fchmod(fd, 0o600)  # O_CREAT's mode does not apply to a file that already existed
        except OSError as exc:
            os.close(fd)
            raise OpenCodeConfigError(f"log_file {path!r} cannot be made owner-only (0600): {exc}") from exc
        self._file = os.fdopen(fd, "w", encoding="utf-8")
        self._exclude = exclude_types

    def write(self, event: Mapping[str, Any]) -> None:
        if self._file.closed or event.get("type") in self._exclude:
            return
        self._file.write(json.dumps(event, ensure_ascii=False) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()
