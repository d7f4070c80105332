"""``python -m tests.docs_harness [FILES...]``: run the documentation's examples and print the report.

Without FILES: README.md and docs/**/*.md. ``--jobs N`` (default ``$OCW_DOCS_JOBS`` or 2),
``--timeout S`` per example (default ``$OCW_DOCS_TIMEOUT`` or 120), ``--only ID`` (repeatable,
e.g. ``README.md:58``). Exit status 0 when every example passed and no marker is malformed.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from opencode_wrapper.testing import OfflineModelServer

from .blocks import collect, doc_files
from .report import render
from .runner import default_jobs, default_timeout, run_examples

ROOT = Path(__file__).resolve().parents[2]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.docs_harness", description=__doc__)
    parser.add_argument("files", nargs="*", type=Path)
    parser.add_argument("--jobs", type=int, default=default_jobs())
    parser.add_argument("--timeout", type=float, default=default_timeout())
    parser.add_argument("--only", action="append", default=[])
    args = parser.parse_args(argv)
    files = [f.resolve() for f in args.files] or doc_files(ROOT)
    inventory = collect(files, ROOT)
    items = [item for item_id, item in inventory.by_id().items() if not args.only or item_id in args.only]
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="docs-examples-") as tmp, OfflineModelServer() as model:

        def progress(outcome: object) -> None:
            print(f"  ... {getattr(outcome, 'id', '')}: {getattr(outcome, 'status', '')}", file=sys.stderr)

        outcomes = run_examples(
            items,
            base_url=model.url,
            root=Path(tmp),
            jobs=args.jobs,
            timeout_s=args.timeout,
            on_done=progress,
        )
    print(render(inventory, outcomes, time.monotonic() - started, args.jobs))
    for outcome in outcomes:
        if not outcome.ok:
            print(outcome.explain() + "\n")
    return 0 if all(o.ok for o in outcomes) and not inventory.problems else 1


if __name__ == "__main__":
    sys.exit(main())
