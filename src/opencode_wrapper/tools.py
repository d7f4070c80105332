"""Python functions as tools the agent can call, served to opencode over MCP.

Needs the ``tools`` extra (``pip install 'py-opencode-wrapper[tools]'``); without it,
:func:`tool` and :class:`ToolServer` raise :class:`~opencode_wrapper.errors.OpenCodeConfigError`
saying so. Importing this module (or ``opencode_wrapper``) never imports ``mcp``.

Contract:

* ``@tool`` (or ``@tool(name=..., description=...)``) turns a function into a :class:`Tool`.
  Name: the function's name; description: its docstring up to the first section (``Args:``,
  ``Returns:``...); JSON schema: its signature. Parameter descriptions come from
  ``Annotated[T, "text"]``, ``pydantic.Field(description=...)`` (as the default or inside
  ``Annotated``) or the docstring's ``Args:`` entries, in that order. Types: anything pydantic can
  validate and describe as JSON schema (str, int, float, bool, None, list, dict, Literal, enums,
  dataclasses, TypedDict, pydantic models, unions of those). Refused when decorating, with
  ``OpenCodeConfigError``: a parameter without a type hint, ``*args``/``**kwargs``, a type without
  a JSON schema, a generator, a name that is not 1-64 of ``A-Z a-z 0-9 _ -``. The object still
  calls the function directly.
* A call's arguments are validated (pydantic, lax: ``"5"`` is accepted for an ``int``) before the
  function runs; bad arguments go back to the model as a tool error naming each problem, and the
  function does not run. A coroutine function is awaited on the server's event loop; a plain
  function runs in a worker thread (the server's pool; ``max_threads``).
* The return value goes to the model as text: a ``str`` as is, ``None`` as nothing, anything
  else as JSON. An exception goes to the model as a tool error ``"<Type>: <message>"``.
* :class:`ToolServer` serves the tools over MCP streamable HTTP at ``http://127.0.0.1:<free
  port>/mcp``; every request must carry ``Authorization: Bearer <token>`` (a random token; others
  get 401). One server serves any number of opencode processes and sessions at once (each
  opencode process opens its own MCP session). :meth:`ToolServer.mcp_config` is the
  ``RunConfig.mcp`` value; opencode shows each tool to the model as ``<server name>_<tool name>``
  (:meth:`ToolServer.opencode_names`).
* Cancellation: a running call is cancelled (the coroutine gets ``CancelledError``) when the
  client cancels it (MCP ``notifications/cancelled``: opencode sends it when the turn is
  aborted), when the client goes away (its response stream closes: there is no resuming), when
  its MCP session ends, and when the server stops. A plain function cannot be interrupted: its
  call is reported cancelled, and the thread runs to the end of the function (``stop()`` waits).
* Long calls: opencode's MCP client gives up on a call after 60 s (or the entry's
  ``timeout``) without news; the server sends a progress notification every
  ``progress_interval_s`` (10 s) while a call runs, which restarts that clock.
* ``stop()`` (the end of ``async with``) cancels calls in flight (each answers its client
  ``"cancelled: server stopped"``), closes every session and connection, waits for worker
  threads, and leaves no task or thread behind. A call that outlives its cancellation (a shielded
  coroutine, a plain function still running) gets ``shutdown_timeout_s`` (5 s) per stage; then
  ``stop()`` logs a warning and returns without it.
* Every call is recorded (:attr:`ToolServer.calls`, :class:`ToolCallRecord`; ``on_call`` sees
  each record as it is made).
* Sharing: :class:`ToolServerPool` (``shared_pool()`` for the running loop) leases one running
  server per tool set to any number of runs, sessions and warm servers, and stops it with its
  last lease; :func:`merge_mcp` adds a server to a ``RunConfig.mcp`` value.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, overload

from opencode_wrapper._mcp._extra import require_tools_extra

if TYPE_CHECKING:
    from opencode_wrapper._mcp._calls import Outcome, ToolCallRecord
    from opencode_wrapper._mcp._definition import Tool, ToolArgumentsError, as_tools
    from opencode_wrapper._mcp._pool import ToolServerPool, merge_mcp, shared_pool
    from opencode_wrapper._mcp._server import ToolServer


@overload
def tool(fn: Callable[..., Any], /) -> Tool: ...


@overload
def tool(
    *, name: str | None = None, description: str | None = None
) -> Callable[[Callable[..., Any]], Tool]: ...


def tool(
    fn: Callable[..., Any] | None = None, /, *, name: str | None = None, description: str | None = None
) -> Tool | Callable[[Callable[..., Any]], Tool]:
    """Make ``fn`` a :class:`Tool`: ``@tool``, ``@tool()``, ``@tool(name=..., description=...)``.

    Raises:
        OpenCodeConfigError: the ``tools`` extra is missing, or ``fn`` cannot be a tool (see the
            module docstring).
    """
    require_tools_extra()
    from opencode_wrapper._mcp._definition import make_tool

    if fn is None:
        return lambda f: make_tool(f, name=name, description=description)
    return make_tool(fn, name=name, description=description)


def opencode_tool_name(server_name: str, tool_name: str) -> str:
    """The name opencode gives the model for tool ``tool_name`` of MCP server ``server_name``.

    opencode replaces every character outside ``A-Z a-z 0-9 _ -`` with ``_`` in both parts and
    joins them with ``_``.
    """

    def clean(text: str) -> str:
        return "".join(c if c.isascii() and (c.isalnum() or c in "_-") else "_" for c in text)

    return f"{clean(server_name)}_{clean(tool_name)}"


# Loaded on first use (PEP 562): they pull in pydantic, and ToolServer the mcp SDK and uvicorn.
_LAZY: dict[str, str] = {
    "Tool": "opencode_wrapper._mcp._definition",
    "ToolArgumentsError": "opencode_wrapper._mcp._definition",
    "ToolCallRecord": "opencode_wrapper._mcp._calls",
    "Outcome": "opencode_wrapper._mcp._calls",
    "ToolServer": "opencode_wrapper._mcp._server",
    "as_tools": "opencode_wrapper._mcp._definition",
    "ToolServerPool": "opencode_wrapper._mcp._pool",
    "merge_mcp": "opencode_wrapper._mcp._pool",
    "shared_pool": "opencode_wrapper._mcp._pool",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    require_tools_extra()
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


__all__ = [
    "Outcome",
    "Tool",
    "ToolArgumentsError",
    "ToolCallRecord",
    "ToolServer",
    "ToolServerPool",
    "as_tools",
    "merge_mcp",
    "opencode_tool_name",
    "shared_pool",
    "tool",
]
