"""Fixtures for the tests that serve TLS on 127.0.0.1 (a pytest plugin, see conftest)."""

from __future__ import annotations

import shutil

import pytest

from peers.otlp_receiver import self_signed_certificate


@pytest.fixture(scope="session")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """(certificate file, key file) for 127.0.0.1 and localhost, its own CA."""
    if shutil.which("openssl") is None:  # pragma: no cover - openssl is on the CI machine
        pytest.skip("the openssl CLI is needed to make a test certificate")
    return self_signed_certificate(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def trusted(certificate: tuple[str, str], monkeypatch: pytest.MonkeyPatch) -> tuple[str, str]:
    """The test certificate trusted the standard way (SSL_CERT_FILE, read by httpx)."""
    monkeypatch.setenv("SSL_CERT_FILE", certificate[0])
    return certificate
