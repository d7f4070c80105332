"""pytest plugin loaded (``-p seed_harness.fixtures``) into the pytest process that runs the seed's tests.

It supplies what the seed's sdist does not ship, and nothing that changes a test:

* ``opencode_path``: the pinned real opencode (``OPENCODE_BINARY``). The seed's own conftest (not in
  the sdist) skipped when opencode was missing; this one fails instead, so a missing binary can
  never pass for a green run.
* ``integration_workspace``: ``tmp_path / "oc_ws"`` holding an empty ``.gitkeep``, as the seed's
  repository conftest makes it.
* A private home for the whole run (``HOME`` and the four ``XDG_*`` dirs), whose global opencode
  config declares the offline model as the only enabled provider. The seed's integration tests pass
  no model (``RunConfig(agent="plan")``), so opencode falls back to its default model, which is then
  ``offline/scripted``. The wrapper's user-config isolation keeps exactly the keys used here
  (``provider``, ``enabled_providers``) when it copies the global config for each process.
  The model answers with :mod:`seed_harness.model_rules` before its built-in rules.
* A guard that ``opencode_wrapper`` is the package under test, not a seed copy.
* A JSON report of every test outcome (path in ``SEED_HARNESS_REPORT``), read by the harness.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from seed_harness.runner import REPORT_ENV

#: Env vars that would point opencode at configuration other than the private home's.
_CONFIG_ENV = ("OPENCODE_CONFIG", "OPENCODE_CONFIG_DIR", "OPENCODE_CONFIG_CONTENT", "OPENCODE_PERMISSION")

_results: dict[str, dict[str, str]] = {}
_collection_errors: dict[str, str] = {}
_collected: list[str] = []


@pytest.fixture
def opencode_path() -> str:
    """The pinned opencode binary; fails (never skips) when ``OPENCODE_BINARY`` is not a file."""
    path = os.environ.get("OPENCODE_BINARY", "").strip()
    if not path or not Path(path).is_file():
        pytest.fail(f"OPENCODE_BINARY must point at the pinned opencode binary (got {path!r})")
    return path


@pytest.fixture
def integration_workspace(tmp_path: Path) -> Path:
    """An empty workspace, as the seed's own conftest makes it."""
    ws = tmp_path / "oc_ws"
    ws.mkdir()
    (ws / ".gitkeep").write_text("", encoding="utf-8")
    return ws


@pytest.fixture(scope="session", autouse=True)
def offline_provider_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A private HOME/XDG tree whose global opencode config makes the offline model the default."""
    # Imported here, not at plugin load: a package that fails to import then fails each test
    # (reported per test) instead of crashing the child pytest before it reports anything.
    import opencode_wrapper
    from opencode_wrapper.testing import OfflineModelServer
    from seed_harness.model_rules import instruction_rules

    rootdir = Path(os.getcwd()).resolve()
    package = Path(opencode_wrapper.__file__).resolve()
    if package.is_relative_to(rootdir):
        pytest.exit(
            f"opencode_wrapper was imported from the seed tree ({package}), not the package under test"
        )
    home = tmp_path_factory.mktemp("seed-home")
    dirs = {
        "HOME": home,
        "XDG_CONFIG_HOME": home / ".config",
        "XDG_DATA_HOME": home / ".local" / "share",
        "XDG_STATE_HOME": home / ".local" / "state",
        "XDG_CACHE_HOME": home / ".cache",
    }
    with OfflineModelServer(rules=instruction_rules()) as model, pytest.MonkeyPatch.context() as mp:
        for name, folder in dirs.items():
            folder.mkdir(parents=True, exist_ok=True)
            mp.setenv(name, str(folder))
        for name in _CONFIG_ENV:
            mp.delenv(name, raising=False)
        config = {**model.provider_config(), "enabled_providers": ["offline"]}
        config_dir = dirs["XDG_CONFIG_HOME"] / "opencode"
        config_dir.mkdir()
        (config_dir / "opencode.json").write_text(json.dumps(config), encoding="utf-8")
        yield home


def _message(report: Any) -> str:
    """``path:line: message`` of a failure, or the skip reason."""
    longrepr = report.longrepr
    if longrepr is None:
        return ""
    if isinstance(longrepr, tuple) and len(longrepr) == 3:  # a skip: (path, line, reason)
        return f"{longrepr[0]}:{longrepr[1]}: {longrepr[2]}"
    crash = getattr(longrepr, "reprcrash", None)
    if crash is not None:
        return f"{os.path.relpath(crash.path)}:{crash.lineno}: {crash.message}"
    lines = [line for line in str(longrepr).splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("E ")]
    return (errors or lines or [""])[-1].strip()


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    entry = _results.setdefault(report.nodeid, {"outcome": "passed", "message": ""})
    if report.failed and entry["outcome"] == "passed":
        entry["outcome"] = "failed" if report.when == "call" else f"error in {report.when}"
        entry["message"] = _message(report)
    elif report.skipped and entry["outcome"] == "passed":
        entry["outcome"] = "xfailed" if hasattr(report, "wasxfail") else "skipped"
        entry["message"] = _message(report) or str(getattr(report, "wasxfail", ""))
    elif report.when == "call" and report.passed and hasattr(report, "wasxfail"):
        entry["outcome"] = "xpassed"


def pytest_collectreport(report: pytest.CollectReport) -> None:
    if report.failed:
        _collection_errors[report.nodeid] = _message(report)


def pytest_collection_finish(session: pytest.Session) -> None:
    _collected[:] = [item.nodeid for item in session.items]


def pytest_sessionfinish(session: pytest.Session) -> None:
    path = os.environ.get(REPORT_ENV)
    if path:
        payload = {"results": _results, "collection_errors": _collection_errors, "collected": _collected}
        Path(path).write_text(json.dumps(payload, indent=1), encoding="utf-8")
