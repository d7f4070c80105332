"""Fixtures of the reliability suite (see ``_support.py`` for what is counted and how)."""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from reliability._support import (
    SCALE,
    TAG_ENV,
    Leftovers,
    describe,
    kill_all,
    record,
    tagged_processes,
)

_HERE = Path(__file__).resolve().parent


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "reliability: fault-injection, security and fuzz tests with figures (tests/reliability)"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if _HERE in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.reliability)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.when == "call":
        item.stash[_OUTCOME] = "xfailed" if hasattr(report, "wasxfail") else report.outcome
    return report


_OUTCOME = pytest.StashKey[str]()


@dataclass
class Reliability:
    """Per-test context: a unique tag inherited by every process we spawn, a private temp dir,
    and the figures this test reports."""

    tag: str
    temp_root: Path
    figures: dict[str, Any] = field(default_factory=dict)
    markers: list[str] = field(default_factory=list)

    def leftovers(self, markers: Iterable[str] = (), exclude: Iterable[int] = ()) -> Leftovers:
        wanted = list(markers)
        self.markers.extend(wanted)
        return Leftovers(self.tag, self.temp_root, wanted, set(exclude))

    def marker(self, index: int) -> str:
        """A unique ``sleep 60.NNNN`` command for this test (findable with ps, orphans included)."""
        digits = int(self.tag[:6], 16) % 100000
        cmd = f"sleep 60.{digits:05d}{index:04d}"
        self.markers.append(cmd)
        return cmd


@pytest.fixture
def rel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> Iterator[Reliability]:
    tag = uuid.uuid4().hex
    temp_root = tmp_path / "tmp"
    temp_root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp_root))
    monkeypatch.setenv(TAG_ENV, tag)
    context = Reliability(tag=tag, temp_root=temp_root)
    yield context
    left = tagged_processes(tag, context.markers)
    if left:
        # The test has already failed on them; end them by PID so later tests start clean.
        print(f"reliability clean-up: killing leftovers {describe(left)}")
        kill_all(left)
    if context.figures:
        outcome = request.node.stash.get(_OUTCOME, "error")
        record({"test": request.node.nodeid, "outcome": outcome, **context.figures})


@pytest.fixture
def scale() -> str:
    return SCALE
