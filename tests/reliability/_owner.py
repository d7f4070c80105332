"""A process that owns runs and servers, for test_owner_killed.py to SIGKILL.

``python _owner.py BINARY WORKSPACE MARKER_RUN MARKER_SESSION MARKER_POOL`` starts, all at once:

* a run-mode run whose bash tool runs ``MARKER_RUN`` (``sleep 60.NNNN``),
* an :class:`OpenCodeServer` with a session turn running ``MARKER_SESSION``,
* a :class:`ServerPool` run running ``MARKER_POOL``,

prints ``OWNING`` and waits forever. The test kills it with SIGKILL: no ``finally``, no
``atexit``, nothing of ours runs after that.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from opencode_wrapper import AsyncOpenCodeClient
from opencode_wrapper.pool import ServerPool
from opencode_wrapper.server import OpenCodeServer
from opencode_wrapper.testing import OfflineModelServer

FAST = {"snapshot": False, "agent": {"title": {"disable": True}}}


async def main(binary: str, workspace: str, markers: list[str]) -> None:
    with OfflineModelServer() as model:
        cfg = model.run_config(permission={"bash": "allow"}, config_overrides=FAST)
        client = AsyncOpenCodeClient(binary, startup_delay_s=0)
        keep: list[Any] = [
            asyncio.ensure_future(client.async_run(f"[[bash: {markers[0]}]]", workspace, run_cfg=cfg))
        ]
        server = OpenCodeServer(binary=binary, run_cfg=cfg, cwd=workspace)
        await server.start()
        session = await server.session(workspace).__aenter__()
        keep.append(asyncio.ensure_future(session.send(f"[[bash: {markers[1]}]]")))
        pool = ServerPool(binary=binary, max_servers=1)
        keep.append(asyncio.ensure_future(pool.run(f"[[bash: {markers[2]}]]", workspace, run_cfg=cfg)))
        print("OWNING", flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3:6]))
