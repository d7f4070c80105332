"""Run the reliability suite and print its figures as Markdown (the README's "Reliability" table).

    python benchmarks/reliability_report.py --scale full          # what `make reliability` runs
    python benchmarks/reliability_report.py --scale short -n 2    # the CI-sized suite, 2 workers
    python benchmarks/reliability_report.py --from-report figures.jsonl   # render only

The suite (``tests/reliability``) runs under pytest with ``OCW_RELIABILITY_SCALE`` and
``OCW_RELIABILITY_REPORT`` set; every test appends one JSON line of figures (fault, injected,
left behind, time to detect, peak memory, slopes). The tests assert the guarantees, so a
regression fails the run: this script exits with pytest's status after printing the tables.

The bad-input count adds the cases of ``tests/reliability/test_bad_input.py`` to the existing
tests that assert ``OpenCodeConfigError``/``OpenCodeBinaryNotFoundError`` before anything is
spawned (``pytest.raises(...)`` or ``isinstance(..., ...)`` in a test body, times its
parametrized cases, found with ``pytest --collect-only`` and the test files' syntax trees).
"""

from __future__ import annotations

import argparse
import ast
import collections
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"
BAD_INPUT_ERRORS = {"OpenCodeConfigError", "OpenCodeBinaryNotFoundError"}


# ----------------------------------------------------------------------------- running


def run_suite(scale: str, report: Path, workers: str | None, extra: list[str]) -> int:
    env = dict(os.environ, OCW_RELIABILITY_SCALE=scale, OCW_RELIABILITY_REPORT=str(report))
    if "OPENCODE_BINARY" not in env:
        pinned = sorted((ROOT / ".opencode").glob("*/node_modules/.bin/opencode"))
        if pinned:
            env["OPENCODE_BINARY"] = str(pinned[-1])
    cmd = [sys.executable, "-m", "pytest", "tests/reliability", "-q", "-p", "no:cacheprovider", "-rfE"]
    if workers:
        cmd += ["-n", workers]
    cmd += extra
    print(f"$ OCW_RELIABILITY_SCALE={scale} {' '.join(cmd[2:])}", file=sys.stderr, flush=True)
    started = time.monotonic()
    code = subprocess.call(cmd, cwd=ROOT, env=env)
    print(f"(suite: {time.monotonic() - started:.0f} s, exit {code})", file=sys.stderr, flush=True)
    return code


# ----------------------------------------------------------------------------- bad input


def _raises_count(func: ast.AST) -> int:
    """``raises(E)`` / ``isinstance(x, E)`` with E a bad-input error; a ``raises(expected)`` counts when
    the test names such an error elsewhere (``expected = OpenCodeConfigError if ... else ...``)."""
    mentions = {n.id for n in ast.walk(func) if isinstance(n, ast.Name)} & BAD_INPUT_ERRORS
    count = 0
    for node in ast.walk(func):
        if not isinstance(node, ast.Call):
            continue
        name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", None)
        args = node.args[:1] if name == "raises" else node.args[1:2] if name == "isinstance" else []
        for arg in args:
            names = {n.id for n in ast.walk(arg) if isinstance(n, ast.Name)}
            if names & BAD_INPUT_ERRORS or (name == "raises" and mentions and names):
                count += 1
    return count


def count_bad_input_cases() -> dict[str, int]:
    """Cases per test file (reliability table included), as described in the module docstring."""
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", "tests"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=dict(os.environ, OPENCODE_BINARY=os.environ.get("OPENCODE_BINARY", "/nonexistent")),
    ).stdout
    instances: collections.Counter[tuple[str, str]] = collections.Counter()
    for line in out.splitlines():
        match = re.match(r"^(tests/[^:]+\.py)::(?:\w+::)?(\w+)", line)
        if match:
            instances[(match.group(1), match.group(2))] += 1
    counts: dict[str, int] = {}
    for path in sorted(TESTS.rglob("test_*.py")):
        rel = str(path.relative_to(ROOT))
        tree = ast.parse(path.read_text(encoding="utf-8"))
        total = 0
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("test"):
                per_case = _raises_count(node)
                if per_case:
                    total += per_case * max(1, instances.get((rel, node.name), 1))
        if total:
            counts[rel] = total
    return counts


# ----------------------------------------------------------------------------- rendering


def _seconds(value: Any) -> str:
    if isinstance(value, dict):
        if "max" in value and "median" in value and value["median"] != value["max"]:
            return f"{value['max']:.2f} s max ({value['median']:.2f} s median)"
        if "max" in value:
            return f"{value['max']:.2f} s max"
    if isinstance(value, (int, float)):
        return f"{value:.2f} s"
    return "-"


