"""OpenTelemetry tracing for `configure_logging(app=app)`: the TracerProvider, the native
server span and the FastAPI instrumentation.

fapilog never invents trace ids: every request's server span comes from the SDK
TracerProvider (its id generator and sampler), continuing an inbound W3C `traceparent` (and
`tracestate`, baggage) through the globally configured propagators. When the provider has no
span processor, the native span is the SDK's `NonRecordingSpan` with those same ids (see
`_context_only_span`): nothing would receive a recorded one. The span comes either from
`ServerSpans` (``tracing="native"``, the default: started by fapilog's own pure-ASGI request
middleware, no extra ASGI layer) or from `opentelemetry-instrumentation-fastapi`
(``tracing="instrumentation"``). Logs read the current span
(`fapilog.processors.add_trace_context`), so every line logged while a request is handled
carries its trace and span ids.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import MutableMapping, Sequence
from contextvars import Token
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.instrumentation.propagators import get_global_response_propagator
from opentelemetry.propagators.textmap import Getter, Setter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import (
    NonRecordingSpan,
    Span,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
)

if TYPE_CHECKING:
    from opentelemetry.util.http import ExcludeList

    from fapilog.settings import LoggingSettings

__all__ = [
    "ServerSpan",
    "ServerSpans",
    "ensure_tracer_provider",
    "excluded_urls",
    "instrument",
    "is_instrumented",
    "otel_middleware_index",
    "quiet_fastapi_telemetry",
]

_lock = threading.RLock()
_owned: list[TracerProvider] = []  # the provider fapilog created, if it created one


def ensure_tracer_provider(settings: LoggingSettings) -> TracerProvider:
    """The SDK TracerProvider server spans go to.

    An SDK provider installed globally (by the application or `opentelemetry-instrument`)
    is used as it is. Otherwise fapilog creates one with the same Resource as its log
    records, adds the OTLP span processors (`fapilog.otlp.span_processors`) and installs it
    globally. Idempotent: later calls return the same provider and add nothing.
    """
    with _lock:
        current = trace.get_tracer_provider()
        if isinstance(current, TracerProvider):
            return current
        if _owned:
            return _owned[0]
        from fapilog._config import _resource
        from fapilog.otlp import span_processors

        provider = TracerProvider(resource=_resource(settings))
        for processor in span_processors(settings):
            provider.add_span_processor(processor)
        _owned.append(provider)
        if isinstance(current, trace.ProxyTracerProvider):
            # otherwise someone installed a non-SDK provider: leave the global alone and
            # give ours to the instrumentation only
            trace.set_tracer_provider(provider)
        return provider


def _reset_for_tests() -> None:
    """Forget the provider fapilog created (test suites that reset the OTel globals)."""
    with _lock:
        for provider in _owned:
            provider.shutdown()
        _owned.clear()


def is_instrumented(app: Any) -> bool:
    """Whether `app` already has OpenTelemetry server spans: instrumented by
    `FastAPIInstrumentor` (the user's call, `opentelemetry-instrument`, or fapilog's), or
    an `OpenTelemetryMiddleware` the user added by hand."""
    if getattr(app, "_is_instrumented_by_opentelemetry", False):
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
        )
        return True
    FastAPIInstrumentor.instrument_app(
        app, tracer_provider=provider, excluded_urls=excluded, exclude_spans=exclude_spans
    )
    return True


def quiet_fastapi_telemetry(app: Any) -> bool:
    """Turn off FastAPI's own native tracing and exception logs (FastAPI >= 0.16x) for an
    app fapilog traces natively: it would start a second server span around fapilog's (and
    put operation spans between it and the endpoint's log lines) and log every unhandled
    exception a second time. Its HTTP metrics stay as they are. An app whose telemetry was
    given its own `tracer_provider` (``FastAPI(telemetry={"tracer_provider": ...})``) is
    left alone: its spans win and fapilog's middleware defers to them. Returns whether it
    changed anything."""
    config = getattr(app, "_telemetry", None)
    if not isinstance(config, dict) or "tracing" not in config:
        return False  # an older FastAPI (or Starlette): no native telemetry
    if config.get("tracer_provider") is not None:
        return False
    config["tracing"] = False
    config["logs"] = False
    return True


# ------------------------------------------------------------------ the native server span

_KNOWN_METHODS = frozenset(
    {"CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "QUERY", "TRACE"}
)
_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
_HOST = b"host"
_USER_AGENT = b"user-agent"

Headers = Sequence[tuple[bytes, bytes]]


class _HeaderGetter(Getter[Headers]):
    """Reads propagation headers straight from the ASGI header list (lower-case bytes)."""

    def get(self, carrier: Headers, key: str) -> list[str] | None:
        name = key.lower().encode("latin-1")
        values = [value.decode("latin-1") for header, value in carrier if header == name]
        if not values:
            return None
        if len(values) > 1 and name == b"baggage":
            return [",".join(values)]  # the baggage propagator reads the first value only
        return values

    def keys(self, carrier: Headers) -> list[str]:
        return [header.decode("latin-1") for header, _ in carrier]


class _HeaderSetter(Setter[list[tuple[bytes, bytes]]]):
    def set(self, carrier: list[tuple[bytes, bytes]], key: str, value: str) -> None:
        carrier.append((key.lower().encode("latin-1"), value.encode("latin-1")))


_GETTER = _HeaderGetter()
_SETTER = _HeaderSetter()


def _server_address(scope: MutableMapping[str, Any], host: bytes | None) -> tuple[str, int] | None:
    """``server.address`` and ``server.port``: the Host header (what the client asked
    for), else the socket the server listens on."""
    scheme = scope.get("scheme", "http")
    if host:
        text = host.decode("latin-1")
        if text.startswith("["):  # [IPv6]:port
            address, _, rest = text[1:].partition("]")
            port_text = rest[1:] if rest.startswith(":") else ""
        else:
            address, _, port_text = text.partition(":")
        if port_text:
            if not port_text.isdigit():
                return None
            return address, int(port_text)
        return address, _DEFAULT_PORTS.get(scheme, 80)
    server = scope.get("server")
    if server and server[0] is not None:
        return str(server[0]), int(server[1]) if server[1] is not None else 80
    return None


def _full_url(scope: MutableMapping[str, Any], host: bytes | None) -> str:
    """The URL `OTEL_PYTHON_FASTAPI_EXCLUDED_URLS` patterns are searched in."""
    authority = host.decode("latin-1") if host else ""
    if not authority:
        server = scope.get("server")
        authority = f"{server[0]}:{server[1]}" if server else ""
    url = f"{scope.get('scheme', 'http')}://{authority}{scope.get('root_path', '')}"
    url += scope.get("path", "")
    query = scope.get("query_string")
    return f"{url}?{query.decode('latin-1')}" if query else url


class ServerSpan:
    """The server span of one request (see `ServerSpans.start`)."""

    __slots__ = ("_token", "ended", "method", "span", "status")

    def __init__(self, span: Span, token: Token[Any], method: str) -> None:
        self.span = span
        self._token = token
        self.method = method  # the span name until the route is known
        self.status: int | None = None
        self.ended = False

    def inject_response(self, headers: list[tuple[bytes, bytes]]) -> None:
        """Add the response propagator's headers (e.g. ``traceresponse``), if one is set."""
        propagator = get_global_response_propagator()  # type: ignore[no-untyped-call]
        if propagator is not None:
            propagator.inject(headers, context=trace.set_span_in_context(self.span), setter=_SETTER)

    def end(self, route: str | None, failure: BaseException | None = None) -> None:
        """Set what is known at the end (route, status, error) and end the span (once)."""
        if self.ended:
            return
        self.ended = True
        span = self.span
        if span.is_recording():
            attributes: dict[str, Any] = {}
            if route:
                attributes["http.route"] = route
                span.update_name(f"{self.method} {route}")
            status = self.status
            if status is None and isinstance(failure, Exception):
                status = 500  # what Starlette's ServerErrorMiddleware sends
            if status is not None:
                attributes["http.response.status_code"] = status
            if isinstance(failure, Exception):
                cls = type(failure)
                attributes["error.type"] = (
                    cls.__qualname__
                    if cls.__module__ == "builtins"
                    else f"{cls.__module__}.{cls.__qualname__}"
                )
                span.record_exception(failure)
                span.set_status(Status(StatusCode.ERROR, f"{cls.__name__}: {failure}"))
            elif status is not None and status >= 500:
                attributes["error.type"] = str(status)
                span.set_status(Status(StatusCode.ERROR))
            span.set_attributes(attributes)
        span.end()

    def detach(self) -> None:
        """Make the context current before the request current again."""
        otel_context.detach(self._token)


