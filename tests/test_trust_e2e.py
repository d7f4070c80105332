"""Trusting many agents, end to end on the real opencode and the offline model: isolation (worktree
and copy, kept or not, cancelled or timed out), per-run limits, retries and verification.

One lean warm pool serves the module's isolated runs; run mode gets one ``opencode run`` per
task. Isolated trees are made under each test's ``tmp_path`` (``tempfile.tempdir``), so the
leftover check sees every process and every directory they could leave.

Which failure is retried, and why 425: opencode retries a provider error itself (for ~69 s) when
the AI SDK flags it retryable (408, 409, 429, 5xx) *or* its status, message or body matches its
list of transient errors (``429|500|502|503|504|524``, "rate limit", "overloaded",
"server_error", ...). A 425 Too Early whose body says neither is not retried by opencode (it
fails the run at once), while ``RunError.retryable`` counts 425 as worth retrying: the only
status of both kinds. The offline model's default error body says ``"type": "server_error"``,
which opencode would retry, so the tests give the body their own type and code.
"""

from __future__ import annotations

import asyncio
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped]
import pytest
import pytest_asyncio

from _worktree_support import apoll, git, leftovers, make_repo, state_of
from opencode_wrapper import Limits, RunConfig
from opencode_wrapper.backends.verify import VerifyContext
from opencode_wrapper.batch import Task, TaskOutcome, iter_run_many, run_many
from opencode_wrapper.isolation import FileChange
from opencode_wrapper.pool import ServerPool
from opencode_wrapper.testing import Match, OfflineModelServer, RecordedRequest, Reply, Rule

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

#: A guard against a hung run, far above what any run here needs.
SAFETY_TIMEOUT_S = 150.0
#: The offline model's price (per million tokens): a step of 10 input + 1 output tokens costs $0.012.
COST = {"provider": {"offline": {"models": {"scripted": {"cost": {"input": 1000, "output": 2000}}}}}}


def _looping(request: RecordedRequest) -> bool:
    return not request.is_title_request and "keep-looping" in request.last_user_text


def too_early() -> Any:
    """A 425 that opencode does not retry itself (see the module docstring)."""
    return Reply.error(425, "too early", type="invalid_request_error", code="too_early")


@pytest.fixture(scope="module")
def model() -> Iterator[OfflineModelServer]:
    # "keep-looping" prompts call bash forever: only a limit ends them.
    with OfflineModelServer(rules=[Rule(Match.where(_looping), Reply.bash("echo again"))]) as server:
        yield server


