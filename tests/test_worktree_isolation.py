"""Isolated workspaces with real git (no opencode): worktrees, copies, diffs, keep, apply, clean-up."""

from __future__ import annotations

import asyncio
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from _worktree_support import git, leftovers, make_repo, poll, state_of
from opencode_wrapper._isolation import git as g
from opencode_wrapper._proc.cleanup import RemoveGitWorktree, RemoveTree
from opencode_wrapper._proc.guard import CleanupGuard
from opencode_wrapper._proc.reaper import remove_git_worktree
from opencode_wrapper.errors import OpenCodeConfigError, OpenCodeError
from opencode_wrapper.isolation import (
    ApplyConflictError,
    ApplyError,
    Changes,
    FileChange,
    IsolatedWorkspace,
    IsolationError,
    check_options,
    isolate,
)

PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256))


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "repo", {"README.md": "# demo\n", "src/app.py": "print('v1')\n"}, commits=2)


@pytest.fixture
def scratch(tmp_path: Path) -> Path:
    """Where the isolated trees go (``directory=``): everything made there is counted afterwards."""
    path = tmp_path / "scratch"
    path.mkdir()
    return path


# ----------------------------------------------------------------------------- worktree mode


async def test_worktree_at_head_diff_holds_exactly_the_change_and_nothing_is_left(
    repo: Path, scratch: Path
) -> None:
    before = state_of(repo)
    async with isolate(repo, keep="never", name="edit", directory=scratch) as iso:
        assert iso.path == iso.root and iso.root.parent.parent == scratch.resolve()
        assert iso.branch.startswith("ocw/edit-") and len(iso.branch) == len("ocw/edit-") + 8
        assert iso.base_commit == git(repo, "rev-parse", "HEAD").strip()
        assert (iso.root / "README.md").read_text() == "# demo\n"  # checked out at HEAD
        assert git(repo, "worktree", "list").count("\n") == 2
        with (iso.path / "README.md").open("a") as fh:
            fh.write("changed\n")
    changes = iso.changes
    assert changes is not None and bool(changes) and not changes.empty
    assert changes.files == (FileChange("README.md", "modified", 1, 0),)
    assert changes.diff.startswith("diff --git a/README.md b/README.md\n")
    assert "\n # demo\n+changed\n" in changes.diff
    assert (changes.branch, changes.path, changes.repository) == (None, None, None)
    assert state_of(repo) == before, "the user's checkout, index and HEAD must be untouched"
    assert leftovers(repo, scratch) == {}


async def test_worktree_at_base_starts_from_that_commit(repo: Path, scratch: Path) -> None:
    first = git(repo, "rev-parse", "HEAD~1").strip()
    async with isolate(repo, base="HEAD~1", keep="never", directory=scratch) as iso:
        assert iso.base_commit == first
        assert not (iso.root / "history.txt").exists(), "history.txt only exists from the 2nd commit"
        (iso.root / "src" / "app.py").write_text("print('v2')\n")
    assert iso.changes is not None
    assert [(f.path, f.status, f.additions, f.deletions) for f in iso.changes.files] == [
        ("src/app.py", "modified", 1, 1)
    ]
    assert iso.changes.base_commit == first
    assert leftovers(repo, scratch) == {}


async def test_a_subdirectory_workspace_works_in_the_same_subdirectory(repo: Path, scratch: Path) -> None:
    async with isolate(repo / "src", keep="never", directory=scratch) as iso:
        assert iso.path == iso.root / "src"
        assert (iso.path / "app.py").is_file()
        (iso.path / "new.py").write_text("x = 1\n")
    assert iso.changes is not None
    assert [(f.path, f.status) for f in iso.changes.files] == [("src/new.py", "added")]


async def test_an_untracked_subdirectory_is_created_in_the_worktree(repo: Path, scratch: Path) -> None:
    (repo / "notes").mkdir()
    async with isolate(repo / "notes", keep="never", directory=scratch) as iso:
        assert iso.path == iso.root / "notes" and iso.path.is_dir()
    assert iso.changes is not None and iso.changes.empty  # an empty directory is no change for git


