"""Redaction on every way out: one event full of secrets, logged once with every exporter
enabled at the same time (stdout, file, Loki, OTLP, and an in-memory exporter); no secret
reaches any of them, each of which did receive the event."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from conftest import MemoryExporter
from fapilog import configure_logging, force_flush, log, shutdown
from peers.loki_receiver import LokiReceiver
from peers.otlp_receiver import OtlpReceiver

MARKER = "[REDACTED]"
JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0"
    ".dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"
)
SECRETS = ("hunter2", "k-live-123", JWT, "eyJhbGciOi", "s3cr3t", "4111111111111111")


def _leaks(text: str) -> list[str]:
    return [secret for secret in SECRETS if secret in text]


@pytest.mark.slow
def test_no_secret_survives_in_any_exporter(
    tmp_path: Path, memory_exporter: MemoryExporter, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "app.log"
    with LokiReceiver() as loki, OtlpReceiver() as otlp:
        configure_logging(
            exporters=["stdout", "file", "loki", "otlp", memory_exporter.name],
            json_console=True,
            service_name="redaction-test",
            file={"path": str(path)},
            loki={"url": loki.url, "batch_wait": 0.05},
            otlp={"endpoint": otlp.http_endpoint, "protocol": "http/protobuf", "traces": False},
        )
        log.info(
            "login",
            password="hunter2",
            nested={"api_key": "k-live-123", "deeper": [{"secret": "s3cr3t"}]},
            note=f"token {JWT}",
            partial="token eyJhbGciOi...",
            card="4111 1111 1111 1111",
            dsn="postgres://app:s3cr3t@db/app",
        )
        assert force_flush(15)
        assert loki.wait_for_entries(1, timeout=15)
        received = otlp.wait_for_logs(lambda logs: len(logs) >= 1, timeout=15)
        loki_bodies = json.dumps([push.body for push in loki.pushes])
        loki_lines = [entry.json() for entry in loki.entries()]
        shutdown()

    stdout_lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line]
    file_lines = [json.loads(line) for line in path.read_text().splitlines()]
    otlp_records: list[dict[str, Any]] = [
        {"body": entry.body, **entry.attributes} for entry in received
    ]
    memory_records: list[dict[str, Any]] = [
        {"body": r.log_record.body, **dict(r.log_record.attributes or {})}
        for r in memory_exporter.exporter.get_finished_logs()
    ]

    outputs: dict[str, list[dict[str, Any]]] = {
        "stdout": stdout_lines,
        "file": file_lines,
        "loki": loki_lines,
        "otlp": otlp_records,
        "memory": memory_records,
    }
    for name, records in outputs.items():
        logins = [r for r in records if r.get("message", r.get("body")) == "login"]
        assert len(logins) == 1, f"{name} did not receive the event: {records}"
        login = logins[0]
        assert login["password"] == MARKER, name
        assert login["nested"] == {"api_key": MARKER, "deeper": [{"secret": MARKER}]}, name
        assert login["note"] == f"token {MARKER}", name
        assert login["partial"] == f"token {MARKER}", name
        assert login["card"] == MARKER, name
        assert login["dsn"] == f"postgres://{MARKER}@db/app", name
        assert _leaks(json.dumps(records)) == [], name
    assert _leaks(loki_bodies) == []  # the raw push bodies, structured metadata included


# -- every value shape, on every way out ---------------------------------------------------

AWS_ID = "AKIA" + "Q3EXAMPLEKEY7ZZZ"
AWS_TEMP = "ASIA" + "Q3EXAMPLEKEY7YYY"
GITHUB = ["ghp_" + "A1b2" * 9, "gho_" + "C3d4" * 9, "ghs_" + "E5f6" * 9,
          "github_pat_" + "11ABCDEFG0" + "x1Y2z3" * 12]  # fmt: skip
GITLAB = "glpat-" + "Zq9_wX-7" * 3
SLACK = "xoxb-" + "1234567890-0987654321-" + "aBcD" * 6
PEM = (
    "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ"
    "\nPEMBODYSECRET\n-----END OPENSSH PRIVATE KEY-----"
)
# one unique word per shape: none of them may appear in any output
SHAPES = {
    "bytes": "BYTESAAA1",
    "bytearray": "BYTESBBB2",
    "memoryview": "BYTESCCC3",
    "bytes_message": "BYTESMSG4",
    "header_pairs_bytes": "HDRPAIRS5",
    "header_pairs_str": "HDRPAIRS6",
    "header_items_view": "HDRITEMS7",
    "space_value": "SPACE VALUE8",
    "semicolon_value": "SEMI;COLON9",
    "escaped_quote": 'ESC\\"QUOTE10',
    "url_encoded": "URLENC11",
    "key_as_secret": GITHUB[0],
    "trace_id_outside_span": "TRACEID12",
    "logger_name": "LOGGER13",
    "bracketed": "BRACKET14",
    "pwd": "PWDKEY15",
    "passphrase": "PHRASE16",
    "credentials": "CREDS17",
    "auth": "AUTHKEY18",
    "exception_message": "EXCMSG19",
    "exception_cause": "EXCCAUSE20",
    "exception_note": "EXCNOTE21",
}
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
VENDOR = [AWS_ID, AWS_TEMP, *GITHUB, GITLAB, SLACK, "PEMBODYSECRET", AWS_SECRET]


def _log_every_shape() -> None:
    import sys

    from fapilog import get_logger

    s = SHAPES
    log.info("bytes", body=f"password={s['bytes']}".encode())
    log.info("bytearray", body=bytearray(f"token={s['bytearray']}".encode()))
    log.info("memoryview", body=memoryview(f"secret={s['memoryview']}".encode()))
    log.info(f"pwd={s['bytes_message']}".encode())
    bearer = f"Bearer {s['header_pairs_bytes']}".encode()
    log.info(
        "header pairs",
        scope_headers=[(b"host", b"api"), (b"authorization", bearer),
                       (b"cookie", b"sid=" + s["header_pairs_bytes"].encode())],
        multi_items=[("X-Api-Key", s["header_pairs_str"]), ("accept", "*/*")],
        items_view={"proxy-authorization": f"Digest {s['header_items_view']}"}.items(),
    )  # fmt: skip
    log.info(f"login password={s['space_value']} ok=1")
    log.info("semicolon", note=f"password={s['semicolon_value']} user=bob")
    log.info("escaped", note=f'cfg {{"password": "{s["escaped_quote"]}", "n": 1}}')
    log.info("encoded", url=f"/cb?next=%2Fhome%3Fpassword%3D{s['url_encoded']}%26x%3D1")
    log.info("dict key", ids={s["key_as_secret"]: 1, "plain": 2})
    log.info("trace id", trace_id=f"password={s['trace_id_outside_span']}")
    get_logger(f"svc.token={s['logger_name']}").info("named")
    log.info("bracket", note=f"token=[{s['bracketed']}] done")
    log.info("keys", pwd=s["pwd"], passphrase=s["passphrase"], credentials=s["credentials"],
             auth=s["auth"], author="ann")  # fmt: skip
    log.info("vendors", text=" ".join(VENDOR[:-2]), pem=PEM, aws=f"aws_key={AWS_SECRET}")
    try:
        try:
            raise KeyError(f"token={s['exception_cause']}")
        except KeyError as cause:
            error = ValueError(f"password={s['exception_message']}")
            if sys.version_info >= (3, 11):
                error.add_note(f"pwd={s['exception_note']}")
            raise error from cause
    except ValueError:
        log.exception("failed")
    deep: Any = "plain"
    for _ in range(40):
        deep = [deep]
    log.info("deep", deep=deep)
    # input that would forge output: a line break and terminal escapes, in every place
    get_logger("forged\nlogger").info(
        'forged\n{"message": "fake"}\x1b[2J', **{"k\r\n": "\x1b[31mred\u2028x\n"}
    )


@pytest.mark.slow
def test_no_secret_shape_survives_in_any_exporter(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each shape an application or a framework hands to a log call, secrets inside; the
    same 18 events through stdout, a file, the strict Loki receiver (JSON and protobuf
    pushes alike go through the same redacted record) and the OTLP receiver."""
    path = tmp_path / "app.log"
    with LokiReceiver() as loki, OtlpReceiver() as otlp:
        configure_logging(
            exporters=["stdout", "file", "loki", "otlp"],
            json_console=True,
            service_name="redaction-shapes",
            file={"path": str(path)},
            loki={"url": loki.url, "batch_wait": 0.05},
            otlp={"endpoint": otlp.http_endpoint, "protocol": "http/protobuf", "traces": False},
        )
        _log_every_shape()
        assert force_flush(15)
        events = 18
        assert loki.wait_for_entries(events, timeout=15)
        received = otlp.wait_for_logs(lambda logs: len(logs) >= events, timeout=15)
        loki_raw = repr([push.body for push in loki.pushes])
        loki_lines = [entry.line for entry in loki.entries()]
        shutdown()
    stdout = [line for line in capsys.readouterr().out.splitlines() if line]
    file_lines = path.read_text().splitlines()
    outputs = {
        "stdout": "\n".join(stdout),
        "file": "\n".join(file_lines),
        "loki": "\n".join(loki_lines) + loki_raw,
        "otlp": repr([(e.scope, e.body, e.attributes) for e in received]),
    }
    # a secret leaks if any part of it does (a value cut at its space or semicolon)
    secrets = [part for secret in [*SHAPES.values(), *VENDOR]
               for part in re.split(r"[^A-Za-z0-9_\-]+", secret) if len(part) >= 5]  # fmt: skip
    for name, text in outputs.items():
        leaked = [secret for secret in secrets if secret in text]
        assert leaked == [], f"{name} leaked {leaked}"
    for name, lines in (("stdout", stdout), ("file", file_lines), ("loki", loki_lines)):
        records = [json.loads(line) for line in lines]  # every line one valid JSON object
        assert len(records) == events, name
        by_message = {r["message"]: r for r in records}
        assert by_message["keys"]["author"] == "ann", name  # a whole key, not a fragment
        assert by_message["named"]["logger"] == f"svc.token={MARKER}", name
        assert by_message["deep"]["deep"] != MARKER, name  # cut visibly, not "redacted"
        assert "<truncated: nested deeper than 32 levels>" in json.dumps(by_message["deep"])
        assert by_message["dict key"]["ids"] == {MARKER: 1, "plain": 2}, name
        forged = by_message['forged\n{"message": "fake"}\x1b[2J']  # one line, as it was
        assert forged["logger"] == "forged\nlogger" and forged["k\r\n"] == "\x1b[31mred\u2028x\n"
        assert by_message["bracket"]["note"] == f"token={MARKER} done", name
        headers = by_message["header pairs"]["scope_headers"]
        assert headers[0] == ["host", "api"] and headers[1] == ["authorization", MARKER], name
    assert {e.scope for e in received} >= {f"svc.token={MARKER}"}
