"""Request enrichment used by the FastAPI middleware: client address, user agent, headers.

`request_fields(scope, settings)` returns the attributes added to the request event from
the ASGI scope; `response_fields(headers, settings)` those from the response headers.
(Anonymisation, trusted proxies and the header allowlist: see docs/enrichment.md.)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from fapilog._sections.request import RequestSettings

__all__ = ["request_fields", "response_fields"]


def request_fields(scope: Mapping[str, Any], settings: RequestSettings) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for name, value in scope.get("headers") or ():
        if name == b"user-agent":
            fields["user_agent.original"] = value.decode("latin-1")
    client = scope.get("client")
    if client:
        fields["client.address"] = client[0]
    return fields


def response_fields(
    headers: Iterable[tuple[bytes, bytes]], settings: RequestSettings
) -> dict[str, Any]:
    return {}