async def test_untracked_binary_renamed_and_deleted_files(repo: Path, scratch: Path) -> None:
    (repo / ".gitignore").write_text("build/\n")
    (repo / "old.txt").write_text("one\ntwo\nthree\nfour\nfive\n")
    (repo / "gone.txt").write_text("bye\n")
    (repo / "logo.png").write_bytes(PNG)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "more files")
    async with isolate(repo, keep="never", directory=scratch) as iso:
        root = iso.root
        (root / "old.txt").rename(root / "renamed.txt")
        (root / "gone.txt").unlink()
        (root / "logo.png").write_bytes(PNG + b"\x00more")
        (root / "data.bin").write_bytes(b"\x00\x01\x02\xff")
        (root / "new dir").mkdir()
        (root / "new dir" / "notes.md").write_text("a\nb\n")
        (root / "build").mkdir()
        (root / "build" / "out.o").write_bytes(b"ignored")
    changes = iso.changes
    assert changes is not None
    by_path = {f.path: f for f in changes.files}
    assert by_path == {
        "data.bin": FileChange("data.bin", "added", None, None),
        "gone.txt": FileChange("gone.txt", "deleted", 0, 1),
        "logo.png": FileChange("logo.png", "modified", None, None),
        "new dir/notes.md": FileChange("new dir/notes.md", "added", 2, 0),
        "renamed.txt": FileChange("renamed.txt", "renamed", 0, 0, old_path="old.txt"),
    }
    assert [f.path for f in changes.files] == sorted(by_path)
    assert by_path["data.bin"].binary and not by_path["gone.txt"].binary
    assert "Binary files /dev/null and b/data.bin differ" in changes.diff
    assert "rename from old.txt\nrename to renamed.txt" in changes.diff
    assert "build/out.o" not in changes.diff, "ignored files are no change"
    assert changes.binary_patch is not None and "GIT binary patch" in changes.binary_patch
    assert changes.patch is changes.binary_patch
    assert (changes.additions, changes.deletions) == (2, 1)


async def test_commits_made_by_the_agent_are_part_of_the_changes(repo: Path, scratch: Path) -> None:
    async with isolate(repo, keep="on_change", directory=scratch) as iso:
        (iso.root / "committed.txt").write_text("c\n")
        git(iso.root, "add", "committed.txt")
        git(iso.root, "commit", "-q", "-m", "by the agent")
        (iso.root / "staged.txt").write_text("s\n")
        git(iso.root, "add", "staged.txt")
        (iso.root / "loose.txt").write_text("l\n")
    changes = iso.changes
    assert changes is not None and changes.branch is not None
    assert [f.path for f in changes.files] == ["committed.txt", "loose.txt", "staged.txt"]
    tip = git(repo, "rev-parse", changes.branch).strip()
    assert git(repo, "diff", "--name-only", changes.base_commit, tip).split() == [
        "committed.txt",
        "loose.txt",
        "staged.txt",
    ]
    await _discard_kept(changes)


async def test_current_changes_does_not_end_anything(repo: Path, scratch: Path) -> None:
    iso = await IsolatedWorkspace.create(repo, keep="never", directory=scratch)
    (iso.root / "a.txt").write_text("a\n")
    now = await iso.current_changes()
    assert [f.path for f in now.files] == ["a.txt"] and iso.root.is_dir()
    (iso.root / "b.txt").write_text("b\n")
    final = await iso.close()
    assert [f.path for f in final.files] == ["a.txt", "b.txt"]
    assert await iso.close() is final, "close() is idempotent"
    with pytest.raises(IsolationError, match="already removed"):
        await iso.current_changes()
    assert leftovers(repo, scratch) == {}


# ----------------------------------------------------------------------------- keep policies


async def _discard_kept(changes: Changes) -> None:
    assert changes.repository is not None and changes.path is not None and changes.branch is not None
    remove_git_worktree(str(changes.repository), str(changes.path), changes.branch)
    shutil.rmtree(changes.path.parent)  # the scratch directory it was made in


