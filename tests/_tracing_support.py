"""Helpers of the tracing tests: an in-memory SDK provider wired into ``opencode_wrapper.tracing``, and
a view of the finished spans as a tree.

The provider is given to ``tracing.configure(tracer_provider=...)`` rather than set globally: the
OpenTelemetry API lets a process set its global provider once, and each test wants its own.
Context propagation (what is current where) does not depend on the provider, so a caller span made
with this provider's tracer is the parent of the runs started inside it, as with a global one.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import Sampler
from opentelemetry.trace import Tracer

from opencode_wrapper import tracing


def attrs(span: ReadableSpan) -> dict[str, Any]:
    """The span's attributes (a plain dict: tests index it)."""
    return dict(span.attributes or {})


@dataclass
class Traced:
    """The provider runs are traced with, its tracer for the test's own spans, and what was exported."""

    provider: TracerProvider
    exporter: InMemorySpanExporter
    tracer: Tracer

    def spans(self) -> SpanTree:
        return SpanTree(list(self.exporter.get_finished_spans()))


def traced_with(sampler: Sampler | None = None) -> Iterator[Traced]:
    """Trace runs into memory until the generator is closed (a fixture body)."""
    provider = TracerProvider() if sampler is None else TracerProvider(sampler=sampler)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.configure(tracer_provider=provider, enabled=True)
    try:
        yield Traced(provider, exporter, provider.get_tracer("tests"))
    finally:
        tracing._reset()
        provider.shutdown()


class SpanTree:
    """Finished spans with parent/child look-ups."""

    def __init__(self, spans: list[ReadableSpan]) -> None:
        self.all = spans
        self._by_id = {s.context.span_id: s for s in spans if s.context is not None}

    def named(self, name: str) -> list[ReadableSpan]:
        return sorted((s for s in self.all if s.name == name), key=lambda s: s.start_time or 0)

    def one(self, name: str) -> ReadableSpan:
        found = self.named(name)
        assert len(found) == 1, f"expected one span {name!r}, got {len(found)}: {self.render()}"
        return found[0]

    def parent(self, span: ReadableSpan) -> ReadableSpan | None:
        return self._by_id.get(span.parent.span_id) if span.parent is not None else None

    def children(self, span: ReadableSpan) -> list[ReadableSpan]:
        assert span.context is not None
        kids = [s for s in self.all if s.parent is not None and s.parent.span_id == span.context.span_id]
        return sorted(kids, key=lambda s: s.start_time or 0)

    def shape(self, span: ReadableSpan) -> tuple[object, ...]:
        """``(name, (child shapes...))``, children in start order."""
        return (span.name, tuple(self.shape(kid) for kid in self.children(span)))

    def roots(self) -> list[ReadableSpan]:
        return [s for s in self.all if self.parent(s) is None]

    def render(self) -> str:
        lines: list[str] = []

        def walk(span: ReadableSpan, depth: int) -> None:
            lines.append("  " * depth + span.name)
            for kid in self.children(span):
                walk(kid, depth + 1)

        for root in self.roots():
            walk(root, 0)
        return "\n".join(lines)
