"""Redaction on every way out: one event full of secrets, logged once with every exporter
enabled at the same time (stdout, file, Loki, OTLP, and an in-memory exporter); no secret
reaches any of them, each of which did receive the event."""

from __future__ import annotations

import json
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