@pytest.mark.parametrize(
    ("keep", "change", "kept"),
    [
        ("never", True, False),
        ("on_change", True, True),
        ("on_change", False, False),
        ("always", False, True),
        ("always", True, True),
    ],
)
async def test_keep_policies(repo: Path, scratch: Path, keep: Any, change: bool, kept: bool) -> None:
    async with isolate(repo, keep=keep, name="k", directory=scratch) as iso:
        if change:
            (iso.root / "README.md").write_text("rewritten\n")
    changes = iso.changes
    assert changes is not None and bool(changes) is change
    if not kept:
        assert (changes.branch, changes.path) == (None, None)
        assert leftovers(repo, scratch) == {}
        return
    assert changes.branch == iso.branch and changes.path == iso.root and changes.repository == repo.resolve()
    assert changes.path.is_dir()
    assert git(repo, "for-each-ref", "--format=%(refname:short)", "refs/heads/ocw/").split() == [iso.branch]
    tip = git(repo, "rev-parse", iso.branch).strip()
    if change:
        assert git(repo, "rev-parse", f"{tip}~1").strip() == changes.base_commit  # one commit on top
        assert (
            git(repo, "diff-tree", "-r", "-M", "-p", "--full-index", changes.base_commit, tip) == changes.diff
        )
        assert (changes.path / "README.md").read_text() == "rewritten\n"
        assert git(changes.path, "status", "--porcelain") == "", "a kept worktree is clean on its commit"
    else:
        assert tip == changes.base_commit
    await _discard_kept(changes)
    assert leftovers(repo, scratch) == {}


async def test_a_kept_branch_uses_the_fallback_identity_where_git_has_none(repo: Path, scratch: Path) -> None:
    git(repo, "config", "user.useConfigOnly", "true")
    git(repo, "config", "--unset", "user.email")
    git(repo, "config", "--unset", "user.name")
    env = {"GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        async with isolate(repo, keep="always", directory=scratch) as iso:
            (iso.root / "x.txt").write_text("x\n")
    assert iso.changes is not None and iso.changes.branch is not None
    author = git(repo, "log", "-1", "--format=%an <%ae>", iso.changes.branch).strip()
    assert author == "opencode-wrapper <opencode-wrapper@localhost>"
    await _discard_kept(iso.changes)


# ----------------------------------------------------------------------------- copy mode


async def test_copy_mode_for_a_plain_folder(tmp_path: Path, scratch: Path) -> None:
    folder = tmp_path / "plain"
    (folder / "pkg" / "__pycache__").mkdir(parents=True)
    (folder / "pkg" / "mod.py").write_text("A = 1\n")
    (folder / "pkg" / "__pycache__" / "mod.cpython-311.pyc").write_bytes(b"\0cache")
    vendored = make_repo(folder / "vendor" / "lib", {"lib.py": "L = 1\n"})  # another repo inside
    (folder / "link").symlink_to("/usr")  # never followed
    before = sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))
    async with isolate(folder, isolation="copy", keep="never", directory=scratch) as iso:
        assert iso.path == iso.root and iso.root.name == "plain"
        assert (iso.root / "pkg" / "mod.py").read_text() == "A = 1\n"
        assert not (iso.root / "pkg" / "__pycache__").exists(), "caches are not copied"
        assert (iso.root / "vendor" / "lib" / "lib.py").is_file()
        assert not (iso.root / "vendor" / "lib" / ".git").exists(), "a nested .git is never copied"
        assert (iso.root / "link").is_symlink()
        assert git(iso.root, "rev-parse", "HEAD").strip() == iso.base_commit
        (iso.root / "pkg" / "mod.py").write_text("A = 2\n")
        (iso.root / "vendor" / "lib" / "lib.py").write_text("L = 2\n")
    assert iso.changes is not None
    assert [(f.path, f.status) for f in iso.changes.files] == [
        ("pkg/mod.py", "modified"),
        ("vendor/lib/lib.py", "modified"),
    ]
    assert sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) == before
    assert (folder / "pkg" / "mod.py").read_text() == "A = 1\n"
    assert git(vendored, "status", "--porcelain") == ""
    assert leftovers(None, scratch) == {}
    iso.changes.apply(folder)  # back to the original (not a repository): a plain git apply
    assert (folder / "pkg" / "mod.py").read_text() == "A = 2\n"
    assert (folder / "vendor" / "lib" / "lib.py").read_text() == "L = 2\n"


