"""`FAPILOG_LOKI__*`: the Grafana Loki push exporter (see docs/loki.md)."""

from __future__ import annotations

from pydantic import Field, SecretStr

from fapilog._sections import Section

__all__ = ["LokiSettings"]


class LokiSettings(Section):
    url: str = Field(default="http://localhost:3100", description="Loki base URL or push URL")
    tenant_id: str | None = Field(default=None, description="X-Scope-OrgID")
    username: str | None = Field(default=None, description="basic auth user")
    password: SecretStr | None = Field(default=None, description="basic auth password")
    bearer_token: SecretStr | None = Field(default=None, description="bearer token")
