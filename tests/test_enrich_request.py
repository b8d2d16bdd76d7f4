"""Request enrichment: client address (anonymised by default, proxies only when trusted),
user agent, allowlisted headers, sensitive headers always redacted. Unit tests on real ASGI
scopes, then a real FastAPI app instrumented by configure_logging(app=app)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from conftest import MemoryExporter
from fapilog import LoggingSettings, configure_logging, get_logger
from fapilog.integrations import request_fields as enrichment
from fapilog.integrations.middleware import RequestPlan
from fapilog.integrations.request_fields import anonymize_ip, client_address, parse_ip
from fapilog.settings import RequestSettings


def request_fields(scope: dict[str, Any], settings: RequestSettings) -> dict[str, Any]:
    """The request event's enrichment, as the middleware computes it: the configuration's
    plan, the request head read once, then the fields."""
    plan = RequestPlan(settings)
    head = plan.reader(None).read(scope)
    return enrichment.request_fields(scope, head, plan.enrichment)


def response_fields(
    headers: list[tuple[bytes, bytes]], settings: RequestSettings
) -> dict[str, Any]:
    return enrichment.response_fields(headers, RequestPlan(settings).enrichment)


M = "[REDACTED]"


def scope(
    client: tuple[str, int] | None = ("203.0.113.77", 51234),
    headers: list[tuple[bytes, bytes]] | None = None,
) -> dict[str, Any]:
    """An ASGI http scope as uvicorn builds it (lower-case header names, bytes)."""
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/orders/7",
        "raw_path": b"/orders/7",
        "query_string": b"",
        "root_path": "",
        "headers": headers or [],
        "client": client,
        "server": ("127.0.0.1", 8000),
    }


def settings(**values: Any) -> RequestSettings:
    return LoggingSettings(request=values).request


# -- client address ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("peer", "expected"),
    [
        ("203.0.113.77", "203.0.113.0"),
        ("2001:db8:cafe:1234:5678::1", "2001:db8:cafe::"),
        ("::ffff:198.51.100.23", "198.51.100.0"),
        ("127.0.0.1", "127.0.0.0"),
        ("testclient", "testclient"),  # not an IP address: nothing to anonymise
    ],
)
def test_client_address_is_anonymised_by_default(peer: str, expected: str) -> None:
    fields = request_fields(scope(client=(peer, 1)), RequestSettings())
    assert fields["client.address"] == expected


def test_full_address_only_when_configured() -> None:
    assert request_fields(scope(), settings(client_ip="full"))["client.address"] == "203.0.113.77"
    assert "client.address" not in request_fields(scope(), settings(client_ip="none"))
    assert "client.address" not in request_fields(scope(client=None), RequestSettings())


def test_forwarded_headers_from_an_untrusted_peer_are_ignored() -> None:
    spoofed = [(b"x-forwarded-for", b"1.2.3.4"), (b"forwarded", b"for=5.6.7.8")]
    fields = request_fields(scope(headers=spoofed), settings(client_ip="full"))
    assert fields["client.address"] == "203.0.113.77"
    # ...also when proxies are configured but the peer is not one of them
    configured = settings(client_ip="full", trusted_proxies="10.0.0.0/8")
    assert request_fields(scope(headers=spoofed), configured)["client.address"] == "203.0.113.77"


def test_x_forwarded_for_from_a_trusted_proxy() -> None:
    trusted = settings(client_ip="full", trusted_proxies="10.0.0.0/8, 192.0.2.1")
    headers = [(b"x-forwarded-for", b"6.6.6.6, 198.51.100.23, 192.0.2.1")]
    fields = request_fields(scope(client=("10.1.2.3", 1), headers=headers), trusted)
    # walked from the right past trusted proxies; the spoofable left part is not used
    assert fields["client.address"] == "198.51.100.23"
    anonymised = settings(trusted_proxies="10.0.0.0/8")
    fields = request_fields(scope(client=("10.1.2.3", 1), headers=headers), anonymised)
    assert fields["client.address"] == "192.0.2.0"  # 192.0.2.1 is not trusted here


def test_several_x_forwarded_for_headers_are_one_list() -> None:
    trusted = settings(client_ip="full", trusted_proxies="10.0.0.0/8")
    headers = [(b"x-forwarded-for", b"198.51.100.23"), (b"x-forwarded-for", b"10.0.0.9")]
    fields = request_fields(scope(client=("10.1.2.3", 1), headers=headers), trusted)
    assert fields["client.address"] == "198.51.100.23"


def test_rfc7239_forwarded_is_preferred() -> None:
    trusted = settings(client_ip="full", trusted_proxies="10.0.0.0/8")
    headers = [
        (b"x-forwarded-for", b"1.2.3.4"),
        (b"forwarded", b'for=192.0.2.60;proto=http;by=10.0.0.1, for="[2001:db8:cafe::17]:4711"'),
    ]
    fields = request_fields(scope(client=("10.0.0.1", 1), headers=headers), trusted)
    assert fields["client.address"] == "2001:db8:cafe::17"


def test_an_unparsable_hop_stops_at_the_last_trusted_proxy() -> None:
    proxies = tuple(
        LoggingSettings(request={"trusted_proxies": "10.0.0.0/8"}).request.trusted_proxies
    )
    import ipaddress

    networks = tuple(ipaddress.ip_network(p) for p in proxies)
    assert client_address("10.0.0.5", networks, x_forwarded_for="unknown, 10.0.0.7") == "10.0.0.7"
    assert client_address("10.0.0.5", networks, forwarded="for=_hidden") == "10.0.0.5"
    assert client_address("10.0.0.5", networks) == "10.0.0.5"
    assert client_address("not-an-ip", networks, x_forwarded_for="1.2.3.4") == "not-an-ip"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("192.0.2.1", "192.0.2.1"),
        ("192.0.2.1:8080", "192.0.2.1"),
        ('"[2001:db8::1]:4711"', "2001:db8::1"),
        ("2001:db8::1", "2001:db8::1"),
        ("fe80::1%eth0", "fe80::1"),
        ("unknown", None),
        ("_hidden", None),
        ("", None),
    ],
)
def test_parse_ip(text: str, expected: str | None) -> None:
    parsed = parse_ip(text)
    assert (str(parsed) if parsed is not None else None) == expected


def test_anonymize_ip_directly() -> None:
    assert anonymize_ip("198.51.100.255") == "198.51.100.0"
    assert anonymize_ip("2001:db8:ffff:ffff::") == "2001:db8:ffff::"


# -- user agent and headers --------------------------------------------------------------


def test_user_agent_and_no_headers_by_default() -> None:
    headers = [(b"user-agent", b"curl/8.5"), (b"x-tenant", b"acme"), (b"authorization", b"x")]
    fields = request_fields(scope(headers=headers), RequestSettings())
    assert fields == {"user_agent.original": "curl/8.5", "client.address": "203.0.113.0"}
    assert response_fields([(b"content-type", b"text/plain")], RequestSettings()) == {}


def test_allowlisted_headers_and_sensitive_ones_only_as_the_marker() -> None:
    configured = settings(
        headers="X-Tenant,Authorization,Cookie,Accept,X-Internal-Token,Set-Cookie,Content-Type",
        sensitive_headers="x-internal-token",
    )
    headers = [
        (b"x-tenant", b"acme"),
        (b"authorization", b"Bearer abc.def.ghi"),
        (b"cookie", b"session=x"),
        (b"accept", b"text/html"),
        (b"accept", b"application/json"),
        (b"x-internal-token", b"t0k3n"),
        (b"x-not-listed", b"v"),
    ]
    fields = request_fields(scope(headers=headers), configured)
    assert fields == {
        "http.request.header.x-tenant": ["acme"],
        "http.request.header.authorization": [M],
        "http.request.header.cookie": [M],
        "http.request.header.accept": ["text/html", "application/json"],
        "http.request.header.x-internal-token": [M],
        "client.address": "203.0.113.0",
    }
    response = [(b"set-cookie", b"session=new"), (b"content-type", b"application/json")]
    assert response_fields(response, configured) == {
        "http.response.header.set-cookie": [M],
        "http.response.header.content-type": ["application/json"],
    }


def test_the_marker_follows_the_redaction_settings() -> None:
    configure_logging(redaction={"marker": "<hidden>"})
    configured = settings(headers="authorization")
    fields = request_fields(scope(headers=[(b"authorization", b"Basic x")]), configured)
    assert fields["http.request.header.authorization"] == ["<hidden>"]


def test_settings_spellings() -> None:
    assert settings(client_ip="Anonymised").client_ip == "anonymized"
    assert settings(headers='["X-Tenant"]').headers == ["x-tenant"]


# -- end to end: a FastAPI app -----------------------------------------------------------


def _app() -> FastAPI:
    app = FastAPI()

    @app.get("/orders/{order_id}")
    async def order(order_id: int) -> dict[str, Any]:
        get_logger("orders").info("order viewed", order_id=order_id)
        return {"id": order_id}

    return app


def _request(app: FastAPI, client: tuple[str, int], headers: dict[str, str]) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, client=client)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            return await http.get("/orders/7", headers=headers)

    return asyncio.run(go())


def _request_event(memory_exporter: MemoryExporter) -> tuple[dict[str, Any], list[Any]]:
    records = memory_exporter.records()
    events = [r for r in records if r.instrumentation_scope.name == "fapilog.request"]
    assert len(events) == 1, [r.log_record.body for r in records]
    attrs = {
        key: list(value) if isinstance(value, tuple) else value
        for key, value in (events[0].log_record.attributes or {}).items()
    }
    return attrs, records


SECRET_HEADERS = {
    "Authorization": "Bearer abc.def.ghi",
    "Cookie": "session=x",
    "X-Tenant": "acme",
    "User-Agent": "pytest-agent/1.0",
    "X-Forwarded-For": "6.6.6.6",  # spoofed: the peer is no trusted proxy
}


def test_fastapi_request_headers_allowlist_and_sensitive_headers(
    memory_exporter: MemoryExporter,
) -> None:
    app = _app()
    configure_logging(
        app=app,
        exporters=[memory_exporter.name],
        request={"headers": "X-Tenant,Authorization,Cookie"},
    )
    response = _request(app, ("203.0.113.77", 50000), SECRET_HEADERS)
    assert response.status_code == 200
    attrs, records = _request_event(memory_exporter)
    assert attrs["http.request.header.x-tenant"] == ["acme"]
    assert attrs["http.request.header.authorization"] == [M]
    assert attrs["http.request.header.cookie"] == [M]
    assert attrs["user_agent.original"] == "pytest-agent/1.0"
    assert attrs["client.address"] == "203.0.113.0"  # anonymised, spoofed XFF ignored
    assert attrs["http.response.status_code"] == 200
    everything = repr([(r.log_record.body, r.log_record.attributes) for r in records])
    assert "abc.def.ghi" not in everything
    assert "session=x" not in everything
    assert "6.6.6.6" not in everything
    assert "203.0.113.77" not in everything


def test_fastapi_full_ip_and_trusted_proxy(memory_exporter: MemoryExporter) -> None:
    app = _app()
    configure_logging(
        app=app,
        exporters=[memory_exporter.name],
        request={"client_ip": "full", "trusted_proxies": "203.0.113.0/24"},
    )
    _request(app, ("203.0.113.77", 50000), SECRET_HEADERS)
    attrs, _ = _request_event(memory_exporter)
    assert attrs["client.address"] == "6.6.6.6"  # the peer is a trusted proxy now
    assert not any(key.startswith("http.request.header.") for key in attrs)


def test_fastapi_full_ip_without_trusted_proxies(memory_exporter: MemoryExporter) -> None:
    app = _app()
    configure_logging(app=app, exporters=[memory_exporter.name], request={"client_ip": "full"})
    _request(app, ("203.0.113.77", 50000), SECRET_HEADERS)
    attrs, _ = _request_event(memory_exporter)
    assert attrs["client.address"] == "203.0.113.77"
