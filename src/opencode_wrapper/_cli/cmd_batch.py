"""``opencode-wrapper batch TASKS.jsonl``: many agents at once, with a live table and a results file."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from pathlib import Path
from typing import Any

from opencode_wrapper._cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    add_agent_options,
    offline_model,
    run_async,
)
from opencode_wrapper._cli.live import format_elapsed, make_view
from opencode_wrapper._cli.observe import choose_backend, closing, iter_observed
from opencode_wrapper._cli.output import Output
from opencode_wrapper._cli.results import ResultWriter, outcome_record
from opencode_wrapper._cli.tasks_file import load_tasks
from opencode_wrapper.backends.base import Backend
from opencode_wrapper.batch import BackendName
from opencode_wrapper.errors import OpenCodeConfigError

DESCRIPTION = """\
Run many agents at once. TASKS.jsonl holds one JSON object per line: "prompt" and "workspace"
(a folder; relative to the tasks file), optionally "name", "timeout_s" and any RunConfig field
("model", "agent", "permission", "tools", "mcp", "instructions", "config_overrides", ...).
Command-line options give the defaults; a line's fields win.

On a terminal a live table shows one row per running agent (workspace, elapsed time, current
tool, tokens, cost, state) over a progress bar with an ETA; elsewhere one line per event.
Each task's result is appended to the results file as one JSON line the moment it finishes,
so an interrupted batch loses nothing it finished. Ctrl-C cancels the running agents, ends
every process they started and says how many tasks finished.

Exit status: 0 if every task succeeded, 1 if any failed, 2 for bad arguments or tasks, 130
when interrupted.
"""

EXAMPLES = """\
example tasks.jsonl:
  {"name": "api", "prompt": "List the TODOs.", "workspace": "services/api"}
  {"name": "web", "prompt": "Fix the lint errors.", "workspace": "web", "permission": {"bash": "allow"}}

  opencode-wrapper batch tasks.jsonl -m anthropic/claude-sonnet-4-5 --concurrency 8 --out results.jsonl
  opencode-wrapper batch tasks.jsonl -m anthropic/claude-sonnet-4-5 --ray auto   # on a Ray cluster
"""


def register(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "batch",
        help="run many agents at once with a live table",
        description=DESCRIPTION,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "tasks", metavar="TASKS.jsonl", help="the tasks, one JSON object per line ('-': stdin)"
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        metavar="N",
        help="most agents running at once (default: sized to the machine)",
    )
    parser.add_argument(
        "--out",
        metavar="RESULTS.jsonl",
        help="where result lines go (default: TASKS.results.jsonl next to the tasks; '-': stdout)",
    )
    parser.add_argument("--timeout", type=float, metavar="S", help="default per-task timeout in seconds")
    parser.add_argument(
        "--backend",
        choices=("server", "run"),
        help="'server': warm `opencode serve` processes (the default when available); "
        "'run': one `opencode run` per task",
    )
    parser.add_argument(
        "--ray",
        metavar="ADDRESS",
        help="run on a Ray cluster: 'auto' (started on this machine with `ray start`), HEAD:PORT or "
        "ray://HEAD:10001; workspaces and --binary are paths on the nodes "
        "(needs py-opencode-wrapper[ray] on every node)",
    )
    add_agent_options(parser)
    parser.set_defaults(handler=handle)


def default_out(tasks: str) -> str:
    if tasks == "-":
        return "results.jsonl"
    path = Path(tasks)
    return str(path.with_name(path.name.removesuffix(".jsonl") + ".results.jsonl"))


def handle(args: argparse.Namespace) -> int:
    return run_async(lambda: _batch(args))


def _engine(args: argparse.Namespace) -> Backend | None:
    """The ``RayEngine`` of ``--ray`` (Ray is imported only then), or ``None``."""
    if args.ray is None:
        return None
    if args.backend == "run":
        raise OpenCodeConfigError("--ray runs warm servers on the nodes; leave out --backend run")
    from opencode_wrapper.ray import RayEngine

    return RayEngine(args.ray, binary=args.binary)


async def _batch(args: argparse.Namespace) -> int:
    backend: BackendName = choose_backend(args.backend)
    engine = _engine(args)
    out_path = args.out or default_out(args.tasks)
    # With results on stdout, the view goes to stderr.
    view_out = Output(sys.stderr) if out_path == "-" else Output()
    with offline_model(args) as base:
        tasks = load_tasks(args.tasks, base=base, default_timeout_s=args.timeout)
        view = make_view(view_out, len(tasks))
        with ResultWriter(out_path) as writer:
            try:
                async with view, engine if engine is not None else contextlib.nullcontext():
                    outcomes = iter_observed(
                        tasks,
                        view,
                        backend=backend,
                        concurrency=args.concurrency,
                        binary=args.binary,
                        engine=engine,
                    )
                    async with closing(outcomes):
                        async for outcome in outcomes:
                            writer.write(outcome_record(outcome))
                            view.task_finished(outcome)
            except asyncio.CancelledError:
                board = view.board
                view.note(
                    f"interrupted: {board.finished} of {board.total} tasks finished "
                    f"({board.failed} failed); {board.total - board.finished} cancelled; "
                    f"{writer.written} result lines in {_shown(out_path)}"
                )
                raise
    board = view.board
    view.note(
        f"{board.total} tasks: {board.finished - board.failed} ok, {board.failed} failed; "
        f"{board.tokens:,} tokens, ${board.cost:.4f}; {format_elapsed(board.elapsed_s)}; "
        f"results in {_shown(out_path)}"
    )
    return EXIT_OK if board.failed == 0 else EXIT_FAILED


def _shown(out_path: str) -> str:
    return "<stdout>" if out_path == "-" else out_path
