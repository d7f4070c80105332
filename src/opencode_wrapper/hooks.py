"""Tool hooks: code of yours that sees, and may refuse, every tool call of a run or session.

``hooks=Hooks(before_tool=[...], after_tool=[...], on_turn_end=[...])``: each entry is
``(matcher, async fn)`` (or just ``fn``, matching every tool). A matcher is a tool name
(``"bash"``), a wildcard (``"py_*"``; ``*`` and ``?``, as opencode's permission rules), or a
callable ``(name) -> bool``.

* ``before_tool(use)`` gets a :class:`ToolUse` (the tool's name, its input, opencode's permission
  request) before the tool runs and answers ``True``/``None`` (allow), ``False`` (deny: the turn
  stops, as for a refused permission) or a string (deny, and the model reads that string and goes
  on). It works for any tool: the wrapper asks opencode to ask permission for the matched tools
  and answers on the hook's behalf, so an approval policy needs no permission map and no
  ``on_permission``. What your own ``permission`` map denies stays denied (the tool is never
  offered); what it sets to ``"ask"`` still goes to ``on_permission`` after the hooks allowed it.
  Warm backends only: ``opencode run`` rejects every request itself, so run mode refuses
  ``before_tool`` (``OpenCodeConfigError``) and points to a warm backend.
* ``after_tool(call)`` gets the finished :class:`~opencode_wrapper.ToolCall` (``output``,
  ``error``, ``duration_s``), on every backend.
* ``on_turn_end(result)`` gets the run's (or turn's) :class:`~opencode_wrapper.RunResult`.

A hook that raises is logged and ignored by ``after_tool``/``on_turn_end``; in ``before_tool``
it denies the call and is reported in the result as a ``callback_error``. Hooks run on the
event loop: keep them quick, or await something.
"""

from __future__ import annotations

import fnmatch
import inspect
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

from opencode_wrapper._model.outcome import RunResult
from opencode_wrapper._model.parts import ToolCall
from opencode_wrapper.config import RunConfig
from opencode_wrapper.errors import OpenCodeConfigError

__all__ = ["Hooks", "ToolUse", "user_permission_action"]

#: A tool name, a ``*``/``?`` wildcard, or a predicate on the tool name.
Matcher: TypeAlias = str | Callable[[str], bool]


@dataclass(frozen=True)
class ToolUse:
    """A tool call about to run, as a ``before_tool`` hook sees it.

    Attributes:
        name: the tool (``bash``, ``edit``, ``write``, ``py_add``...).
        input: its arguments, when opencode has them yet (``{}`` otherwise).
        permission: opencode's permission name for it (``edit`` covers ``write``, for instance).
        patterns: what the permission is about (the command, the file...).
        call_id: the tool call's id.
        request: opencode's whole ``permission.asked`` payload.
    """

    name: str
    input: dict[str, Any]
    permission: str
    patterns: tuple[str, ...]
    call_id: str | None
    request: dict[str, Any]


BeforeTool: TypeAlias = Callable[[ToolUse], Awaitable[bool | str | None]]
AfterTool: TypeAlias = Callable[[ToolCall], Awaitable[None]]
OnTurnEnd: TypeAlias = Callable[[RunResult], Awaitable[None]]

# Tools whose permission has another name (opencode 1.18).
_PERMISSION_OF = {"write": "edit", "patch": "edit", "multiedit": "edit", "apply_patch": "edit"}
# opencode's own defaults for permissions a config does not mention (the rest are allowed).
_DEFAULT_ACTIONS = {"external_directory": "ask", "doom_loop": "ask"}


def _matches(matcher: Matcher | None, *names: str) -> bool:
    if matcher is None:
        return True
    if callable(matcher):
        return any(bool(matcher(name)) for name in names if name)
    return any(fnmatch.fnmatchcase(name, matcher) for name in names if name)


def _entries(value: object, what: str) -> tuple[tuple[Matcher | None, Callable[..., Awaitable[Any]]], ...]:
    if value is None:
        return ()
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise OpenCodeConfigError(
            f"Hooks.{what} must be a list of (matcher, async fn) or async fn, got {value!r}"
        )
    entries = []
    for item in value:
        matcher, fn = item if isinstance(item, tuple) and len(item) == 2 else (None, item)
        if matcher is not None and not (isinstance(matcher, str) and matcher) and not callable(matcher):
            raise OpenCodeConfigError(
                f"a Hooks.{what} matcher must be a tool name, a wildcard or a callable, got {matcher!r}"
            )
        call = getattr(fn, "__call__", None)  # noqa: B004 - async callable objects count too
        if not (inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(call)):
            raise OpenCodeConfigError(f"a Hooks.{what} hook must be an async function, got {fn!r}")
        entries.append((matcher, fn))
    return tuple(entries)