def _left(record: dict[str, Any]) -> str:
    left = record.get("left_behind") or {}
    total = record.get("left_total", sum(v for v in left.values() if isinstance(v, (int, float))))
    if not total:
        return "0"
    return ", ".join(f"{k} {v}" for k, v in left.items() if v)


def _detect_note(record: dict[str, Any]) -> str:
    fault = record.get("fault", "")
    if "timeout" in fault:
        return " after the timeout"
    if "cancellation" in fault:
        return " to end the tree"
    if "provider" in fault:
        return " (slowest case, incl. opencode's start)"
    return ""


def render(records: list[dict[str, Any]], bad_input: dict[str, int], scale: str) -> str:
    faults = [r for r in records if "fault" in r]
    lines = [f"Scale: `{scale}` ({len(faults)} tests with figures).", ""]
    lines += [
        "| Fault | Mode | Injected | Left behind | Time to detect | Passed |",
        "|---|---|---:|---|---|---|",
    ]
    for r in sorted(faults, key=lambda r: (r["fault"].startswith("security"), r["fault"], r.get("mode", ""))):
        detect = r.get("detect_s")
        detect_text = _seconds(detect) + _detect_note(r) if detect is not None else "-"
        outcome = r.get("outcome", "?")
        passed = {"passed": "yes", "xfailed": "known gap (xfail)"}.get(outcome, f"**{outcome}**")
        cells = [r["fault"], r.get("mode", ""), r.get("injected", ""), _left(r), detect_text, passed]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    total_bad = sum(bad_input.values())
    ours = sum(v for k, v in bad_input.items() if "reliability" in k)
    lines += [
        "",
        f"Bad input: **{total_bad} cases** refused with `OpenCodeConfigError`/`OpenCodeBinaryNotFoundError` "
        f"before anything is spawned ({ours} in `tests/reliability/test_bad_input.py`, which also checks "
        f"that nothing was started and no temp dir created; {total_bad - ours} in the unit tests: "
        + ", ".join(f"`{Path(k).name}` {v}" for k, v in bad_input.items() if "reliability" not in k)
        + ").",
    ]
    big = [r for r in records if "peak_rss_growth_mb" in r]
    if big:
        lines += ["", "| Big data | Peak RSS growth of the Python process |", "|---|---:|"]
        for r in big:
            for name, mb in r["peak_rss_growth_mb"].items():
                lines.append(f"| {name} | {mb} MB |")
    soak = [r for r in records if "slopes" in r]
    if soak:
        lines += [
            "",
            "| Soak | Turns | Python heap slope | RSS slope | fd slope | opencode server RSS slope |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for r in soak:
            for name, s in r["slopes"].items():
                lines.append(
                    f"| {name} | {s['turns']} | {s['heap_slope_b'] / 1024:.2f} KiB/turn | "
                    f"{s['rss_slope_b'] / 1024:.1f} KiB/turn | {s['fd_slope']:.3f} fd/turn | "
                    f"{s['server_rss_slope_b'] / 1024:.0f} KiB/turn |"
                )
    provider = [r for r in records if "cases" in r]
    if provider:
        lines += ["", "| Provider fault | Mode | Result | Requests | Time |", "|---|---|---|---:|---:|"]
        for r in provider:
            for name, case in r["cases"].items():
                if not isinstance(case, dict):
                    continue
                said = case.get("error", "ok (complete answer)")
                lines.append(
                    f"| {name} | {r.get('mode', '')} | {said} | {case.get('requests', '')} | "
                    f"{case.get('elapsed_s', '')} s |"
                )
    return "\n".join(lines)


def load(report: Path) -> list[dict[str, Any]]:
    if not report.exists():
        return []
    return [json.loads(line) for line in report.read_text(encoding="utf-8").splitlines() if line.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scale", choices=["short", "full"], default="short")
    parser.add_argument("-n", "--workers", help="pytest-xdist workers (default: none)")
    parser.add_argument("--report", type=Path, help="keep the JSON-lines figures here")
    parser.add_argument("--from-report", type=Path, help="render this report; do not run the suite")
    parser.add_argument("-o", "--output", type=Path, help="also write the Markdown here")
    parser.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")
    args = parser.parse_args(argv)

    code = 0
    if args.from_report:
        report = args.from_report
    else:
        report = args.report or Path(tempfile.mkdtemp(prefix="ocw_reliability_")) / "figures.jsonl"
        report.unlink(missing_ok=True)
        code = run_suite(args.scale, report, args.workers, args.pytest_args)
    records = load(report)
    scale = records[0]["scale"] if records else args.scale
    markdown = render(records, count_bad_input_cases(), scale)
    print(markdown)
    if args.output:
        args.output.write_text(markdown + "\n", encoding="utf-8")
    if not records:
        print(f"no figures in {report}", file=sys.stderr)
        return code or 1
    return code


if __name__ == "__main__":
    sys.exit(main())
