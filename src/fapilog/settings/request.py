"""`FAPILOG_REQUEST__*`: the FastAPI request logging middleware (see docs/fastapi.md) and
request enrichment (client address, trusted proxies, header allowlist, sensitive headers;
see docs/enrichment.md)."""

from __future__ import annotations

import importlib
import ipaddress
import re
from collections.abc import Callable, Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, field_validator
from pydantic_settings import NoDecode

from fapilog._levels import LevelName
from fapilog._levels import normalise as normalise_level
from fapilog.settings._base import CommaList, Section, parse_mapping, parse_names

__all__ = [
    "BufferSettings",
    "ClientIp",
    "ContextHook",
    "DEFAULT_STATUS_LEVELS",
    "QueryMode",
    "RequestEnrichmentFields",
    "RequestSettings",
    "TracingMode",
]

TracingMode = Literal["native", "instrumentation", "off"]
"""How `configure_logging(app=app)` gives each request its server span (docs/fastapi.md)."""
QueryMode = Literal["omit", "redacted"]
"""What request-related output makes of a query string (docs/fastapi.md#query-strings)."""
_TRACING_TRUE = frozenset({"true", "1", "yes", "on"})
_TRACING_FALSE = frozenset({"false", "0", "no", "none", ""})

ContextHook = Callable[[Mapping[str, Any]], Mapping[str, Any] | None]
"""``hook(scope) -> {"user.id": ..., "session.id": ...}`` (or None): see docs/fastapi.md."""

# The levels of request events by status; `status_levels` entries override these.
DEFAULT_STATUS_LEVELS: dict[str, LevelName] = {
    "5xx": "ERROR",
    "4xx": "WARNING",
    "default": "INFO",
}
_STATUS_KEY = re.compile(r"^(?:[1-5][0-9][0-9]|[1-5]xx|default)$")
_HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")  # an RFC 9110 token

ClientIp = Literal["anonymized", "full", "none"]


class RequestEnrichmentFields(BaseModel):
    """Fields of `FAPILOG_REQUEST__*` that belong to request enrichment."""

    headers: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="request/response headers logged as http.request.header.<name> / "
        "http.response.header.<name> (allowlist, case-insensitive; none by default)",
    )
    sensitive_headers: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="headers always replaced by the redaction marker, in addition to "
        "Authorization, Cookie, Set-Cookie, Proxy-Authorization and X-API-Key",
    )
    client_ip: ClientIp = Field(
        default="anonymized",
        description="client.address: anonymized (IPv4 /24, IPv6 /48), full, or none",
    )
    trusted_proxies: CommaList = Field(
        default_factory=list,
        description="addresses/CIDRs of proxies whose X-Forwarded-For / Forwarded headers "
        "are honoured (none by default: the peer address is the client)",
    )

    @field_validator("headers", "sensitive_headers", mode="before")
    @classmethod
    def _header_names(cls, value: object) -> object:
        return parse_names(value)

    @field_validator("headers", "sensitive_headers")
    @classmethod
    def _valid_header_names(cls, value: list[str]) -> list[str]:
        for name in value:
            if not re.fullmatch(r"[!#$%&'*+.^_`|~0-9a-z-]+", name):
                raise ValueError(f"{name!r} is not a valid HTTP header name")
        return list(dict.fromkeys(value))

    @field_validator("client_ip", mode="before")
    @classmethod
    def _client_ip(cls, value: object) -> object:
        if isinstance(value, str):
            lowered = value.strip().lower()
            return {"anonymised": "anonymized", "anonymous": "anonymized"}.get(lowered, lowered)
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _valid_proxies(cls, value: list[str]) -> list[str]:
        for item in value:
            try:
                ipaddress.ip_network(item.strip(), strict=False)
            except ValueError:
                raise ValueError(
                    f"{item!r} is not an IP address or CIDR network (e.g. 10.0.0.0/8)"
                ) from None
        return [item.strip() for item in value]


class BufferSettings(Section):
    """`FAPILOG_REQUEST__BUFFER__*`: the per-request flight recorder (docs/sampling.md)."""

    enabled: bool = Field(
        default=False,
        description="hold each request's records below the exported level (FAPILOG_LEVEL) "
        "and at or above `level`; export them, ahead of the request event, only when the "
        "request fails, logs a warning or is slow",
    )
    level: LevelName = Field(default="DEBUG", description="lowest level held")
    max_records: int = Field(
        default=1000, ge=1, le=1_000_000, description="records held per request at most"
    )
    max_bytes: int = Field(
        default=262_144, ge=1024, description="bytes held per request at most (estimated)"
    )
    total_max_bytes: int = Field(
        default=33_554_432,
        ge=1024,
        description="bytes held across all requests and flight_recorder() blocks at most",
    )
    slow_ms: float | None = Field(
        default=1000.0,
        gt=0,
        description="a request slower than this (milliseconds) counts as failed: its "
        "records are exported and its request event is always kept; unset: no threshold",
    )

    @field_validator("level", mode="before")
    @classmethod
    def _level(cls, value: object) -> object:
        return normalise_level(value)

    @field_validator("slow_ms", mode="before")
    @classmethod
    def _slow(cls, value: object) -> object:
        if isinstance(value, str) and value.strip().lower() in ("", "none", "off"):
            return None
        return value


