"""OpenTelemetry tracing for `configure_logging(app=app)`: the TracerProvider and the
FastAPI instrumentation.

fapilog never invents trace ids: every request's server span comes from the SDK
TracerProvider (its id generator and sampler), continuing an inbound W3C `traceparent` (and
`tracestate`, baggage) through the globally configured propagators. The span comes either
from fapilog's own request middleware (``tracing="native"``, the default; see
`fapilog.integrations.server_span`) or from `opentelemetry-instrumentation-fastapi`
(``tracing="instrumentation"``). Logs read the current span
(`fapilog.processors.add_trace_context`), so every line logged while a request is handled
carries its trace and span ids. Neither span carries a query string in clear: the
instrumentation's span gets fapilog's query policy (`FAPILOG_REQUEST__QUERY`) through its
server request hook.
"""

from __future__ import annotations

import os
import re
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from fapilog._state import STATE
from fapilog.integrations.access_lines import clean_target, query_marker, redact_query
from fapilog.otel.otlp import span_processors
from fapilog.otel.resource import build_resource
from fapilog.otel.trace import instrumented_by_opentelemetry, sdk_tracer_provider_of
from fapilog.settings import LoggingSettings

__all__ = [
    "ensure_tracer_provider",
    "excluded_urls",
    "fastapi_saw_exception",
    "forget_tracer_provider",
    "instrument",
    "is_instrumented",
    "otel_middleware_index",
    "query_hook",
    "quiet_fastapi_telemetry",
]


def ensure_tracer_provider(settings: LoggingSettings) -> TracerProvider:
    """The SDK TracerProvider server spans go to.

    An SDK provider installed globally (by the application, `opentelemetry-instrument`, or
    Logfire inside its wrapper) is used as it is. Otherwise fapilog creates one with the
    same Resource as its log records, adds the OTLP span processors
    (`fapilog.otel.otlp.span_processors`) and installs it globally (`STATE.tracer_provider`).
    Idempotent: later calls return the same provider and add nothing.
    """
    with STATE.lock:
        current = trace.get_tracer_provider()
        installed = sdk_tracer_provider_of(current)  # (also inside Logfire's wrapper)
        if installed is not None:
            return installed
        if STATE.tracer_provider is not None:
            owned: TracerProvider = STATE.tracer_provider
            return owned
        provider = TracerProvider(resource=build_resource(settings))
        for processor in span_processors(settings):
            provider.add_span_processor(processor)
        STATE.tracer_provider = provider
        if isinstance(current, trace.ProxyTracerProvider):
            # otherwise someone installed a non-SDK provider: leave the global alone and
            # give ours to the instrumentation only
            trace.set_tracer_provider(provider)
        return provider


def forget_tracer_provider() -> None:
    """Shut down and forget the TracerProvider fapilog created (test suites that reset the
    OpenTelemetry globals)."""
    with STATE.lock:
        provider = STATE.tracer_provider
        STATE.tracer_provider = None
        if provider is not None:
            provider.shutdown()


def is_instrumented(app: Any) -> bool:
    """Whether `app` already has OpenTelemetry server spans: instrumented by
    `FastAPIInstrumentor` (the user's call, `opentelemetry-instrument`, or fapilog's), or
    an `OpenTelemetryMiddleware` the user added by hand."""
    if instrumented_by_opentelemetry(app):
        return True
    return otel_middleware_index(app) is not None


def otel_middleware_index(app: Any) -> int | None:
    """Position of a hand-added `OpenTelemetryMiddleware` in `app.user_middleware`."""
    for index, middleware in enumerate(getattr(app, "user_middleware", None) or ()):
        cls = getattr(middleware, "cls", None)
        if getattr(cls, "__name__", None) == "OpenTelemetryMiddleware" and getattr(
            cls, "__module__", ""
        ).startswith("opentelemetry.instrumentation"):
            return index
    return None