def _w3c_fields(propagator: Any) -> frozenset[bytes] | None:
    """The header names the standard W3C propagators (``tracecontext``, ``baggage``, the
    default `OTEL_PROPAGATORS`) read; None for any other propagator (it gets every header)."""
    from opentelemetry.baggage.propagation import W3CBaggagePropagator
    from opentelemetry.propagators.composite import CompositePropagator
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    known = {
        TraceContextTextMapPropagator: (b"traceparent", b"tracestate"),
        W3CBaggagePropagator: (b"baggage",),
    }
    parts = (
        list(getattr(propagator, "_propagators", ()))
        if type(propagator) is CompositePropagator
        else [propagator]
    )
    fields: set[bytes] = set()
    for part in parts:
        names = known.get(type(part))
        if names is None:
            return None
        fields.update(names)
    return frozenset(fields)


class _DictGetter(Getter[dict[str, list[str]]]):
    def get(self, carrier: dict[str, list[str]], key: str) -> list[str] | None:
        return carrier.get(key)

    def keys(self, carrier: dict[str, list[str]]) -> list[str]:
        return list(carrier)


_DICT_GETTER = _DictGetter()


class ServerSpans:
    """Starts fapilog's native server spans with a tracer of `provider`: one SERVER span per
    HTTP request, child of the upstream W3C context extracted by the global propagators,
    with the OpenTelemetry HTTP semantic-convention attributes, current while the request
    is handled. `OTEL_PYTHON_FASTAPI_EXCLUDED_URLS` (or `OTEL_PYTHON_EXCLUDED_URLS`)
    excludes URLs as it does for the instrumentation."""

    __slots__ = ("_excluded", "_fields", "_propagator", "tracer")

    def __init__(self, provider: trace.TracerProvider) -> None:
        from opentelemetry.util.http import get_excluded_urls

        from fapilog import __version__

        self.tracer = provider.get_tracer("fapilog", __version__)
        excluded = get_excluded_urls("FASTAPI")
        self._excluded: ExcludeList | None = excluded if excluded._excluded_urls else None
        self._propagator: Any = None
        self._fields: frozenset[bytes] | None = None

    def start(self, scope: MutableMapping[str, Any]) -> ServerSpan | None:
        """Start and attach the request's span; None when a span is already current (an
        outer OpenTelemetry middleware, FastAPI's own telemetry: it owns this request) or
        the URL is excluded."""
        if trace.get_current_span().get_span_context().is_valid:
            return None
        propagator = propagate.get_global_textmap()
        if propagator is not self._propagator:  # (set_global_textmap() can replace it)
            self._fields = _w3c_fields(propagator)
            self._propagator = propagator
        fields = self._fields
        headers: Headers = scope.get("headers") or ()
        host: bytes | None = None
        agent: bytes | None = None
        carrier: dict[str, list[str]] | None = None
        for name, value in headers:
            if name == _HOST:
                host = value
            elif name == _USER_AGENT:
                agent = value
            elif fields is not None and name in fields:
                if carrier is None:
                    carrier = {}
                carrier.setdefault(name.decode("latin-1"), []).append(value.decode("latin-1"))
        if self._excluded is not None and self._excluded.url_disabled(_full_url(scope, host)):
            return None
        if fields is None:  # another propagator: give it every header
            parent = propagator.extract(headers, getter=_GETTER)
        elif carrier is None:  # nothing to continue: a new trace
            parent = otel_context.get_current()
        else:
            baggage = carrier.get("baggage")
            if baggage is not None and len(baggage) > 1:
                carrier["baggage"] = [",".join(baggage)]  # the propagator reads the first
            parent = propagator.extract(carrier, getter=_DICT_GETTER)
        attributes: dict[str, Any] = {}
        if scope["type"] == "websocket":
            span_name = "WS"
            attributes["network.protocol.name"] = "websocket"
        else:
            method = scope.get("method") or "GET"
            if method in _KNOWN_METHODS:
                attributes["http.request.method"] = span_name = method
            else:
                attributes["http.request.method"] = "_OTHER"
                attributes["http.request.method_original"] = method
                span_name = "HTTP"
        attributes["url.path"] = scope.get("path", "")
        attributes["url.scheme"] = scope.get("scheme", "http")
        address = _server_address(scope, host)
        if address is not None:
            attributes["server.address"], attributes["server.port"] = address
        if agent is not None:
            attributes["user_agent.original"] = agent.decode("latin-1")
        version = scope.get("http_version")
        if version:
            attributes["network.protocol.version"] = version
        tracer = self.tracer
        if _unobserved(tracer):
            span = _context_only_span(tracer, span_name, parent, attributes)
        else:
            span = tracer.start_span(span_name, parent, SpanKind.SERVER, attributes)
        token = otel_context.attach(trace.set_span_in_context(span, parent))
        return ServerSpan(span, token, span_name)


