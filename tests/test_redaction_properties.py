"""Property-based tests of redaction (hypothesis): nested values of every type a log call
accepts, with secrets embedded at random depths and in random shapes (a sensitive key's
value, ``key=value`` text with spaces and semicolons, quoted with escapes, URL-encoded,
bytes, header pairs, a token as a dict key, credentials of known formats). No part of any
secret survives, in the redactor's result and in what stdout, a file, the strict Loki
receiver and the OTLP receiver receive; every JSON line is exactly one valid line."""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import runs
from fapilog import configure_logging, force_flush, get_logger, shutdown
from fapilog.redaction import Redactor
from peers.loki_receiver import LokiReceiver
from peers.otlp_receiver import OtlpReceiver

MARKER = "[REDACTED]"
_counter = itertools.count()

# words that hold no secret and no sensitive key: the text around the secrets
WORDS = st.sampled_from(["alpha", "beta", "user", "id", "count", "ok", "name", "region"])
KEYS = st.sampled_from([
    "password", "passwd", "pwd", "passphrase", "secret", "token", "api_key", "apikey",
    "access_token", "client_secret", "db_password", "credentials", "auth", "authorization",
    "private_key", "session",
])  # fmt: skip
HEADERS = st.sampled_from(["authorization", "cookie", "set-cookie", "x-api-key",
                           "proxy-authorization"])  # fmt: skip


def _case(key: str, draw: Any) -> str:
    style = draw(st.sampled_from(["lower", "upper", "title", "dash"]))
    if style == "upper":
        return key.upper()
    if style == "title":
        return key.title()
    return key.replace("_", "-") if style == "dash" else key


@st.composite
def secret_words(draw: Any) -> list[str]:
    """One to three unique words that together make a secret: what must never show."""
    count = draw(st.integers(1, 3))
    body = st.text("abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789", min_size=6,
                   max_size=14)  # fmt: skip
    return [f"Q{next(_counter)}x{draw(body)}" for _ in range(count)]


@st.composite
def secret_in_a_shape(draw: Any) -> tuple[Any, list[str]]:
    """(a value holding a secret, the secret's words)."""
    words = draw(secret_words())
    key = _case(draw(KEYS), draw)
    joined = " ".join(words)
    glue = draw(st.sampled_from([" ", "; "]))
    spaced = glue.join(words)
    before = draw(WORDS)
    after = draw(
        st.sampled_from(["", f" {draw(WORDS)}=1", f"&{draw(WORDS)}=2", f", {draw(WORDS)}: 3"])
    )
    shape = draw(st.sampled_from([
        "key", "key_nested_list", "free_text", "quoted", "quoted_escaped", "url_query",
        "url_encoded", "bearer", "url_credentials", "bytes", "header_pairs", "dict_key",
        "github", "aws", "slack", "gitlab", "pem",
    ]))  # fmt: skip
    single = words[0]
    value: Any
    if shape == "key":
        value = {key: joined}
    elif shape == "key_nested_list":
        value = {key: [joined, {"x": 1}]}
    elif shape == "free_text":
        value = f"{before} {key}={spaced}{after}"
    elif shape == "quoted":
        value = f'{before} {{"{key}": "{spaced}", "n": 1}}'
    elif shape == "quoted_escaped":
        value = f'{before} {key}="{words[0]}\\"{"".join(words[1:])}" {draw(WORDS)}'
    elif shape == "url_query":
        value = f"GET /cb?{draw(WORDS)}=1&{key}={single}&{draw(WORDS)}=2 HTTP/1.1"
    elif shape == "url_encoded":
        value = f"next=%2Fcb%3F{key}%3D{'%20'.join(words)}%26{draw(WORDS)}%3D1"
    elif shape == "bearer":
        value = f"Authorization: Bearer {single}"
    elif shape == "url_credentials":
        value = f"dsn postgres://app:{single}@db:5432/app"
    elif shape == "bytes":
        text = f"{before} {key}={spaced}{after}"
        value = draw(st.sampled_from([bytes, bytearray]))(text.encode())
    elif shape == "header_pairs":
        name = draw(HEADERS)
        raw = draw(st.booleans())
        pair = (name.encode(), spaced.encode()) if raw else (name, spaced)
        value = [("host", "api") if not raw else (b"host", b"api"), pair]
    elif shape == "dict_key":
        token = "ghp_" + (single * 4)[:36].ljust(36, "Z")
        value, words = {token: 1}, [token]
    elif shape == "github":
        token = draw(st.sampled_from(["ghp_", "gho_", "ghs_"])) + (single * 4)[:36].ljust(36, "Z")
        value, words = f"{before} {token} {draw(WORDS)}", [token]
    elif shape == "aws":
        token = "AKIA" + re.sub(r"[^A-Z0-9]", "", single.upper() * 4)[:16].ljust(16, "Z")
        value, words = f"{before} {token}", [token]
    elif shape == "slack":
        value, words = f"{before} xoxb-{single}-{single}", [single]
    elif shape == "gitlab":
        value, words = f"glpat-{(single * 3)[:20]} {before}", [(single * 3)[:20]]
    else:
        value = f"-----BEGIN RSA PRIVATE KEY-----\n{joined}\n-----END RSA PRIVATE KEY-----"
    return value, words


