"""The check that the optional ``[tools]`` dependencies are installed."""

from __future__ import annotations

import importlib.metadata
import importlib.util

from opencode_wrapper.errors import OpenCodeConfigError

#: Import names the tools layer needs; all come with ``pip install 'py-opencode-wrapper[tools]'``.
REQUIRED_MODULES: tuple[str, ...] = ("pydantic", "mcp", "uvicorn", "starlette")
#: The oldest ``mcp`` release whose API this layer is written against (the 2.x SDK).
MIN_MCP_MAJOR = 2
INSTALL_HINT = "pip install 'py-opencode-wrapper[tools]'"


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def require_tools_extra() -> None:
    """Raise :class:`OpenCodeConfigError` unless the ``[tools]`` extra is usable.

    Only looks the modules up (nothing is imported), so it is cheap enough to call from a
    decorator.
    """
    missing = [name for name in REQUIRED_MODULES if not _installed(name)]
    if missing:
        raise OpenCodeConfigError(
            "Python tools need the optional dependencies of the 'tools' extra "
            f"(missing: {', '.join(missing)}); install them with: {INSTALL_HINT}"
        )
    try:
        version = importlib.metadata.version("mcp")
    except importlib.metadata.PackageNotFoundError:
        return  # importable without distribution metadata (e.g. vendored): trust it
    major = version.split(".", 1)[0]
    if not major.isdigit() or int(major) < MIN_MCP_MAJOR:
        raise OpenCodeConfigError(
            f"Python tools need mcp>={MIN_MCP_MAJOR} (the 2.x SDK), but mcp {version} is installed; "
            f"upgrade with: {INSTALL_HINT}"
        )
