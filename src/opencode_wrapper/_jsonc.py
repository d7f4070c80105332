"""JSONC (JSON with comments and trailing commas) parsing, as opencode accepts it."""

from __future__ import annotations

import json
from typing import Any


def strip_jsonc(source: str) -> str:
    """Turn JSONC into strict JSON: drop ``//`` and ``/* */`` comments and trailing commas.

    Strings are copied verbatim (escapes included), so ``"http://x"`` survives.
    """
    out: list[str] = []
    i, n = 0, len(source)
    while i < n:
        c = source[i]
        if c == '"':
            j = i + 1
            while j < n and source[j] != '"':
                j += 2 if source[j] == "\\" else 1
            out.append(source[i : j + 1])
            i = j + 1
        elif source.startswith("//", i):
            newline = source.find("\n", i)
            i = n if newline == -1 else newline
        elif source.startswith("/*", i):
            end = source.find("*/", i + 2)
            i = n if end == -1 else end + 2
        elif c == "," and _next_significant(source, i + 1) in ("}", "]"):
            i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def _next_significant(source: str, i: int) -> str:
    n = len(source)
    while i < n:
        if source[i].isspace():
            i += 1
        elif source.startswith("//", i):
            newline = source.find("\n", i)
            i = n if newline == -1 else newline
        elif source.startswith("/*", i):
            end = source.find("*/", i + 2)
            i = n if end == -1 else end + 2
        else:
            return source[i]
    return ""


def loads_jsonc(source: str) -> Any:
    """Parse JSON, falling back to JSONC. Raises ``json.JSONDecodeError`` if neither parses."""
    try:
        return json.loads(source)
    except json.JSONDecodeError:
        return json.loads(strip_jsonc(source))
