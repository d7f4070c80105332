"""``RunConfig.python_tools`` made real for one opencode process: a leased MCP tool server.

The tool server's URL and token go into opencode's config when the process starts, so the lease
lasts as long as the process (one ``opencode run``, or a warm server's whole life), and is given
back only after the process exited. Processes with the same tool set share one tool server
(``opencode_wrapper.tools.shared_pool``).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from opencode_wrapper import tools
from opencode_wrapper._aio import finish
from opencode_wrapper.config import RunConfig

__all__ = ["MCP_SERVER_NAME", "leased_tools"]

#: The ``mcp`` entry the tools are served under: the model sees ``py_<tool name>``.
MCP_SERVER_NAME = "py"


@contextlib.asynccontextmanager
async def leased_tools(cfg: RunConfig) -> AsyncIterator[RunConfig]:
    """``cfg`` with its ``python_tools`` served and added to ``mcp`` (``cfg`` itself without any)."""
    if not cfg.python_tools:
        yield cfg
        return
    pool = tools.shared_pool()
    server = await pool.acquire(cfg.python_tools)
    try:
        yield cfg.replace(mcp=tools.merge_mcp(cfg.mcp, server, MCP_SERVER_NAME), python_tools=None)
    finally:
        await finish(pool.release(server))
