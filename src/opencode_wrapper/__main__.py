"""``python -m opencode_wrapper`` / ``opencode-wrapper``: the command line."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from opencode_wrapper._binary import OPENCODE_VERSION, install_opencode, user_install_prefix
from opencode_wrapper.errors import OpenCodeError


def _install(args: argparse.Namespace) -> int:
    prefix = Path(args.prefix) if args.prefix else None
    binary = install_opencode(args.version, prefix)
    print(binary)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="opencode-wrapper",
        description="Drive the OpenCode coding agent from Python.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    install = commands.add_parser(
        "install-opencode",
        help="install the tested opencode release from the npm registry",
        description=(
            f"Install opencode-ai@VERSION with npm into a per-user folder (default {user_install_prefix()}), "
            "where the library finds it. Idempotent. Prints the binary's path."
        ),
    )
    install.add_argument(
        "--version", default=OPENCODE_VERSION, help=f"release to install (default {OPENCODE_VERSION})"
    )
    install.add_argument("--prefix", help="install into this folder instead of the per-user one")
    install.set_defaults(handler=_install)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.handler(args)
    except OpenCodeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
