"""``Hooks.server_config`` and ``user_permission_action``: what opencode is asked, and what your map says."""

from __future__ import annotations

import pickle

import pytest

from opencode_wrapper import Hooks, RunConfig, ToolCall, ToolUse
from opencode_wrapper.hooks import user_permission_action


async def _allow(use: ToolUse) -> bool:
    return True


async def _seen(call: ToolCall) -> None:
    return None


def _is_bash(name: str) -> bool:
    return name == "bash"


def test_server_config_asks_for_what_the_hooks_match_and_keeps_your_denials() -> None:
    hooks = Hooks(before_tool=[("write", _allow), (_is_bash, _allow)])
    cfg = hooks.server_config(RunConfig(permission={"read": "allow", "webfetch": "deny"}))
    # write's permission is edit; a callable matcher needs every tool asked; your allow -> ask.
    assert cfg.permission == {"write": "ask", "edit": "ask", "*": "ask", "read": "ask", "webfetch": "deny"}


def test_hooks_without_before_tool_leave_the_config_alone() -> None:
    cfg = RunConfig(permission={"bash": "allow"})
    assert Hooks(after_tool=[_seen]).server_config(cfg) is cfg


@pytest.mark.parametrize(
    ("permission", "patterns", "action"),
    [
        ("bash", ["ls"], "allow"),
        ("bash", ["rm -rf x"], "deny"),
        ("edit", ["a.py"], "ask"),
        ("read", [], "allow"),
    ],
)
def test_a_server_config_map_stands_for_your_own(permission: str, patterns: list[str], action: str) -> None:
    own = {"bash": {"*": "allow", "rm *": "deny"}, "edit": "ask"}
    hooks = Hooks(before_tool=[_allow])
    server_map = hooks.server_config(RunConfig(permission=own)).permission
    assert user_permission_action(own, permission, patterns) == action
    # A session on a server started with it only sees the server's map (where allow became ask).
    assert user_permission_action(server_map, permission, patterns) == action
    # ... and so does a session whose hooks' server config is made from the server's config again.
    again = Hooks(before_tool=[("bash", _allow)]).server_config(RunConfig(permission=server_map)).permission
    assert again == server_map
    assert user_permission_action(again, permission, patterns) == action


def test_the_server_config_map_survives_copies_and_pickling() -> None:
    cfg = Hooks(before_tool=[_allow]).server_config(RunConfig(permission={"bash": "allow"}))
    for copy in (
        cfg.replace(model="a/b"),
        cfg.merged_with(RunConfig(agent="plan")),
        pickle.loads(pickle.dumps(cfg)),
    ):
        assert copy.permission == {"*": "ask", "bash": "ask"}
        assert user_permission_action(copy.permission, "bash", ["ls"]) == "allow"
    assert cfg.build_opencode_config_dict()["permission"] == {"*": "ask", "bash": "ask"}
