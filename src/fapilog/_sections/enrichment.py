"""Enrichment and redaction settings (see docs/enrichment.md, docs/redaction.md).

`FAPILOG_SYSTEM__*` (process metrics, version from package metadata), `FAPILOG_REDACTION__*`
(keys, value patterns, marker) and the request-enrichment fields of `FAPILOG_REQUEST__*`
(client address, trusted proxies, header allowlist, sensitive headers).
"""

from __future__ import annotations

import ipaddress
import json
import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, field_validator
from pydantic_settings import NoDecode

from fapilog._sections import CommaList, Section, parse_names

__all__ = [
    "BUILTIN_PATTERNS",
    "DEFAULT_KEYS",
    "DEFAULT_KEY_FRAGMENTS",
    "DEFAULT_MARKER",
    "SENSITIVE_HEADERS",
    "RedactionSettings",
    "RequestEnrichmentFields",
    "SystemSettings",
]

DEFAULT_MARKER = "[REDACTED]"

# Keys whose values are always redacted (compared case-insensitively, '-' == '_').
DEFAULT_KEYS: tuple[str, ...] = (
    "password", "passwd", "secret", "token", "access_token", "refresh_token", "api_key",
    "apikey", "authorization", "cookie", "set-cookie", "session", "credit_card",
    "card_number", "cvv", "ssn", "private_key",
)  # fmt: skip

# A key CONTAINING one of these (db_password, client_secret, csrf_token, x-api-key) has its
# text and structured values redacted; numbers stay (max_tokens=100 is not a secret).
DEFAULT_KEY_FRAGMENTS: tuple[str, ...] = (
    "password", "passwd", "secret", "token", "api_key", "apikey", "private_key",
)  # fmt: skip

# Value patterns built in (see fapilog.redaction for what each matches).
BUILTIN_PATTERNS: tuple[str, ...] = (
    "url_credentials", "bearer", "basic", "jwt", "card", "key_value",
)  # fmt: skip

# Request/response headers always replaced by the marker, even when allowlisted.
SENSITIVE_HEADERS: tuple[str, ...] = (
    "authorization", "cookie", "set-cookie", "proxy-authorization", "x-api-key",
)  # fmt: skip

ClientIp = Literal["anonymized", "full", "none"]


def _parse_patterns(value: Any) -> Any:
    """Regexes may contain commas, so they are not split on them: a JSON array of strings,
    or one regex."""
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return []
        if text.startswith("["):
            try:
                parsed = json.loads(text)
            except json.JSONDecodeError:
                return [text]  # a regex that starts with a character class
            if isinstance(parsed, list) and all(isinstance(item, str) for item in parsed):
                return parsed
        return [text]
    return value


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


class RedactionSettings(Section):
    """`FAPILOG_REDACTION__*`: what is replaced by the marker before any exporter sees it."""

    enabled: bool = Field(
        default=True, description="redact sensitive keys and values (turn off explicitly)"
    )
    marker: str = Field(
        default=DEFAULT_MARKER, min_length=1, description="what a redacted value becomes"
    )
    keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="more keys to redact, added to the default set"
    )
    allow_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="keys never redacted by name (removes them from the default set and "
        "the fragment rule)",
    )
    key_fragments: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: list(DEFAULT_KEY_FRAGMENTS),
        description="a key containing one of these is redacted too (numbers excepted)",
    )
    builtin_patterns: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: list(BUILTIN_PATTERNS),
        description="value patterns applied to every string: url_credentials, bearer, "
        "basic, jwt, card, key_value",
    )
    patterns: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="more regexes (JSON array, or one regex) whose matches are redacted; "
        "a group named 'secret' limits the redaction to that group",
    )

    @field_validator("keys", "allow_keys", "key_fragments", "builtin_patterns", mode="before")
    @classmethod
    def _lists(cls, value: object) -> object:
        return parse_names(value)

    @field_validator("keys", "allow_keys", "key_fragments")
    @classmethod
    def _non_empty(cls, value: list[str]) -> list[str]:
        if any(not item.strip() for item in value):
            raise ValueError("empty key name")
        return list(dict.fromkeys(value))

    @field_validator("builtin_patterns")
    @classmethod
    def _known_patterns(cls, value: list[str]) -> list[str]:
        unknown = [name for name in value if name not in BUILTIN_PATTERNS]
        if unknown:
            raise ValueError(
                f"unknown builtin pattern(s) {', '.join(map(repr, unknown))}; "
                f"known: {', '.join(BUILTIN_PATTERNS)}"
            )
        return list(dict.fromkeys(value))

    @field_validator("patterns", mode="before")
    @classmethod
    def _patterns_list(cls, value: object) -> object:
        return _parse_patterns(value)

    @field_validator("patterns")
    @classmethod
    def _compilable(cls, value: list[str]) -> list[str]:
        for pattern in value:
            try:
                compiled = re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"invalid regex {pattern!r}: {exc}") from None
            if compiled.search("") is not None:
                raise ValueError(f"regex {pattern!r} matches the empty string")
        return value


class SystemSettings(Section):
    """`FAPILOG_SYSTEM__*`: process metrics and the application version."""

    metrics: bool = Field(
        default=False,
        description="attach process.memory.usage (RSS bytes) and process.cpu.utilization "
        "(psutil, sampled in the background) to every event",
    )
    metrics_interval: float = Field(
        default=5.0, ge=0.1, le=3600, description="seconds between two process samples"
    )
    package: str | None = Field(
        default=None,
        description="installed distribution whose version becomes service.version "
        "(when FAPILOG_SERVICE_VERSION is not set)",
    )

    @field_validator("package")
    @classmethod
    def _installed(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        from importlib.metadata import PackageNotFoundError, version

        name = value.strip()
        try:
            version(name)
        except PackageNotFoundError:
            raise ValueError(f"no installed distribution named {name!r}") from None
        return name
