"""The documentation harness itself: markers, examples, model swapping, output matching, leftovers."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from docs_harness import Example, Outcome, collect
from docs_harness.blocks import Block, console_commands, models_in
from docs_harness.processes import tagged_processes
from docs_harness.runner import output_matches, run_console, run_python
from docs_harness.sandbox import TAG_ENV, global_config, make_sandbox


def _doc(tmp_path: Path, text: str, name: str = "page.md") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def test_markers_examples_and_continuations(tmp_path: Path) -> None:
    page = _doc(
        tmp_path,
        """\
        # Title

        ```python
        x = 1
        ```

        <!-- continues -->
        ```python
        assert x == 1
        ```

        <!-- not-run: needs a browser -->
        ```python
        open_browser()
        ```

        ```console
        $ opencode-wrapper run --offline "[[say: hi]]"
        hi
        ```

        ```console
        $ opencode-wrapper doctor
        ```

        ```bash
        make test
        ```
        """,
    )
    inv = collect([page], tmp_path)
    assert not inv.problems
    assert [e.id for e in inv.examples] == ["page.md:3+8"]
    assert [(b.id, b.not_run) for b in inv.not_run] == [("page.md:13", "needs a browser")]
    assert [b.id for b in inv.consoles] == ["page.md:17"]
    assert [(b.id, b.kind) for b, _ in inv.not_checked] == [
        ("page.md:22", "console"),
        ("page.md:26", "shell"),
    ]
    # Each block's code sits at its own line of the Markdown file (tracebacks point there).
    lines = inv.examples[0].source().splitlines()
    assert lines[3] == "x = 1" and lines[8] == "assert x == 1"


@pytest.mark.parametrize(
    ("marker", "problem"),
    [
        ("<!-- not-run -->", "not-run marker without a reason"),
        ("<!-- not-run:   -->", "not-run marker without a reason"),
        ("<!-- continues -->", "'continues' but no runnable Python block before it"),
        ("<!-- continues: please -->", "malformed marker"),
    ],
)
def test_malformed_markers_are_reported(tmp_path: Path, marker: str, problem: str) -> None:
    page = _doc(tmp_path, f"{marker}\n```python\npass\n```\n")
    inv = collect([page], tmp_path)
    assert len(inv.problems) == 1 and problem in inv.problems[0], inv.problems


def test_models_found_in_code_and_commands() -> None:
    code = "RunConfig(model=\"anthropic/claude-sonnet-4-5\")\nx = dict(model='myprovider/mymodel')\n"
    assert models_in(code) == {"anthropic/claude-sonnet-4-5", "myprovider/mymodel"}
    assert models_in("opencode-wrapper run -m openai/gpt-5 --model=a/b x") == {"openai/gpt-5", "a/b"}
    assert models_in('RunConfig(agent="plan")  # see docs/guides') == set()


def test_global_config_declares_each_model_at_the_offline_server() -> None:
    cfg = global_config("http://127.0.0.1:9/v1", ["anthropic/claude-sonnet-4-5", "a/b/c"])
    assert cfg["enabled_providers"] == ["a", "anthropic", "offline"]
    anthropic = cfg["provider"]["anthropic"]
    assert anthropic["npm"] == "@ai-sdk/openai-compatible"
    assert anthropic["options"]["baseURL"] == "http://127.0.0.1:9/v1"
    assert anthropic["whitelist"] == ["claude-sonnet-4-5"]
    assert list(cfg["provider"]["a"]["models"]) == ["b/c"]
    assert cfg["provider"]["offline"]["whitelist"] == ["scripted"]


def test_console_commands_and_continuation_lines() -> None:
    code = "$ echo one \\\n    two\none two\n$ true\n"
    assert console_commands(code) == [("echo one two", ["one two"]), ("true", [])]


@pytest.mark.parametrize(
    ("expected", "actual", "matches"),
    [
        (["hi"], "hi\n", True),
        (["hi"], "ho\n", False),
        (["[ok] 2 steps, ... s"], "[ok] 2 steps, 9.1 s\n", True),
        (["[ok] 2 steps, ... s"], "[ok] 3 steps, 9.1 s\n", False),
        (["start", "...", "end"], "start\na\nb\nend\n", True),
        (["start", "...", "end"], "start\nend\n", True),
        (["start", "...", "end"], "start\nend\nmore\n", False),
        (["a ... b"], "a x\ny b\n", False),  # "..." in a line never spans lines
        (["hi", ""], "hi  \n\n", True),  # trailing spaces and blank lines do not count
        ([], "", True),
        ([], "something\n", False),
    ],
)
def test_output_matching(expected: list[str], actual: str, matches: bool) -> None:
    assert output_matches(expected, actual) is matches


def _block(tmp_path: Path, code: str, lang: str = "python", line: int = 1) -> Block:
    return Block(tmp_path / "page.md", "page.md", line, lang, code)


def _run(tmp_path: Path, code: str, *, line: int = 1, timeout_s: float = 60) -> Outcome:
    example = Example((_block(tmp_path, code, line=line),))
    return run_python(example, "http://127.0.0.1:9/v1", tmp_path / "r", timeout_s)


def test_sandbox_is_a_committed_repo_with_the_provider_config(tmp_path: Path) -> None:
    box = make_sandbox(tmp_path / "box", tag="t1", base_url="http://127.0.0.1:9/v1", models=["x/y"])
    log = subprocess.run(
        ["git", "log", "--oneline"], cwd=box.workspace, capture_output=True, text=True, check=True
    )
    assert len(log.stdout.splitlines()) == 1
    assert (box.workspace / "src" / "app.py").is_file()
    config = json.loads((Path(box.env["XDG_CONFIG_HOME"]) / "opencode" / "opencode.json").read_text())
    assert "x" in config["provider"]
    assert box.env[TAG_ENV] == "t1" and box.env["HOME"].startswith(str(tmp_path))
    assert not any(name.endswith("_API_KEY") for name in box.env)


def test_a_passing_example_runs_in_the_scratch_repo(tmp_path: Path) -> None:
    code = "import os\nfrom pathlib import Path\nassert Path('README.md').is_file()\nprint('cwd ok')\n"
    outcome = _run(tmp_path, code)
    assert outcome.ok, outcome.explain()
    assert "cwd ok" in outcome.output


def test_top_level_await_and_markdown_tracebacks(tmp_path: Path) -> None:
    (tmp_path / "page.md").write_text("\n" * 20, encoding="utf-8")
    code = "import asyncio\nawait asyncio.sleep(0)\nraise ValueError('boom')\n"
    outcome = run_python(
        Example((_block(tmp_path, code, line=5),)), "http://127.0.0.1:9/v1", tmp_path / "r", 60
    )
    assert outcome.status == "failed" and outcome.exit_code == 1
    assert "ValueError: boom" in outcome.reason
    assert f'File "{tmp_path / "page.md"}", line 8' in outcome.output


def test_a_process_left_behind_fails_the_example_and_is_killed(tmp_path: Path) -> None:
    # A unique duration, so that the check below can only find this sleep.
    code = "import subprocess\nsubprocess.Popen(['sleep', '60.4217'], start_new_session=True)\n"
    outcome = _run(tmp_path, code)
    assert outcome.status == "leftover", outcome.explain()
    assert "sleep 60.4217" in outcome.leftovers[0]
    assert not tagged_processes("NO_SUCH_TAG", "x", tmp_path / "r")


def test_an_example_over_its_time_limit_is_ended(tmp_path: Path) -> None:
    code = "import time\ntime.sleep(60.3131)\n"
    outcome = _run(tmp_path, code, timeout_s=2)
    assert outcome.status == "timeout"
    assert outcome.seconds < 30
    assert not tagged_processes("NO_SUCH_TAG", "x", tmp_path / "r")


def test_console_output_is_compared(tmp_path: Path) -> None:
    # `echo --offline` makes the block checkable without opencode.
    good = _block(tmp_path, "$ echo --offline hello\n--offline hello\n", lang="console")
    assert run_console(good, "http://127.0.0.1:9/v1", tmp_path / "good", 30).ok
    bad = _block(tmp_path, "$ echo --offline hello\n--offline bye\n", lang="console")
    outcome = run_console(bad, "http://127.0.0.1:9/v1", tmp_path / "bad", 30)
    assert outcome.status == "failed"
    assert "printed something else" in outcome.mismatch


def test_the_harness_runs_from_the_command_line(tmp_path: Path) -> None:
    page = _doc(tmp_path, "```python\nprint('hello from a page')\n```\n")
    done = subprocess.run(
        [sys.executable, "-m", "tests.docs_harness", str(page)],
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed, 0 failed of 1 examples" in done.stdout