def _unobserved(tracer: Any) -> bool:
    """Whether `tracer` is an enabled SDK tracer whose provider has no span processor: a
    span it records would be built, validated and ended for nobody. Read on every request,
    so a processor added later (``provider.add_span_processor``) takes effect at once.
    Anything unexpected (another SDK version, another tracer type) answers False: the
    request then gets a full SDK span."""
    try:
        processors = tracer.span_processor._span_processors
        enabled = tracer._is_enabled()
    except AttributeError:
        return False
    return type(processors) is tuple and not processors and enabled is True


def _context_only_span(
    tracer: Any, name: str, parent: otel_context.Context, attributes: dict[str, Any]
) -> Span:
    """The server span as a `NonRecordingSpan`: the same trace id, new span id, trace
    flags and trace state the SDK tracer would give it (its sampler and id generator
    decide, exactly as in `Tracer.start_span`), so logs are correlated and outgoing calls
    propagate the right `traceparent`, without building attributes and events that no
    span processor would receive. The SDK itself returns this type for spans its sampler
    does not record."""
    parent_context = trace.get_current_span(parent).get_span_context()
    ids = tracer.id_generator
    if parent_context.is_valid:
        trace_id = parent_context.trace_id
        random_trace_id = parent_context.trace_flags.random_trace_id
    else:
        trace_id = ids.generate_trace_id()
        random_trace_id = ids.is_trace_id_random()
    result = tracer.sampler.should_sample(parent, trace_id, name, SpanKind.SERVER, attributes)
    flags = TraceFlags.SAMPLED if result.decision.is_sampled() else TraceFlags.DEFAULT
    if random_trace_id:
        flags |= TraceFlags.RANDOM_TRACE_ID
    return NonRecordingSpan(
        SpanContext(
            trace_id,
            ids.generate_span_id(),
            is_remote=False,
            trace_flags=TraceFlags(flags),
            trace_state=result.trace_state,
        )
    )
