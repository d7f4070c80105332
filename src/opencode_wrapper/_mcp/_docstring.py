"""Reading a tool's description and its parameters' descriptions from a docstring.

Understands the two common layouts: Google style (an ``Args:`` section with ``name: text`` or
``name (type): text`` entries, continuation lines indented deeper) and reST fields
(``:param name: text``). Everything before the first section header is the tool description.
"""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass, field

_SECTION = re.compile(
    r"^(Args|Arguments|Parameters|Params|Keyword Args|Keyword Arguments|Returns|Return|Yields|Raises|"
    r"Examples?|Notes?|Attributes|See Also|Warnings?|Todo)\s*:\s*$",
    re.IGNORECASE,
)
_PARAM_SECTIONS = {"args", "arguments", "parameters", "params", "keyword args", "keyword arguments"}
_GOOGLE_ENTRY = re.compile(r"^(\*{0,2}[A-Za-z_][A-Za-z0-9_]*)\s*(\([^)]*\))?\s*:\s*(.*)$")
_REST_PARAM = re.compile(r"^:param\s+(?:[^:\s]+\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*:\s*(.*)$")


@dataclass(frozen=True)
class Docstring:
    """A parsed docstring: the free text and the per-parameter descriptions."""

    description: str = ""
    params: dict[str, str] = field(default_factory=dict)


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def parse_docstring(doc: str | None) -> Docstring:
    """Split ``doc`` into the description (text before any section) and parameter descriptions."""
    if not doc:
        return Docstring()
    lines = inspect.cleandoc(doc).splitlines()
    description: list[str] = []
    params: dict[str, str] = {}
    section: str | None = None
    current: str | None = None
    entry_indent = 0
    for line in lines:
        stripped = line.strip()
        header = _SECTION.match(stripped) if _indent(line) == 0 else None
        if header:
            section, current = header.group(1).lower(), None
            continue
        rest = _REST_PARAM.match(stripped)
        if rest:
            section, current = "rest", rest.group(1)
            params[current] = rest.group(2).strip()
            continue
        if section is None:
            description.append(line)
        elif section in _PARAM_SECTIONS:
            entry = _GOOGLE_ENTRY.match(stripped)
            if entry and (current is None or _indent(line) <= entry_indent):
                current, entry_indent = entry.group(1).lstrip("*"), _indent(line)
                params[current] = entry.group(3).strip()
            elif current is not None and stripped:
                params[current] = f"{params[current]} {stripped}".strip()
        elif section == "rest" and current is not None and stripped and not stripped.startswith(":"):
            params[current] = f"{params[current]} {stripped}".strip()
    return Docstring("\n".join(description).strip(), params)
