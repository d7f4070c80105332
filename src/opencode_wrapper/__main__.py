"""``python -m opencode_wrapper`` / ``opencode-wrapper``: the command line.

Commands: ``run``, ``batch``, ``chat``, ``demo``, ``install-opencode``, ``doctor``; see
``opencode-wrapper --help``. The implementation lives in the private ``_cli`` package.
"""

from __future__ import annotations

import sys

from opencode_wrapper._cli.app import build_parser, main

__all__ = ["build_parser", "main"]

if __name__ == "__main__":
    sys.exit(main())
