"""`FAPILOG_OTLP__*`: OTLP export of logs and traces (see docs/opentelemetry.md). The
standard `OTEL_EXPORTER_OTLP_*` variables keep their meaning and are used when these are unset.

The headers (credentials, typically) are secrets: errors show their names only. The endpoint
must not carry credentials (``user:password@``): they would be shown wherever the endpoint is
(the SDK's messages, fapilog's settings); errors show it with its userinfo masked."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, SecretStr, field_validator
from pydantic_settings import NoDecode

from fapilog.settings._base import Section, parse_mapping
from fapilog.settings._errors import URL, has_userinfo
from fapilog.settings._url import url_problem

__all__ = [
    "CREDENTIALS_IN_URL",
    "ENDPOINT_FORM",
    "OtlpSettings",
    "PROTOCOLS",
    "Protocol",
]

Protocol = Literal["grpc", "http/protobuf"]
PROTOCOLS: tuple[str, ...] = ("grpc", "http/protobuf")
ENDPOINT_FORM = (
    "http:// or https://, a host and an optional port, e.g. http://collector:4317 (grpc) or "
    "http://collector:4318 (http/protobuf)"
)
CREDENTIALS_IN_URL = (
    "carries credentials (user:password@), which would be shown wherever the endpoint is; "
    "send them as a header instead: authorization=Basic <base64 of user:password> in "
    "FAPILOG_OTLP__HEADERS (or OTEL_EXPORTER_OTLP_HEADERS)"
)


class OtlpSettings(Section):
    """Where and how the `otlp` exporter (logs) and fapilog's span export (traces) send OTLP.
    Unset fields fall back to the standard `OTEL_EXPORTER_OTLP_*` variables."""

    endpoint: Annotated[str | None, URL] = Field(
        default=None,
        description="collector base URL, e.g. http://collector:4317 (grpc) or "
        "http://collector:4318 (http/protobuf; /v1/logs and /v1/traces are appended); "
        "unset: OTEL_EXPORTER_OTLP_[SIGNAL_]ENDPOINT, else localhost",
    )
    protocol: Protocol | None = Field(
        default=None,
        description="grpc or http/protobuf; unset: OTEL_EXPORTER_OTLP_[SIGNAL_]PROTOCOL, else grpc",
    )
    headers: Annotated[dict[str, SecretStr], NoDecode, BeforeValidator(parse_mapping)] = Field(
        default_factory=dict,
        description="headers sent with every export, e.g. authorization=Bearer x,x-tenant=a; "
        "empty: OTEL_EXPORTER_OTLP_[SIGNAL_]HEADERS",
    )
    insecure: bool | None = Field(
        default=None,
        description="grpc: plaintext (true) or TLS (false); unset: OTEL_EXPORTER_OTLP_INSECURE, "
        "else TLS unless the endpoint is http://",
    )
    certificate: str | None = Field(
        default=None,
        description="CA certificate file (PEM) that verifies the collector; "
        "unset: OTEL_EXPORTER_OTLP_[SIGNAL_]CERTIFICATE",
    )
    client_certificate: str | None = Field(
        default=None, description="client certificate file (PEM) for mTLS"
    )
    client_key: str | None = Field(
        default=None, description="client private key file (PEM) for mTLS"
    )
    compression: Literal["none", "gzip"] | None = Field(
        default=None, description="none or gzip; unset: OTEL_EXPORTER_OTLP_COMPRESSION, else none"
    )
    timeout: float | None = Field(
        default=None,
        gt=0,
        description="seconds one export may take, retries included; "
        "unset: OTEL_EXPORTER_OTLP_[SIGNAL_]TIMEOUT (seconds), else 5",
    )
    traces: bool | None = Field(
        default=None,
        description="export spans over OTLP too; unset: when OTEL_TRACES_EXPORTER names otlp, "
        "or (OTEL_TRACES_EXPORTER unset) when the otlp log exporter is enabled",
    )

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        if value is None:
            return None
        text = value.strip()
        problem = url_problem(text)
        if problem is not None:
            raise ValueError(f"not a valid URL: {problem}; expected {ENDPOINT_FORM}")
        if has_userinfo(text):
            raise ValueError(CREDENTIALS_IN_URL)
        return text

    @field_validator("protocol", mode="before")
    @classmethod
    def _protocol(cls, value: object) -> object:
        if isinstance(value, str):
            lowered = value.strip().lower()
            return {"http": "http/protobuf", "http/proto": "http/protobuf"}.get(lowered, lowered)
        return value
