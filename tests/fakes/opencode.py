"""A fake ``opencode`` executable for unit tests of the run-mode client.

:class:`FakeOpenCode` writes a small Python script named ``opencode`` into a folder. The script

* answers ``--version`` with a configurable version (counted in ``versions.log``, not in the calls);
* otherwise reads stdin to EOF (as the real ``opencode run`` does), appends one JSON record of the
  invocation (argv, stdin bytes, cwd, pid, environment) to ``calls.jsonl``, then plays the actions
  of attempt *N* (N = number of earlier calls) from ``scenario.json``: stdout lines, stderr text,
  hang, a signal to itself sent by another process, exit code.

Everything is controlled by files next to the script, so no environment needs to reach it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

Action = dict[str, Any]

_SCRIPT = r"""#!{python} -I
import json, os, subprocess, sys, time
HERE = os.path.dirname(os.path.abspath(__file__))

def load():
    try:
        with open(os.path.join(HERE, "scenario.json"), encoding="utf-8") as fh:
            return json.load(fh)
    except FileNotFoundError:
        return {{}}

scenario = load()
if sys.argv[1:] == ["--version"]:
    with open(os.path.join(HERE, "versions.log"), "a", encoding="utf-8") as fh:
        fh.write("--version\n")
    sys.stdout.write(scenario.get("version", "1.18.33") + "\n")
    sys.exit(scenario.get("version_exit", 0))

stdin = sys.stdin.buffer.read()
calls_path = os.path.join(HERE, "calls.jsonl")
try:
    with open(calls_path, encoding="utf-8") as fh:
        index = sum(1 for _ in fh)
except FileNotFoundError:
    index = 0
data_home = os.environ.get("XDG_DATA_HOME", "")
record = {{
    "argv": sys.argv[1:],
    "stdin_hex": stdin.hex(),
    "cwd": os.getcwd(),
    "pid": os.getpid(),
    "env": dict(os.environ),
    "data_home_is_dir": bool(data_home) and os.path.isdir(data_home),
}}
with open(calls_path, "a", encoding="utf-8") as fh:
    fh.write(json.dumps(record) + "\n")
    fh.flush()

attempts = scenario.get("attempts") or [[]]
for action in attempts[min(index, len(attempts) - 1)]:
    if "out" in action:
        sys.stdout.write(action["out"] + "\n")
        sys.stdout.flush()
    elif "err" in action:
        sys.stderr.write(action["err"])
        sys.stderr.flush()
    elif "hang" in action:
        time.sleep(3600)
    elif "signal_self" in action:
        # Another process sends the signal: "stopped from outside".
        subprocess.run(["kill", "-" + action["signal_self"], str(os.getpid())], check=True)
        time.sleep(3600)
    elif "exit" in action:
        sys.exit(action["exit"])
sys.exit(0)
"""


def out(event: dict[str, Any] | str) -> Action:
    """Print one stdout line (an event dict is JSON-encoded)."""
    return {"out": event if isinstance(event, str) else json.dumps(event, ensure_ascii=False)}


def err(text: str) -> Action:
    return {"err": text}


def exit_with(code: int) -> Action:
    return {"exit": code}


def hang() -> Action:
    return {"hang": True}


def signal_self(name: str) -> Action:
    return {"signal_self": name}


class FakeOpenCode:
    """A fake ``opencode`` binary in ``folder`` (created), scripted through :meth:`script`."""

    def __init__(self, folder: Path, *, version: str = "1.18.33", version_exit: int = 0) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.path = folder / "opencode"
        self.path.write_text(_SCRIPT.format(python=sys.executable), encoding="utf-8")
        self.path.chmod(0o755)
        self._scenario: dict[str, Any] = {"version": version, "version_exit": version_exit, "attempts": [[]]}
        self._save()

    def _save(self) -> None:
        (self.folder / "scenario.json").write_text(json.dumps(self._scenario), encoding="utf-8")

    def script(self, *attempts: list[Action]) -> FakeOpenCode:
        """Actions for the 1st, 2nd... invocation (the last one repeats for later invocations)."""
        self._scenario["attempts"] = [list(a) for a in attempts] or [[]]
        self._save()
        return self

    def emit(self, events: list[dict[str, Any]], *, exit_code: int = 0, stderr: str = "") -> FakeOpenCode:
        """One attempt: print ``events``, write ``stderr``, exit with ``exit_code``."""
        actions = [out(ev) for ev in events]
        if stderr:
            actions.append(err(stderr))
        actions.append(exit_with(exit_code))
        return self.script(actions)

    def calls(self) -> list[dict[str, Any]]:
        """One record per non-``--version`` invocation, in order."""
        path = self.folder / "calls.jsonl"
        if not path.exists():
            return []
        return [json.loads(row) for row in path.read_text(encoding="utf-8").splitlines() if row]

    def stdin_of(self, call: dict[str, Any]) -> bytes:
        return bytes.fromhex(call["stdin_hex"])

    def version_calls(self) -> int:
        path = self.folder / "versions.log"
        return len(path.read_text(encoding="utf-8").splitlines()) if path.exists() else 0


def write_script(path: Path, body: str, *, mode: int = 0o755) -> Path:
    """Write an executable ``sh`` script (for binaries that are *not* opencode)."""
    path.write_text("#!/bin/sh\n" + body + "\n", encoding="utf-8")
    path.chmod(mode)
    return path


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` is a live (non-zombie) process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except OSError:
        return False
    return stat[stat.rfind(b")") + 2 :].split()[0] != b"Z"


__all__ = [
    "FakeOpenCode",
    "err",
    "exit_with",
    "hang",
    "out",
    "pid_alive",
    "signal_self",
    "write_script",
]