async def test_copy_mode_keeps_the_copy_with_its_own_branch(tmp_path: Path, scratch: Path) -> None:
    folder = tmp_path / "plain"
    folder.mkdir()
    (folder / "a.txt").write_text("a\n")
    async with isolate(folder, isolation="copy", keep="on_change", name="c", directory=scratch) as iso:
        (iso.root / "a.txt").write_text("b\n")
    changes = iso.changes
    assert changes is not None and changes.path == iso.root and changes.repository == iso.root
    assert changes.branch is not None and changes.branch.startswith("ocw/c-")
    assert git(iso.root, "log", "--format=%s", changes.branch).splitlines() == [
        "opencode-wrapper: changes of c",
        "opencode-wrapper: baseline of the copy",
    ]


async def test_copy_exclude_and_copy_of_a_repository_subfolder(repo: Path, scratch: Path) -> None:
    (repo / "src" / "node_modules" / "dep").mkdir(parents=True)
    (repo / "src" / "node_modules" / "dep" / "index.js").write_text("x\n")
    (repo / "src" / "dirty.py").write_text("uncommitted = True\n")  # a copy sees uncommitted files
    async with isolate(
        repo / "src", isolation="copy", copy_exclude=["node_modules"], directory=scratch
    ) as iso:
        assert not (iso.root / "node_modules").exists()
        assert (iso.root / "dirty.py").is_file()
        (iso.root / "app.py").write_text("print('v3')\n")
    assert iso.changes is not None and [f.path for f in iso.changes.files] == ["app.py"]
    assert iso.changes.path is not None  # kept (on_change): a copy goes with its directory
    shutil.rmtree(iso.changes.path.parent)
    iso.changes.apply(repo / "src")  # inside a repository: --directory=src
    assert (repo / "src" / "app.py").read_text() == "print('v3')\n"


# ----------------------------------------------------------------------------- apply


async def test_apply_clean_to_the_checkout(repo: Path, scratch: Path) -> None:
    (repo / "logo.png").write_bytes(PNG)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "logo")
    async with isolate(repo, keep="never", directory=scratch) as iso:
        (iso.root / "src" / "app.py").write_text("print('v2')\n")
        (iso.root / "logo.png").write_bytes(PNG[::-1])
        (iso.root / "README.md").rename(iso.root / "README.rst")
        (iso.root / "fresh.txt").write_text("new\n")
    changes = iso.changes
    assert changes is not None
    changes.apply(repo / "src")  # any directory of the checkout: applied at its root
    assert (repo / "src" / "app.py").read_text() == "print('v2')\n"
    assert (repo / "logo.png").read_bytes() == PNG[::-1]
    assert (repo / "README.rst").is_file() and not (repo / "README.md").exists()
    assert (repo / "fresh.txt").read_text() == "new\n"
    staged = git(repo, "diff", "--cached", "--name-status", "-M").split("\n")
    assert "M\tlogo.png" in staged and "A\tfresh.txt" in staged


async def test_apply_with_a_conflict_names_the_files(repo: Path, scratch: Path) -> None:
    async with isolate(repo, keep="never", directory=scratch) as iso:
        (iso.root / "README.md").write_text("# from the agent\n")
        (iso.root / "other.txt").write_text("fine\n")
    (repo / "README.md").write_text("# from the user\n")
    git(repo, "commit", "-q", "-am", "user edit")
    changes = iso.changes
    assert changes is not None
    with pytest.raises(ApplyConflictError) as caught:
        changes.apply(repo)
    error = caught.value
    assert error.conflicts == ("README.md",) and "README.md" in str(error)
    assert isinstance(error, ApplyError) and isinstance(error, OpenCodeError)
    assert error.target == str(repo.resolve())
    text = (repo / "README.md").read_text()
    assert "<<<<<<<" in text and "# from the agent" in text and "# from the user" in text
    assert (repo / "other.txt").read_text() == "fine\n", "the other files are applied, as git does"
    again = pickle.loads(pickle.dumps(error))
    assert (type(again), again.conflicts, again.target) == (ApplyConflictError, error.conflicts, error.target)


async def test_apply_that_cannot_apply_raises_apply_error(tmp_path: Path, repo: Path, scratch: Path) -> None:
    async with isolate(repo, keep="never", directory=scratch) as iso:
        (iso.root / "README.md").write_text("# agent\n")
    other = make_repo(tmp_path / "other", {"README.md": "unrelated content\n"})
    assert iso.changes is not None
    with pytest.raises(ApplyError) as caught:
        iso.changes.apply(other)  # other blobs, no common base: neither applies nor merges
    assert not isinstance(caught.value, ApplyConflictError)
    assert "README.md" in caught.value.stderr
    with pytest.raises(ApplyError, match="not a directory"):
        iso.changes.apply(tmp_path / "missing")
    empty = Changes(diff="", files=(), base_commit="0" * 40, isolation="worktree")
    empty.apply(tmp_path / "missing")  # nothing to do: no error


