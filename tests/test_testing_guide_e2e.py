"""Every example of docs/guides/testing.md runs as written: each ``python`` block as a program (real
opencode, the offline model) in a scratch git repository as the current directory, and each
``json`` block loads as an offline-model rules file."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from opencode_wrapper.testing import OfflineModelServer

pytestmark = pytest.mark.e2e

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "guides" / "testing.md"
_FENCE = re.compile(r"^```(\w+)\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def blocks(language: str) -> list[tuple[str, str]]:
    """``(id, code)`` of each fenced block in ``language``; the id names the section it is in."""
    text = GUIDE.read_text(encoding="utf-8")
    found = []
    for n, match in enumerate(_FENCE.finditer(text)):
        if match.group(1) == language:
            headings = re.findall(r"^## (.+)$", text[: match.start()], re.MULTILINE)
            section = re.sub(r"\W+", "-", headings[-1] if headings else "intro").strip("-").lower()
            found.append((f"{n}-{section}", match.group(2)))
    return found


PYTHON = blocks("python")


def test_the_guide_has_its_examples() -> None:
    text = GUIDE.read_text(encoding="utf-8")
    assert text.startswith("# Testing with the offline model\n")
    assert len(PYTHON) == 8 and len(blocks("json")) == 1


@pytest.mark.parametrize("code", [code for _, code in PYTHON], ids=[name for name, _ in PYTHON])
def test_python_example_runs(code: str, workspace: Path, opencode_binary: str) -> None:
    example = workspace / "test_agent.py"
    example.write_text(code, encoding="utf-8")
    env = {**os.environ, "OPENCODE_BINARY": opencode_binary}
    done = subprocess.run(
        [sys.executable, example.name], cwd=workspace, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"


def test_json_rules_example_loads() -> None:
    ((_, code),) = blocks("json")
    model = OfflineModelServer.from_json(json.loads(code))
    assert model.script_remaining == 0 and model.strict is False
