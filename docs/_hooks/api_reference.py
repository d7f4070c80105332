"""MkDocs hook: the API reference of ``opencode_wrapper``'s top-level names, made from ``__all__``.

A page that contains the line ``<!-- api-exports: PACKAGE -->`` gets, in its place, one
mkdocstrings block per name in ``PACKAGE.__all__``, grouped by the module that defines it, so
the page never falls behind the package. Names defined in a public module that has its own
reference page (:data:`MODULE_PAGES`) are listed with a link to it instead of being shown twice.

The package is read with griffe (the library mkdocstrings uses): statically, nothing is imported.
"""

from __future__ import annotations

import re
from collections import defaultdict
from functools import cache
from pathlib import Path
from typing import Any

import griffe

#: Public modules documented on their own page (``reference/api/<name>.md``).
MODULE_PAGES: frozenset[str] = frozenset(
    {
        "opencode_wrapper.config",
        "opencode_wrapper.errors",
        "opencode_wrapper.events",
        "opencode_wrapper.testing",
        "opencode_wrapper.tools",
    }
)

#: Section titles for the modules that define top-level names; any other module gets its own name.
SECTION_TITLES: dict[str, str] = {
    "opencode_wrapper.client": "One-shot runs and the client",
    "opencode_wrapper.session": "Sessions",
    "opencode_wrapper.server": "Servers",
    "opencode_wrapper.batch": "Many agents",
    "opencode_wrapper.pool": "Server pools",
    "opencode_wrapper._lean": "The lean profile",
    "opencode_wrapper._proc.binary": "The opencode binary",
    "opencode_wrapper._http": "HTTP transport",
}

_MARKER = re.compile(r"^<!-- api-exports: ([\w.]+) -->$", re.MULTILINE)


@cache
def _package(name: str, src: str) -> griffe.Module:
    loaded = griffe.load(name, search_paths=[src])
    assert isinstance(loaded, griffe.Module)
    return loaded


def _defining_module(obj: griffe.Object | griffe.Alias) -> str:
    path = obj.target_path if isinstance(obj, griffe.Alias) else obj.path
    return path.rsplit(".", 1)[0]


def _owning_page_module(module: str) -> str | None:
    """The public module with its own page that ``module`` belongs to, if any."""
    for page_module in MODULE_PAGES:
        if module == page_module or module.startswith(page_module + "."):
            return page_module
    return None


def exports_markdown(package_name: str, src: str) -> str:
    """Markdown for every name in ``package_name.__all__`` (``src``: the folder it is in)."""
    package = _package(package_name, src)
    exported = [str(name) for name in package.exports or []]
    sections: dict[str, list[str]] = defaultdict(list)
    elsewhere: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for name in exported:
        module = _defining_module(package[name])
        page_module = _owning_page_module(module)
        if page_module is not None:
            elsewhere[page_module].append((name, f"{module}.{name}"))
        else:
            sections[module].append(name)
    out: list[str] = []
    for module, names in sections.items():
        out.append(f"## {SECTION_TITLES.get(module, module)}\n")
        for name in names:
            out.append(f"::: {package_name}.{name}\n    options:\n      heading_level: 3\n")
    if elsewhere:
        out.append("## Documented with their module\n")
        out.append(f"These are importable from `{package_name}` too; each links to its module's page.\n")
        for page_module, items in sorted(elsewhere.items()):
            links = ", ".join(f"[`{name}`][{target}]" for name, target in items)
            out.append(f"- `{page_module}`: {links}")
        out.append("")
    return "\n".join(out)


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    src = str(Path(config["config_file_path"]).parent / "src")
    return _MARKER.sub(lambda match: exports_markdown(match.group(1), src), markdown)


def on_pre_build(config: Any) -> None:
    # `mkdocs serve` rebuilds in the same process: read the package afresh each time.
    _package.cache_clear()
