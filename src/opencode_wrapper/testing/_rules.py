"""Choosing a reply: matchers, rules, and the built-in prompt directives.

A :class:`Rule` pairs a matcher (a predicate on the :class:`RecordedRequest`) with a reply; the
server tries its rules in order and the first match wins. :data:`BUILTIN_RULES` are the rules
that let a prompt steer the model by itself (``[[bash: ls]]``, ``[[error: 401]]``, …): see
:func:`directive_reply`, :func:`tool_results_reply` and :func:`remember_reply`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from opencode_wrapper.testing._replies import (
    AnyReply,
    Completion,
    ComputedReply,
    ErrorReply,
    HangReply,
    ReplyLike,
    ToolCall,
    as_reply,
    reply_from_json,
)
from opencode_wrapper.testing._request import RecordedRequest

Matcher: TypeAlias = Callable[[RecordedRequest], bool]
#: A matcher, or a regex (``str`` or compiled) meaning :meth:`Match.user_text`.
MatchLike: TypeAlias = Matcher | str | re.Pattern[str]

#: How many characters of each tool output the tool-results answer quotes.
TOOL_OUTPUT_LIMIT = 2000


# --- matchers ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class UserTextMatcher:
    """Matches a new user turn whose :attr:`~RecordedRequest.last_user_text` contains ``pattern``."""

    pattern: re.Pattern[str]

    def __call__(self, request: RecordedRequest) -> bool:
        # Only on a fresh user turn: after a tool result the last user text is unchanged, and
        # matching it again would make the agent call the same tool forever.
        return (
            request.last_is_user
            and not request.is_title_request
            and self.pattern.search(request.last_user_text) is not None
        )


@dataclass(frozen=True)
class ToolResultMatcher:
    """Matches when the conversation ends with tool results (of tool ``name``, if given)."""

    name: str | None = None

    def __call__(self, request: RecordedRequest) -> bool:
        results = request.tool_results
        if self.name is None:
            return bool(results)
        return any(r.name == self.name for r in results)


@dataclass(frozen=True)
class TitleRequestMatcher:
    """Matches opencode's title-generation request."""

    def __call__(self, request: RecordedRequest) -> bool:
        return request.is_title_request


@dataclass(frozen=True)
class AlwaysMatcher:
    """Matches every request except title-generation requests."""

    def __call__(self, request: RecordedRequest) -> bool:
        return not request.is_title_request


class Match:
    """Factories for matchers. Any ``Callable[[RecordedRequest], bool]`` is a matcher too."""

    @staticmethod
    def user_text(pattern: str | re.Pattern[str], flags: int = 0) -> UserTextMatcher:
        """``re.search(pattern)`` on the last user message's text, on a new user turn only
        (the last message is a user message) and never on a title request."""
        compiled = pattern if isinstance(pattern, re.Pattern) else re.compile(pattern, flags)
        return UserTextMatcher(compiled)

    @staticmethod
    def tool_result(name: str | None = None) -> ToolResultMatcher:
        """The last message is a tool result (of the tool ``name``, if given)."""
        return ToolResultMatcher(name)

    @staticmethod
    def title_request() -> TitleRequestMatcher:
        """opencode's title-generation request (only reached when the server's ``title`` is ``None``)."""
        return TitleRequestMatcher()

    @staticmethod
    def always() -> AlwaysMatcher:
        """Every request except title requests."""
        return AlwaysMatcher()

    @staticmethod
    def where(predicate: Callable[[RecordedRequest], bool]) -> Matcher:
        """An arbitrary predicate on the request (returned as is; for readability)."""
        return predicate


def as_matcher(match: MatchLike) -> Matcher:
    """A regex (``str``/compiled) becomes :meth:`Match.user_text`; a callable is kept."""
    if isinstance(match, (str, re.Pattern)):
        return Match.user_text(match)
    if callable(match):
        return match
    raise TypeError(f"expected a regex or a callable(RecordedRequest) -> bool, got {match!r}")


@dataclass(frozen=True, init=False)
class Rule:
    """When ``match(request)`` is true, answer ``reply``.

    ``Rule(r"deploy", Reply.bash("make deploy"))``: a ``str`` match is a regex on the last user
    text (:meth:`Match.user_text`), a ``str`` reply is a text answer.
    """

    match: Matcher
    reply: AnyReply

    def __init__(self, match: MatchLike, reply: ReplyLike) -> None:
        object.__setattr__(self, "match", as_matcher(match))
        object.__setattr__(self, "reply", as_reply(reply))

    def matches(self, request: RecordedRequest) -> bool:
        """Whether this rule applies to ``request``."""
        return bool(self.match(request))


RuleLike: TypeAlias = Rule | tuple[MatchLike, ReplyLike]