@st.composite
def events(draw: Any) -> tuple[dict[str, Any], list[str]]:
    """An event with secrets placed at random depths among innocent values."""
    secrets: list[str] = []
    innocent = st.one_of(st.integers(-(2**63), 2**63 - 1), st.floats(allow_nan=False),
                         st.booleans(), st.none(), WORDS)  # fmt: skip
    fields: dict[str, Any] = {}
    for index in range(draw(st.integers(1, 4))):
        value, words = draw(secret_in_a_shape())
        secrets.extend(words)
        for _ in range(draw(st.integers(0, 6))):  # buried at a random depth
            container = draw(st.sampled_from(["dict", "list", "tuple"]))
            if container == "dict":
                value = {draw(WORDS): value, "n": draw(innocent)}
            elif container == "list":
                value = [draw(innocent), value]
            else:
                value = (value, draw(innocent))
        fields[f"f{index}"] = value
    fields["plain"] = draw(innocent)
    return fields, secrets


def _parts(secrets: list[str]) -> list[str]:
    return [part for secret in secrets for part in re.split(r"[^A-Za-z0-9_\-]+", secret)
            if len(part) >= 6]  # fmt: skip


@pytest.mark.soak
@settings(max_examples=runs(quick=300, soak=5000), deadline=None)
@given(events())
def test_no_secret_survives_the_redactor(event: tuple[dict[str, Any], list[str]]) -> None:
    fields, secrets = event
    result = Redactor()(None, "info", {"event": "e", **fields})
    text = repr(result)
    assert [part for part in _parts(secrets) if part in text] == []


@pytest.mark.slow
@pytest.mark.soak
@settings(
    max_examples=runs(quick=6, soak=40),
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
@given(st.lists(events(), min_size=5, max_size=12))
def test_no_secret_survives_any_exporter(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    batch: list[tuple[dict[str, Any], list[str]]],
) -> None:
    path = tmp_path / f"app-{next(_counter)}.log"
    capsys.readouterr()
    with LokiReceiver() as loki, OtlpReceiver() as otlp:
        configure_logging(
            exporters=["stdout", "file", "loki", "otlp"],
            json_console=True,
            file={"path": str(path)},
            loki={"url": loki.url, "batch_wait": 0.02},
            otlp={"endpoint": otlp.http_endpoint, "protocol": "http/protobuf", "traces": False},
        )
        log = get_logger("property")
        for number, (fields, _) in enumerate(batch):
            log.info(f"event {number}", **fields)
        assert force_flush(15)
        assert loki.wait_for_entries(len(batch), timeout=15)
        received = otlp.wait_for_logs(lambda logs: len(logs) >= len(batch), timeout=15)
        loki_lines = [entry.line for entry in loki.entries()]
        loki_raw = repr([push.body for push in loki.pushes])
        shutdown()
    stdout = [line for line in capsys.readouterr().out.splitlines() if line]
    file_lines = path.read_text().splitlines()
    parts = _parts([secret for _, secrets in batch for secret in secrets])
    outputs = {
        "stdout": "\n".join(stdout),
        "file": "\n".join(file_lines),
        "loki": "\n".join(loki_lines) + loki_raw,
        "otlp": repr([(entry.body, entry.attributes) for entry in received]),
    }
    for name, text in outputs.items():
        assert [part for part in parts if part in text] == [], name
    for name, lines in (("stdout", stdout), ("file", file_lines), ("loki", loki_lines)):
        messages = [json.loads(line)["message"] for line in lines]  # one valid line each
        assert sorted(messages) == sorted(f"event {n}" for n in range(len(batch))), name
