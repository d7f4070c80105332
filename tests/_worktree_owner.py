"""An owner of isolated workspaces, for test_worktree_isolation.py to SIGKILL.

``python _worktree_owner.py REPO SCRATCH STAGE MARKER``

* ``STAGE = running``: holds a worktree (with a process tree writing into it from its own
  session), a copy, and a closed worktree it kept; prints ``READY`` once all exist.
* ``STAGE = <git subcommand>``: starts one isolated run (keep on_change, a change in it) and
  prints ``AT`` the moment that git command starts, so the test kills us while it runs.

Then it waits forever: the test kills it with SIGKILL (no ``finally``, no ``atexit``).
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

from opencode_wrapper._isolation import git as g
from opencode_wrapper._proc.process import OwnedProcess
from opencode_wrapper.isolation import IsolatedWorkspace


async def running(repo: Path, scratch: Path, marker: str) -> None:
    kept = await IsolatedWorkspace.create(repo, keep="always", name="kept", directory=scratch)
    (kept.root / "README.md").write_text("kept\n")
    changes = await kept.close()
    worktree = await IsolatedWorkspace.create(repo, keep="on_change", name="live", directory=scratch)
    copy = await IsolatedWorkspace.create(repo, isolation="copy", name="copy", directory=scratch)
    (worktree.root / "README.md").write_text("changed\n")
    # A writer in its own session that keeps creating files in the worktree: it must not
    # recreate anything after the worktree is removed.
    target = worktree.root / "made-by-the-writer"
    loop = f"while :; do mkdir -p {target} && date >> {target}/w.log; sleep 0.01; done # {marker}"
    script = f"setsid sh -c '{loop}' & echo up; sleep 100"
    proc = await OwnedProcess.start(
        ["sh", "-c", script],
        cwd=str(worktree.path),
        env=dict(os.environ),
        stdin_data=None,
        cleanup=worktree.cleanup,
    )
    assert (await proc.stdout.readline()).strip() == b"up"
    print("READY", changes.branch, changes.path, flush=True)
    await asyncio.Event().wait()
    del copy


async def at(repo: Path, scratch: Path, stage: str) -> None:
    real = g.git

    async def spy(*args: str, **kwargs: Any) -> g.GitResult:
        if (args and args[0] == stage) or (stage == "diff-tree" and "diff-tree" in args):
            pending = asyncio.ensure_future(real(*args, **kwargs))
            await asyncio.sleep(0)  # the git process is being spawned
            print("AT", flush=True)
            await asyncio.Event().wait()
            return await pending
        return await real(*args, **kwargs)

    g.git = spy  # type: ignore[assignment]
    iso = await IsolatedWorkspace.create(repo, keep="on_change", name="at", directory=scratch)
    (iso.root / "README.md").write_text("changed\n")
    await iso.close()


def main() -> None:
    repo, scratch, stage, marker = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], sys.argv[4]
    if stage == "running":
        asyncio.run(running(repo, scratch, marker))
    else:
        asyncio.run(at(repo, scratch, stage))


if __name__ == "__main__":
    main()
