"""The documentation site builds with --strict, and its reference pages keep up with the code.

``make docs`` builds the same site into site/; this test builds it into a temporary folder, so
``make test`` fails on a broken link, a page missing from the nav, a docstring mkdocstrings cannot
read, or a reference page that falls behind the package.
"""

from __future__ import annotations

import ast
import dataclasses
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from opencode_wrapper.config import RunConfig

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
SRC = ROOT / "src" / "opencode_wrapper"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    out = tmp_path_factory.mktemp("site")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "mkdocs",
            "build",
            "--strict",
            "--config-file",
            str(ROOT / "mkdocs.yml"),
            "--site-dir",
            str(out),
        ],
        cwd=ROOT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    log = done.stdout + done.stderr
    assert done.returncode == 0, f"mkdocs build --strict failed:\n{log}"
    assert "WARNING" not in log, log
    yield out


def test_the_site_builds_strictly(site: Path) -> None:
    for page in ("index.html", "guides/command-line.html", "reference/api/index.html"):
        assert (site / page).is_file(), page


def test_the_site_needs_no_network(site: Path) -> None:
    # Web fonts and analytics are what Material would fetch from elsewhere; neither may be there.
    for html in site.rglob("*.html"):
        text = html.read_text(encoding="utf-8")
        assert "fonts.googleapis.com" not in text and "googletagmanager" not in text, html


def _is_all(node: ast.AST) -> bool:
    return isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__all__" for t in node.targets)


def _exported(module: Path) -> list[str]:
    tree = ast.parse(module.read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and _is_all(node):
            return [ast.literal_eval(e) for e in node.value.elts]  # type: ignore[attr-defined]
    return []


@pytest.mark.parametrize(
    ("module", "page"),
    [
        (SRC / "__init__.py", "reference/api/index.html"),
        (SRC / "testing" / "__init__.py", "reference/api/testing.html"),
        (SRC / "errors.py", "reference/api/errors.html"),
        (SRC / "config.py", "reference/api/config.html"),
        (SRC / "events.py", "reference/api/events.html"),
        (SRC / "tools.py", "reference/api/tools.html"),
    ],
)
def test_every_public_name_is_in_the_api_reference(site: Path, module: Path, page: str) -> None:
    names = _exported(module)
    assert names, f"{module} has no __all__"
    html = "".join(p.read_text(encoding="utf-8") for p in (site / "reference" / "api").glob("*.html"))
    missing = [n for n in names if not re.search(rf'id="opencode_wrapper(\.\w+)*\.{re.escape(n)}"', html)]
    assert not missing, f"not documented on the API pages ({page} or a module page): {missing}"


def test_every_runconfig_field_is_described() -> None:
    page = (DOCS / "reference" / "config.md").read_text(encoding="utf-8")
    headings = set(re.findall(r"^### `(\w+)`$", page, re.MULTILINE))
    fields = {f.name for f in dataclasses.fields(RunConfig)}
    assert fields - headings == set(), "RunConfig fields without a section in docs/reference/config.md"
    assert headings - fields == set(), "sections in docs/reference/config.md for fields RunConfig lacks"


_ENV_NAME = re.compile(r"^(?:(?:OPENCODE|XDG|GIT)_[A-Z0-9_]+|HOME|PATH|PWD|TMPDIR|PYTHONUNBUFFERED)$")
# Read without being named in the code: PATH by shutil.which, HOME by Path.home(); `*_API_KEY` by suffix.
_IMPLICIT = {"PATH", "HOME"}


def _env_names_in_source() -> set[str]:
    found: set[str] = set()
    for path in SRC.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        exported: set[int] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign) and _is_all(node):
                exported.update(id(e) for e in ast.walk(node.value))
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and _ENV_NAME.match(node.value)
                and id(node) not in exported
            ):
                found.add(node.value)
    return found


def _documented_env_names() -> tuple[set[str], set[str]]:
    """(every name in backticks on the page, the names in the first column of the package's tables)."""
    page = (DOCS / "reference" / "environment.md").read_text(encoding="utf-8")
    everywhere = set(re.findall(r"`([A-Z][A-Z0-9_]+)(?:=[^`]*)?`", page))
    package_part = page.split("## Used by the test suite", 1)[0]
    first_cells = re.findall(r"^\| ([^|]+)\|", package_part, re.MULTILINE)
    in_tables = {n for cell in first_cells for n in re.findall(r"`([A-Z][A-Z0-9_]+)`", cell)}
    return everywhere, in_tables


def test_every_environment_variable_of_the_package_is_documented() -> None:
    in_source = _env_names_in_source()
    assert {"OPENCODE_BINARY", "OPENCODE_CONFIG_CONTENT"} <= in_source  # the scan itself works
    everywhere, _ = _documented_env_names()
    missing = sorted(in_source - everywhere)
    assert not missing, f"named in src/ but not in docs/reference/environment.md: {missing}"


def test_the_environment_page_names_no_variable_the_package_lacks() -> None:
    _, in_tables = _documented_env_names()
    stale = sorted(in_tables - _env_names_in_source() - _IMPLICIT)
    assert not stale, f"docs/reference/environment.md lists variables src/ no longer uses: {stale}"
