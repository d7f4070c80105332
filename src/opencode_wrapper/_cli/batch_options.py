"""The run options of ``batch`` (isolation, verification, retries, limits) and the defaults they make.

Each becomes a :class:`~opencode_wrapper._cli.tasks_file.TaskDefaults` field; a tasks-file line
may set its own (``isolation``, ``keep``, ``base``, ``verify``, ``verify_timeout_s``,
``retries``, ``retry_backoff_s``, ``limits``).
"""

from __future__ import annotations

import argparse
import math

from opencode_wrapper._cli.tasks_file import TaskDefaults
from opencode_wrapper.errors import OpenCodeConfigError
from opencode_wrapper.isolation import KEEP_POLICIES
from opencode_wrapper.limits import Limits


def add_run_options(parser: argparse.ArgumentParser) -> None:
    """``--isolation``, ``--keep``, ``--verify``, ``--retries``, the limits and ``--lean``."""
    group = parser.add_argument_group("isolation, checks, retries and limits (a task line's own keys win)")
    group.add_argument(
        "--isolation",
        choices=("none", "worktree", "copy"),
        help="where each agent works: 'worktree' (a git worktree of the workspace's repository on a "
        "new branch ocw/NAME-..., from its HEAD commit) or 'copy' (a private copy of the folder); "
        "your checkout is never touched and each result line says what the agent changed "
        "(default: none, the agent works in the workspace itself)",
    )
    group.add_argument(
        "--keep",
        choices=KEEP_POLICIES,
        help="what stays of an isolated task: 'never', 'on_change' (the default: its worktree, and "
        "its changes committed on its branch) or 'always'",
    )
    group.add_argument(
        "--base",
        metavar="REF",
        help="the commit-ish an isolated worktree starts from (default: HEAD of the workspace's repository)",
    )
    group.add_argument(
        "--verify",
        metavar="CMD",
        help="a check run with bash in each task's workspace (its worktree, when isolated) after the "
        "agent succeeded; the task fails (verification_failed) unless it exits 0",
    )
    group.add_argument(
        "--verify-timeout", type=float, metavar="S", help="how long --verify may take (default 600)"
    )
    group.add_argument(
        "--retries",
        type=int,
        metavar="N",
        help="try a task up to N more times when its failure is worth retrying (rate limits, provider "
        "5xx, a server that died, opencode crashing at start), each from a fresh start; never a "
        "task that ran a tool outside isolation (default 0)",
    )
    group.add_argument(
        "--retry-backoff",
        type=float,
        metavar="S",
        help="pause before the first retry, doubling after; a provider's retry-after wins (default 5)",
    )
    group.add_argument(
        "--max-cost", type=float, metavar="USD", help="end a task that costs more (limit_exceeded)"
    )
    group.add_argument(
        "--max-tokens", type=int, metavar="N", help="end a task that uses more tokens (limit_exceeded)"
    )
    group.add_argument(
        "--max-steps", type=int, metavar="N", help="end a task that starts more model steps (limit_exceeded)"
    )
    group.add_argument(
        "--idle-timeout",
        type=float,
        metavar="S",
        help="end a task that sends no event for S seconds once it started (stalled); a tool that "
        "prints nothing is silence too",
    )
    group.add_argument(
        "--lean",
        action="store_true",
        help="the lean profile for headless agents: no undo snapshots, no title requests, no file "
        "watcher, a small models catalog (much less CPU and memory per workspace)",
    )


def task_defaults(args: argparse.Namespace) -> TaskDefaults:
    """The defaults the options describe.

    Raises:
        OpenCodeConfigError: naming the option whose value is out of range.
    """
    _check(args.verify_timeout, "--verify-timeout", positive=True)
    _check(args.retries, "--retries", integer=True)
    _check(args.retry_backoff, "--retry-backoff")
    _check(args.max_cost, "--max-cost", positive=True)
    _check(args.max_tokens, "--max-tokens", positive=True, integer=True)
    _check(args.max_steps, "--max-steps", positive=True, integer=True)
    _check(args.idle_timeout, "--idle-timeout", positive=True)
    if args.verify is not None and not args.verify.strip():
        raise OpenCodeConfigError("--verify must be a shell command, got an empty one")
    limits = Limits(
        max_cost=args.max_cost,
        max_tokens=args.max_tokens,
        max_steps=args.max_steps,
        idle_timeout_s=args.idle_timeout,
    )
    return TaskDefaults(
        isolation=args.isolation,
        keep=args.keep,
        base=args.base,
        verify=args.verify,
        verify_timeout_s=args.verify_timeout,
        retries=args.retries,
        retry_backoff_s=args.retry_backoff,
        limits=None if limits.empty else limits,
    )


def _check(value: float | None, option: str, *, positive: bool = False, integer: bool = False) -> None:
    if value is None:
        return
    if math.isfinite(value) and (value > 0 if positive else value >= 0):
        return
    if integer:
        what = "an integer >= 1" if positive else "an integer >= 0"
    else:
        what = "a positive number" if positive else "a number >= 0"
    raise OpenCodeConfigError(f"{option} must be {what}, got {value!r}")
