"""FAPILOG_LOKI__TIMEOUT bounds a whole push (connect, send, the whole response), not each
read: a real server on 127.0.0.1 that answers one byte a second is cut off at the timeout,
the push is retried and, retries spent, the records are counted as dropped. TLS runs under
the same deadline; the environment's proxy settings are read as httpx reads them."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

import fapilog
from conftest import loki_exporter
from fapilog.exporters._deadline import environment_proxy
from peers.drip_server import DripServer
from peers.loki_receiver import LokiReceiver

FAST = {"min_backoff": 0.05, "max_backoff": 0.1, "batch_wait": 0.05}


def configure(url: str, **loki: Any) -> None:
    """Memory only (no disk spool): what a failed push costs is counted as dropped."""
    fapilog.configure_logging(
        exporters=["loki"],
        service_name="api",
        loki={"url": url, **FAST, **loki},
        spool={"enabled": False},
    )


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_a_server_dripping_its_answer_is_cut_at_timeout_retried_and_counted(
    scheme: str, request: pytest.FixtureRequest
) -> None:
    tls = None
    if scheme == "https":
        request.getfixturevalue("trusted")
        tls = request.getfixturevalue("certificate")
    # one byte a second: every read gets its byte well within the 1.5 s timeout, so only a
    # deadline over the whole push stops it (the 70-byte answer would take 70 s)
    with DripServer(interval=1.0, tls=tls) as server:
        configure(server.url, timeout=1.5, max_retries=1)
        started = time.monotonic()
        fapilog.get_logger("drip").info("held by a dripping server")
        assert fapilog.force_flush(15)
        elapsed = time.monotonic() - started
        figures = loki_exporter().stats()
        counted = fapilog.stats()["exporters"]["loki"]
        assert server.requests == 2  # the push, then its one retry
        assert server.bytes_sent >= 2  # the server was answering, a byte at a time
        fapilog.shutdown(5)
    assert figures["requests"] == {"error": 2}
    assert figures["retries"] == 1
    durations = figures["request_duration_seconds"]["error"]
    assert 1.4 <= durations["max"] < 2.5  # cut at the timeout, each time
    assert figures["dropped_entries"] == {"ingester_error": 1}
    assert (counted["exported"], counted["dropped"], counted["queued"]) == (0, 1, 0)
    assert counted["dropped_by_reason"] == {"ingester_error": 1}
    assert elapsed < 8


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_a_slow_answer_within_the_timeout_is_delivered(
    scheme: str, request: pytest.FixtureRequest
) -> None:
    tls = None
    if scheme == "https":
        request.getfixturevalue("trusted")
        tls = request.getfixturevalue("certificate")
    with DripServer(interval=0.005, tls=tls) as server:  # the answer takes ~0.35 s
        configure(server.url, timeout=10, max_retries=0)
        fapilog.get_logger("drip").info("slow but in time")
        assert fapilog.force_flush(15)
        figures = loki_exporter().stats()
        fapilog.shutdown(5)
    assert server.requests == 1
    assert figures["requests"] == {"204": 1}
    assert figures["sent_entries"] == 1 and figures["dropped_entries"] == {}


def test_the_environment_proxy_is_read_as_httpx_reads_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        for variant in (name, name.lower()):
            monkeypatch.delenv(variant, raising=False)
    loki = httpx.URL("http://loki.internal:3100/loki/api/v1/push")
    assert environment_proxy(loki) is None
    monkeypatch.setenv("HTTP_PROXY", "proxy.corp:3128")
    proxy = environment_proxy(loki)
    assert proxy is not None and str(proxy.url) == "http://proxy.corp:3128"
    assert environment_proxy(httpx.URL("https://loki.internal/")) is None  # http only
    monkeypatch.setenv("ALL_PROXY", "http://all.corp:3128")
    proxy = environment_proxy(httpx.URL("https://loki.internal/"))
    assert proxy is not None and proxy.url.host == "all.corp"
    for no_proxy, exempt in [
        ("*", True),
        ("internal", True),  # a domain covers its subdomains
        ("loki.internal", True),
        (".internal", True),
        (".loki.internal", False),  # subdomains only
        ("oki.internal", False),
        ("10.0.0.1, localhost", False),
        ("other.example,loki.internal", True),
        (",loki.internal", True),  # (an empty entry is skipped)
        ("http://loki.internal", True),  # a URL stands for its host
        ("[::1]", False),
    ]:
        monkeypatch.setenv("NO_PROXY", no_proxy)
        assert (environment_proxy(loki) is None) is exempt, no_proxy
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    assert environment_proxy(httpx.URL("http://127.0.0.1:3100/")) is None
    assert environment_proxy(httpx.URL("http://127.0.0.2:3100/")) is not None
    # an address and localhost stand for themselves only, not for names ending with them
    monkeypatch.delenv("NO_PROXY")
    assert environment_proxy(httpx.URL("http://xxxx:3100/")) is not None
    monkeypatch.setenv("NO_PROXY", "[::1]")
    assert environment_proxy(httpx.URL("http://[::1]:3100/")) is None
    monkeypatch.setenv("NO_PROXY", "10.0.0.1,localhost,::1")
    for host, exempt in [
        ("10.0.0.1", True),
        ("a.10.0.0.1", False),
        ("localhost", True),
        ("app.localhost", False),
        ("[::1]", True),
    ]:
        assert (environment_proxy(httpx.URL(f"http://{host}:3100/")) is None) is exempt, host


def test_pushes_go_through_the_environment_proxy(
    loki: LokiReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The receiver stands in for a forward proxy (it reads the absolute-form request
    target a proxy receives); the Loki host itself does not resolve."""
    for name in ("HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        for variant in (name, name.lower()):
            monkeypatch.delenv(variant, raising=False)
    monkeypatch.setenv("HTTP_PROXY", loki.url)
    configure("http://loki.invalid:3100", timeout=5, max_retries=0)
    fapilog.get_logger("proxied").info("through the proxy")
    assert fapilog.force_flush(10)
    assert [push.status for push in loki.pushes] == [204]
    assert loki.pushes[0].headers["host"] == "loki.invalid:3100"
    assert [entry.json()["message"] for entry in loki.entries()] == ["through the proxy"]