class Hooks:
    """The hooks of a run or session (see the module docstring)."""

    def __init__(
        self,
        *,
        before_tool: Sequence[tuple[Matcher, BeforeTool] | BeforeTool] | None = None,
        after_tool: Sequence[tuple[Matcher, AfterTool] | AfterTool] | None = None,
        on_turn_end: Sequence[tuple[Matcher, OnTurnEnd] | OnTurnEnd] | None = None,
    ) -> None:
        self.before_tool = _entries(before_tool, "before_tool")
        self.after_tool = _entries(after_tool, "after_tool")
        self.on_turn_end = _entries(on_turn_end, "on_turn_end")

    def __repr__(self) -> str:
        return (
            f"Hooks(before_tool={len(self.before_tool)}, after_tool={len(self.after_tool)}, "
            f"on_turn_end={len(self.on_turn_end)})"
        )

    @property
    def intercepts(self) -> bool:
        """Whether tool calls must wait for these hooks (``before_tool``)."""
        return bool(self.before_tool)

    def before(self, name: str, permission: str) -> list[BeforeTool]:
        """The ``before_tool`` hooks that match a call."""
        return [fn for matcher, fn in self.before_tool if _matches(matcher, name, permission)]

    def after(self, name: str) -> list[AfterTool]:
        """The ``after_tool`` hooks that match a finished call."""
        return [fn for matcher, fn in self.after_tool if _matches(matcher, name)]

    def server_config(self, cfg: RunConfig) -> RunConfig:
        """``cfg`` with opencode asked to ask permission for every tool ``before_tool`` matches.

        Your own rules come after the added ones, so they win where they say more (opencode's
        last matching rule wins), and every ``"allow"`` of yours becomes ``"ask"`` (the hook
        answers it, then the call goes on as you allowed it); ``"deny"`` stays.
        """
        if not self.before_tool:
            return cfg
        asked: dict[str, Any] = {}
        for matcher, _ in self.before_tool:
            if matcher is None or callable(matcher):
                asked["*"] = "ask"
            else:
                asked[matcher] = "ask"
                if matcher in _PERMISSION_OF:
                    asked[_PERMISSION_OF[matcher]] = "ask"
        own = cfg.permission
        if isinstance(own, str):
            own = {"*": own}
        merged = _AskedPermission(asked, user=_user_map(cfg.permission))
        for key, value in (own or {}).items():
            merged[key] = _allow_to_ask(value)
        return cfg.replace(permission=merged)


class _AskedPermission(dict[str, Any]):
    """A permission map made by :meth:`Hooks.server_config`, remembering the caller's own map.

    A session on a shared server (and a one-shot run on it) only sees the server's map, where the
    caller's ``"allow"`` became ``"ask"``: :func:`user_permission_action` reads the caller's own
    map from here, so a call the hooks allowed goes on as the caller allowed it.
    """

    def __init__(self, rules: Mapping[str, Any], *, user: Any) -> None:
        super().__init__(rules)
        self.user = user


def _user_map(permission: Any) -> Any:
    """The caller's own map behind ``permission`` (itself, unless hooks made it)."""
    return permission.user if isinstance(permission, _AskedPermission) else permission


def _allow_to_ask(value: Any) -> Any:
    if value == "allow":
        return "ask"
    if isinstance(value, Mapping):
        return {k: _allow_to_ask(v) for k, v in value.items()}
    return value


def _wild(pattern: str, text: str) -> bool:
    return fnmatch.fnmatchcase(text, pattern)


def user_permission_action(permission_map: object, permission: str, patterns: Sequence[str]) -> str:
    """What a permission map of yours says for a request (``allow``, ``ask`` or ``deny``).

    opencode's rule: the last matching rule wins; a permission the map does not mention gets
    opencode's default (``ask`` for ``external_directory`` and ``doom_loop``, else ``allow``). A map
    made by :meth:`Hooks.server_config` stands for the map it was made from.
    """
    action = _DEFAULT_ACTIONS.get(permission, "allow")
    permission_map = _user_map(permission_map)
    if isinstance(permission_map, str):
        return permission_map
    if not isinstance(permission_map, Mapping):
        return action
    for key, value in permission_map.items():
        if not _wild(str(key), permission):
            continue
        if isinstance(value, str):
            action = value
        elif isinstance(value, Mapping):
            for pattern, leaf in value.items():
                if isinstance(leaf, str) and any(_wild(str(pattern), p) for p in patterns or ("*",)):
                    action = leaf
    return action