@pytest.fixture(scope="module")
def cfg(model: OfflineModelServer) -> RunConfig:
    return model.run_config(permission={"bash": "allow"}, config_overrides=COST)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def pool(
    opencode_binary: str, cfg: RunConfig, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[ServerPool]:
    """A warm server for the module's isolated runs (started here, so that no test's deadlines
    include a server's start-up; runs that are not isolated would get a server of their own)."""
    repo = make_repo(tmp_path_factory.mktemp("warm") / "repo")
    made = ServerPool(binary=opencode_binary, lean=True, max_servers=1, sessions_per_server=16)
    async with made:
        warm = await made.run(
            "[[say: warm]]", repo, run_cfg=cfg, isolation="worktree", timeout_s=SAFETY_TIMEOUT_S
        )
        assert warm.final_text == "warm" and len(made.servers) == 1
        yield made
    assert made.servers == []


@pytest.fixture
def scratch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where isolated trees are made in this test (the default is the temp dir)."""
    path = tmp_path / "scratch"
    path.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(path))
    return path


def left(repo: Path | None, scratch: Path) -> dict[str, list[str]]:
    """Isolation leftovers: worktrees, ocw/ branches, registrations, isolated trees (a pool server
    started during the test keeps its own config dirs in ``scratch`` until the pool closes)."""
    found = leftovers(repo, scratch)
    trees = [name for name in found.pop("scratch", []) if name.startswith(("ocw_wt_", "ocw_copy_"))]
    return {**found, **({"scratch": trees} if trees else {})}


def added_lines(diff: str) -> list[str]:
    return [line for line in diff.splitlines() if line.startswith("+") and not line.startswith("+++")]


def by_name(outcomes: list[TaskOutcome]) -> dict[str, TaskOutcome]:
    return {str(o.task.name): o for o in outcomes}


def sleepers(under: Path, seconds: int) -> list[psutil.Process]:
    """Live ``sleep SECONDS`` processes working inside ``under`` (the tools of these tests)."""
    found = []
    for proc in psutil.process_iter(["name", "cmdline", "cwd"]):
        try:
            cwd = proc.info["cwd"] or ""
            if (
                proc.info["cmdline"] == ["sleep", str(seconds)]
                and Path(cwd).is_relative_to(under)
                and proc.status() != psutil.STATUS_ZOMBIE
            ):
                found.append(proc)
        except psutil.Error:
            continue
    return found


# ----------------------------------------------------------------------------- isolation


async def test_sixteen_agents_change_one_file_each_in_their_own_worktree(
    tmp_path: Path, scratch: Path, pool: ServerPool, cfg: RunConfig
) -> None:
    repo = make_repo(tmp_path / "repo", {"shared.txt": "base\n", "notes.txt": "committed\n"})
    # A dirty checkout: an unstaged edit and a staged new file, which no agent may touch.
    (repo / "notes.txt").write_text("committed\nmy unstaged edit\n")
    (repo / "staged.txt").write_text("staged\n")
    git(repo, "add", "staged.txt")
    before = state_of(repo)
    tasks = [
        Task(f"[[bash: echo agent-{n} >> shared.txt]]", repo, name=f"agent-{n}", timeout_s=SAFETY_TIMEOUT_S)
        for n in range(16)
    ]
    outcomes = await run_many(
        tasks, pool=pool, run_cfg=cfg, isolation="worktree", keep="never", concurrency=16
    )
    for n, outcome in enumerate(outcomes):
        assert outcome.ok, (n, outcome.error)
        changes = outcome.result.changes if outcome.result else None
        assert changes is not None
        assert changes.files == (FileChange("shared.txt", "modified", 1, 0),), n
        assert added_lines(changes.diff) == [f"+agent-{n}"]
        assert changes.base_commit == git(repo, "rev-parse", "HEAD").strip()
        assert (changes.branch, changes.path) == (None, None)
    assert state_of(repo) == before
    assert (repo / "shared.txt").read_text() == "base\n"
    assert (repo / "notes.txt").read_text() == "committed\nmy unstaged edit\n"
    assert [line.split()[0] for line in git(repo, "worktree", "list").splitlines()] == [str(repo)]
    assert git(repo, "branch", "--list", "ocw/*") == ""
    assert left(repo, scratch) == {}


async def test_a_kept_run_and_a_copy_and_their_changes_applied(
    tmp_path: Path, scratch: Path, pool: ServerPool, cfg: RunConfig
) -> None:
    repo = make_repo(tmp_path / "repo", {"app.py": "A = 1\n"})
    plain = tmp_path / "plain"  # not a repository: copy mode
    plain.mkdir()
    (plain / "notes.txt").write_text("first\n")
    before = state_of(repo)
    kept, copied = await run_many(
        [
            Task("[[bash: echo 'B = 2' >> app.py && echo new > added.txt]]", repo, name="kept"),
            Task("[[bash: echo second >> notes.txt]]", plain, name="copied", isolation="copy", keep="never"),
        ],
        pool=pool,
        run_cfg=cfg,
        isolation="worktree",
        keep="on_change",
    )
    assert kept.ok and copied.ok, (kept.error, copied.error)
    changes = kept.result.changes if kept.result else None
    assert changes is not None and changes.branch is not None and changes.path is not None
    assert changes.files == (
        FileChange("added.txt", "added", 1, 0),
        FileChange("app.py", "modified", 1, 0),
    )
    # Kept: the worktree is registered, and its branch holds the changes as one commit on the base.
    assert changes.branch.startswith("ocw/kept-")
    assert str(changes.path) in git(repo, "worktree", "list")
    assert git(repo, "show", f"{changes.branch}:app.py") == "A = 1\nB = 2\n"
    assert git(repo, "rev-list", "--count", f"{changes.base_commit}..{changes.branch}").strip() == "1"
    assert state_of(repo) == before and not (repo / "added.txt").exists()
    # Applied to another checkout of the repository: the work tree and the index get the changes.
    checkout = tmp_path / "checkout"
    subprocess.run(["git", "clone", "-q", str(repo), str(checkout)], check=True)
    changes.apply(checkout)
    assert (checkout / "app.py").read_text() == "A = 1\nB = 2\n"
    assert (checkout / "added.txt").read_text() == "new\n"
    assert git(checkout, "diff", "--cached", "--name-only").split() == ["added.txt", "app.py"]
    # The copy: changes against the folder as it was; the folder itself untouched until applied.
    copy_changes = copied.result.changes if copied.result else None
    assert copy_changes is not None and copy_changes.isolation == "copy"
    assert copy_changes.files == (FileChange("notes.txt", "modified", 1, 0),)
    assert (copy_changes.branch, copy_changes.path) == (None, None)
    assert (plain / "notes.txt").read_text() == "first\n"
    copy_changes.apply(plain)
    assert (plain / "notes.txt").read_text() == "first\nsecond\n"
    # Only the kept run's tree is left; removed the git way, nothing else remains.
    assert left(repo, scratch)["worktrees"] == [str(changes.path)]
    git(repo, "worktree", "remove", "--force", str(changes.path))
    git(repo, "branch", "-q", "-D", changes.branch)
    assert left(repo, scratch) == {"scratch": [changes.path.parent.name]}


async def test_a_timeout_and_a_cancellation_mid_run_leave_nothing(
    tmp_path: Path, scratch: Path, pool: ServerPool, cfg: RunConfig
) -> None:
    repo = make_repo(tmp_path / "repo")
    before = state_of(repo)
    tasks = [
        Task(
            f"[[bash: echo {name} > mine.txt && sleep 97]]",
            repo,
            name=name,
            timeout_s=20.0 if name == "timed" else SAFETY_TIMEOUT_S,
        )
        for name in ("timed", "cancelled")
    ]
    outcomes = iter_run_many(tasks, pool=pool, run_cfg=cfg, isolation="worktree", keep="never")
    first = asyncio.ensure_future(outcomes.__anext__())
    try:
        # Both tools are running (their sleep processes exist) before either run is stopped.
        assert await apoll(lambda: len(sleepers(scratch, 97)) == 2, 18.0), "the tools did not start"
        timed = await asyncio.wait_for(first, SAFETY_TIMEOUT_S)
    finally:
        if not first.done():
            first.cancel()
            await asyncio.gather(first, return_exceptions=True)
    assert timed.task.name == "timed" and timed.error is not None and timed.error.kind == "timeout"
    # What the timed-out run changed was measured before its worktree went.
    changes = timed.result.changes if timed.result else None
    assert changes is not None and changes.files == (FileChange("mine.txt", "added", 1, 0),)
    assert (changes.branch, changes.path) == (None, None)
    # Leaving the loop cancels the other run mid-tool: its process tree and its worktree go too.
    await outcomes.aclose()  # type: ignore[attr-defined]
    assert sleepers(scratch, 97) == []
    assert state_of(repo) == before
    assert left(repo, scratch) == {}


# ----------------------------------------------------------------------------- limits


@pytest.mark.parametrize("where", ["run", "pool"])
async def test_each_limit_ends_a_run(
    where: str, tmp_path: Path, scratch: Path, pool: ServerPool, cfg: RunConfig, opencode_binary: str
) -> None:
    repo = make_repo(tmp_path / "repo")
    tasks = [
        Task("keep-looping: steps", repo, name="steps", limits=Limits(max_steps=3)),
        Task("keep-looping: tokens", repo, name="tokens", limits=Limits(max_tokens=30)),
        Task("keep-looping: cost", repo, name="cost", limits=Limits(max_cost=0.03)),
        Task("[[bash: sleep 301]]", repo, name="idle", limits=Limits(idle_timeout_s=2)),
    ]
    backend: dict[str, Any] = (
        {"pool": pool} if where == "pool" else {"backend": "run", "binary": opencode_binary}
    )
    kinds: dict[int, list[str]] = {}
    started = time.monotonic()
    outcomes = by_name(
        await run_many(
            [t for t in tasks],
            run_cfg=cfg,
            isolation="worktree",
            keep="never",
            on_event=lambda index, event: kinds.setdefault(index, []).append(event.kind),
            **backend,
        )
    )
    for task in tasks:
        outcome = outcomes[str(task.name)]
        assert outcome.elapsed_s < SAFETY_TIMEOUT_S and outcome.result is not None, task.name
        assert outcome.result.changes is not None and outcome.result.changes.path is None
    detail = {name: outcomes[name].error.detail for name in ("steps", "tokens", "cost", "idle")}  # type: ignore[union-attr]
    assert {name: outcomes[name].error.kind for name in detail} == {  # type: ignore[union-attr]
        "steps": "limit_exceeded",
        "tokens": "limit_exceeded",
        "cost": "limit_exceeded",
        "idle": "stalled",
    }
    # Each loop ran until its limit was crossed, and no further than one more step.
    assert detail["steps"] == {"limit": "max_steps", "value": 4, "allowed": 3}
    assert 3 <= len(outcomes["steps"].result.tool_calls) <= 4  # type: ignore[union-attr]
    assert detail["tokens"] == {"limit": "max_tokens", "value": 33, "allowed": 30}
    assert detail["cost"]["limit"] == "max_cost" and detail["cost"]["allowed"] == 0.03
    assert detail["cost"]["value"] == pytest.approx(0.036)
    assert outcomes["cost"].result.total_cost >= 0.036 - 1e-9  # type: ignore[union-attr]
    # Silence counts from the run's first event (start-up is not silence), and the run was ended
    # (its sleep outlasts the whole test). In run mode nothing but the step's start comes before
    # the quiet tool ends, so there it was stopped in the tool; a warm server also reports the prompt.
    assert detail["idle"] == {"limit": "idle_timeout_s", "allowed": 2}
    assert kinds.get(3)
    if where == "run":
        assert kinds[3] == ["step_start"]
    assert sleepers(scratch, 301) == []
    assert left(repo, scratch) == {}
    assert time.monotonic() - started < SAFETY_TIMEOUT_S


# ----------------------------------------------------------------------------- retries


async def test_retries_only_what_is_worth_retrying_and_safe(
    tmp_path: Path,
    scratch: Path,
    pool: ServerPool,
    model: OfflineModelServer,
    cfg: RunConfig,
    opencode_binary: str,
) -> None:
    plain = make_repo(tmp_path / "plain")
    repo = make_repo(tmp_path / "repo")

    def after_tool(word: str) -> Any:
        return lambda request: word in request.last_user_text and bool(request.tool_results)

    # One 425 each: before any tool (retried), and after a tool ran (not isolated: not retried;
    # isolated: retried, in a fresh worktree).
    faults = [
        model.inject(too_early(), match="retry-me", times=1),
        model.inject(too_early(), match=after_tool("side-effect"), times=1),
        model.inject(too_early(), match=after_tool("isolated-effect"), times=1),
    ]
    options: dict[str, Any] = {"run_cfg": cfg, "retries": 2, "retry_backoff_s": 0.2}
    isolated_runs = run_many(
        [
            Task("retry-me [[say: second time lucky]]", repo, name="transient"),
            Task("[[error: 401]]", repo, name="denied"),
            Task("isolated-effect [[bash: echo once >> count.txt]]", repo, name="isolated"),
        ],
        pool=pool,
        isolation="worktree",
        keep="never",
        **options,
    )
    # The task that is not isolated runs in its workspace itself, with one `opencode run`.
    plain_run = run_many(
        [Task("side-effect [[bash: echo once >> count.txt]]", plain, name="side-effect")],
        backend="run",
        binary=opencode_binary,
        **options,
    )
    done = await asyncio.gather(isolated_runs, plain_run)
    outcomes = by_name([*done[0], *done[1]])
    assert [len(f.served) for f in faults] == [1, 1, 1]

    def tries(name: str) -> list[tuple[int, str | None, int | None]]:
        return [
            (a.number, a.error.kind if a.error else None, a.error.status_code if a.error else None)
            for a in outcomes[name].attempts
        ]

    transient = outcomes["transient"]
    assert transient.ok and transient.result is not None
    assert transient.result.final_text == "second time lucky"
    assert tries("transient") == [(1, "api_error", 425), (2, None, None)]
    assert transient.attempts[0].error is not None and transient.attempts[0].error.retryable
    # A permanent error is not retried.
    assert tries("denied") == [(1, "api_error", 401)]
    assert outcomes["denied"].error is not None and not outcomes["denied"].error.retryable
    # Retryable, but the tool already ran in the real workspace: running it again would repeat it.
    assert tries("side-effect") == [(1, "api_error", 425)]
    assert (plain / "count.txt").read_text() == "once\n"
    # The same in a worktree: the failed try's tree is gone, the retry starts from a fresh one.
    isolated = outcomes["isolated"]
    assert tries("isolated") == [(1, "api_error", 425), (2, None, None)]
    assert isolated.ok and isolated.result is not None and isolated.result.changes is not None
    assert added_lines(isolated.result.changes.diff) == ["+once"]
    assert left(repo, scratch) == {}


# ----------------------------------------------------------------------------- verification


async def test_verification_by_command_and_by_callable(
    tmp_path: Path, scratch: Path, pool: ServerPool, cfg: RunConfig
) -> None:
    repo = make_repo(tmp_path / "repo")
    seen: list[str] = []

    async def has_result(check: VerifyContext) -> bool | str:
        seen.append(check.workspace)
        path = Path(check.workspace) / "result.txt"
        return True if path.read_text() == "ok\n" else f"result.txt says {path.read_text()!r}"

    def says_missing(check: VerifyContext) -> str | None:
        seen.append(check.workspace)
        return None if (Path(check.workspace) / "result.txt").exists() else "result.txt is missing"

    write_ok = "[[bash: echo ok > result.txt]]"
    outcomes = by_name(
        await run_many(
            [
                Task(write_ok, repo, name="cmd-pass", verify="grep -qx ok result.txt"),
                Task(write_ok, repo, name="cmd-fail", verify="echo checking; grep -q nope result.txt"),
                Task(write_ok, repo, name="fn-pass", verify=has_result),
                Task("[[say: nothing written]]", repo, name="fn-fail", verify=says_missing),
            ],
            pool=pool,
            run_cfg=cfg,
            isolation="worktree",
            keep="never",
            retries=1,
            retry_backoff_s=0.1,
        )
    )
    passed, failed = outcomes["cmd-pass"], outcomes["cmd-fail"]
    assert passed.ok and (passed.verified, passed.verify_exit_code) == (True, 0)
    assert not failed.ok and (failed.verified, failed.verify_exit_code) == (False, 1)
    assert failed.error is not None and failed.error.kind == "verification_failed"
    assert "checking" in (failed.verify_output or "") and "checking" in failed.error.message
    assert outcomes["fn-pass"].ok and outcomes["fn-pass"].verified is True
    fn_fail = outcomes["fn-fail"]
    assert (fn_fail.verified, fn_fail.verify_output) == (False, "result.txt is missing")
    assert fn_fail.error is not None and fn_fail.error.kind == "verification_failed"
    # A failed check is the agent's outcome, not a transient failure: never retried.
    assert [len(o.attempts) for o in outcomes.values()] == [1, 1, 1, 1]
    # The callables ran in the isolated worktrees (gone now), never in the repository.
    assert len(seen) == 2 and all(Path(s).is_relative_to(scratch) for s in seen)
    assert not (repo / "result.txt").exists()
    assert left(repo, scratch) == {}
