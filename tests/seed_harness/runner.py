"""Run selected seed tests in a separate pytest process against the installed ``opencode_wrapper``.

The child pytest is isolated from this repository's test setup: its rootdir is the folder the seed's
tests were extracted to, its ini file is written there (so neither our ``pyproject.toml`` nor our
``conftest.py`` is read), the cache provider is off, ``PYTEST_*`` variables are not inherited, and
the only extra plugin is :mod:`seed_harness.fixtures` (installed plugins such as pytest-asyncio and
our ``pytest11`` offline-model plugin load as for any user).

The ini keeps the seed's own pytest settings (``asyncio_mode = auto`` and its two markers) except
``pythonpath = ["."]``, whose only effect would be to import the seed's ``opencode_wrapper`` from
the sdist instead of ours (we do not extract it either).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from seed_harness.sdist import SeedTests
from seed_harness.selector import Verdict

HARNESS_DIR = Path(__file__).resolve().parent
_MESSAGE_LIMIT = 600
#: Where the child's :mod:`seed_harness.fixtures` writes its JSON report of outcomes.
REPORT_ENV = "SEED_HARNESS_REPORT"
_INI = """\
[pytest]
# From the seed's [tool.pytest.ini_options], minus pythonpath (see seed_harness.runner).
asyncio_mode = auto
asyncio_default_fixture_loop_scope = function
markers =
    integration: requires real opencode CLI and configured provider (network/API; slow)
    multi_agent_weather: 11-call weather workflow; enable with OPENCODE_MULTI_AGENT_WEATHER=1
# A hung test fails on its own instead of eating the whole run's timeout.
timeout = {timeout}
"""


@dataclass(frozen=True)
class Failure:
    """A selected test that did not pass: its node id and what went wrong."""

    nodeid: str
    outcome: str
    message: str

    def __str__(self) -> str:
        # One line per failure: the message's lines joined, capped (an assert's repr can be huge).
        message = " | ".join(line.strip() for line in self.message.splitlines() if line.strip())
        if len(message) > _MESSAGE_LIMIT:
            message = message[: _MESSAGE_LIMIT - 3] + "..."
        return f"{self.nodeid} [{self.outcome}] {message}"


@dataclass
class SeedRun:
    """The outcome of one child pytest run."""

    returncode: int
    duration_s: float
    output: str
    results: dict[str, dict[str, str]] = field(default_factory=dict)
    collection_errors: dict[str, str] = field(default_factory=dict)
    collected: list[str] = field(default_factory=list)

    def items_of(self, verdict: Verdict) -> list[str]:
        """The collected node ids of a test function (one per parametrization)."""
        return [n for n in self.collected if n == verdict.nodeid or n.startswith(verdict.nodeid + "[")]

    def failures(self, verdicts: Iterable[Verdict]) -> list[Failure]:
        """Every selected test (or parametrization) that did not pass, with its error line."""
        out: list[Failure] = []
        for verdict in verdicts:
            items = self.items_of(verdict)
            if not items:
                module = verdict.nodeid.split("::", 1)[0]
                why = self.collection_errors.get(module) or "not collected"
                out.append(Failure(verdict.nodeid, "not collected", why))
            for item in items:
                result = self.results.get(item, {"outcome": "not run", "message": ""})
                if result["outcome"] != "passed":
                    out.append(Failure(item, result["outcome"], result["message"]))
        return out

    def summary(self, verdicts: list[Verdict]) -> str:
        failures = self.failures(verdicts)
        items = sum(len(self.items_of(v)) for v in verdicts)
        lines = [
            f"seed tests selected: {len(verdicts)} functions, {items} collected items; "
            f"{items - len([f for f in failures if f.outcome != 'not collected'])} passed, "
            f"{len(failures)} failing; child pytest exit {self.returncode} in {self.duration_s:.1f} s",
            *(f"  FAIL {f}" for f in failures),
        ]
        if not self.collected:
            lines.append("child pytest output (it reported no collected tests):\n" + self.output[-4000:])
        return "\n".join(lines)


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment minus ``PYTEST_*``, with ``seed_harness`` importable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    paths = [str(HARNESS_DIR.parent), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env.update(extra or {})
    return env


def run_seed_tests(
    seed: SeedTests,
    verdicts: list[Verdict],
    workdir: Path,
    *,
    env: Mapping[str, str] | None = None,
    timeout_s: float = 600,
    test_timeout_s: float = 300,
    extra_args: Iterable[str] = (),
) -> SeedRun:
    """Run the ``verdicts``' tests in a child pytest; its temporary files go under ``workdir``.

    The child runs in its own process group, ended as a whole if it outlives ``timeout_s``.
    """
    if not verdicts:
        raise ValueError("no seed tests to run")
    workdir.mkdir(parents=True, exist_ok=True)
    ini = seed.root / "pytest.ini"
    ini.write_text(_INI.format(timeout=int(test_timeout_s)), encoding="utf-8")
    report = workdir / "seed-report.json"
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-c",
        str(ini),
        "--rootdir",
        str(seed.root),
        "--basetemp",
        str(workdir / "basetemp"),
        "-p",
        "no:cacheprovider",
        "-p",
        "no:randomly",
        "-p",
        "seed_harness.fixtures",
        "-q",
        "-rfE",
        *extra_args,
        *[v.nodeid for v in verdicts],
    ]
    started = time.monotonic()
    proc = subprocess.Popen(
        command,
        cwd=seed.root,
        env=child_env({REPORT_ENV: str(report), **(env or {})}),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        output += f"\n[seed harness] child pytest killed after {timeout_s:.0f} s"
    duration = time.monotonic() - started
    run = SeedRun(proc.returncode, duration, output)
    if report.is_file():
        payload = json.loads(report.read_text(encoding="utf-8"))
        run.results = payload["results"]
        run.collection_errors = payload["collection_errors"]
        run.collected = payload["collected"]
    return run
