"""Loki credentials never appear in any output.

A child process configures the Loki exporter with a password (or a bearer token) from the
environment, prints every representation of its settings and exporter, logs the settings,
reconfigures (the `fapilog.config.changed` event carries the diff), triggers configuration
errors, and talks to a receiver that rejects requests while echoing the request headers
into its error bodies (as a misbehaving proxy might). Then everything the process wrote
(stdout, stderr, the log file) is searched for the secret in every encoding it travels in.
"""

from __future__ import annotations

import base64
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from peers.loki_receiver import LokiReceiver

pytestmark = pytest.mark.slow

SECRET = "s3cr3t-Pa55w0rd-7f1c"
USER = "svc-logs"

CHILD = textwrap.dedent(
    """
    import os, sys
    import fapilog
    from fapilog._state import STATE
    from fapilog import ConfigurationError, LoggingSettings

    url = os.environ["LOKI_URL"]
    fast = {"url": url, "min_backoff": 0.01, "max_backoff": 0.02, "max_retries": 1,
            "batch_wait": 0.01}
    settings = fapilog.configure_logging(
        exporters=["stdout", "loki", "file"], json_console=True, level="DEBUG",
        file={"path": os.environ["LOG_PATH"]}, loki=fast,
    )
    print(repr(settings)); print(settings); print(settings.model_dump())
    print(settings.model_dump_json()); print(repr(settings.loki)); print(settings.loki)
    (exporter,) = [p.exporter for p in STATE.pipeline.processors
                   if p.name == "loki"]
    print(repr(exporter)); print(vars(exporter)); print(exporter.stats())
    log = fapilog.get_logger("app")
    log.info("settings", settings=settings, loki=settings.loki)
    log.info("dump", dump=settings.model_dump(), headers=exporter._headers)
    log.debug("exporter", exporter=exporter, attrs=vars(exporter))
    fapilog.force_flush(10)       # delivered with the credentials: 204
    os.write(1, b"PHASE-FAILURES\\n")
    sys.stdin.readline()          # the receiver now rejects, echoing our headers
    for i in range(3):
        log.warning("rejected", i=i)
        fapilog.force_flush(10)
    # a reconfiguration logs the settings diff (fapilog.config.changed)
    fapilog.configure_logging(settings, loki={**fast, "tenant_id": "other"})
    fapilog.force_flush(10)
    for bad in (
        {"url": "http://user:" + os.environ["SECRET"] + "@loki:3100"},
        {"username": "u", "password": os.environ["SECRET"],
         "bearer_token": os.environ["SECRET"]},
        {"username": None, "password": os.environ["SECRET"]},
        {"password": os.environ["SECRET"], "max_retries": -1},
        {"bearer_token": os.environ["SECRET"], "timeout": "soon"},
    ):
        try:
            fapilog.configure_logging(exporters=["loki"], loki=bad)
        except ConfigurationError as exc:
            print(exc); print(repr(exc)); print(exc.errors)
    print(fapilog.stats())
    fapilog.shutdown()
    """
)


def encodings(secret: str) -> list[str]:
    """The forms a credential travels in: raw, user:pass, and base64 of that."""
    pair = f"{USER}:{secret}"
    return [secret, pair, base64.b64encode(pair.encode()).decode()]


@pytest.mark.parametrize("auth", ["basic", "bearer"])
def test_credentials_never_appear_in_any_output(
    tmp_path: Path, subprocess_env: dict[str, str], auth: str
) -> None:
    log_path = tmp_path / "app.log"
    if auth == "basic":
        receiver = LokiReceiver(basic=(USER, SECRET))
        credentials = {"FAPILOG_LOKI__USERNAME": USER, "FAPILOG_LOKI__PASSWORD": SECRET}
    else:
        receiver = LokiReceiver(bearer=SECRET)
        credentials = {"FAPILOG_LOKI__BEARER_TOKEN": SECRET}
    env = {
        **subprocess_env,
        **credentials,
        "SECRET": SECRET,
        "LOKI_URL": "",
        "LOG_PATH": str(log_path),
    }
    with receiver:
        env["LOKI_URL"] = receiver.url
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD], env=env, text=True,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        assert child.stdin is not None and child.stdout is not None
        try:
            before = []
            for line in child.stdout:
                if line.strip() == "PHASE-FAILURES":
                    break
                before.append(line)
            receiver.fail(401, times=1, echo_headers=True, body="unauthorized")
            receiver.fail(500, echo_headers=True, body="upstream error")
            child.stdin.write("go\n")
            child.stdin.flush()
            out, err = child.communicate(timeout=60)
        finally:
            if child.poll() is None:
                child.kill()
        statuses = [push.status for push in receiver.pushes]
        echoed = [push for push in receiver.pushes if push.status in (401, 500)]
    output = "".join(before) + out + err + log_path.read_text()
    assert child.returncode == 0, err
    assert 204 in statuses  # the credentials were really used ...
    assert echoed  # ... and really echoed back in error bodies
    for form in encodings(SECRET):
        assert form not in output, f"credential leaked as {form!r}"
    assert "***" in err  # the echoed header was scrubbed, not just absent
    assert "HTTP Request" not in err  # httpx's per-request lines stay out of stderr
    assert "httpcore" not in err
    assert "fapilog.config.changed" in output
    assert "carries credentials" in output
    assert "**********" in output  # SecretStr's mask shows up where the settings were logged
