"""``opencode-wrapper batch TASKS.jsonl``: many agents at once, with a live table and a results file."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys
from pathlib import Path
from typing import Any

from opencode_wrapper._cli.batch_options import add_run_options, task_defaults
from opencode_wrapper._cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    add_agent_options,
    offline_model,
    run_async,
)
from opencode_wrapper._cli.live import BatchView, format_elapsed, make_view
from opencode_wrapper._cli.observe import choose_backend, closing, iter_observed
from opencode_wrapper._cli.output import Output
from opencode_wrapper._cli.patches import PatchWriter
from opencode_wrapper._cli.results import ResultWriter, outcome_record
from opencode_wrapper._cli.resume import ResumePlan, check_unique_names, plan_resume, read_records
from opencode_wrapper._cli.tasks_file import load_tasks
from opencode_wrapper._lean import lean_run_config
from opencode_wrapper.backends.base import Backend
from opencode_wrapper.backends.process import ProcessBackend
from opencode_wrapper.batch import BackendName, Task
from opencode_wrapper.config import RunConfig
from opencode_wrapper.errors import OpenCodeConfigError
from opencode_wrapper.pool import ServerPool

DESCRIPTION = """\
Run many agents at once. TASKS.jsonl holds one JSON object per line: "prompt" and "workspace"
(a folder; relative to the tasks file), optionally "name", "timeout_s", the run options
"isolation", "keep", "base" (the commit an isolated worktree starts from), "verify",
"verify_timeout_s", "retries", "retry_backoff_s", "limits" ({"max_cost", "max_tokens",
"max_steps", "idle_timeout_s"}), and any RunConfig field ("model", "agent", "permission",
"tools", "mcp", "instructions", "config_overrides", ...). Command-line options give the
defaults; a line's fields win ("limits" field by field; null switches a default off).

On a terminal a live table shows one row per running agent (workspace, elapsed time, current
tool, tokens, cost, state: "verifying" while its check runs, "(try N)" on a retry) over a
progress bar with an ETA; elsewhere one line per event, retry and finish. Each task's result is
appended to the results file as one JSON line the moment it finishes (with "changes",
"verified", "verify_exit_code" and "attempts"), so an interrupted batch loses nothing it
finished. Ctrl-C cancels the running agents, ends every process they started (and removes
their isolated worktrees) and says how many tasks finished. --resume then runs only the tasks
the results file does not report ok: a named task is matched by its name, an unnamed one by
its line position and a hash of its prompt and workspace. Without --resume the results file
starts empty.

