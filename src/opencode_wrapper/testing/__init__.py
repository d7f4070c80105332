"""An offline, scripted, OpenAI-compatible model for running opencode without a provider key.

opencode talks to it through its bundled ``@ai-sdk/openai-compatible`` provider::

    from opencode_wrapper.testing import OfflineModelServer, Reply

    with OfflineModelServer(script=[Reply.bash("echo hi"), "Done."]) as model:
        config = model.run_config()   # RunConfig(model="offline/scripted", config_overrides=...)
        ...                           # run opencode with it
        print(model.chat_requests[-1].tool_results)

Without a script or rules, the prompt itself steers the model: ``[[bash: CMD]]``,
``[[tool: NAME {json}]]``, ``[[reason: TEXT]]``, ``[[say: TEXT]]``, ``[[error: 401]]``,
``[[sleep: 1.5]]``, ``[[hang]]``, ``[[cut]]``; tool results are quoted back; anything else is
echoed as ``You said: <prompt>``. See :class:`OfflineModelServer` for the order replies are chosen in.

Strict mode (``OfflineModelServer(strict=True)``): a chat request that no script entry or rule
answers gets HTTP 400 (opencode fails the run at once) and ``model.assert_complete()`` raises
:class:`UnexpectedModelCall` naming it; it also raises :class:`UnconsumedModelSteps` for script
entries never used. opencode's title-generation requests are always answered, strict or not.
Fault injection: ``model.fail(500, times=1)`` / ``model.inject(Reply.cut("..."))`` answer the next
request(s) of a route (``"chat"``, ``"title"``, ``"models"``) with a fault, then normally again.

Also: :class:`OfflineModelProcess` (the same server in a child process,
``python -m opencode_wrapper.testing``) and the pytest fixtures ``offline_model``,
``strict_offline_model`` and ``offline_run_config`` and the marker ``offline_model(**options)``
(registered automatically by the ``pytest11`` entry point).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opencode_wrapper.testing._assertions import (
        STRICT_ERROR_CODE,
        STRICT_STATUS,
        OfflineModelAssertionError,
        UnconsumedModelSteps,
        UnexpectedModelCall,
        describe_reply,
        describe_request,
    )
    from opencode_wrapper.testing._config import MODEL, MODEL_ID, PROVIDER_ID, provider_config
    from opencode_wrapper.testing._faults import (
        FAULT_ROUTES,
        Fault,
        FaultRoute,
        fault_from_json,
        faults_from_json,
    )
    from opencode_wrapper.testing._handler import REPORT_PATH
    from opencode_wrapper.testing._process import OfflineModelProcess
    from opencode_wrapper.testing._replies import (
        DEFAULT_PROMPT_TOKENS,
        AnyReply,
        Completion,
        ComputedReply,
        ErrorReply,
        HangReply,
        Reply,
        ReplyLike,
        ToolCall,
        Usage,
        default_usage,
        reply_from_json,
    )
    from opencode_wrapper.testing._request import TITLE_SYSTEM_PREFIX, RecordedRequest, ToolResult
    from opencode_wrapper.testing._rules import (
        BUILTIN_RULES,
        TOOL_OUTPUT_LIMIT,
        Directive,
        Match,
        Matcher,
        MatchLike,
        Rule,
        RuleLike,
        directive_reply,
        parse_directives,
        remember_reply,
        rules_from_json,
        tool_results_reply,
    )
    from opencode_wrapper.testing._server import DEFAULT_CHUNK_SIZE, DEFAULT_TITLE, OfflineModelServer

# Imported on first use (PEP 562): the pytest plugin imports this package in every pytest run,
# and the server modules pull in http.server and friends.
_MODULES: dict[str, tuple[str, ...]] = {
    "_assertions": (
        "STRICT_ERROR_CODE",
        "STRICT_STATUS",
        "OfflineModelAssertionError",
        "UnconsumedModelSteps",
        "UnexpectedModelCall",
        "describe_reply",
        "describe_request",
    ),
    "_config": (
        "MODEL",
        "MODEL_ID",
        "PROVIDER_ID",
        "provider_config",
    ),
    "_faults": ("FAULT_ROUTES", "Fault", "FaultRoute", "fault_from_json", "faults_from_json"),
    "_handler": ("REPORT_PATH",),
    "_process": ("OfflineModelProcess",),
    "_replies": (
        "DEFAULT_PROMPT_TOKENS",
        "AnyReply",
        "Completion",
        "ComputedReply",
        "ErrorReply",
        "HangReply",
        "Reply",
        "ReplyLike",
        "ToolCall",
        "Usage",
        "default_usage",
        "reply_from_json",
    ),
    "_request": (
        "TITLE_SYSTEM_PREFIX",
        "RecordedRequest",
        "ToolResult",
    ),
    "_rules": (
        "BUILTIN_RULES",
        "TOOL_OUTPUT_LIMIT",
        "Directive",
        "Match",
        "Matcher",
        "MatchLike",
        "Rule",
        "RuleLike",
        "directive_reply",
        "parse_directives",
        "remember_reply",
        "rules_from_json",
        "tool_results_reply",
    ),
    "_server": (
        "DEFAULT_CHUNK_SIZE",
        "DEFAULT_TITLE",
        "OfflineModelServer",
    ),
}
_EXPORTS = {name: f"{__name__}.{module}" for module, names in _MODULES.items() for name in names}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


__all__ = [
    # server
    "OfflineModelServer",
    "OfflineModelProcess",
    "RecordedRequest",
    "ToolResult",
    # strict mode and assertions
    "OfflineModelAssertionError",
    "UnexpectedModelCall",
    "UnconsumedModelSteps",
    "describe_request",
    "describe_reply",
    # fault injection
    "Fault",
    "FaultRoute",
    "fault_from_json",
    "faults_from_json",
    # replies
    "Reply",
    "Completion",
    "ToolCall",
    "Usage",
    "ErrorReply",
    "HangReply",
    "ComputedReply",
    "AnyReply",
    "ReplyLike",
    "default_usage",
    "reply_from_json",
    # rules
    "Rule",
    "RuleLike",
    "Match",
    "Matcher",
    "MatchLike",
    "Directive",
    "BUILTIN_RULES",
    "parse_directives",
    "directive_reply",
    "tool_results_reply",
    "remember_reply",
    "rules_from_json",
    # configuration
    "MODEL",
    "MODEL_ID",
    "PROVIDER_ID",
    "provider_config",
    # constants
    "DEFAULT_TITLE",
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_PROMPT_TOKENS",
    "TITLE_SYSTEM_PREFIX",
    "TOOL_OUTPUT_LIMIT",
    "STRICT_STATUS",
    "STRICT_ERROR_CODE",
    "FAULT_ROUTES",
    "REPORT_PATH",
]