def test_changes_pickle() -> None:
    changes = Changes(
        diff="diff --git a/\udcff b/\udcff\n",  # a non-UTF-8 file name survives (surrogate escape)
        files=(FileChange("x", "renamed", 1, 2, old_path="y"), FileChange("b", "added", None, None)),
        base_commit="a" * 40,
        isolation="copy",
        branch="ocw/x-12345678",
        path=Path("/tmp/x"),
        repository=Path("/tmp/x"),
        binary_patch="GIT binary patch",
    )
    again = pickle.loads(pickle.dumps(changes))
    assert again == changes and again.files[1].binary
    assert pickle.loads(pickle.dumps(IsolationError("m", "s"))).stderr == "s"


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"isolation": "none"}, "isolation must be 'worktree' or 'copy'"),
        ({"isolation": "docker"}, "isolation must be"),
        ({"keep": "sometimes"}, "keep must be one of 'never', 'on_change', 'always'"),
        ({"name": "has space"}, "name must be"),
        ({"name": "a..b"}, "name must be"),
        ({"name": "x.lock"}, "name must be"),
        ({"name": ""}, "name must be"),
        ({"base": "--all"}, "base must be"),
        ({"base": 3}, "base must be"),
        ({"isolation": "copy", "base": "HEAD"}, "base= needs isolation='worktree'"),
        ({"copy_exclude": "node_modules"}, "copy_exclude must be"),
    ],
)
async def test_bad_options_fail_before_anything_runs(
    repo: Path, scratch: Path, monkeypatch: pytest.MonkeyPatch, options: dict[str, Any], fragment: str
) -> None:
    def no_process(*args: object, **kwargs: object) -> None:
        raise AssertionError("a process was started for bad input")

    monkeypatch.setattr(asyncio, "create_subprocess_exec", no_process)
    with pytest.raises(OpenCodeConfigError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        await IsolatedWorkspace.create(repo, directory=scratch, **options)
    assert leftovers(None, scratch) == {}


async def test_check_options_accepts_a_run_request_default() -> None:
    check_options("none")
    check_options("copy", keep="always", name="task-1.2_b", copy_exclude=("*.log",))
    with pytest.raises(OpenCodeConfigError, match="'none', 'worktree', 'copy'"):
        check_options("tmp")


async def test_workspaces_git_refuses(tmp_path: Path, scratch: Path, repo: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(OpenCodeConfigError, match="use isolation='copy'"):
        await IsolatedWorkspace.create(plain, directory=scratch)
    fresh = tmp_path / "fresh"
    git(tmp_path, "init", "-q", str(fresh))
    with pytest.raises(OpenCodeConfigError, match="has none yet"):
        await IsolatedWorkspace.create(fresh, directory=scratch)
    with pytest.raises(OpenCodeConfigError, match="base='no-such-branch' is not a commit"):
        await IsolatedWorkspace.create(repo, base="no-such-branch", directory=scratch)
    with pytest.raises(OpenCodeConfigError, match="workspace must be an existing directory"):
        await IsolatedWorkspace.create(tmp_path / "missing", directory=scratch)
    with pytest.raises(OpenCodeConfigError, match="directory must be an existing directory"):
        await IsolatedWorkspace.create(repo, directory=tmp_path / "missing")
    with pytest.raises(OpenCodeConfigError, match="inside the workspace's repository"):
        await IsolatedWorkspace.create(repo, directory=repo / "src")
    with pytest.raises(OpenCodeConfigError, match="inside the workspace"):
        await IsolatedWorkspace.create(plain, isolation="copy", directory=plain)
    assert leftovers(repo, scratch) == {}


# ----------------------------------------------------------------------------- cancellation, timeout


Stage = tuple[str, Callable[[tuple[str, ...]], bool]]
_GIT_STAGES: list[Stage] = [
    ("rev-parse the workspace", lambda a: a[:2] == ("rev-parse", "--show-toplevel")),
    ("resolve base", lambda a: a[:2] == ("rev-parse", "--verify") and a[-1].endswith("^{commit}")),
    ("worktree add", lambda a: a[:2] == ("worktree", "add")),
    ("checkout", lambda a: a[:1] == ("reset",) and "--hard" in a),
    ("git dir", lambda a: a[:2] == ("rev-parse", "--absolute-git-dir")),
    ("add to the temp index", lambda a: a[:1] == ("add",)),
    ("write-tree", lambda a: a[:1] == ("write-tree",)),
    ("diff", lambda a: "diff-tree" in a and "-p" in a),
    ("commit kept", lambda a: a[:1] == ("commit-tree",)),
    ("reset kept", lambda a: a[:1] == ("reset",) and "--hard" not in a),
]


def _spy_git(monkeypatch: pytest.MonkeyPatch, wanted: Callable[[tuple[str, ...]], bool]) -> asyncio.Event:
    """Set the returned event when a matching git command starts (the caller cancels then)."""
    reached = asyncio.Event()
    real = g.git

    async def spy(*args: str, **kwargs: Any) -> g.GitResult:
        if wanted(tuple(args)):
            task = real(*args, **kwargs)
            reached.set()
            await asyncio.sleep(0)  # the git process is starting: the cancellation arrives during it
            return await task
        return await real(*args, **kwargs)

    monkeypatch.setattr(g, "git", spy)
    return reached


async def _flow(repo: Path, scratch: Path, keep: Any, body_entered: asyncio.Event | None = None) -> Changes:
    async with isolate(repo, keep=keep, directory=scratch) as iso:
        (iso.root / "README.md").write_text("changed by the run\n")
        if body_entered is not None:
            body_entered.set()
            await asyncio.Event().wait()  # a run that never ends by itself
    assert iso.changes is not None
    return iso.changes


@pytest.mark.parametrize("stage", _GIT_STAGES, ids=[s[0] for s in _GIT_STAGES])
async def test_cancelled_at_each_git_stage(
    repo: Path, scratch: Path, monkeypatch: pytest.MonkeyPatch, stage: Stage
) -> None:
    before = state_of(repo)
    reached = _spy_git(monkeypatch, stage[1])
    keep = "on_change" if stage[0] in ("commit kept", "reset kept") else "never"
    task = asyncio.ensure_future(_flow(repo, scratch, keep))
    await asyncio.wait_for(reached.wait(), 30)
    task.cancel()
    outcome = (await asyncio.gather(task, return_exceptions=True))[0]
    assert isinstance(outcome, asyncio.CancelledError), outcome
    assert state_of(repo) == before
    found = leftovers(repo, scratch)
    if keep == "on_change":
        # cancelled while keeping: the keep policy still decides, and the kept commit is whole
        branch = found.pop("branches")[0].removeprefix("refs/heads/")
        assert len(found.pop("worktrees")) == 1 and len(found.pop("registrations")) == 1
        assert len(found.pop("scratch")) == 1
        assert git(repo, "show", f"{branch}:README.md") == "changed by the run\n"
        worktree = Path(git(repo, "worktree", "list", "--porcelain").split("\n\n")[1].split()[1])
        assert git(worktree, "status", "--porcelain") == ""
        remove_git_worktree(str(repo), str(worktree), branch)
        shutil.rmtree(worktree.parent)
    assert found == {}, found
    assert leftovers(repo, scratch) == {}


@pytest.mark.parametrize("where", ["guard start", "copy", "remove", "in the body"])
async def test_cancelled_at_the_other_awaits(
    tmp_path: Path, repo: Path, scratch: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    import opencode_wrapper.isolation as isolation_module

    reached = asyncio.Event()
    body = asyncio.Event()
    isolation: Any = "copy" if where == "copy" else "worktree"
    if where == "guard start":
        real_start = CleanupGuard.start.__func__  # type: ignore[attr-defined]

        async def start(cls: type[CleanupGuard], *args: Any, **kwargs: Any) -> CleanupGuard:
            pending = asyncio.ensure_future(real_start(cls, *args, **kwargs))
            reached.set()
            return await pending

        monkeypatch.setattr(CleanupGuard, "start", classmethod(start))
    elif where == "copy":
        real_copy = isolation_module.copy_folder

        async def copy(*args: Any) -> None:
            pending = asyncio.ensure_future(real_copy(*args))
            reached.set()
            await pending

        monkeypatch.setattr(isolation_module, "copy_folder", copy)
    elif where == "remove":
        real_remove = isolation_module.remove_git_worktree

        def remove(*args: str) -> None:
            loop.call_soon_threadsafe(reached.set)
            real_remove(*args)

        loop = asyncio.get_running_loop()
        monkeypatch.setattr(isolation_module, "remove_git_worktree", remove)

    async def flow() -> None:
        async with isolate(repo, isolation=isolation, keep="never", directory=scratch) as iso:
            (iso.root / "README.md").write_text("changed\n")
            body.set()
            if where == "in the body":
                await asyncio.Event().wait()

    task = asyncio.ensure_future(flow())
    await asyncio.wait_for((body if where == "in the body" else reached).wait(), 30)
    task.cancel()
    outcome = (await asyncio.gather(task, return_exceptions=True))[0]
    assert isinstance(outcome, asyncio.CancelledError), outcome
    assert leftovers(repo, scratch) == {}


async def test_timeout_around_a_run_honours_keep(repo: Path, scratch: Path) -> None:
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(_flow(repo, scratch, "never", asyncio.Event()), 1.0)
    assert leftovers(repo, scratch) == {}
    entered = asyncio.Event()
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(_flow(repo, scratch, "on_change", entered), 3.0)
    kept = leftovers(repo, scratch)
    if not entered.is_set():  # a machine so busy that the timeout struck during the creation
        assert kept == {}
        return
    assert len(kept["branches"]) == 1 and len(kept["worktrees"]) == 1, "changed before the timeout: kept"
    branch = kept["branches"][0].removeprefix("refs/heads/")
    remove_git_worktree(str(repo), kept["worktrees"][0], branch)
    shutil.rmtree(Path(kept["worktrees"][0]).parent)
    assert leftovers(repo, scratch) == {}


async def test_an_error_in_the_body_still_removes_the_worktree(repo: Path, scratch: Path) -> None:
    with pytest.raises(ZeroDivisionError):
        async with isolate(repo, keep="never", directory=scratch) as iso:
            (iso.root / "x").write_text("x")
            raise ZeroDivisionError
    assert iso.changes is not None and [f.path for f in iso.changes.files] == ["x"]
    assert leftovers(repo, scratch) == {}


async def test_a_broken_worktree_raises_isolation_error_and_is_removed(repo: Path, scratch: Path) -> None:
    iso = await IsolatedWorkspace.create(repo, keep="on_change", directory=scratch)
    (iso.root / ".git").unlink()  # an agent that deleted the worktree's link to the repository
    (iso.root / ".git").mkdir()
    with pytest.raises(IsolationError, match="git add"):
        await iso.close()
    assert leftovers(repo, scratch) == {}


# ----------------------------------------------------------------------------- many at once


async def test_sixteen_isolated_runs_of_one_repository_in_parallel(repo: Path, scratch: Path) -> None:
    before = state_of(repo)

    async def one(n: int) -> Changes:
        async with isolate(repo, keep="never", name=f"p{n}", directory=scratch) as iso:
            (iso.root / "README.md").write_text(f"# demo\nrun {n}\n")
        assert iso.changes is not None
        return iso.changes

    started = time.monotonic()
    results = await asyncio.gather(*(one(n) for n in range(16)))
    elapsed = time.monotonic() - started
    for n, changes in enumerate(results):
        assert changes.files == (FileChange("README.md", "modified", 1, 0),)
        added = [
            line for line in changes.diff.splitlines() if line.startswith("+") and not line.startswith("+++")
        ]
        assert added == [f"+run {n}"], (n, changes.diff)
    assert state_of(repo) == before
    assert leftovers(repo, scratch) == {}
    print(f"16 isolated create+change+close in parallel: {elapsed:.2f} s")


# ----------------------------------------------------------------------------- the supervisor's part


OWNER = Path(__file__).with_name("_worktree_owner.py")


def _processes_naming(text: str) -> list[str]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as fh:
                    cmdline = fh.read().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if text in cmdline and _alive(int(entry)):
                found.append(f"{entry} {cmdline[:150]}")
    return found


@pytest.mark.parametrize("stage", ["running", "worktree", "reset", "add", "diff-tree", "commit-tree"])
def test_owner_sigkilled_leaves_nothing_but_what_it_kept(
    tmp_path: Path, repo: Path, scratch: Path, stage: str
) -> None:
    marker = f"ocw-writer-{os.getpid()}-{stage}"
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]))
    owner = subprocess.Popen(
        [sys.executable, str(OWNER), str(repo), str(scratch), stage, marker],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )
    try:
        assert owner.stdout is not None
        words = owner.stdout.readline().split()
        assert words and words[0] == ("READY" if stage == "running" else "AT"), words
        if stage == "running":
            assert poll(lambda: _processes_naming(marker), timeout_s=10), "the writer never ran"
        owner.send_signal(signal.SIGKILL)
        owner.wait(10)
        expected: dict[str, list[str]] = {}
        if stage == "running":  # what was closed and kept stays
            branch, kept_path = words[1], Path(words[2])
            expected = {
                "branches": [f"refs/heads/{branch}"],
                "worktrees": [str(kept_path)],
                "registrations": [kept_path.name],  # git names the entry after the directory
                "scratch": [kept_path.parent.name],
            }
        settled = poll(
            lambda: (
                leftovers(repo, scratch) == expected
                and not _processes_naming(marker)
                and not _processes_naming(str(scratch))
            ),
            timeout_s=20,
        )
        assert settled, (leftovers(repo, scratch), _processes_naming(marker), _processes_naming(str(scratch)))
        assert git(repo, "status", "--porcelain") == ""
        if stage == "running":
            assert git(repo, "show", f"{words[1]}:README.md") == "kept\n"
            remove_git_worktree(str(repo), words[2], words[1])
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait()


