"""The span of a batch: ``invoke_workflow run_many``, the parent of every run of the batch.

A batch groups several agent invocations, which is what the GenAI conventions' workflow span is
for (``invoke_workflow {gen_ai.workflow.name}``, kind INTERNAL); ``invoke_agent`` would claim the
batch is itself an agent. The runs find the recorder in the OpenTelemetry context (``BATCH_KEY``)
next to the span, and report their results to it: its totals are set when it ends.

The context is current only while the batch's own code runs: around a block (``attach``/
``detach``), or around each step of an async iterator (:meth:`BatchRecorder.iterate`), never
across a ``yield`` to the consumer, whose code (and spans) keep the caller's context.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterable, AsyncIterator
from typing import TypeVar

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from opencode_wrapper._model.outcome import RunResult
from opencode_wrapper._tracing import conventions as c

__all__ = ["BATCH_KEY", "BatchRecorder"]

#: Where a batch's recorder is found in the context of its runs.
BATCH_KEY = otel_context.create_key("opencode_wrapper.batch")

T = TypeVar("T")


class BatchRecorder:
    """One batch span: started by :meth:`start` in the context current then, ended by :meth:`end`."""

    def __init__(self, tracer: trace.Tracer, *, total: int | None, name: str) -> None:
        self._tracer = tracer
        self._total = total
        self._name = name
        self._span: trace.Span | None = None
        self.context: otel_context.Context | None = None
        self.runs = 0
        self.failed = 0
        self.input_tokens = 0
        self.output_tokens = 0
        self.cost = 0.0
        self._latest_ns = 0

    def start(self) -> otel_context.Context:
        """Start the span (child of the current context); return the context of the batch's runs."""
        attributes: dict[str, str | int] = {c.OPERATION: "invoke_workflow", c.WORKFLOW_NAME: self._name}
        if self._total is not None:
            attributes[c.BATCH_TOTAL] = self._total
        span = self._span = self._tracer.start_span(
            f"invoke_workflow {self._name}", kind=SpanKind.INTERNAL, attributes=attributes
        )
        self.context = otel_context.set_value(BATCH_KEY, self, trace.set_span_in_context(span))
        return self.context

    def run_finished(self, result: RunResult, end_ns: int) -> None:
        """A run of the batch ended with ``result``; its span ended at ``end_ns``."""
        self._latest_ns = max(self._latest_ns, end_ns)
        self.runs += 1
        self.failed += 0 if result.ok else 1
        usage = result.token_usage
        self.input_tokens += usage.input + usage.cache_read + usage.cache_write
        self.output_tokens += usage.output
        self.cost += result.total_cost

    def end(self, exc: BaseException | None = None) -> None:
        """End the span; ``exc``: what ended the batch itself early (not a failed run: those count)."""
        span, self._span = self._span, None
        if span is None:
            return
        span.set_attributes(
            {
                c.BATCH_RUNS: self.runs,
                c.BATCH_FAILED: self.failed,
                c.BATCH_INPUT_TOKENS: self.input_tokens,
                c.BATCH_OUTPUT_TOKENS: self.output_tokens,
                c.BATCH_COST: self.cost,
            }
        )
        if exc is not None and not isinstance(exc, GeneratorExit):
            kind = "cancelled" if isinstance(exc, asyncio.CancelledError) else type(exc).__qualname__
            span.set_attribute(c.ERROR_TYPE, kind)
            span.set_status(Status(StatusCode.ERROR, c.clip(str(exc) or kind)))
        # After its runs, whose ends may be on opencode's clock (see ``RunSpans.finished``).
        span.end(max(time.time_ns(), self._latest_ns))

    async def iterate(self, items: AsyncIterable[T]) -> AsyncIterator[T]:
        """``items``, each step of which runs in the batch's context; the span covers the iteration.

        The span starts at the first step and ends when ``items`` is exhausted, raises, or this
        iterator is closed (which closes ``items`` first, so its runs have ended).
        """
        batch_context = self.start()
        iterator = aiter(items)
        failure: BaseException | None = None
        try:
            while True:
                token = otel_context.attach(batch_context)
                try:
                    item = await anext(iterator)
                except StopAsyncIteration:
                    break
                finally:
                    otel_context.detach(token)
                yield item
        except BaseException as exc:
            failure = exc
            raise
        finally:
            close = getattr(iterator, "aclose", None)
            try:
                if close is not None:
                    await close()
            finally:
                self.end(failure)