Exit status: 0 if every task succeeded, 1 if any failed, 2 for bad arguments or tasks, 130
when interrupted.
"""

EXAMPLES = """\
example tasks.jsonl:
  {"name": "api", "prompt": "List the TODOs.", "workspace": "services/api"}
  {"name": "web", "prompt": "Fix the lint errors.", "workspace": "web", "permission": {"bash": "allow"}}
  {"name": "docs", "prompt": "Fix the links.", "workspace": ".", "verify": "make linkcheck", "retries": 1}

  opencode-wrapper batch tasks.jsonl -m anthropic/claude-sonnet-4-5 --concurrency 8 --out results.jsonl
  opencode-wrapper batch tasks.jsonl -m anthropic/claude-sonnet-4-5 --isolation worktree --keep never \\
      --verify 'pytest -q' --retries 2 --max-cost 0.50 --diff-dir patches/
  opencode-wrapper batch tasks.jsonl -m anthropic/claude-sonnet-4-5 --resume   # after Ctrl-C or failures
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
    parser.add_argument(
        "--resume",
        action="store_true",
        help="skip the tasks that the results file reports ok (their lines are kept) and run the "
        "others again (their old lines are dropped); needs unique task names",
    )
    parser.add_argument(
        "--diff-dir",
        metavar="DIR",
        help="write each isolated task's non-empty diff to DIR/NAME.patch (NAME: the task's name, "
        "else its line position from 0); `git apply DIR/NAME.patch` takes it",
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
    add_run_options(parser)
    add_agent_options(parser)
    parser.set_defaults(handler=handle)


def default_out(tasks: str) -> str:
    if tasks == "-":
        return "results.jsonl"
    path = Path(tasks)
    return str(path.with_name(path.name.removesuffix(".jsonl") + ".results.jsonl"))


def handle(args: argparse.Namespace) -> int:
    return run_async(lambda: _batch(args))


def _backend(args: argparse.Namespace, backend: BackendName) -> Backend:
    """Where the tasks run: a ``RayEngine`` for ``--ray`` (Ray is imported only then), one
    ``opencode run`` per task, or warm servers."""
    if args.ray is not None:
        from opencode_wrapper.ray import RayEngine

        return RayEngine(args.ray, binary=args.binary)
    if backend == "run":
        return ProcessBackend(args.binary)
    return ServerPool(binary=args.binary)


def _prepared(args: argparse.Namespace, tasks: list[Task]) -> list[Task]:
    """The tasks as they run (``--lean``), after the checks of the options that need them."""
    if args.resume:
        check_unique_names(tasks, "--resume")
    if args.diff_dir is not None:
        check_unique_names(tasks, "--diff-dir")
        if all((task.isolation or "none") == "none" for task in tasks):
            raise OpenCodeConfigError(
                "--diff-dir writes the diffs of isolated tasks, and no task is isolated: "
                "add --isolation worktree|copy (or 'isolation' in the task lines)"
            )
    if args.lean:
        tasks = [dataclasses.replace(t, run_cfg=lean_run_config(t.run_cfg or RunConfig())) for t in tasks]
    return tasks


async def _batch(args: argparse.Namespace) -> int:
    backend_name: BackendName = choose_backend(args.backend)
    if args.ray is not None and args.backend == "run":
        raise OpenCodeConfigError("--ray runs warm servers on the nodes; leave out --backend run")
    defaults = task_defaults(args)
    out_path = args.out or default_out(args.tasks)
    if args.resume and out_path == "-":
        raise OpenCodeConfigError("--resume reads the results file back: give --out FILE, not '-'")
    # With results on stdout, the view goes to stderr.
    view_out = Output(sys.stderr) if out_path == "-" else Output()
    with offline_model(args) as base:
        loaded = load_tasks(args.tasks, base=base, default_timeout_s=args.timeout, defaults=defaults)
        tasks = _prepared(args, loaded)
        patches = PatchWriter(args.diff_dir, tasks) if args.diff_dir is not None else None
        plan = (
            plan_resume(tasks, read_records(out_path))
            if args.resume
            else ResumePlan(todo=list(range(len(tasks))))
        )
        view = make_view(view_out, len(plan.todo))
        with ResultWriter(out_path, kept=plan.kept) as writer:
            if plan.kept:
                view.note(
                    f"resuming: {len(plan.kept)} of {len(tasks)} tasks are ok in {out_path}; "
                    f"running the other {len(plan.todo)}"
                )
            if not plan.todo:
                return EXIT_OK
            try:
                async with view, _backend(args, backend_name) as backend:
                    outcomes = iter_observed(
                        [tasks[position] for position in plan.todo],
                        view,
                        backend=backend_name,
                        concurrency=args.concurrency,
                        binary=args.binary,
                        engine=backend,
                        positions=plan.todo,
                    )
                    async with closing(outcomes):
                        async for outcome in outcomes:
                            writer.write(outcome_record(outcome))
                            if patches is not None:
                                result = outcome.result
                                patches.write(outcome.index, result.changes if result is not None else None)
                            view.task_finished(outcome)
            except asyncio.CancelledError:
                board = view.board
                view.note(
                    f"interrupted: {board.finished} of {board.total} tasks finished "
                    f"({board.failed} failed); {board.total - board.finished} cancelled; "
                    f"{writer.kept + writer.written} result lines in {_shown(out_path)}"
                )
                raise
    view.note(_summary(view, len(plan.kept), out_path, patches))
    return EXIT_OK if view.board.failed == 0 else EXIT_FAILED


def _summary(view: BatchView, kept: int, out_path: str, patches: PatchWriter | None) -> str:
    """``3 tasks: 2 ok, 1 failed; 75 tokens, $0.0000; 1 verified, 1 failed verification; 0:09; ...``."""
    board = view.board
    parts = [
        f"{board.total} tasks: {board.finished - board.failed} ok, {board.failed} failed"
        + (f" ({kept} more were ok before)" if kept else ""),
        f"{board.tokens:,} tokens, ${board.cost:.4f}",
    ]
    if board.verified or board.verify_failed:
        parts.append(f"{board.verified} verified, {board.verify_failed} failed verification")
    if board.retried:
        parts.append(f"{board.retried} retried")
    parts.append(format_elapsed(board.elapsed_s))
    parts.append(f"results in {_shown(out_path)}")
    if patches is not None:
        parts.append(f"patches in {patches.folder}")
    return "; ".join(parts)


def _shown(out_path: str) -> str:
    return "<stdout>" if out_path == "-" else out_path
