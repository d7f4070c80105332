"""The parser of ``opencode-wrapper`` and the dispatch to its commands."""

from __future__ import annotations

import argparse
import sys

from opencode_wrapper._cli import cmd_batch, cmd_chat, cmd_demo, cmd_doctor, cmd_install, cmd_run
from opencode_wrapper._cli.common import EXIT_FAILED, EXIT_USAGE, error
from opencode_wrapper.errors import OpenCodeBinaryNotFoundError, OpenCodeConfigError, OpenCodeError

DESCRIPTION = """\
Drive the OpenCode coding agent: one agent (run), many at once with a live view (batch), an
interactive session (chat), the multi-agent demo on the offline model (demo), and set-up
(install-opencode, doctor). `opencode-wrapper COMMAND --help` describes each command.
"""


def build_parser() -> argparse.ArgumentParser:
    from opencode_wrapper import __version__

    parser = argparse.ArgumentParser(
        prog="opencode-wrapper",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (cmd_run, cmd_batch, cmd_chat, cmd_demo, cmd_install, cmd_doctor):
        module.register(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.handler(args)
    except OpenCodeConfigError as exc:
        error(str(exc))
        return EXIT_USAGE
    except OpenCodeBinaryNotFoundError as exc:
        error(f"{exc}\n`opencode-wrapper doctor` checks the whole set-up.")
        return EXIT_FAILED
    except OpenCodeError as exc:
        error(str(exc))
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return code
