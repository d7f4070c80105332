"""``opencode-wrapper install-opencode``: the tested opencode release, from the npm registry."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from opencode_wrapper._cli.common import EXIT_OK
from opencode_wrapper._proc.binary import OPENCODE_VERSION, install_opencode, user_install_prefix


def register(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "install-opencode",
        help="install the tested opencode release from the npm registry",
        description=(
            f"Install opencode-ai@VERSION with npm into a per-user folder (default {user_install_prefix()}), "
            "where the library finds it. Idempotent. Prints the binary's path. Needs npm (Node.js)."
        ),
    )
    parser.add_argument(
        "--version", default=OPENCODE_VERSION, help=f"release to install (default {OPENCODE_VERSION})"
    )
    parser.add_argument("--prefix", help="install into this folder instead of the per-user one")
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    prefix = Path(args.prefix) if args.prefix else None
    binary = install_opencode(args.version, prefix)
    print(binary)
    return EXIT_OK
