"""Span and attribute names: the OpenTelemetry GenAI semantic conventions, and this package's own.

The GenAI conventions (``gen_ai.*``, status "Development") define the spans ``invoke_agent``,
``chat``, ``execute_tool`` and ``invoke_workflow`` and their attributes; what they lack for
opencode (cost, backend, workspace, batch totals) is under ``opencode.*``. Names are spelled out
here rather than imported from ``opentelemetry-semantic-conventions``, whose GenAI names are
deprecated aliases of a repository that ships no Python package.
"""

from __future__ import annotations

import json
from typing import Any

from opencode_wrapper._model.event import TokenUsage

OPERATION = "gen_ai.operation.name"
PROVIDER = "gen_ai.provider.name"
REQUEST_MODEL = "gen_ai.request.model"
RESPONSE_MODEL = "gen_ai.response.model"
FINISH_REASONS = "gen_ai.response.finish_reasons"
AGENT_NAME = "gen_ai.agent.name"
CONVERSATION_ID = "gen_ai.conversation.id"
OUTPUT_TYPE = "gen_ai.output.type"
INPUT_TOKENS = "gen_ai.usage.input_tokens"
OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
CACHE_READ_TOKENS = "gen_ai.usage.cache_read.input_tokens"
CACHE_WRITE_TOKENS = "gen_ai.usage.cache_creation.input_tokens"
REASONING_TOKENS = "gen_ai.usage.reasoning.output_tokens"
TOOL_NAME = "gen_ai.tool.name"
TOOL_CALL_ID = "gen_ai.tool.call.id"
TOOL_ARGUMENTS = "gen_ai.tool.call.arguments"
TOOL_RESULT = "gen_ai.tool.call.result"
INPUT_MESSAGES = "gen_ai.input.messages"
OUTPUT_MESSAGES = "gen_ai.output.messages"
WORKFLOW_NAME = "gen_ai.workflow.name"
ERROR_TYPE = "error.type"

COST = "opencode.cost"
BACKEND = "opencode.backend"
WORKSPACE = "opencode.workspace"
PLACEMENT = "opencode.placement"
STEPS = "opencode.steps"
EXIT_CODE = "opencode.exit_code"
RETRYABLE = "opencode.error.retryable"
STATUS_CODE = "opencode.error.status_code"
TOOL_STATUS = "opencode.tool.status"
TOOL_TITLE = "opencode.tool.title"
TOOL_DURATION = "opencode.tool.duration_s"
BATCH_TOTAL = "opencode.batch.total"
BATCH_RUNS = "opencode.batch.runs"
BATCH_FAILED = "opencode.batch.failed"
BATCH_INPUT_TOKENS = "opencode.batch.input_tokens"
BATCH_OUTPUT_TOKENS = "opencode.batch.output_tokens"
BATCH_COST = "opencode.batch.cost"

#: The agent opencode runs when none is configured.
DEFAULT_AGENT = "build"
#: ``error.type`` of a tool call that ended in an error (the run itself may still succeed).
TOOL_ERROR = "tool_error"
#: ``error.type`` of a step or tool call that never finished, in a run that ended without an error.
INCOMPLETE = "incomplete"

# Status descriptions and captured content are cut here: a span is not a log file.
_CLIP = 2000


def clip(text: str, limit: int = _CLIP) -> str:
    """``text`` cut to ``limit`` characters (marked), for a status description or captured content."""
    return text if len(text) <= limit else text[: limit - 12] + "...[clipped]"


def split_model(model: str | None) -> tuple[str | None, str | None]:
    """``"provider/model"`` as ``(provider, model)``; ``(None, None)`` when no model is configured."""
    if not model:
        return None, None
    provider, sep, rest = model.partition("/")
    return (provider or None, rest or None) if sep else (None, model)


def usage_attributes(usage: TokenUsage) -> dict[str, int]:
    """The ``gen_ai.usage.*`` attributes of ``usage``.

    opencode's ``input`` leaves out cached tokens; the conventions' ``input_tokens`` counts them,
    so cache reads and writes are added back (and also given on their own).
    """
    return {
        INPUT_TOKENS: usage.input + usage.cache_read + usage.cache_write,
        OUTPUT_TOKENS: usage.output,
        CACHE_READ_TOKENS: usage.cache_read,
        CACHE_WRITE_TOKENS: usage.cache_write,
        REASONING_TOKENS: usage.reasoning,
    }


def as_json(value: Any) -> str:
    """``value`` as a JSON string attribute (clipped): span attributes hold no nested objects."""
    return clip(json.dumps(value, ensure_ascii=False, default=str))