def excluded_urls(paths: list[str]) -> str | None:
    """`exclude_paths` as the instrumentation's `excluded_urls` (comma-separated regexes
    searched in the full URL): exact paths, or prefixes for a trailing `*`."""
    if not paths:
        return None
    patterns: list[str] = []
    for path in paths:
        if path.endswith("*"):
            body = re.escape(path[:-1])
            end = ""
        else:
            body = re.escape(path)
            end = "(?:\\?|$)"
        # commas separate the list: write them as an escape the regex engine understands
        patterns.append("^[a-zA-Z][a-zA-Z0-9+.-]*://[^/]*" + body.replace(",", "\\x2c") + end)
    # the instrumentation's own variables still apply
    from_env = os.environ.get(
        "OTEL_PYTHON_FASTAPI_EXCLUDED_URLS", os.environ.get("OTEL_PYTHON_EXCLUDED_URLS", "")
    ).strip()
    if from_env:
        patterns.append(from_env)
    return ",".join(patterns)


def instrument(app: Any, settings: LoggingSettings) -> bool:
    """Give `app` a server span per request, unless it already has them. Returns whether
    fapilog instrumented it now."""
    if is_instrumented(app):
        return False
    provider = ensure_tracer_provider(settings)
    request = settings.request
    excluded = excluded_urls(request.exclude_paths)
    exclude_spans: list[Any] | None = None if request.internal_spans else ["receive", "send"]
    try:
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
    except ImportError:  # pragma: no cover - FastAPI itself is not installed (Starlette app)
        from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

        app.add_middleware(
            OpenTelemetryMiddleware,
            tracer_provider=provider,
            excluded_urls=excluded,
            exclude_spans=exclude_spans,
            server_request_hook=query_hook,
        )
        return True
    FastAPIInstrumentor.instrument_app(
        app,
        tracer_provider=provider,
        excluded_urls=excluded,
        exclude_spans=exclude_spans,
        server_request_hook=query_hook,
    )
    return True


_URL_ATTRIBUTES = ("http.url", "http.target", "url.full")


def query_hook(span: Any, scope: Any) -> None:
    """The instrumentation's server request hook: the query string it recorded at the span's
    start (in ``http.url``, or ``url.query`` with the new HTTP conventions) replaced as
    `FAPILOG_REQUEST__QUERY` says (omitted, or its values redacted)."""
    if not scope.get("query_string") or not span.is_recording():
        return
    marker = query_marker(STATE.settings)
    attributes = span.attributes or {}
    for key in _URL_ATTRIBUTES:
        value = attributes.get(key)
        if isinstance(value, str) and "?" in value:
            span.set_attribute(key, clean_target(value, marker))
    query = attributes.get("url.query")
    if isinstance(query, str):
        span.set_attribute("url.query", redact_query(query, marker) if marker is not None else "")


def quiet_fastapi_telemetry(app: Any) -> bool:
    """Turn off FastAPI's own native tracing and exception logs (FastAPI >= 0.16x) for an
    app fapilog traces natively: it would start a second server span around fapilog's (and
    put operation spans between it and the endpoint's log lines) and log every unhandled
    exception a second time. Its HTTP metrics stay as they are. An app whose telemetry was
    given its own `tracer_provider` (``FastAPI(telemetry={"tracer_provider": ...})``) is
    left alone: its server span is the request's, and fapilog's middleware defers to it;
    only its operation spans are turned off, so that the endpoint's lines carry that server
    span (`fastapi_saw_exception` keeps its exception log from repeating fapilog's request
    event). Returns whether it turned FastAPI's tracing off."""
    config = getattr(app, "_telemetry", None)
    if not isinstance(config, dict) or "tracing" not in config:
        return False  # an older FastAPI (or Starlette): no native telemetry
    if config.get("tracer_provider") is not None:
        config["operation_spans"] = False
        return False
    config["tracing"] = False
    config["logs"] = False
    return True


def fastapi_saw_exception(scope: Any, exception: BaseException) -> None:
    """Tell FastAPI's native telemetry (FastAPI >= 0.16x) that it has seen `exception`
    (fapilog's request event carries it), so that it does not log it a second time. FastAPI
    keeps the exceptions it logged for a request in the request's telemetry object, in the
    scope; nothing happens when that is not there (no native telemetry for this request)."""
    seen = getattr(scope.get("fastapi.telemetry"), "_exceptions", None)
    if isinstance(seen, list) and not any(previous is exception for previous in seen):
        seen.append(exception)
