"""Which tracer runs use, and whether tracing them can record anything at all.

"Can record" is decided without starting a span: no tracer provider was set (the API's proxy
provider), a no-op provider, or a provider that hands out the no-op tracer (the SDK does with
``OTEL_SDK_DISABLED=true``) all mean no run gets a watcher, so an installed but unconfigured
OpenTelemetry costs no work per event.
"""

from __future__ import annotations

from importlib import metadata

from opentelemetry import trace

__all__ = ["INSTRUMENTATION", "recording_tracer"]

#: The instrumentation scope of every span of this package.
INSTRUMENTATION = "opencode_wrapper"

_cached: tuple[trace.TracerProvider, trace.Tracer | None] | None = None


def _version() -> str | None:
    try:
        return metadata.version("py-opencode-wrapper")
    except metadata.PackageNotFoundError:
        return None


def recording_tracer(explicit: trace.TracerProvider | None) -> trace.Tracer | None:
    """The tracer of ``explicit`` (else of the global provider), or ``None`` when it records nothing."""
    global _cached
    provider = explicit if explicit is not None else trace.get_tracer_provider()
    cached = _cached
    if cached is not None and cached[0] is provider:
        return cached[1]
    tracer: trace.Tracer | None = None
    if not isinstance(provider, (trace.ProxyTracerProvider, trace.NoOpTracerProvider)):
        tracer = provider.get_tracer(INSTRUMENTATION, _version())
        if isinstance(tracer, (trace.NoOpTracer, trace.ProxyTracer)):
            tracer = None
    _cached = (provider, tracer)
    return tracer
