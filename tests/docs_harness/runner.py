"""Running examples: each in its own subprocess and sandbox, several at once, with a report."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from .blocks import Block, Example, console_commands, models_in
from .processes import describe, kill_all, kill_group, tagged_processes
from .sandbox import TAG_ENV, Sandbox, make_sandbox

DEFAULT_TIMEOUT_S = 120.0

# Run inside the example's subprocess: compile the block so that top-level `await` works, with
# the Markdown file as the code's file name (tracebacks show the Markdown lines). `__file__` and
# `sys.argv[0]` are the program file itself, a real .py file, for examples that use them (e.g.
# `pytest.main([__file__])`).
_BOOTSTRAP = """\
import ast, asyncio, inspect, sys
path, filename = sys.argv[1], sys.argv[2]
with open(path, encoding="utf-8") as fh:
    source = fh.read()
code = compile(source, filename, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT, dont_inherit=True)
namespace = {"__name__": "__main__", "__file__": path}
sys.argv = [path]
if code.co_flags & inspect.CO_COROUTINE:
    asyncio.run(eval(code, namespace))
else:
    exec(code, namespace)
"""


@dataclass
class Outcome:
    """How one example (or checked console block) went."""

    id: str
    kind: str  # "python" | "console"
    status: str  # "passed" | "failed" | "timeout" | "leftover"
    seconds: float
    output: str = ""
    exit_code: int | None = None
    leftovers: list[str] = field(default_factory=list)
    mismatch: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "passed"

    @property
    def reason(self) -> str:
        """One line saying why it did not pass."""
        if self.status == "timeout":
            return f"no exit within the time limit ({self.seconds:.0f} s)"
        if self.status == "leftover":
            return f"left {len(self.leftovers)} process(es) behind: {self.leftovers[0]}"
        if self.mismatch:
            return self.mismatch.splitlines()[0]
        lines = [line for line in self.output.strip().splitlines() if line.strip()]
        return lines[-1].strip() if lines else f"exit status {self.exit_code}"

    def explain(self) -> str:
        parts = [f"{self.id}: {self.status} after {self.seconds:.1f} s (exit status {self.exit_code})"]
        if self.leftovers:
            parts.append("left behind (killed): " + "; ".join(self.leftovers))
        if self.mismatch:
            parts.append(self.mismatch)
        parts.append("output (last 60 lines):\n" + "\n".join(self.output.splitlines()[-60:]))
        return "\n".join(parts)


def _run_process(
    argv: list[str], sandbox: Sandbox, timeout_s: float, *, ident: str, kind: str
) -> tuple[Outcome, str]:
    log = sandbox.root / "output.txt"
    started = time.monotonic()
    # Output goes to a file, not a pipe: a process left behind holding a pipe would block the read.
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            argv,
            cwd=sandbox.workspace,
            env=sandbox.env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            code: int | None = proc.wait(timeout=timeout_s)
            status = "passed" if code == 0 else "failed"
        except subprocess.TimeoutExpired:
            kill_group(proc.pid)
            proc.wait()
            code, status = None, "timeout"
    seconds = time.monotonic() - started
    left = tagged_processes(TAG_ENV, sandbox.tag, sandbox.root)
    leftovers = describe(left)
    if left:
        kill_all(left)
        if status == "passed":
            status = "leftover"
    output = log.read_text(encoding="utf-8", errors="replace")
    return Outcome(ident, kind, status, seconds, output, code, leftovers), output


def run_python(example: Example, base_url: str, root: Path, timeout_s: float) -> Outcome:
    """Run one Python example in a fresh sandbox under ``root``."""
    sandbox = make_sandbox(root, tag=uuid.uuid4().hex, base_url=base_url, models=example.models())
    program = sandbox.root / "example.py"
    program.write_text(example.source(), encoding="utf-8")
    argv = [sys.executable, "-c", _BOOTSTRAP, str(program), str(example.path)]
    try:
        outcome, _ = _run_process(argv, sandbox, timeout_s, ident=example.id, kind="python")
    finally:
        sandbox.remove_tmp()
    return outcome


def _pattern(expected: Sequence[str]) -> re.Pattern[str]:
    parts = []
    for line in expected:
        if line.strip() == "...":
            parts.append(r"(?:[^\n]*\n)*?")
        else:
            parts.append(".*?".join(re.escape(piece) for piece in line.rstrip().split("...")) + r"[ \t]*\n")
    return re.compile("".join(parts))  # no DOTALL: "..." in a line stays in that line


def output_matches(expected: Sequence[str], actual: str) -> bool:
    """Whether ``actual`` is ``expected`` (``...`` in a line: any text; a ``...`` line: any lines)."""
    lines = list(expected)
    while lines and not lines[-1].strip():
        lines.pop()
    text = "\n".join(line.rstrip() for line in actual.rstrip().splitlines())
    text = text + "\n" if text else ""
    return _pattern(lines).fullmatch(text) is not None


def run_console(block: Block, base_url: str, root: Path, timeout_s: float) -> Outcome:
    """Run each ``$ command`` of a console block in one sandbox and compare the output."""
    commands = console_commands(block.code)
    models = set().union(*(models_in(cmd) for cmd, _ in commands)) if commands else set()
    sandbox = make_sandbox(root, tag=uuid.uuid4().hex, base_url=base_url, models=models)
    try:
        return _run_commands(block, commands, sandbox, timeout_s)
    finally:
        sandbox.remove_tmp()


def _run_commands(
    block: Block, commands: Sequence[tuple[str, Sequence[str]]], sandbox: Sandbox, timeout_s: float
) -> Outcome:
    total = Outcome(block.id, "console", "passed", 0.0)
    for index, (command, expected) in enumerate(commands):
        outcome, output = _run_process(
            ["bash", "-c", command], sandbox, timeout_s, ident=block.id, kind="console"
        )
        total.seconds += outcome.seconds
        total.output += f"$ {command}\n{output}"
        total.exit_code = outcome.exit_code
        total.leftovers += outcome.leftovers
        if outcome.status in ("timeout", "leftover"):
            total.status = outcome.status
            return total
        if not output_matches(expected, output):
            total.status = "failed"
            total.mismatch = (
                f"command {index + 1} ({command}) printed something else than the block shows.\n"
                "expected:\n" + "\n".join(expected) + "\nactual:\n" + output
            )
            return total
    return total


def run_examples(
    items: Sequence[Example | Block],
    *,
    base_url: str,
    root: Path,
    jobs: int = 2,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    on_done: Callable[[Outcome], None] | None = None,
) -> list[Outcome]:
    """Run ``items`` (``jobs`` at a time), each in its own sandbox under ``root``; input order kept."""

    def one(index: int, item: Example | Block) -> Outcome:
        where = root / f"{index:03d}"
        if isinstance(item, Example):
            outcome = run_python(item, base_url, where, timeout_s)
        else:
            outcome = run_console(item, base_url, where, timeout_s)
        if on_done is not None:
            on_done(outcome)
        return outcome

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        return list(pool.map(one, range(len(items)), items))


def default_jobs() -> int:
    return int(os.environ.get("OCW_DOCS_JOBS", "2"))


def default_timeout() -> float:
    return float(os.environ.get("OCW_DOCS_TIMEOUT", str(DEFAULT_TIMEOUT_S)))
