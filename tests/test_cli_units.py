"""The `fapilog` command's parts in process, against real files and the test receivers:
the follower's rotation, truncation and tail, and the probes' answers for each status."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fapilog.cli.checks import probe_file, run_checks
from fapilog.cli.follow import Follower, follow
from fapilog.cli.probes import probe_loki, probe_otlp
from fapilog.settings import LoggingSettings
from peers.loki_receiver import LokiReceiver
from peers.otlp_receiver import OtlpReceiver


def test_the_follower_reads_across_rename_rotation_and_truncation(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    path.write_text("a\nb\npart")
    follower = Follower(str(path))
    assert follower.poll() == ["a", "b"]  # ("part" waits for its newline)
    with path.open("a") as file:
        file.write("ial\n")
    assert follower.poll() == ["partial"]
    with path.open("a") as file:
        file.write("last of the old\nunfinished")
    os.replace(path, tmp_path / "app.log.1")  # rotated: renamed, a new file created
    path.write_text("new 1\n")
    assert follower.poll() == ["last of the old", "unfinished", "new 1"]
    path.write_text("")  # truncated in place
    assert follower.poll() == []
    with path.open("a") as file:
        file.write("after truncation\n")
    assert follower.poll() == ["after truncation"]
    path.unlink()  # gone (rotated, nothing new yet): what was read stays read
    assert follower.poll() == []
    follower.close()


def test_the_follower_starts_with_the_last_lines(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    path.write_text("".join(f"line {n}\n" for n in range(100)))
    assert Follower(str(path)).skip_to_last(3) == ["line 97", "line 98", "line 99"]
    assert Follower(str(path)).skip_to_last(0) == []
    assert Follower(str(tmp_path / "missing.log")).skip_to_last(3) == []
    batches = follow([str(path)], 2, stop=lambda: True)
    assert next(batches) == ["line 98", "line 99"]


def settings(**values: object) -> LoggingSettings:
    return LoggingSettings(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("status", "fix"),
    [(404, "base URL"), (429, "rate-limiting"), (500, "server error"), (400, "refused the line")],
)
def test_the_loki_probe_names_each_answer(loki: LokiReceiver, status: int, fix: str) -> None:
    loki.fail(status, times=1, body="told so")
    probe = probe_loki(settings(loki={"url": loki.url}), 5.0)
    assert probe.reachable and probe.authenticated and not probe.accepted
    assert probe.error == f"HTTP {status}: told so"
    assert probe.fix is not None and fix in probe.fix


def test_the_loki_probe_asks_a_tenant_for_credentials(loki: LokiReceiver) -> None:
    loki.fail(401, times=1, body="unauthorized")
    probe = probe_loki(settings(loki={"url": loki.url, "tenant_id": "team-a"}), 5.0)
    assert not probe.authenticated
    assert probe.fix is not None and "wants credentials" in probe.fix


def test_the_otlp_probe_reads_a_partial_rejection_and_a_missing_endpoint() -> None:
    with OtlpReceiver(rejected_logs=1, partial_message="no such field") as collector:
        for protocol in ("grpc", "http/protobuf"):
            probe = probe_otlp(
                settings(otlp={"endpoint": collector.endpoint(protocol), "protocol": protocol}),
                5.0,
            )
            assert probe.reachable and probe.authenticated and not probe.accepted
            assert probe.error is not None and "no such field" in probe.error
    with OtlpReceiver(http_status=404) as collector:
        probe = probe_otlp(
            settings(otlp={"endpoint": collector.http_endpoint, "protocol": "http/protobuf"}),
            5.0,
        )
        assert probe.error == "HTTP 404: Not Found" and probe.fix is not None
        assert "FAPILOG_OTLP__ENDPOINT" in probe.fix
    with OtlpReceiver(http_status=503) as collector:
        probe = probe_otlp(
            settings(otlp={"endpoint": collector.http_endpoint, "protocol": "http/protobuf"}),
            5.0,
        )
        assert (
            probe.error is not None and probe.error.startswith("HTTP 503") and probe.fix is not None
        )
        assert "own logs" in probe.fix


def test_the_file_probe_refuses_a_directory_and_an_unwritable_place(tmp_path: Path) -> None:
    directory = probe_file(settings(file={"path": str(tmp_path)}), 1.0)
    assert not directory.accepted and directory.error == f"{tmp_path} is a directory"
    for place in ("/proc/fapilog-check/app.log", "/sys/fapilog-check.log"):
        probe = probe_file(settings(file={"path": place}), 1.0)
        assert not probe.accepted
        assert probe.fix is not None and "FAPILOG_FILE__PATH" in probe.fix


def test_checks_end_on_their_timeout(blackhole_port: int) -> None:
    """A Loki that accepts and never answers: the check's answer is 'no answer', on time."""
    outcomes = run_checks(
        settings(exporters=["loki"], loki={"url": f"http://127.0.0.1:{blackhole_port}"}), 0.5
    )
    (outcome,) = outcomes
    assert not outcome.passed
    assert outcome.probe is not None and outcome.probe.error is not None
    assert outcome.as_json()["passed"] is False
