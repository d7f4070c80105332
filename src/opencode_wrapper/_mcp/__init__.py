"""Private implementation of :mod:`opencode_wrapper.tools` (Python functions served over MCP).

Nothing here is imported by ``opencode_wrapper`` itself: the ``mcp`` SDK and its web stack load
only when a tool server is built.
"""
