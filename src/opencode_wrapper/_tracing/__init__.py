"""The OpenTelemetry side of :mod:`opencode_wrapper.tracing` (imports ``opentelemetry``).

Nothing here is imported until a run is traced: ``import opencode_wrapper`` never imports
``opentelemetry``. ``conventions`` names the attributes, ``provider`` finds the tracer, ``run``
turns one run's events into spans, ``batch`` is the span of a batch.
"""