def as_rule(rule: RuleLike) -> Rule:
    """Accept a :class:`Rule` or a ``(match, reply)`` tuple."""
    if isinstance(rule, Rule):
        return rule
    if isinstance(rule, tuple) and len(rule) == 2:
        return Rule(rule[0], rule[1])
    raise TypeError(f"expected a Rule or a (match, reply) tuple, got {rule!r}")


# --- directives -------------------------------------------------------------------------------

_DIRECTIVE_HEAD = re.compile(r"\[\[\s*(bash|tool|reason|error|hang|sleep|cut|say)\s*(:|\]\])")
_TOOL_NAME = re.compile(r"\s*([^\s{\]]+)\s*")
_CLOSE = re.compile(r"\s*\]\]")
_NO_ARGUMENT = {"hang", "cut"}


@dataclass(frozen=True)
class Directive:
    """One ``[[name: argument]]`` found in a prompt.

    Attributes:
        name: ``bash``, ``tool``, ``reason``, ``error``, ``hang``, ``sleep``, ``cut`` or ``say``.
        argument: the text after ``:`` (stripped), ``""`` for ``[[hang]]``/``[[cut]]``.
        start: offset of ``[[`` in the text.
        end: offset just past ``]]``.
        tool_arguments: for ``tool``: the decoded JSON object (``{}`` if none was given).
    """

    name: str
    argument: str
    start: int
    end: int
    tool_arguments: Mapping[str, Any] = field(default_factory=dict)


def _parse_one(text: str, start: int) -> Directive | None:
    head = _DIRECTIVE_HEAD.match(text, start)
    if head is None:
        return None
    name, sep = head.group(1), head.group(2)
    if name in _NO_ARGUMENT:
        return Directive(name, "", start, head.end()) if sep == "]]" else None
    if sep == "]]":
        return None
    if name == "tool":
        tool = _TOOL_NAME.match(text, head.end())
        if tool is None:
            return None
        pos = tool.end()
        arguments: Any = {}
        if text.startswith("{", pos):
            try:
                arguments, pos = json.JSONDecoder().raw_decode(text, pos)
            except ValueError:
                return None
        close = _CLOSE.match(text, pos)
        if close is None or not isinstance(arguments, dict):
            return None
        return Directive(name, tool.group(1), start, close.end(), arguments)
    end = text.find("]]", head.end())
    if end < 0:
        return None
    argument = text[head.end() : end].strip()
    try:
        if name == "error":
            int(argument)
        elif name == "sleep":
            float(argument)
    except ValueError:
        return None
    return Directive(name, argument, start, end + 2)


def parse_directives(text: str) -> list[Directive]:
    """All well-formed directives in ``text``, in order.

    Malformed ones (unknown name, ``[[error: abc]]``, bad JSON in ``[[tool: …]]``) are not
    directives and stay part of the text.
    """
    found: list[Directive] = []
    pos = text.find("[[")
    while pos >= 0:
        directive = _parse_one(text, pos)
        if directive is not None:
            found.append(directive)
            pos = text.find("[[", directive.end)
        else:
            pos = text.find("[[", pos + 2)
    return found


def strip_directives(text: str, directives: Sequence[Directive]) -> str:
    """``text`` without the directives, surrounding whitespace stripped."""
    pieces, pos = [], 0
    for directive in directives:
        pieces.append(text[pos : directive.start])
        pos = directive.end
    pieces.append(text[pos:])
    return "".join(pieces).strip()


def echo_text(user_text: str) -> str:
    """The default answer: ``"You said: " + user_text.strip()``."""
    return f"You said: {user_text.strip()}"


def directive_reply(request: RecordedRequest) -> AnyReply | None:
    """The reply the directives in the last user message ask for; ``None`` if there are none.

    Only a new user turn counts (the last message is a user message, not a title request).
    ``[[hang]]`` wins over ``[[error: N]]``, which wins over the rest; ``[[sleep: S]]`` delays
    whatever is answered (several add up). Otherwise the answer is a :class:`Completion` with:
    reasoning = the ``[[reason: …]]`` texts joined by ``"\\n"``; tool calls = every
    ``[[bash: …]]``/``[[tool: …]]`` in order; text = the ``[[say: …]]`` texts joined by ``"\\n"``,
    or none when there are tool calls, or else :func:`echo_text` of the prompt without its
    directives; ``[[cut]]`` cuts the stream after its first content chunk.
    """
    if not request.last_is_user or request.is_title_request:
        return None
    text = request.last_user_text
    directives = parse_directives(text)
    if not directives:
        return None
    by_name: dict[str, list[Directive]] = {}
    for directive in directives:
        by_name.setdefault(directive.name, []).append(directive)
    delay = sum(float(d.argument) for d in by_name.get("sleep", []))
    if "hang" in by_name:
        return HangReply()
    if "error" in by_name:
        return ErrorReply(status=int(by_name["error"][0].argument), delay=delay)
    calls = []
    for directive in directives:
        if directive.name == "bash":
            calls.append(ToolCall("bash", {"command": directive.argument, "description": "Run a command"}))
        elif directive.name == "tool":
            calls.append(ToolCall(directive.argument, dict(directive.tool_arguments)))
    says = [d.argument for d in by_name.get("say", [])]
    reasons = [d.argument for d in by_name.get("reason", [])]
    if says:
        answer: str | None = "\n".join(says)
    elif calls:
        answer = None
    else:
        answer = echo_text(strip_directives(text, directives))
    return Completion(
        text=answer,
        tool_calls=tuple(calls),
        reasoning="\n".join(reasons) if reasons else None,
        delay=delay,
        cut_after=1 if "cut" in by_name else None,
    )


