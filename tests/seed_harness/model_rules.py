"""Instruction-following rules that let the offline model stand in for an LLM in the seed's integration tests.

The seed's integration tests talk to a real model in plain English ("Run the shell command
`echo X`", "Use the read tool on this absolute path"), and check what reaches the model through
the wrapper (instruction files, permissions, callbacks). Their prompts carry no ``[[...]]``
directives and may not be edited, so these rules give the offline model the few
instruction-following behaviours the prompts ask for. Each behaviour is generic (driven by the text
of the request, not by the test's name or expected answer) and only produces the expected output
when the wrapper did its part:

* **Instruction files** (``RunConfig.instructions``): the rules read only the *system* prompt
  opencode builds. ``When the user inputs exactly "K", reply with exactly "R"`` answers ``R`` to the
  user message ``K``; ``Always begin every response with the exact token: T`` prefixes answers
  with ``T``. If the wrapper did not hand the instruction file to opencode, the system prompt
  lacks the line and the model just echoes (so the "absent without instructions" tests are real
  checks, and so are the "present" ones).
* **Tool requests**, on a new user turn and only when opencode offers that tool:
  "Run the (shell) command `CMD`" calls ``bash`` with ``CMD``; "Use the read tool ... <absolute path>"
  calls ``read`` on that path; "Use the `question` tool to ask me <what>, with options 'A' and 'B'"
  calls ``question`` with those options. What happens next is opencode's and the wrapper's doing:
  a rejected permission stops the turn, an approved one runs the tool and the built-in rule quotes
  its output (``Tool results: bash: ...``).

Everything else falls through to the offline model's built-in rules ("What is my name?" is
answered from the conversation) and its default echo (``You said: <prompt>``).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from opencode_wrapper.testing import Completion, Match, Reply, Rule, ToolCall

if TYPE_CHECKING:
    from opencode_wrapper.testing import RecordedRequest

_KEYWORD = re.compile(r'When the user inputs exactly "([^"]+)", reply with exactly "([^"]+)"')
_PREFIX = re.compile(r"Always begin every response with the exact token: (\S+)")
_BASH = re.compile(r"\brun the (?:shell )?command `([^`]+)`", re.IGNORECASE)
_READ = re.compile(r"\buse the read tool\b.*?(/[^\s`'\"]+)", re.IGNORECASE | re.DOTALL)
_QUESTION = re.compile(
    r"\buse the `?question`? tool to ask me (?P<what>.+?),? with options "
    r"(?P<options>'[^']+'(?:\s*(?:,|and|or)\s*'[^']+')*)",
    re.IGNORECASE | re.DOTALL,
)


def _echo(text: str) -> str:
    return f"You said: {text.strip()}"


def tool_request(request: RecordedRequest) -> ToolCall | None:
    """The tool call the last user message asks for in plain English, if opencode offers that tool."""
    text, offered = request.last_user_text, set(request.tool_names)
    bash = _BASH.search(text)
    if bash and "bash" in offered:
        return ToolCall("bash", {"command": bash.group(1), "description": "Run the requested command"})
    read = _READ.search(text)
    if read and "read" in offered:
        return ToolCall("read", {"filePath": read.group(1).rstrip(".,;:")})
    question = _QUESTION.search(text)
    if question and "question" in offered:
        labels = re.findall(r"'([^']+)'", question.group("options"))
        what = question.group("what").strip()
        ask = {
            "question": what[:1].upper() + what[1:] + "?",
            "header": "Question",
            "options": [{"label": label, "description": label} for label in labels],
        }
        return ToolCall("question", {"questions": [ask]})
    return None


def instruction_reply(request: RecordedRequest) -> Completion | None:
    """The reply on a new user turn when the system prompt's instructions or a tool request apply."""
    if not request.last_is_user or request.is_title_request:
        return None
    call = tool_request(request)
    if call is not None:
        return Completion(tool_calls=(call,))
    user, system = request.last_user_text.strip(), request.system_text
    answer = next((reply for keyword, reply in _KEYWORD.findall(system) if user == keyword), None)
    prefix = _PREFIX.search(system)
    if prefix is not None:
        return Completion(text=f"{prefix.group(1)} {answer or _echo(user)}")
    return None if answer is None else Completion(text=answer)


def instruction_rules() -> list[Rule]:
    """The rules for :class:`~opencode_wrapper.testing.OfflineModelServer` (tried before its built-ins)."""
    return [Rule(Match.where(lambda r: instruction_reply(r) is not None), Reply.compute(_computed))]


def _computed(request: RecordedRequest) -> Completion | str:
    # Only reached when the matcher saw a reply; the fallback keeps the type total.
    return instruction_reply(request) or _echo(request.last_user_text)
