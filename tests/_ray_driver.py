"""A Ray driver in its own process, for the ways an agent ends with its driver (tests/test_ray_cluster.py).

``python tests/_ray_driver.py ADDRESS NODE_ID CONFIG.pickle WORKSPACE HOW``: connects to the
cluster, starts a ``RayEngine`` on that one node and one run whose bash tool sleeps, prints
``AGENT {"agent_pid": ...}`` once the tool runs, then reads a line from stdin and ends as ``HOW`` says:

* ``shutdown``: ``ray.shutdown()`` without closing the engine, then exits at once;
* ``killed``: nothing; the test SIGKILLs this process.
"""

from __future__ import annotations

import asyncio
import json
import os
import pickle
import sys

import ray

from opencode_wrapper.backends.request import RunRequest
from opencode_wrapper.ray import RayEngine

MARK = "AGENT "


async def main() -> None:
    address, node_id, config_path, workspace, how = sys.argv[1:]
    with open(config_path, "rb") as fh:
        cfg = pickle.load(fh)
    engine = RayEngine(address, node_ids=[node_id], servers_per_node=1, sessions_per_node=1, lean=True)
    await engine.start()
    handle = engine.open(RunRequest.create("[[bash: sleep 300]]", workspace, run_cfg=cfg))
    async for event in handle:  # leaving the loop does not end the run; only closing the handle would
        tool = event.tool
        if tool is not None and tool.status == "running":
            break
    # Ray prints its own notices on stdout too: the line is marked.
    print(MARK + json.dumps({"agent_pid": engine.nodes[0]["pid"]}), flush=True)
    await asyncio.to_thread(sys.stdin.readline)
    if how == "shutdown":
        ray.shutdown()
    os._exit(0)  # no clean-up of ours: what must end the run is Ray and the supervisor


if __name__ == "__main__":
    asyncio.run(main())
