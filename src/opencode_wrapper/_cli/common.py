"""What the commands share: exit codes, agent options, the ``--offline`` model, the async runner."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import fields
from pathlib import Path
from typing import Any

from opencode_wrapper.config import RunConfig
from opencode_wrapper.errors import OpenCodeConfigError

EXIT_OK = 0
#: The agent ran but did not succeed (API error, rejected permission, timeout, ...).
EXIT_FAILED = 1
#: Bad arguments or configuration (argparse uses 2 as well).
EXIT_USAGE = 2
#: Stopped by Ctrl-C / SIGTERM (128 + SIGINT).
EXIT_INTERRUPTED = 130

#: ``RunConfig`` fields, the keys a tasks file line may set.
RUN_CONFIG_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(RunConfig))


def add_binary_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--binary",
        default="opencode",
        metavar="PATH",
        help="the opencode executable (default: $OPENCODE_BINARY, then PATH, then the per-user install)",
    )


def add_agent_options(parser: argparse.ArgumentParser, *, ask_note: str = "") -> None:
    """``-m``, ``--agent``, ``--permission``, ``--offline``, ``--offline-rules`` and ``--binary``."""
    parser.add_argument(
        "-m", "--model", metavar="PROVIDER/MODEL", help="the model, e.g. anthropic/claude-sonnet-4-5"
    )
    parser.add_argument(
        "--agent", metavar="A", help="the opencode agent (build, plan, explore, general, ...)"
    )
    parser.add_argument(
        "--permission",
        action="append",
        default=[],
        metavar="TOOL=ACTION",
        help="a permission rule, repeatable: bash=allow, edit=deny, 'bash:git *=allow' (a pattern)"
        + ask_note,
    )
    parser.add_argument(
        "--offline",
        action="store_true",
        help="use the bundled offline scripted model (no API key, no network): try it with "
        "prompts like '[[bash: ls]]' or '[[say: hi]]'",
    )
    parser.add_argument(
        "--offline-rules",
        metavar="RULES.json",
        help="script the offline model with a rules file (implies --offline; see the README)",
    )
    add_binary_option(parser)


def parse_permissions(items: list[str]) -> dict[str, Any] | None:
    """``["bash=allow", "bash:git *=deny"]`` -> ``{"bash": {"*": "allow", "git *": "deny"}}``.

    A bare ``TOOL=ACTION`` after patterns of the same tool becomes its ``"*"`` pattern.
    """
    if not items:
        return None
    result: dict[str, Any] = {}
    for item in items:
        rule, sep, action = item.rpartition("=")
        if not sep or not rule or not action:
            raise OpenCodeConfigError(f"--permission {item!r}: expected TOOL=ACTION or TOOL:PATTERN=ACTION")
        tool, colon, pattern = rule.partition(":")
        tool, action = tool.strip(), action.strip()
        if not tool:
            raise OpenCodeConfigError(f"--permission {item!r}: the tool name is empty")
        existing = result.get(tool)
        if not colon:
            if isinstance(existing, dict):
                existing["*"] = action
            else:
                result[tool] = action
            continue
        if not isinstance(existing, dict):
            existing = {} if existing is None else {"*": existing}
            result[tool] = existing
        existing[pattern] = action
    return result


def agent_run_config(args: argparse.Namespace) -> RunConfig:
    """The ``RunConfig`` the agent options describe (without the offline model)."""
    return RunConfig(
        model=args.model,
        agent=args.agent,
        permission=parse_permissions(args.permission),
    )


@contextlib.contextmanager
def offline_model(args: argparse.Namespace) -> Iterator[RunConfig]:
    """The base ``RunConfig``: with ``--offline``, an offline model server runs until the block ends."""
    cfg = agent_run_config(args)
    rules_file = getattr(args, "offline_rules", None)
    if not (getattr(args, "offline", False) or rules_file):
        yield cfg
        return
    if args.model:
        raise OpenCodeConfigError("--offline uses the offline scripted model; leave out -m/--model")
    from opencode_wrapper.testing import OfflineModelServer

    if rules_file:
        try:
            data = json.loads(Path(rules_file).read_text(encoding="utf-8"))
            server = OfflineModelServer.from_json(data)
        except (OSError, ValueError) as exc:
            raise OpenCodeConfigError(f"--offline-rules {rules_file}: {exc}") from exc
    else:
        server = OfflineModelServer()
    with server:
        yield server.run_config().merged_with(cfg)


def run_async(main: Callable[[], Coroutine[Any, Any, int]]) -> int:
    """Run ``main()`` on a new event loop; SIGINT/SIGTERM cancel it once (cleanup still runs).

    A command sees the interruption as ``asyncio.CancelledError`` (nothing else cancels it), may
    report what it finished, and re-raise; the exit status is then :data:`EXIT_INTERRUPTED`.
    Further signals while it cleans up are ignored: every process it started is ended anyway.
    """

    async def guarded() -> int:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        interrupted = False

        def on_signal() -> None:
            nonlocal interrupted
            if interrupted:
                print("\nstill stopping: ending the agents' processes ...", file=sys.stderr, flush=True)
                return
            interrupted = True
            task.cancel()

        installed = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, on_signal)
                installed.append(sig)
        try:
            return await main()
        except asyncio.CancelledError:
            if not interrupted:
                raise
            # Python >= 3.11: a cancelled task stays "cancelling"; clear it so cleanup can await.
            uncancel = getattr(task, "uncancel", None)
            if uncancel is not None:
                uncancel()
            return EXIT_INTERRUPTED
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)

    return asyncio.run(guarded())


def error(message: str) -> None:
    """Print ``error: message`` on stderr."""
    print(f"error: {message}", file=sys.stderr, flush=True)