class RequestSettings(RequestEnrichmentFields, Section):
    """Request logging (the request event, request ids, spans) plus request enrichment
    (`RequestEnrichmentFields`)."""

    enabled: bool = Field(default=True, description="log one event per request")
    exclude_paths: CommaList = Field(
        default_factory=list,
        description="paths without request events or spans, e.g. /health; "
        "a trailing * matches a prefix (/static/*)",
    )
    tracing: TracingMode = Field(
        default="native",
        description="server span per request (W3C traceparent continued): native (fapilog's "
        "own lightweight span in its request middleware), instrumentation "
        "(opentelemetry-instrumentation-fastapi), off (request logging only); "
        "true means native, false means off",
    )
    internal_spans: bool = Field(
        default=False,
        description="keep the instrumentation's internal per-receive/send spans",
    )
    request_id: bool = Field(
        default=True,
        description="accept a valid inbound request id header or generate one, echo it in "
        "the response and bind it to every log line of the request as request_id",
    )
    request_id_header: str = Field(
        default="X-Request-ID", description="the header carrying the request id"
    )
    status_levels: Annotated[dict[str, LevelName], NoDecode] = Field(
        default_factory=dict,
        description="level of the request event by status: exact codes (404), classes "
        "(4xx) or default, e.g. 404=INFO,2xx=DEBUG; on top of 5xx=ERROR,4xx=WARNING,"
        "default=INFO",
    )
    query: QueryMode = Field(
        default="omit",
        description="query strings in request-related output (the servers' access lines, "
        "allowlisted Referer/Location headers; the request event and the server span never "
        "have one): omit (the path only) or redacted (every value replaced by the "
        "redaction marker, keys kept)",
    )
    buffer: BufferSettings = Field(default_factory=BufferSettings)
    event_sample_rate: float = Field(
        default=1.0,
        ge=0.0,
        le=1.0,
        description="fraction of the request events of successful fast requests (2xx, 3xx "
        "under buffer.slow_ms) kept; 4xx, 5xx, failed and slow requests' events are always "
        "kept",
    )
    follow_trace_sampling: bool = Field(
        default=False,
        description="drop records below WARNING of unsampled traces, as the spans are; a "
        "request that ends with a warning-or-above request event keeps them all",
    )
    context_hook: ContextHook | None = Field(
        default=None,
        description="callable (or 'module:function') receiving the ASGI scope and returning "
        "fields such as user.id / session.id bound to the request's log lines",
    )

    @field_validator("exclude_paths")
    @classmethod
    def _paths_absolute(cls, value: list[str]) -> list[str]:
        for path in value:
            if not path.startswith("/"):
                raise ValueError(f"path {path!r} must start with '/', e.g. /health")
        return value

    @field_validator("tracing", mode="before")
    @classmethod
    def _tracing(cls, value: object) -> object:
        if isinstance(value, bool):
            return "native" if value else "off"
        if isinstance(value, str):
            text = value.strip().lower()
            if text in _TRACING_TRUE:
                return "native"
            if text in _TRACING_FALSE:
                return "off"
            return text
        return value

    @field_validator("query", mode="before")
    @classmethod
    def _query(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("request_id_header")
    @classmethod
    def _header_name(cls, value: str) -> str:
        if not _HEADER_NAME.match(value):
            raise ValueError(f"{value!r} is not a valid HTTP header name, e.g. X-Request-ID")
        return value

    @field_validator("status_levels", mode="before")
    @classmethod
    def _levels(cls, value: object) -> object:
        parsed = parse_mapping(value)
        if isinstance(parsed, dict):
            levels = {str(k).strip().lower(): normalise_level(v) for k, v in parsed.items()}
            for key in levels:
                if not _STATUS_KEY.match(key):
                    raise ValueError(
                        f"unknown status {key!r}: use a status code (404), a class (4xx) or default"
                    )
            return levels
        return parsed

    @field_validator("context_hook", mode="before")
    @classmethod
    def _hook(cls, value: object) -> object:
        if isinstance(value, str):
            text = value.strip()
            if not text:
                return None
            return _import_callable(text)
        return value


def _import_callable(target: str) -> Any:
    """'package.module:function' (or 'package.module.function') -> the callable."""
    module_name, sep, attribute = target.partition(":")
    if not sep:
        module_name, _, attribute = target.rpartition(".")
    if not module_name or not attribute:
        raise ValueError(f"{target!r} is not an import path: write 'package.module:function'")
    try:
        found: Any = importlib.import_module(module_name)
        for part in attribute.split("."):
            found = getattr(found, part)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"cannot import {target!r}: {exc}") from None
    if not callable(found):
        raise ValueError(f"{target!r} is not callable")
    return found