def test_remove_git_worktree_handles_half_made_and_broken_worktrees(repo: Path, scratch: Path) -> None:
    half = scratch / "half"
    git(repo, "worktree", "add", "-q", "--no-checkout", "-b", "ocw/half", str(half), "HEAD")
    admin = repo / ".git" / "worktrees" / "half"
    (admin / "locked").write_text("initializing")  # as a `git worktree add` killed midway leaves it
    broken = scratch / "broken"
    git(repo, "worktree", "add", "-q", "-b", "ocw/broken", str(broken), "HEAD")
    (broken / ".git").unlink()
    remove_git_worktree(str(repo), str(half), "ocw/half")
    remove_git_worktree(str(repo), str(broken), "ocw/broken")
    remove_git_worktree(str(repo), str(broken), "ocw/broken")  # idempotent
    remove_git_worktree(str(scratch / "no-repo"), str(scratch / "nothing"), "")  # nothing there: no error
    assert leftovers(repo, scratch) == {}


def test_cleanup_actions_validate() -> None:
    with pytest.raises(OpenCodeConfigError, match="absolute path"):
        RemoveTree("relative/dir")
    with pytest.raises(OpenCodeConfigError, match="absolute path"):
        RemoveGitWorktree("/repo", "wt")
    assert RemoveGitWorktree("/r", "/p", "b").reaper_args() == ["--git-worktree", "/r", "/p", "b"]


GUARD_OWNER = """
import asyncio, sys
from opencode_wrapper._proc.cleanup import RemoveTree
from opencode_wrapper._proc.guard import CleanupGuard
async def main():
    guard = await CleanupGuard.start([RemoveTree(sys.argv[1])])
    if sys.argv[2] == "release":
        await guard.release()
    print("ready", guard.pid, flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
"""


@pytest.mark.parametrize("mode", ["die", "release"])
def test_guard_cleans_up_only_when_its_owner_dies(tmp_path: Path, mode: str) -> None:
    doomed = tmp_path / "doomed"
    doomed.mkdir()
    owner = subprocess.Popen(
        [sys.executable, "-c", GUARD_OWNER, str(doomed), mode], stdout=subprocess.PIPE, text=True
    )
    try:
        assert owner.stdout is not None
        word, pid = owner.stdout.readline().split()
        assert word == "ready"
        owner.send_signal(signal.SIGKILL)
        owner.wait(10)
        gone = poll(lambda: not _alive(int(pid)), timeout_s=10)
        assert gone, "the guard must exit once its owner is gone"
        assert doomed.exists() is (mode == "release")
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except OSError:
        return False
