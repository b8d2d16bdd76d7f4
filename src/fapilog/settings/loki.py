"""`FAPILOG_LOKI__*`: the Grafana Loki push exporter (see docs/loki.md).

Only shapes and bounds are checked here. The Loki-specific rules (URL without credentials,
tenant id characters, label names, auth combinations) are checked by the exporter's factory
at `configure_logging()` time, with messages that never echo a credential: the URL is shown
with its userinfo masked, the user name, tenant, password and token not at all (`URL`,
`SECRET` and `SecretStr` tell `fapilog.settings._errors` so).
"""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import Field, SecretStr

from fapilog.settings._base import CommaList, Section, StrMap
from fapilog.settings._errors import SECRET, URL

__all__ = ["DEFAULT_LABELS", "Encoding", "LokiSettings", "StructuredMetadata"]

# Loki 3's conventions (its OTLP ingestion): the service and its environment index the
# streams; the level stays in the line (Loki derives `detected_level` from it)
DEFAULT_LABELS = ("service_name", "service_namespace", "environment")
Encoding = Literal["json", "protobuf"]
StructuredMetadata = Union[Literal["auto"], bool]  # noqa: UP007 (pydantic's order: "auto" first)


class LokiSettings(Section):
    url: Annotated[str, URL] = Field(
        default="http://localhost:3100",
        description="Loki base URL (http://loki:3100) or full push URL (.../loki/api/v1/push)",
    )
    tenant_id: Annotated[str | None, SECRET] = Field(
        default=None, description="tenant, sent as X-Scope-OrgID (multi-tenant Loki)"
    )
    username: Annotated[str | None, SECRET] = Field(
        default=None, description="basic auth user (with password)"
    )
    password: SecretStr | None = Field(default=None, description="basic auth password")
    bearer_token: SecretStr | None = Field(
        default=None, description="bearer token (instead of basic auth)"
    )
    labels: CommaList = Field(
        default_factory=lambda: list(DEFAULT_LABELS),
        description="stream labels: `name` or `name=source` (a resource or record attribute, "
        "level, logger); keep them few and low-cardinality",
    )
    static_labels: StrMap = Field(
        default_factory=dict, description="constant labels added to every stream, e.g. team=pay"
    )
    structured_metadata: StructuredMetadata = Field(
        default="auto",
        description="send trace_id, span_id and the resource attributes that are not labels "
        "as structured metadata: auto (until a Loki refuses it, then in the line), true, false",
    )
    label_values_max: int = Field(
        default=100,
        ge=0,
        description="distinct values a label taken from a record attribute may take within "
        "label_values_window, __other__ included; the excess becomes __other__ (0: no limit)",
    )
    label_values_window: float = Field(
        default=600.0, gt=0, description="seconds a label value is remembered for label_values_max"
    )
    resource_in_line: bool = Field(
        default=False,
        description="repeat in every line the resource attributes that are labels or "
        "structured metadata",
    )
    batch_bytes: int = Field(
        default=1024 * 1024, ge=1024, description="largest push request, in line bytes"
    )
    batch_wait: float = Field(
        default=1.0, ge=0, description="seconds a partial batch waits for more records"
    )
    max_line_bytes: int = Field(
        default=256 * 1024,
        ge=0,
        description="lines larger than this are dropped (Loki's max_line_size; 0: no limit)",
    )
    timeout: float = Field(
        default=10.0,
        gt=0,
        description="seconds one push may take in all (connect, send, the whole response); "
        "a push cut off then is retried",
    )
    min_backoff: float = Field(default=0.5, gt=0, description="first retry delay, seconds")
    max_backoff: float = Field(default=300.0, gt=0, description="longest retry delay, seconds")
    max_retries: int = Field(
        default=10, ge=0, description="retries of a failed push (429, 5xx, connection errors)"
    )
    gzip: bool = Field(default=True, description="gzip request bodies (JSON encoding only)")
    encoding: Encoding = Field(
        default="json",
        description="request body: json, or protobuf (Loki's native protobuf + snappy; "
        "needs the loki-protobuf extra)",
    )