def tool_results_reply(request: RecordedRequest) -> Completion | None:
    """When the conversation ends with tool results, quote them; else ``None``.

    Text: ``"Tool results: "`` followed by one ``"<tool name>: <output>"`` entry per result, joined
    by ``"\\n"``, where output is the first :data:`TOOL_OUTPUT_LIMIT` (2000) characters of the tool
    output with trailing whitespace removed. E.g. ``Tool results: bash: hi``.
    """
    results = request.tool_results
    if not results:
        return None
    lines = [f"{r.name}: {r.output[:TOOL_OUTPUT_LIMIT].rstrip()}" for r in results]
    return Completion(text="Tool results: " + "\n".join(lines))


_NAME_QUESTION = re.compile(r"\bwhat(?:'s|\s+is)\s+my\s+name\b", re.IGNORECASE)
_NAME_STATEMENT = re.compile(r"\bmy\s+name\s+is\s+([^\n.,!?]+)", re.IGNORECASE)


def remember_reply(request: RecordedRequest) -> Completion | None:
    """``"Your name is X."`` when the last user message asks "What is my name?" and an earlier
    user message said "My name is X" (the latest such statement wins); else ``None``."""
    if not request.last_is_user or request.is_title_request:
        return None
    *earlier, last = request.user_texts or [""]
    if not _NAME_QUESTION.search(last):
        return None
    for text in reversed(earlier):
        names = _NAME_STATEMENT.findall(text)
        if names:
            return Completion(text=f"Your name is {names[-1].strip()}.")
    return None


def _computed(fn: Callable[[RecordedRequest], AnyReply | None]) -> Rule:
    # The built-in rules compute their reply; the matcher is the same function returning non-None.
    return Rule(lambda request: fn(request) is not None, ComputedReply(lambda request: fn(request) or ""))


#: The built-in rules, tried after the user's rules: tool results, then directives, then remember.
BUILTIN_RULES: tuple[Rule, ...] = (
    _computed(tool_results_reply),
    _computed(directive_reply),
    _computed(remember_reply),
)


def echo_reply(request: RecordedRequest) -> Completion:
    """The default reply: :func:`echo_text` of the last user text, without its directives.

    Directives are left out even when they were not obeyed (e.g. the model is called again after a
    cut stream), so the echo never repeats ``[[…]]`` markup.
    """
    text = request.last_user_text
    return Completion(text=echo_text(strip_directives(text, parse_directives(text))))


#: The reply when nothing else matched: :func:`echo_reply`.
ECHO = ComputedReply(echo_reply)


# --- JSON form --------------------------------------------------------------------------------


def matcher_from_json(data: Any) -> Matcher:
    """A matcher from its JSON form.

    ``"regex"`` or ``{"user_text": "regex"}``; ``{"tool_result": true}`` or
    ``{"tool_result": "bash"}``; ``{"title_request": true}``; ``{"always": true}`` or ``null``.
    """
    if data is None:
        return Match.always()
    if isinstance(data, str):
        return Match.user_text(data)
    if isinstance(data, Mapping) and len(data) == 1:
        ((key, value),) = data.items()
        if key == "user_text" and isinstance(value, str):
            return Match.user_text(value)
        if key == "tool_result" and (value is True or isinstance(value, str)):
            return Match.tool_result(None if value is True else value)
        if key == "title_request" and value is True:
            return Match.title_request()
        if key == "always" and value is True:
            return Match.always()
    raise ValueError(
        f"bad 'match' {data!r}: expected a regex string, or one of {{'user_text': regex}}, "
        "{'tool_result': true | name}, {'title_request': true}, {'always': true}"
    )


def rule_from_json(data: Any) -> Rule:
    """A rule from ``{"match": <matcher JSON>, "reply": <reply JSON>}`` (no ``match`` = always)."""
    if not isinstance(data, Mapping) or "reply" not in data or set(data) - {"match", "reply"}:
        raise ValueError(f'a rule is {{"match": ..., "reply": ...}}, got {data!r}')
    return Rule(matcher_from_json(data.get("match")), reply_from_json(data["reply"]))


def rules_from_json(data: Any) -> list[Rule]:
    """Rules from a JSON list of rule objects."""
    if not isinstance(data, list):
        raise ValueError(f"rules must be a JSON list, got {type(data).__name__}")
    return [rule_from_json(item) for item in data]
