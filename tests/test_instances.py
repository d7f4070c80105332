"""A server disposes the opencode instances of directories no session uses, past a few idle ones."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from opencode_wrapper import OpenCodeConfigError, OpenCodeServer, RunConfig
from opencode_wrapper._server.instances import Instances
from opencode_wrapper.testing import OfflineModelServer


def test_idle_directories_are_disposed_least_recently_used_first() -> None:
    instances = Instances(idle_limit=2)
    for name in ("a", "b", "c"):
        instances.use(name)
    assert instances.release("a") == [] and instances.release("b") == []
    instances.use("a")  # used again: no longer idle
    assert instances.release("c") == []  # idle: b, c
    assert instances.release("a") == ["b"]  # idle: c, a -> b, the oldest, goes
    instances.use("x")
    instances.use("x")
    assert instances.release("x") == []  # one session of x still open
    assert instances.in_use("x") and not instances.in_use("b")


def test_without_a_limit_nothing_is_disposed() -> None:
    instances = Instances(idle_limit=None)
    instances.use("a")
    assert instances.release("a") == []


@pytest.mark.parametrize("bad", [-1, 1.5, True, "2"])
def test_a_bad_limit_is_refused(bad: Any) -> None:
    with pytest.raises(OpenCodeConfigError, match="idle_instances"):
        Instances(idle_limit=bad)


@pytest.mark.e2e
async def test_a_server_disposes_idle_instances_and_stays_usable(
    make_workspace: Callable[[str], Path],
) -> None:
    spaces = [make_workspace(f"ws{i}") for i in range(3)]
    with OfflineModelServer() as model:
        async with OpenCodeServer(
            run_cfg=model.run_config().merged_with(RunConfig()), idle_instances=1
        ) as server:
            for number, space in enumerate(spaces):
                assert (await server.run(f"[[say: in {number}]]", space)).final_text == f"in {number}"
            disposed = server.instances.disposed
            again = await server.run("[[say: back again]]", spaces[0])  # its instance is made anew
            instances = await server.request("GET", "/path", params={"directory": str(spaces[0])})
    assert disposed >= 1, "3 directories used one after the other, 1 kept idle"
    assert again.ok and again.final_text == "back again"
    assert isinstance(instances, dict)
