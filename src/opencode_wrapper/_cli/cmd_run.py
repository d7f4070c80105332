"""``opencode-wrapper run PROMPT``: one agent run, streamed readably or as JSON lines."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

from opencode_wrapper._cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    add_agent_options,
    offline_model,
    run_async,
)
from opencode_wrapper._cli.output import Output
from opencode_wrapper._cli.render import event_lines, result_line, result_record
from opencode_wrapper.client import AsyncOpenCodeClient
from opencode_wrapper.errors import OpenCodeRunError
from opencode_wrapper.events import Event, RunError, RunResult

DESCRIPTION = """\
Run one agent on PROMPT in a workspace and show what it does as it happens: its text, each
tool call with its status and output, and errors. With --json, print every typed event as a
JSON line instead, then a last line {"type": "result", "ok": ..., "error": ..., ...}.

Exit status: 0 only if the run really succeeded; 1 if it did not (an API error, a permission
opencode rejected, a timeout, ...); 2 for bad arguments; 130 when interrupted (Ctrl-C).
"""

EXAMPLES = """\
examples:
  opencode-wrapper run "Summarise README.md" -m anthropic/claude-sonnet-4-5
  opencode-wrapper run "Run the tests" -w ~/project --permission bash=allow --permission edit=deny
  opencode-wrapper run --offline "[[bash: ls]]"          # no API key: the offline scripted model
  opencode-wrapper run --offline --json "[[say: hi]]" | jq .type
"""


def register(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "run",
        help="run one agent and stream what it does",
        description=DESCRIPTION,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "prompt",
        metavar="PROMPT",
        help="the message to the agent, sent byte for byte ('-': read it from stdin)",
    )
    parser.add_argument(
        "-w", "--workspace", default=".", metavar="DIR", help="the agent's working directory (default .)"
    )
    parser.add_argument("--json", action="store_true", help="print the typed events as JSON lines")
    parser.add_argument("--timeout", type=float, metavar="S", help="end the run after S seconds (exit 1)")
    add_agent_options(parser)
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    return run_async(lambda: _run(args))


async def _run(args: argparse.Namespace) -> int:
    out = Output()
    prompt = sys.stdin.read() if args.prompt == "-" else args.prompt
    client = AsyncOpenCodeClient(args.binary, startup_delay_s=0)
    started = time.monotonic()

    def show(event: Event) -> None:
        if args.json:
            out.raw(json.dumps(event, ensure_ascii=False) + "\n")
        else:
            for line in event_lines(event):
                out.line(line)

    with offline_model(args) as cfg:
        try:
            result = await client.async_run(
                prompt, args.workspace, run_cfg=cfg, timeout_s=args.timeout, on_event=show
            )
        except OpenCodeRunError as exc:  # the real result: exit code, stderr, error
            result = exc.result if exc.result is not None else RunResult()
            if result.error is None:
                result.error = RunError(kind="internal_error", message=str(exc))
        except asyncio.CancelledError:  # Ctrl-C: the run and its processes are already ended
            print("interrupted: the run was stopped and its processes ended", file=sys.stderr, flush=True)
            raise
    elapsed = time.monotonic() - started
    if args.json:
        out.raw(json.dumps({"type": "result", **result_record(result, elapsed)}, ensure_ascii=False) + "\n")
    else:
        out.line(result_line(result, elapsed))
    return EXIT_OK if result.ok else EXIT_FAILED
