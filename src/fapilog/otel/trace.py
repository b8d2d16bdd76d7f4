"""The one adapter around OpenTelemetry tracing internals.

fapilog reads a few things the tracing API does not offer publicly, each for speed or to
avoid doing work nobody receives: the context key of the current span, whether an SDK
tracer has any span processor, the propagators inside a composite propagator, the batch
span processor's own shutdown and flush with a timeout, whether an app was instrumented and
whether an exclusion list is empty. Every such access lives here; each is checked against
the installed packages once, at import, and falls back to the public API (or to the
conservative answer) when the check fails.
"""

from __future__ import annotations

import weakref
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.util.http import ExcludeList

from fapilog.otel.wrapped import inner_provider

__all__ = [
    "INVALID_SPAN_CONTEXT",
    "SPAN_KEY",
    "batch_flush",
    "batch_shutdown",
    "composite_parts",
    "exclusions_set",
    "instrumented_by_opentelemetry",
    "other_span_processors",
    "own_span_processor",
    "sdk_tracer_provider_of",
    "span_context_of",
    "tracer_unobserved",
]

INVALID_SPAN_CONTEXT = trace.INVALID_SPAN_CONTEXT


def sdk_tracer_provider_of(provider: object) -> TracerProvider | None:
    """The SDK TracerProvider `provider` is, or wraps within a few wrappers (Logfire's
    ProxyTracerProvider; `fapilog.otel.wrapped`); None for the API's proxy or no-op one."""
    return inner_provider(provider, TracerProvider, "get_tracer")


# -- the span of a Context ------------------------------------------------------------------


def _span_key() -> str | None:
    """The context key under which the API stores the current span, if it is still where
    `set_span_in_context` puts it."""
    key = getattr(trace, "_SPAN_KEY", None)
    if not isinstance(key, str):  # pragma: no cover - an API change
        return None
    probe = trace.NonRecordingSpan(INVALID_SPAN_CONTEXT)
    return key if trace.set_span_in_context(probe).get(key) is probe else None


SPAN_KEY = _span_key()
"""Where a Context keeps its current span (None if the API moved it: use the public route)."""
_SPAN_TYPES: dict[type, bool] = {}


def span_context_of(context: Context | None) -> trace.SpanContext:
    """The span context of the span current in `context` (INVALID_SPAN_CONTEXT when there is
    none): what an OpenTelemetry LogRecord takes its trace and span ids from. Runs on every
    record, so it reads the context's span directly rather than through
    `trace.get_current_span(context)`."""
    if context is None:
        return INVALID_SPAN_CONTEXT
    if SPAN_KEY is None:  # pragma: no cover - an API change: the public route
        return trace.get_current_span(context).get_span_context()
    span: Any = context.get(SPAN_KEY)
    if span is None:
        return INVALID_SPAN_CONTEXT
    kind = type(span)
    is_span = _SPAN_TYPES.get(kind)
    if is_span is None:  # the ABC check, once per span class
        is_span = _SPAN_TYPES[kind] = isinstance(span, trace.Span)
    span_context: trace.SpanContext = span.get_span_context() if is_span else INVALID_SPAN_CONTEXT
    return span_context


# -- SDK tracers ----------------------------------------------------------------------------


def _tracer_check() -> bool:
    try:
        provider: Any = TracerProvider(shutdown_on_exit=False)
        tracer: Any = provider.get_tracer("fapilog-check")
        return (
            type(tracer.span_processor._span_processors) is tuple
            and isinstance(tracer._is_enabled(), bool)
            and tracer.span_processor is provider._active_span_processor
        )
    except Exception:  # pragma: no cover - an SDK change
        return False


_TRACER_INTERNALS = _tracer_check()


def tracer_unobserved(tracer: Any) -> bool:
    """Whether `tracer` is an enabled SDK tracer whose provider has no span processor: a
    span it records would be built, validated and ended for nobody. Anything unexpected
    (another SDK version, another tracer type) answers False: then a full span is built."""
    if not _TRACER_INTERNALS:  # pragma: no cover - an SDK change
        return False
    try:
        processors = tracer.span_processor._span_processors
        enabled = tracer._is_enabled()
    except AttributeError:
        return False
    return type(processors) is tuple and not processors and enabled is True


def own_span_processor(processor: Any) -> None:
    """Mark `processor` as fapilog's own (`fapilog.otel.otlp`'s bounded batch processors:
    fapilog's drain flushes them itself): `other_span_processors` leaves it out."""
    _OWN_SPAN_PROCESSORS.add(processor)


_OWN_SPAN_PROCESSORS: weakref.WeakSet[Any] = weakref.WeakSet()


def other_span_processors(provider: Any) -> list[Any] | None:
    """The span processors added to an SDK TracerProvider that are not fapilog's own (an
    SDK batch processor of ``opentelemetry-instrument``'s stock configuration, a user's).
    None when the provider does not hold them as checked: the caller then flushes the
    whole provider (`TracerProvider.force_flush`)."""
    if not _TRACER_INTERNALS:  # pragma: no cover - an SDK change
        return None
    active = getattr(provider, "_active_span_processor", None)
    processors = getattr(active, "_span_processors", None)
    if type(processors) is not tuple:
        return None
    return [processor for processor in processors if processor not in _OWN_SPAN_PROCESSORS]


# -- propagators ----------------------------------------------------------------------------


def composite_parts(propagator: Any) -> list[Any] | None:
    """The propagators inside a plain `CompositePropagator` (the global default); `[it]`
    for any other single propagator; None when a composite's parts cannot be read."""
    if type(propagator) is not CompositePropagator:
        return [propagator]
    parts = getattr(propagator, "_propagators", None)
    return list(parts) if isinstance(parts, (list, tuple)) else None


# -- the batch span processor ---------------------------------------------------------------


class _NullExporter(SpanExporter):
    def export(self, spans: Any) -> Any:  # pragma: no cover - never called
        raise NotImplementedError

    def shutdown(self) -> None:
        return None


def _batch_check() -> bool:
    processor: Any = BatchSpanProcessor(_NullExporter())
    try:
        inner = getattr(processor, "_batch_processor", None)
        return callable(getattr(inner, "shutdown", None)) and callable(
            getattr(inner, "force_flush", None)
        )
    finally:
        processor.shutdown()


_BATCH_INTERNALS = _batch_check()


def batch_shutdown(processor: BatchSpanProcessor, timeout: float) -> None:
    """Shut a BatchSpanProcessor down waiting at most `timeout` seconds (its public
    `shutdown()` waits up to 30 s for a dead exporter)."""
    batch: Any = processor
    if _BATCH_INTERNALS:
        batch._batch_processor.shutdown(timeout_millis=int(timeout * 1000))
    else:  # pragma: no cover - an SDK change: the public call
        batch.shutdown()


def batch_flush(processor: BatchSpanProcessor) -> bool:
    """Export what the processor holds (the caller bounds the wait)."""
    batch: Any = processor
    if _BATCH_INTERNALS:
        return bool(batch._batch_processor.force_flush())
    return bool(batch.force_flush())  # pragma: no cover - an SDK change


# -- instrumentation ------------------------------------------------------------------------


def instrumented_by_opentelemetry(app: Any) -> bool:
    """Whether `FastAPIInstrumentor` instrumented `app` (the mark it leaves on the app)."""
    return bool(getattr(app, "_is_instrumented_by_opentelemetry", False))


def exclusions_set(excluded: ExcludeList) -> bool:
    """Whether an `ExcludeList` excludes anything (it answers every URL otherwise)."""
    urls = getattr(excluded, "_excluded_urls", None)
    return bool(urls) if urls is not None else True
