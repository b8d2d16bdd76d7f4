"""fapilog's native server span: one SERVER span per HTTP request, started by the request
middleware itself (``FAPILOG_REQUEST__TRACING=native``, the default), with no extra ASGI
layer.

It continues an inbound W3C `traceparent` (and `tracestate`, baggage) through the globally
configured propagators, carries the OpenTelemetry HTTP semantic-convention attributes, is
current while the request is handled, and ends when the response body is complete. When the
provider has no span processor, the span is the SDK's `NonRecordingSpan` with the same ids
(see `_context_only_span`): nothing would receive a recorded one.
"""

from __future__ import annotations

from collections.abc import MutableMapping, Sequence
from contextvars import Token
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.instrumentation.propagators import get_global_response_propagator
from opentelemetry.propagators.textmap import Getter, Setter
from opentelemetry.trace import (
    NonRecordingSpan,
    Span,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
)
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.http import ExcludeList, get_excluded_urls

from fapilog._version import __version__
from fapilog.integrations.request_head import RequestHead
from fapilog.otel.semconv import error_type
from fapilog.otel.trace import composite_parts, exclusions_set, tracer_unobserved

__all__ = ["ServerSpan", "ServerSpans"]

_KNOWN_METHODS = frozenset(
    {"CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "QUERY", "TRACE"}
)
_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
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
            # (int() fails on "\xb2", and past its digit limit: a port has at most 5 digits)
            if not (len(port_text) <= 5 and port_text.isascii() and port_text.isdigit()):
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
                attributes["error.type"] = error_type(failure)
                span.record_exception(failure)
                span.set_status(Status(StatusCode.ERROR, f"{type(failure).__name__}: {failure}"))
            elif status is not None and status >= 500:
                attributes["error.type"] = str(status)
                span.set_status(Status(StatusCode.ERROR))
            span.set_attributes(attributes)
        span.end()

    def detach(self) -> None:
        """Make the context current before the request current again."""
        otel_context.detach(self._token)


_W3C_FIELDS: dict[type, tuple[bytes, ...]] = {
    TraceContextTextMapPropagator: (b"traceparent", b"tracestate"),
    W3CBaggagePropagator: (b"baggage",),
}


def w3c_fields(propagator: Any) -> frozenset[bytes] | None:
    """The header names the standard W3C propagators (``tracecontext``, ``baggage``, the
    default `OTEL_PROPAGATORS`) read; None for any other propagator (it gets every header)."""
    parts = composite_parts(propagator)
    if parts is None:
        return None
    known = _W3C_FIELDS
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
        self.tracer = provider.get_tracer("fapilog", __version__)
        excluded = get_excluded_urls("FASTAPI")
        self._excluded: ExcludeList | None = excluded if exclusions_set(excluded) else None
        self._propagator: Any = None
        self._fields: frozenset[bytes] | None = None

    def propagation_fields(self) -> frozenset[bytes] | None:
        """The header names the global propagator reads (None: any header; it then gets
        them all). Checked per request: `set_global_textmap()` can replace it."""
        propagator = propagate.get_global_textmap()
        if propagator is not self._propagator:
            self._fields = w3c_fields(propagator)
            self._propagator = propagator
        return self._fields

    def start(self, scope: MutableMapping[str, Any], head: RequestHead) -> ServerSpan | None:
        """Start and attach the request's span; None when a span is already current (an
        outer OpenTelemetry middleware, FastAPI's own telemetry: it owns this request) or
        the URL is excluded. `head` was read with `propagation_fields()`."""
        if trace.get_current_span().get_span_context().is_valid:
            return None
        host = head.host
        if self._excluded is not None and self._excluded.url_disabled(_full_url(scope, host)):
            return None
        propagator = self._propagator
        carrier = head.carrier
        if self._fields is None:  # another propagator: give it every header
            parent = propagator.extract(head.headers, getter=_GETTER)
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
        agent = head.user_agent
        if agent is not None:
            attributes["user_agent.original"] = agent.decode("latin-1")
        version = scope.get("http_version")
        if version:
            attributes["network.protocol.version"] = version
        tracer = self.tracer
        # (read on every request: a span processor added later takes effect at once)
        if tracer_unobserved(tracer):
            span = _context_only_span(tracer, span_name, parent, attributes)
        else:
            span = tracer.start_span(span_name, parent, SpanKind.SERVER, attributes)
        token = otel_context.attach(trace.set_span_in_context(span, parent))
        return ServerSpan(span, token, span_name)


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
