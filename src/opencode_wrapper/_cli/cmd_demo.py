"""``opencode-wrapper demo``: the multi-agent demo, on the offline model unless --model is given."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

from opencode_wrapper._cli.common import add_binary_option, run_async
from opencode_wrapper._cli.observe import choose_backend
from opencode_wrapper._cli.output import Output
from opencode_wrapper.batch import BackendName
from opencode_wrapper.config import RunConfig

DESCRIPTION = """\
The multi-agent demo (what `make demo` runs): generate a small repository with three services,
run three inspector agents in parallel (each uses the bash tool in its own service folder), then
a summarising agent; show them in the live view and print each answer, the summary and the token
totals. It uses the bundled offline scripted model, so no API key is needed; --model runs it on
a real provider instead.
"""


def register(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "demo",
        help="the multi-agent demo on the offline model, with the live view",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "-m", "--model", metavar="PROVIDER/MODEL", help="a real model instead of the offline one"
    )
    parser.add_argument(
        "--backend",
        choices=("server", "run"),
        help="warm servers (default when available) or one process per agent",
    )
    add_binary_option(parser)
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    return run_async(lambda: _demo(args))


async def _demo(args: argparse.Namespace) -> int:
    from opencode_wrapper._demo import run_workflow, script_offline_model
    from opencode_wrapper.client import resolve_binary
    from opencode_wrapper.testing import OfflineModelServer

    resolve_binary(args.binary)  # fail early, with advice, before anything is generated
    backend: BackendName = choose_backend(args.backend)
    out = Output()
    with tempfile.TemporaryDirectory(prefix="opencode-demo-") as tmp:
        root = Path(tmp)
        if args.model:
            return await run_workflow(
                out, RunConfig(model=args.model), root, backend=backend, binary=args.binary
            )
        with OfflineModelServer() as model:
            script_offline_model(model)
            return await run_workflow(out, model.run_config(), root, backend=backend, binary=args.binary)
