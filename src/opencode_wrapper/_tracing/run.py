"""One run's spans: ``invoke_agent`` for the run, ``chat`` per model step, ``execute_tool`` per tool call.

The run span starts in ``started()``, in the context current then (the caller's span, a batch
span), so it nests under whatever the caller had open. Step and tool spans are written when the
step closes, with opencode's own times: run mode emits a step's ``step_start`` line only after its
first parts began, and a tool call once, at its end (``part.state.time.start``/``end`` say when it
ran); on a server one call is many events (pending, running, completed), which are one span. A
step's span starts at the earliest time it knows (its start event, or a part that began before);
its tool calls are its children, since opencode ends a step only after the step's tools returned.

A run whose span is not sampled costs one check per event: nothing below it is recorded.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from opencode_wrapper._model.event import Event, TokenUsage
from opencode_wrapper._model.outcome import RunResult
from opencode_wrapper._model.run_error import RunError
from opencode_wrapper._tracing import conventions as c
from opencode_wrapper._tracing.batch import BATCH_KEY, BatchRecorder
from opencode_wrapper.backends.handle import RunHandle, RunWatcher

__all__ = ["RunSpans"]

_NS_PER_MS = 1_000_000


def _ms_to_ns(value: object) -> int | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return int(value * _NS_PER_MS)


def _event_ns(event: Event) -> int:
    """When opencode emitted ``event`` (run mode ``timestamp``, server ``properties.time``), else now."""
    stamp = event.get("timestamp")
    if stamp is None:
        stamp = event.properties.get("time")
    found = _ms_to_ns(stamp)
    return found if found is not None else time.time_ns()


def _part_times(event: Event) -> tuple[int | None, int | None]:
    """``time.start``/``time.end`` of the event's part (a tool's are in its state), in ns."""
    part = event.part
    if part is None:
        return None, None
    times = part.get("time")
    if not isinstance(times, dict):
        times = part.state.get("time")
    if not isinstance(times, dict):
        return None, None
    return _ms_to_ns(times.get("start")), _ms_to_ns(times.get("end"))


@dataclass
class _Tool:
    """One tool call, from its first event to its last."""

    key: str
    name: str
    call_id: str | None
    first_ns: int
    step: _Step | None
    status: str | None = None
    start_ns: int | None = None
    end_ns: int | None = None
    last_ns: int = 0
    input: dict[str, Any] = field(default_factory=dict)
    output: str | None = None
    error: str | None = None
    title: str | None = None
    written: bool = False

    @property
    def done(self) -> bool:
        return self.status in ("completed", "error")


@dataclass
class _Step:
    """One model step: ``step_start`` to ``step_finish``."""

    start_ns: int
    tools: list[_Tool] = field(default_factory=list)
    context: otel_context.Context | None = None  # set once its span is written


class RunSpans(RunWatcher):
    """The spans of one run (see the module docstring). Made per run by ``tracing.run_watcher``."""

    def __init__(self, tracer: trace.Tracer, *, capture_content: bool = False) -> None:
        self._tracer = tracer
        self._capture = capture_content
        self._span: trace.Span | None = None
        self._recording = False
        self._context: otel_context.Context | None = None
        self._batch: BatchRecorder | None = None
        self._agent = c.DEFAULT_AGENT
        self._provider: str | None = None
        self._model: str | None = None
        self._response_model: str | None = None
        self._session_id: str | None = None
        self._step: _Step | None = None
        self._last_step: _Step | None = None
        self._tools: dict[str, _Tool] = {}
        self._reasons: list[str] = []
        self._latest_ns = 0  # the latest time opencode reported, or a child span ended

    # ------------------------------------------------------------------ hooks

    def started(self, handle: RunHandle) -> None:
        request = handle.request
        config = request.config
        self._agent = config.agent or c.DEFAULT_AGENT
        self._provider, self._model = c.split_model(config.model)
        attributes: dict[str, Any] = {
            c.OPERATION: "invoke_agent",
            c.AGENT_NAME: self._agent,
            c.BACKEND: handle.backend,
            c.WORKSPACE: request.workspace,
        }
        if self._provider is not None:
            attributes[c.PROVIDER] = self._provider
        if self._model is not None:
            attributes[c.REQUEST_MODEL] = self._model
        if request.structured is not None:
            attributes[c.OUTPUT_TYPE] = "json"
        if handle.placement is not None:
            attributes[c.PLACEMENT] = handle.placement
        if self._capture:
            attributes[c.INPUT_MESSAGES] = c.as_json(
                [{"role": "user", "parts": [{"type": "text", "content": request.prompt}]}]
            )
        # No context given: the one current now, in the task that starts the run.
        span = self._tracer.start_span(
            f"invoke_agent {self._agent}", kind=SpanKind.CLIENT, attributes=attributes
        )
        self._span = span
        self._recording = span.is_recording()
        if self._recording:
            self._context = trace.set_span_in_context(span)
            batch = otel_context.get_value(BATCH_KEY)
            if isinstance(batch, BatchRecorder):
                self._batch = batch

    def event(self, handle: RunHandle, event: Event) -> None:
        if not self._recording:
            return
        kind = event.kind
        if self._session_id is None:
            self._session_id = event.session_id
        if kind == "tool":
            self._on_tool(event)
        elif kind == "step_start":
            start_ns = _event_ns(event)
            self._latest_ns = max(self._latest_ns, start_ns)
            self._open_step(start_ns)
        elif kind == "step_finish":
            self._close_step(event)
        elif kind in ("text", "reasoning"):
            step = self._step
            start, _ = _part_times(event)
            if step is not None and start is not None and start < step.start_ns:
                step.start_ns = start
        elif kind == "other" and self._response_model is None and event.type == "message.updated":
            info = event.properties.get("info")
            if isinstance(info, dict) and info.get("role") == "assistant":
                self._learn_model(info)

    def finished(self, handle: RunHandle, result: RunResult) -> None:
        span = self._span
        if span is None:
            return
        if not self._recording:
            span.end()
            return
        error = result.error
        # opencode's clock (a remote node's, for a cluster) may run ahead of ours: the run and
        # what it left unfinished end after everything it reported.
        now = max(time.time_ns(), self._latest_ns)
        if self._step is not None:
            self._write_step(self._step, now, None, TokenUsage(), None, error or _Unfinished("model step"))
        for tool in self._tools.values():
            if not tool.written:
                self._write_tool(tool, now, error or _Unfinished("tool call"))
        session_id = result.session_id or self._session_id
        if session_id:
            span.set_attribute(c.CONVERSATION_ID, session_id)
        if self._provider is not None:
            span.set_attribute(c.PROVIDER, self._provider)
        if self._response_model is not None:
            span.set_attribute(c.RESPONSE_MODEL, self._response_model)
        span.set_attributes(c.usage_attributes(result.token_usage))
        span.set_attribute(c.COST, result.total_cost)
        span.set_attribute(c.STEPS, result.turns)
        if self._reasons:
            span.set_attribute(c.FINISH_REASONS, self._reasons)
        if result.exit_code:  # a server's runs say 0 whatever happened
            span.set_attribute(c.EXIT_CODE, result.exit_code)
        if self._capture and result.final_text:
            span.set_attribute(
                c.OUTPUT_MESSAGES,
                c.as_json([{"role": "assistant", "parts": [{"type": "text", "content": result.final_text}]}]),
            )
        if error is not None:
            _fail(span, error)
        end_ns = max(now, self._latest_ns)
        span.end(end_ns)
        if self._batch is not None:
            self._batch.run_finished(result, end_ns)

    # ------------------------------------------------------------------ steps

    def _open_step(self, start_ns: int) -> None:
        if self._step is not None:  # a step that never finished: written as it stands
            self._write_step(self._step, start_ns, None, TokenUsage(), None, _Unfinished("model step"))
        self._step = _Step(start_ns)

    def _close_step(self, event: Event) -> None:
        step = self._step
        end_ns = _event_ns(event)
        if step is None:  # a finish without its start: the step is known only by its end
            step = _Step(end_ns)
        part = event.part
        reason = part.reason if part is not None else None
        if reason:
            self._reasons.append(reason)
        self._write_step(step, end_ns, reason, event.tokens or TokenUsage(), event.cost, None)

    def _write_step(
        self,
        step: _Step,
        end_ns: int,
        reason: str | None,
        usage: TokenUsage,
        cost: float | None,
        error: RunError | _Unfinished | None,
    ) -> None:
        start_ns = min([step.start_ns, *(t.start_ns or t.first_ns for t in step.tools)])
        ends = [t.end_ns or t.last_ns for t in step.tools if t.done]
        end_ns = max([end_ns, start_ns, *ends])
        attributes: dict[str, Any] = {c.OPERATION: "chat", **c.usage_attributes(usage)}
        if self._provider is not None:
            attributes[c.PROVIDER] = self._provider
        if self._model is not None:
            attributes[c.REQUEST_MODEL] = self._model
        if self._response_model is not None:
            attributes[c.RESPONSE_MODEL] = self._response_model
        if self._session_id is not None:
            attributes[c.CONVERSATION_ID] = self._session_id
        if reason:
            attributes[c.FINISH_REASONS] = [reason]
        if cost is not None:
            attributes[c.COST] = cost
        name = f"chat {self._model}" if self._model else "chat"
        span = self._tracer.start_span(
            name, self._context, kind=SpanKind.CLIENT, attributes=attributes, start_time=start_ns
        )
        step.context = trace.set_span_in_context(span)
        for tool in step.tools:
            if tool.done and not tool.written:
                self._write_tool(tool, tool.end_ns or tool.last_ns, None)
        if error is not None:
            _fail(span, error)
        span.end(end_ns)
        self._latest_ns = max(self._latest_ns, end_ns)
        if self._step is step:
            self._step = None
        self._last_step = step

    # ------------------------------------------------------------------ tools

    def _on_tool(self, event: Event) -> None:
        call = event.tool
        if call is None:
            return
        seen_ns = _event_ns(event)
        self._latest_ns = max(self._latest_ns, seen_ns)
        key = call.call_id or call.part_id or f"tool-{len(self._tools)}"
        tool = self._tools.get(key)
        if tool is None:
            step = self._step
            tool = self._tools[key] = _Tool(key, call.name or "unknown", call.call_id, seen_ns, step)
            if step is not None:
                step.tools.append(tool)
        if tool.written:  # a late update of a call already written (a server re-sends parts)
            return
        tool.last_ns = seen_ns
        tool.status = call.status
        start, end = _part_times(event)
        tool.start_ns = start if start is not None else tool.start_ns
        tool.end_ns = end if end is not None else tool.end_ns
        tool.input = call.input or tool.input
        tool.output = call.output
        tool.error = call.error
        tool.title = call.title or tool.title
        if tool.done and (tool.step is None or tool.step.context is not None):
            # Its step was already written (or it has none): nothing later can change its span.
            self._write_tool(tool, tool.end_ns or seen_ns, None)

    def _write_tool(self, tool: _Tool, end_ns: int, error: RunError | _Unfinished | None) -> None:
        tool.written = True
        step = tool.step
        parent = step.context if step is not None and step.context is not None else self._context
        start_ns = min(tool.start_ns or tool.first_ns, end_ns)
        attributes: dict[str, Any] = {
            c.OPERATION: "execute_tool",
            c.TOOL_NAME: tool.name,
            c.AGENT_NAME: self._agent,
        }
        if tool.call_id is not None:
            attributes[c.TOOL_CALL_ID] = tool.call_id
        if tool.status is not None:
            attributes[c.TOOL_STATUS] = tool.status
        if tool.title is not None:
            attributes[c.TOOL_TITLE] = c.clip(tool.title, 200)
        if tool.start_ns is not None and tool.end_ns is not None:
            attributes[c.TOOL_DURATION] = max(0, tool.end_ns - tool.start_ns) / 1e9
        if self._capture:
            attributes[c.TOOL_ARGUMENTS] = c.as_json(tool.input)
            if tool.output is not None:
                attributes[c.TOOL_RESULT] = c.clip(tool.output)
        span = self._tracer.start_span(
            f"execute_tool {tool.name}",
            parent,
            kind=SpanKind.INTERNAL,
            attributes=attributes,
            start_time=start_ns,
        )
        if error is not None:
            _fail(span, error)
        elif tool.status == "error":
            span.set_attribute(c.ERROR_TYPE, c.TOOL_ERROR)
            span.set_status(Status(StatusCode.ERROR, c.clip(tool.error or "the tool call failed")))
        span.end(end_ns)
        self._latest_ns = max(self._latest_ns, end_ns)

    def _learn_model(self, info: dict[str, Any]) -> None:
        model, provider = info.get("modelID"), info.get("providerID")
        if isinstance(model, str) and model:
            self._response_model = model
        if self._provider is None and isinstance(provider, str) and provider:
            self._provider = provider


class _Unfinished:
    """Why a step or tool span failed in a run that did not: it never finished (``incomplete``)."""

    kind = c.INCOMPLETE
    retryable = None
    status_code = None

    def __init__(self, what: str) -> None:
        self.message = f"the {what} did not finish"


def _fail(span: trace.Span, error: RunError | _Unfinished) -> None:
    span.set_attribute(c.ERROR_TYPE, error.kind)
    if error.retryable is not None:
        span.set_attribute(c.RETRYABLE, bool(error.retryable))
    if error.status_code is not None:
        span.set_attribute(c.STATUS_CODE, error.status_code)
    span.set_status(Status(StatusCode.ERROR, c.clip(error.message)))
