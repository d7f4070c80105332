"""OpenTelemetry traces of runs, session turns and batches, after the GenAI semantic conventions.

With ``opentelemetry-api`` installed (``pip install 'py-opencode-wrapper[tracing]'``) and a tracer
provider configured (the SDK, a distro, ``opentelemetry-instrument``), every run and every session
turn is an ``invoke_agent {agent}`` span, child of the span current where it starts, with:

* a ``chat {model}`` span per model step (its tokens, cost and finish reason);
* an ``execute_tool {tool}`` span per tool call, child of the step that made it, timed by
  opencode's own start and end of the call;
* on failure, status ``ERROR`` and ``error.type`` set to the :class:`~opencode_wrapper.results.RunError`
  kind (``timeout``, ``api_error``...).

A batch (``run_many``, ``iter_run_many``) is one ``invoke_workflow run_many`` span around its runs.

Costs nothing when it cannot record: without the API nothing is imported (``import
opencode_wrapper`` never imports ``opentelemetry``); with the API but no provider (or
``OTEL_SDK_DISABLED=true``) runs get no watcher at all. Turn it off with
``tracing.configure(enabled=False)``. Tool arguments and results, the prompt and the answer are
recorded only when asked (``configure(capture_content=True)`` or
``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true``): they may hold secrets.

See the guide "Tracing with OpenTelemetry" (docs/guides/tracing.md) for the span tree and every
attribute.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import AsyncIterable, AsyncIterator, Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

from opencode_wrapper.errors import OpenCodeConfigError

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer, TracerProvider

    from opencode_wrapper._tracing.batch import BatchRecorder
    from opencode_wrapper.backends.handle import RunWatcher
    from opencode_wrapper.backends.request import RunRequest

__all__ = ["BatchSpan", "batch_span", "configure", "enabled", "run_watcher"]

#: The environment variable the OpenTelemetry GenAI instrumentations read for content capture.
CAPTURE_CONTENT_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"

T = TypeVar("T")


class _Settings:
    enabled = True
    provider: Any = None  # a TracerProvider, or None for the global one
    capture_content: bool | None = None  # None: from the environment
    api: bool | None = None  # whether opentelemetry-api is importable (looked up once)
    # The OpenTelemetry side, imported on the first traced run (an import statement per run costs
    # more than the rest of the check).
    lookup: Callable[[Any], Tracer | None] | None = None
    watcher: Callable[..., RunWatcher] | None = None


_settings = _Settings()


def _api_installed() -> bool:
    if _settings.api is None:
        try:
            _settings.api = importlib.util.find_spec("opentelemetry.trace") is not None
        except (ImportError, ValueError):
            _settings.api = False
    return _settings.api


def configure(
    *,
    enabled: bool | None = None,
    tracer_provider: TracerProvider | None = None,
    capture_content: bool | None = None,
) -> None:
    """Change how runs are traced, for the runs that start from now on. Arguments left out keep their value.

    Args:
        enabled: ``False`` traces nothing (no run gets a watcher); ``True`` traces again.
        tracer_provider: use this provider instead of the global one (``trace.get_tracer_provider()``).
        capture_content: record tool arguments and results, the prompt and the final answer
            (``True``), or not (``False``). Until set, the environment decides:
            ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true``.

    Raises:
        OpenCodeConfigError: a value of the wrong type.
    """
    for name, value in (("enabled", enabled), ("capture_content", capture_content)):
        if value is not None and not isinstance(value, bool):
            raise OpenCodeConfigError(f"{name} must be True, False or None, got {value!r}")
    if tracer_provider is not None:
        if not _api_installed():
            raise OpenCodeConfigError(
                "tracer_provider needs opentelemetry-api: pip install 'py-opencode-wrapper[tracing]'"
            )
        from opentelemetry.trace import TracerProvider

        if not isinstance(tracer_provider, TracerProvider):
            raise OpenCodeConfigError(
                f"tracer_provider must be an opentelemetry TracerProvider, got {tracer_provider!r}"
            )
        _settings.provider = tracer_provider
    if enabled is not None:
        _settings.enabled = enabled
    if capture_content is not None:
        _settings.capture_content = capture_content


def _reset() -> None:
    """Back to the defaults (tests)."""
    _settings.enabled, _settings.provider, _settings.capture_content = True, None, None


def _tracer() -> Tracer | None:
    if not _settings.enabled:
        return None
    lookup = _settings.lookup
    if lookup is None:
        if not _api_installed():
            return None
        from opencode_wrapper._tracing.provider import recording_tracer

        lookup = _settings.lookup = recording_tracer
    return lookup(_settings.provider)


def enabled() -> bool:
    """Whether runs starting now are traced: the API is installed, tracing is on and a provider can record."""
    return _tracer() is not None


def _capture_content() -> bool:
    if _settings.capture_content is not None:
        return _settings.capture_content
    return os.environ.get(CAPTURE_CONTENT_ENV, "").strip().lower() == "true"


def run_watcher(request: RunRequest) -> RunWatcher | None:
    """The watcher that traces a run of ``request``, or ``None`` when runs are not traced.

    Called for every run by the backends (``backends.watch.watchers_for``); not for users.
    """
    tracer = _tracer()
    if tracer is None:
        return None
    make = _settings.watcher
    if make is None:
        from opencode_wrapper._tracing.run import RunSpans

        make = _settings.watcher = RunSpans
    return make(tracer, capture_content=_capture_content())


class BatchSpan:
    """The span of a batch of runs (``invoke_workflow {name}``); made by :func:`batch_span`.

    Two ways to use it, both starting the span in the context current at that point:

    * ``with`` / ``async with``: around a block that runs the batch (the runs it starts nest under
      the span). The block must not ``yield``: a generator's context is its consumer's, so the span
      would stay current in the consumer's code between items.
    * :meth:`iterate`: around an async iterator that runs the batch (an async generator such as
      ``iter_run_many``'s scheduler): each of its steps runs in the batch's context, the consumer's
      code between items does not.

    Does nothing when runs are not traced.
    """

    def __init__(self, total: int | None, name: str) -> None:
        self._total = total
        self._name = name
        self._recorder: BatchRecorder | None = None
        self._token: object = None

    def _new_recorder(self) -> BatchRecorder | None:
        tracer = _tracer()
        if tracer is None:
            return None
        from opencode_wrapper._tracing.batch import BatchRecorder

        return BatchRecorder(tracer, total=self._total, name=self._name)

    def __enter__(self) -> BatchSpan:
        if self._recorder is not None:
            raise RuntimeError("this BatchSpan is already in use; make one per batch")
        recorder = self._recorder = self._new_recorder()
        if recorder is not None:
            from opentelemetry import context

            self._token = context.attach(recorder.start())
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        recorder, self._recorder = self._recorder, None
        if recorder is None:
            return
        from opentelemetry import context

        context.detach(self._token)  # type: ignore[arg-type]
        recorder.end(exc)

    async def __aenter__(self) -> BatchSpan:
        return self.__enter__()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.__exit__(exc_type, exc, tb)

    def iterate(self, items: AsyncIterable[T]) -> AsyncIterator[T]:
        """``items`` with the batch span around it (see the class docstring); ``items`` itself when off."""
        recorder = self._new_recorder()
        if recorder is None:
            return aiter(items)
        return recorder.iterate(items)


def batch_span(total: int | None = None, *, name: str = "run_many") -> BatchSpan:
    """The span of one batch of runs: ``invoke_workflow {name}``, parent of the runs started inside it.

    Args:
        total: how many tasks the batch has (``opencode.batch.total``), if known.
        name: ``gen_ai.workflow.name`` and the span name's suffix; keep it low-cardinality (a
            kind of batch, not one batch's id).

    Its totals (``opencode.batch.runs``, ``.failed``, ``.input_tokens``, ``.output_tokens``,
    ``.cost``) are those of the runs that ended inside it. ``run_many``/``iter_run_many`` open
    one per call; use it yourself to group runs you start with ``asyncio.gather``.
    """
    if total is not None and (isinstance(total, bool) or not isinstance(total, int) or total < 0):
        raise OpenCodeConfigError(f"total must be a non-negative integer or None, got {total!r}")
    if not isinstance(name, str) or not name.strip():
        raise OpenCodeConfigError(f"name must be a non-empty string, got {name!r}")
    return BatchSpan(total, name)
