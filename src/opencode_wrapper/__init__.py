"""Drive the OpenCode coding agent from Python: runs, typed events, sessions, many agents.

Everything public is importable from here; the ``_``-prefixed modules are private.
"""

from opencode_wrapper._lean import LEAN_CONFIG, LEAN_ENV, lean_run_config, seed_plugin_dependencies
from opencode_wrapper._proc.binary import OPENCODE_VERSION, install_opencode
from opencode_wrapper.backends.base import Backend
from opencode_wrapper.backends.handle import RunHandle
from opencode_wrapper.backends.process import ProcessBackend
from opencode_wrapper.backends.request import RunRequest
from opencode_wrapper.backends.server import ServerBackend
from opencode_wrapper.batch import Budget, Progress, Task, TaskOutcome, iter_run_many, run_many
from opencode_wrapper.client import AsyncOpenCodeClient, build_argv, build_env, resolve_binary
from opencode_wrapper.config import (
    UNSET,
    RunConfig,
    split_model,
    validate_config_for_run,
    validate_permission_actions,
)
from opencode_wrapper.errors import (
    OpenCodeBinaryNotFoundError,
    OpenCodeCancelledError,
    OpenCodeConfigError,
    OpenCodeError,
    OpenCodeProcessError,
    OpenCodeRunError,
    OpenCodeServerError,
    OpenCodeTimeoutError,
    OpenCodeVersionError,
    ServerHTTPError,
)
from opencode_wrapper.events import (
    DiagnosticEvent,
    ErrorEvent,
    Event,
    EventError,
    EventKind,
    Part,
    PermissionRejection,
    ReasoningEvent,
    RunError,
    RunResult,
    StepFinishEvent,
    StepStartEvent,
    TextEvent,
    TokenUsage,
    ToolCall,
    ToolState,
    ToolUseEvent,
    aggregate_run_result,
    parse_event_line,
    run_result_fuzzy_text,
)
from opencode_wrapper.hooks import Hooks, ToolUse
from opencode_wrapper.limits import Limits
from opencode_wrapper.pool import ServerPool
from opencode_wrapper.server import DEFAULT_CALLBACK_TIMEOUT_S, OpenCodeServer
from opencode_wrapper.session import (
    OpenCodeSession,
    PermissionCallback,
    PermissionReply,
    QuestionCallback,
    TurnStream,
    aggregate_server_result,
)

__version__ = "0.5.0"

__all__ = [
    "DEFAULT_CALLBACK_TIMEOUT_S",
    "LEAN_CONFIG",
    "LEAN_ENV",
    "OPENCODE_VERSION",
    "UNSET",
    "AsyncOpenCodeClient",
    "Backend",
    "Budget",
    "Limits",
    "Hooks",
    "ToolUse",
    "OpenCodeServer",
    "OpenCodeSession",
    "PermissionCallback",
    "PermissionReply",
    "ProcessBackend",
    "Progress",
    "QuestionCallback",
    "RunHandle",
    "RunRequest",
    "ServerBackend",
    "ServerHTTPError",
    "ServerPool",
    "Task",
    "TaskOutcome",
    "TurnStream",
    "aggregate_server_result",
    "iter_run_many",
    "lean_run_config",
    "run_many",
    "seed_plugin_dependencies",
    "DiagnosticEvent",
    "ErrorEvent",
    "Event",
    "EventError",
    "EventKind",
    "OpenCodeBinaryNotFoundError",
    "OpenCodeCancelledError",
    "OpenCodeConfigError",
    "OpenCodeError",
    "OpenCodeProcessError",
    "OpenCodeRunError",
    "OpenCodeServerError",
    "OpenCodeTimeoutError",
    "OpenCodeVersionError",
    "Part",
    "PermissionRejection",
    "ReasoningEvent",
    "RunConfig",
    "RunError",
    "RunResult",
    "StepFinishEvent",
    "StepStartEvent",
    "TextEvent",
    "TokenUsage",
    "ToolCall",
    "ToolState",
    "ToolUseEvent",
    "aggregate_run_result",
    "build_argv",
    "build_env",
    "install_opencode",
    "parse_event_line",
    "resolve_binary",
    "run_result_fuzzy_text",
    "split_model",
    "validate_config_for_run",
    "validate_permission_actions",
]
