"""Isolated runs end to end: the real opencode (run mode, offline model) works in a worktree or a
copy, and the changes are exactly what its bash tool did."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from _worktree_support import git, leftovers, make_repo, state_of
from opencode_wrapper import AsyncOpenCodeClient
from opencode_wrapper.isolation import FileChange, isolate
from opencode_wrapper.testing import OfflineModelServer

pytestmark = pytest.mark.e2e


@pytest.fixture
def client(opencode_binary: str) -> AsyncOpenCodeClient:
    return AsyncOpenCodeClient(opencode_binary)


async def test_a_run_in_a_worktree_changes_exactly_what_its_tool_did(
    tmp_path: Path, client: AsyncOpenCodeClient, offline_model: OfflineModelServer
) -> None:
    repo = make_repo(tmp_path / "repo", {"README.md": "# demo\n", "pkg/mod.py": "A = 1\n"})
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    before = state_of(repo)
    cfg = offline_model.run_config(permission={"bash": "allow"})
    async with isolate(repo / "pkg", keep="never", directory=scratch) as iso:
        result = await client.async_run("[[bash: echo changed >> ../README.md]]", iso.path, run_cfg=cfg)
        assert result.ok, result.error
        assert (iso.root / "README.md").read_text() == "# demo\nchanged\n"
    changes = iso.changes
    assert changes is not None
    assert changes.files == (FileChange("README.md", "modified", 1, 0),)
    assert changes.diff.splitlines()[-2:] == [" # demo", "+changed"]
    assert state_of(repo) == before and (repo / "README.md").read_text() == "# demo\n"
    assert leftovers(repo, scratch) == {}
    changes.apply(repo)
    assert (repo / "README.md").read_text() == "# demo\nchanged\n"


async def test_two_runs_of_one_repository_at_once_each_see_only_their_change(
    tmp_path: Path, client: AsyncOpenCodeClient, offline_model: OfflineModelServer
) -> None:
    repo = make_repo(tmp_path / "repo", {"README.md": "# demo\n"})
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    cfg = offline_model.run_config(permission={"bash": "allow"})

    async def one(n: int) -> tuple[str, tuple[FileChange, ...], str | None]:
        async with isolate(repo, keep="on_change", name=f"e2e{n}", directory=scratch) as iso:
            result = await client.async_run(f"[[bash: echo run-{n} >> README.md]]", iso.path, run_cfg=cfg)
            assert result.ok, result.error
        assert iso.changes is not None
        return iso.changes.diff, iso.changes.files, iso.changes.branch

    outcomes = await asyncio.gather(one(1), one(2))
    for n, (diff, files, branch) in enumerate(outcomes, start=1):
        assert files == (FileChange("README.md", "modified", 1, 0),)
        assert [line for line in diff.splitlines() if line.startswith("+") and "+++" not in line] == [
            f"+run-{n}"
        ]
        assert branch is not None
        assert git(repo, "show", f"{branch}:README.md") == f"# demo\nrun-{n}\n"
        worktree = next(
            p for p in scratch.glob("*/repo") if git(p, "branch", "--show-current").strip() == branch
        )
        git(repo, "worktree", "remove", str(worktree))
        git(repo, "branch", "-q", "-D", branch)
    assert (repo / "README.md").read_text() == "# demo\n"
    assert leftovers(repo, None) == {}
