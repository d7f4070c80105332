"""Every example of README.md and docs/**/*.md runs against the real opencode and the offline model.

How blocks are run, the markers (``<!-- not-run: reason -->``, ``<!-- continues -->``) and how
models are swapped for the offline model: see ``tests/docs_harness/__init__.py``. The examples run
in parallel (``OCW_DOCS_JOBS``, default 2) during the set-up of the first test; each test then
asserts its own example's outcome. The full report, with the total time, the blocks not run and
the blocks not checked, is printed at the end of the set-up (visible without xdist) and written to
``.pytest_cache/d/docs-examples/report.txt``; ``python -m tests.docs_harness`` prints it too.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from docs_harness import Outcome, collect, doc_files, run_examples
from docs_harness.report import render
from docs_harness.runner import default_jobs, default_timeout
from opencode_wrapper.testing import OfflineModelServer

ROOT = Path(__file__).resolve().parents[1]
INVENTORY = collect(doc_files(ROOT), ROOT)
ITEMS = INVENTORY.by_id()
JOBS = default_jobs()
TIMEOUT_S = default_timeout()
# All examples run in the first test's set-up: its time limit covers every one of them at its own
# limit (each is ended at that limit, so this is a bound, not a guess).
SUITE_TIMEOUT_S = math.ceil(len(ITEMS) / max(1, JOBS)) * (TIMEOUT_S + 30) + 120


def _selected_ids(session: pytest.Session) -> list[str]:
    """The example ids of this module's selected ``test_example`` items (so ``-k`` runs only those)."""
    chosen = []
    for item in session.items:
        callspec = getattr(item, "callspec", None)
        if (
            callspec is not None
            and Path(str(item.fspath)).resolve() == Path(__file__).resolve()
            and getattr(item, "originalname", "") == "test_example"
        ):
            chosen.append(callspec.params["example_id"])
    return chosen


@pytest.fixture(scope="module")
def outcomes(
    request: pytest.FixtureRequest, opencode_binary: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Outcome]]:
    items = [ITEMS[i] for i in _selected_ids(request.session)]
    started = time.monotonic()
    with OfflineModelServer() as model:
        results = run_examples(
            items,
            base_url=model.url,
            root=tmp_path_factory.mktemp("docs-examples"),
            jobs=JOBS,
            timeout_s=TIMEOUT_S,
        )
    report = render(INVENTORY, results, time.monotonic() - started, JOBS)
    cache = getattr(request.config, "cache", None)  # None with -p no:cacheprovider
    if cache is not None:
        (cache.mkdir("docs-examples") / "report.txt").write_text(report, encoding="utf-8")
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None:
        # Around the capture of this fixture's output, so that the report reaches the terminal.
        with capture.global_and_fixture_disabled() if capture is not None else contextlib.nullcontext():
            reporter.write_line("\n" + report)
    yield {o.id: o for o in results}


@pytest.mark.e2e
@pytest.mark.timeout(SUITE_TIMEOUT_S)
@pytest.mark.parametrize("example_id", list(ITEMS))
def test_example(example_id: str, outcomes: dict[str, Outcome]) -> None:
    outcome = outcomes[example_id]
    assert outcome.ok, outcome.explain()


def test_markers_are_well_formed() -> None:
    assert not INVENTORY.problems, "\n".join(INVENTORY.problems)


def test_every_block_not_run_says_why() -> None:
    # The list is part of the report; here each entry must carry its reason.
    missing = [b.id for b in INVENTORY.not_run if not b.not_run]
    assert not missing, f"not-run markers without a reason: {missing}"


def test_the_docs_have_examples_that_run() -> None:
    # A harness that silently found nothing would pass every test above.
    docs_items = [i for i in ITEMS if i.startswith("docs/")]
    assert len(docs_items) >= 10, docs_items
    assert any(ITEMS[i].id.startswith("docs/guides/command-line.md") for i in docs_items)
