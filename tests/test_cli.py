"""The installed ``fapilog`` console script, run in subprocesses: ``config`` (values and
their sources, masking, errors, ``--app`` in record-only mode), ``check`` (against the
strict Loki receiver and the OTLP receiver, up, down and refusing), and ``pretty``."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import fapilog
from peers.loki_receiver import LokiReceiver
from peers.otlp_receiver import OtlpReceiver, self_signed_certificate

FAPILOG = str(Path(sys.executable).parent / "fapilog")
SECRET = "hunter2-very-secret"


@pytest.fixture
def env(subprocess_env: dict[str, str]) -> dict[str, str]:
    """A clean environment for the command (no FAPILOG_/OTEL_ variables)."""
    return dict(subprocess_env)


def run(
    env: dict[str, str],
    *args: str,
    cwd: Path | None = None,
    stdin: str | None = None,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [FAPILOG, *args],
        check=False,
        env=env,
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def table(output: str) -> dict[str, tuple[str, str]]:
    """`fapilog config`'s table: setting -> (value, source)."""
    lines = output.splitlines()
    assert lines[0].split() == ["setting", "value", "source"]
    value_at = lines[0].index("value")
    source_at = lines[0].index("source")
    return {
        line[:value_at].strip(): (line[value_at:source_at].strip(), line[source_at:].strip())
        for line in lines[1:]
    }


# -- version, help ------------------------------------------------------------------------


def test_version_and_help(env: dict[str, str]) -> None:
    version = run(env, "--version")
    assert version.returncode == 0
    assert version.stdout.strip() == f"fapilog, version {fapilog.__version__}"
    helped = run(env, "--help")
    assert helped.returncode == 0
    for command in ("config", "check", "pretty"):
        assert f"fapilog {command}" in helped.stdout
        assert run(env, command, "--help").returncode == 0


# -- config -------------------------------------------------------------------------------


def test_config_shows_each_value_with_its_source_and_never_a_secret(env: dict[str, str]) -> None:
    env.update(
        FAPILOG_LEVEL="debug",
        OTEL_SERVICE_NAME="shop",
        FAPILOG_LOKI__USERNAME="bob",
        FAPILOG_LOKI__PASSWORD=SECRET,
        FAPILOG_LOKI__URL="http://loki:3100",
        OTEL_EXPORTER_OTLP_HEADERS=f"authorization=Bearer%20{SECRET}",
        OTEL_BLRP_MAX_QUEUE_SIZE="77",
        FAPILOG_EXPORTER_OPTIONS__MYSINK__API_KEY=SECRET,
    )
    result = run(env, "config")
    assert result.returncode == 0, result.stderr
    assert SECRET not in result.stdout + result.stderr
    rows = table(result.stdout)
    assert rows["level"][0].lower() == "debug"
    assert rows["level"][1] == "FAPILOG_LEVEL"
    assert rows["service_name"] == ("shop", "OTEL_SERVICE_NAME")
    assert rows["env"] == ("production", "default")
    assert rows["loki.url"] == ("http://loki:3100", "FAPILOG_LOKI__URL")
    assert rows["loki.password"][1] == "FAPILOG_LOKI__PASSWORD"
    assert rows["otlp.headers"] == ("authorization=**********", "OTEL_EXPORTER_OTLP_HEADERS")
    assert rows["queue.max_size"] == ("77", "OTEL_BLRP_MAX_QUEUE_SIZE")
    # every setting is listed, once
    assert len(rows) == len(fapilog.settings.settings_reference()) - 1  # (on_alert: code only)

    as_json = run(env, "config", "--json")
    assert as_json.returncode == 0
    assert SECRET not in as_json.stdout
    document = json.loads(as_json.stdout)
    by_setting = {row["setting"]: row for row in document["settings"]}
    assert by_setting["level"]["value"].lower() == "debug"
    assert by_setting["level"]["source"] == "FAPILOG_LEVEL"
    assert by_setting["level"]["kind"] == "environment"
    assert by_setting["service_name"]["value"] == "shop"
    assert by_setting["service_name"]["source"] == "OTEL_SERVICE_NAME"
    assert by_setting["service_name"]["kind"] == "otel"
    assert by_setting["shutdown_timeout"] == {
        "setting": "shutdown_timeout",
        "env": "FAPILOG_SHUTDOWN_TIMEOUT",
        "value": 5.0,
        "source": "default",
        "kind": "default",
    }


@pytest.mark.parametrize(
    ("variables", "expected"),
    [
        ({"FAPILOG_LEVL": "debug"}, "did you mean FAPILOG_LEVEL"),
        ({"FAPILOG_QUEUE__MAX_SIZE": "many"}, "FAPILOG_QUEUE__MAX_SIZE"),
        (
            {"FAPILOG_EXPORTERS": "loki", "FAPILOG_LOKI__URL": "http://u:p@loki:3100"},
            "FAPILOG_LOKI__URL",
        ),
        (
            {"FAPILOG_EXPORTERS": "otlp", "OTEL_EXPORTER_OTLP_HEADERS": "a=b,broken"},
            "OTEL_EXPORTER_OTLP_HEADERS",
        ),
        ({"FAPILOG_EXPORTERS": "stdout,nosuch"}, "nosuch"),
        ({"FAPILOG_ENRICHERS": "nosuch"}, "nosuch"),
        ({"FAPILOG_EXPORTERS": "otlp", "OTEL_EXPORTER_OTLP_COMPRESSION": "bogus"}, "bogus"),
        ({"FAPILOG_EXPORTERS": "file", "FAPILOG_FILE__PATH": "/tmp"}, "it is a directory"),
    ],
)
def test_config_reports_an_invalid_configuration_as_configure_logging_does(
    env: dict[str, str], variables: dict[str, str], expected: str
) -> None:
    env.update(variables)
    result = run(env, "config")
    assert result.returncode == 1
    assert result.stdout == ""
    assert expected in result.stderr
    assert "Traceback" not in result.stderr
    with pytest.MonkeyPatch.context() as patch:
        for name, value in variables.items():
            patch.setenv(name, value)
        with pytest.raises(fapilog.ConfigurationError) as raised:
            fapilog.configure_logging()
    if "it is a directory" not in expected:  # (the check's own words: the path's kind)
        assert f"fapilog: {raised.value}" in result.stderr


APP = """
from fastapi import FastAPI
from fapilog import LoggingSettings, configure_logging, log

app = FastAPI()
print("the app prints this on import")
configure_logging(
    LoggingSettings(env="development"),
    app=app,
    level="warning",
    exporters=["stdout", "loki", "file"],
    loki={{"url": "{loki}"}},
    file={{"path": "{log}"}},
    service_name="shop-code",
)
log.warning("logged on import")
"""


def test_config_app_records_the_apps_configuration_and_starts_nothing(
    env: dict[str, str], tmp_path: Path, loki: LokiReceiver
) -> None:
    log_file = tmp_path / "logs" / "app.log"
    (tmp_path / "shop.py").write_text(APP.format(loki=loki.url, log=log_file))
    env.update(FAPILOG_LEVEL="debug", FAPILOG_LOKI__TENANT_ID="team-a")
    result = run(env, "config", "--app", "shop:app", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    rows = table(result.stdout)
    assert rows["level"] == ("WARNING", "configure_logging(level=...)")
    assert rows["service_name"] == ("shop-code", "configure_logging(service_name=...)")
    assert rows["exporters"] == ('["stdout","loki","file"]', "configure_logging(exporters=...)")
    assert rows["loki.url"] == (loki.url, "configure_logging(loki={'url': ...})")
    assert rows["env"] == ("development", "LoggingSettings(...) in code")
    assert rows["loki.tenant_id"] == ("**********", "FAPILOG_LOKI__TENANT_ID")
    assert "the app prints this on import" in result.stderr  # (stdout is the report's)
    # record-only: no exporter started, no connection, no file, nothing logged
    assert loki.pushes == []
    assert not log_file.parent.exists()
    assert "logged on import" not in result.stdout + result.stderr

    as_json = run(env, "config", "--json", "--app", "shop:app", cwd=tmp_path)
    document = json.loads(as_json.stdout)
    assert document["app"] == "shop:app"


def test_config_app_errors(env: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "bad.py").write_text(
        "from fapilog import configure_logging\nconfigure_logging(level='loud')\napp = 1\n"
    )
    (tmp_path / "quiet.py").write_text("app = object()\n")
    invalid = run(env, "config", "--app", "bad:app", cwd=tmp_path)
    assert invalid.returncode == 1
    assert "FAPILOG_LEVEL" in invalid.stderr and "'LOUD' is invalid" in invalid.stderr
    missing = run(env, "config", "--app", "nothere:app", cwd=tmp_path)
    assert missing.returncode == 1
    assert "no module named 'nothere'" in missing.stderr
    no_attribute = run(env, "config", "--app", "quiet:application", cwd=tmp_path)
    assert no_attribute.returncode == 1
    assert "has no attribute 'application'" in no_attribute.stderr
    uncalled = run(env, "config", "--app", "quiet:app", cwd=tmp_path)
    assert uncalled.returncode == 0
    assert "did not call configure_logging()" in uncalled.stderr
    assert table(uncalled.stdout)["level"] == ("INFO", "default")


# -- check --------------------------------------------------------------------------------


def check(
    env: dict[str, str], *args: str, timeout: float = 5.0
) -> tuple[int, dict[str, Any], float]:
    started = time.monotonic()
    result = run(env, "check", "--json", "--timeout", str(timeout), *args)
    took = time.monotonic() - started
    assert result.stderr == "" or result.returncode != 0, result.stderr
    document = json.loads(result.stdout)
    return result.returncode, {item["exporter"]: item for item in document["exporters"]}, took


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_check_passes_against_loki_and_the_collector(
    env: dict[str, str], tmp_path: Path, loki: LokiReceiver, protocol: str
) -> None:
    with OtlpReceiver() as collector:
        env.update(
            FAPILOG_EXPORTERS="stdout,loki,otlp,file",
            FAPILOG_LOKI__URL=loki.url,
            FAPILOG_OTLP__ENDPOINT=collector.endpoint(protocol),
            FAPILOG_OTLP__PROTOCOL=protocol,
            FAPILOG_FILE__PATH=str(tmp_path / "logs" / "app.log"),
            FAPILOG_SERVICE_NAME="shop",
        )
        code, results, _ = check(env)
        assert code == 0, results
        assert results["stdout"]["checked"] is False
        for name in ("loki", "otlp", "file"):
            item = results[name]
            assert item["passed"] and item["reachable"] and item["authenticated"]
            assert item["accepted"] and item["latency_ms"] >= 0
        # only marked traces: Loki's own stream, a marked OTLP record
        (entry,) = loki.entries(service_name="fapilog-check")
        assert "fapilog connectivity check" in entry.line
        assert list(loki.streams()) == [(("service_name", "fapilog-check"),)]
        (record,) = collector.logs
        assert record.body == "fapilog connectivity check"
        assert record.attributes == {"fapilog.check": True}
        assert record.resource["service.name"] == "shop"
    # the file check leaves nothing: no live log, no scratch file, not even the directory
    # it created for them
    assert list(tmp_path.iterdir()) == []


def test_check_fails_and_says_why_when_loki_or_the_collector_is_down(
    env: dict[str, str], tmp_path: Path
) -> None:
    # ports held bound and not listening: refused, and no other test can take them meanwhile
    with socket.socket() as loki, socket.socket() as collector:
        loki.bind(("127.0.0.1", 0))
        collector.bind(("127.0.0.1", 0))
        env.update(
            FAPILOG_EXPORTERS="loki,otlp",
            FAPILOG_LOKI__URL=f"http://127.0.0.1:{loki.getsockname()[1]}",
            FAPILOG_OTLP__ENDPOINT=f"http://127.0.0.1:{collector.getsockname()[1]}",
        )
        code, results, _ = check(env)
    assert code == 1
    for name, setting in (("loki", "FAPILOG_LOKI__URL"), ("otlp", "FAPILOG_OTLP__ENDPOINT")):
        item = results[name]
        assert not item["passed"] and not item["reachable"]
        assert "refused" in item["error"].lower()
        assert "nothing listens" in item["fix"] and setting in item["fix"]


def test_check_names_the_missing_tenant_and_rejected_credentials(env: dict[str, str]) -> None:
    env.update(FAPILOG_EXPORTERS="loki")
    with LokiReceiver(auth_enabled=True) as tenants:
        env["FAPILOG_LOKI__URL"] = tenants.url
        code, results, _ = check(env)
        assert code == 1
        item = results["loki"]
        assert item["reachable"] and not item["authenticated"] and item["status"] == 401
        assert "FAPILOG_LOKI__TENANT_ID" in item["fix"]
        env["FAPILOG_LOKI__TENANT_ID"] = "team-a"
        code, results, _ = check(env)
        assert code == 0, results
        assert len(tenants.entries("team-a", service_name="fapilog-check")) == 1
    with LokiReceiver(basic=("bob", "right-password")) as guarded:
        env.update(
            FAPILOG_LOKI__URL=guarded.url,
            FAPILOG_LOKI__USERNAME="bob",
            FAPILOG_LOKI__PASSWORD=SECRET,
        )
        result = run(env, "check")
        assert result.returncode == 1
        assert SECRET not in result.stdout + result.stderr
        assert "loki: FAILED" in result.stdout
        assert "the credentials were rejected" in result.stdout
        assert guarded.count() == 0


def test_check_names_a_collector_that_refuses_the_credentials(env: dict[str, str]) -> None:
    with OtlpReceiver(http_status=401) as collector:
        env.update(
            FAPILOG_EXPORTERS="otlp",
            FAPILOG_OTLP__PROTOCOL="http/protobuf",
            FAPILOG_OTLP__ENDPOINT=collector.http_endpoint,
            FAPILOG_OTLP__HEADERS=f"authorization=Bearer {SECRET}",
        )
        result = run(env, "check")
    assert result.returncode == 1
    assert SECRET not in result.stdout + result.stderr
    assert "otlp: FAILED" in result.stdout
    assert "HTTP 401" in result.stdout and "FAPILOG_OTLP__HEADERS" in result.stdout


def test_check_is_bounded_by_its_timeout(env: dict[str, str], blackhole_port: int) -> None:
    """A collector that accepts and never answers: the check ends on --timeout."""
    env.update(
        FAPILOG_EXPORTERS="loki,otlp",
        FAPILOG_LOKI__URL=f"http://127.0.0.1:{blackhole_port}",
        FAPILOG_OTLP__ENDPOINT=f"http://127.0.0.1:{blackhole_port}",
        FAPILOG_OTLP__PROTOCOL="http/protobuf",
    )
    code, results, took = check(env, timeout=1.0)
    assert code == 1
    assert not results["loki"]["passed"] and not results["otlp"]["passed"]
    assert took < 1.0 + 5.0  # the timeout, and the interpreter's start (a bound, not a speed)


def test_check_file_reports_a_directory_it_cannot_write(env: dict[str, str]) -> None:
    env.update(FAPILOG_EXPORTERS="file", FAPILOG_FILE__PATH="/proc/fapilog-check/app.log")
    result = run(env, "check")
    assert result.returncode == 1
    assert "file: FAILED" in result.stdout
    assert "FAPILOG_FILE__PATH" in result.stdout


def test_check_passes_stdout_without_checking_it(env: dict[str, str]) -> None:
    code, results, _ = check(env)
    assert code == 0
    assert results == {
        "stdout": {
            "exporter": "stdout",
            "passed": True,
            "checked": False,
            "note": "writes to this process's standard output: nothing to reach",
        }
    }


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_check_names_tls_and_passes_with_the_ca_configured(
    env: dict[str, str], tmp_path: Path, protocol: str
) -> None:
    """A collector serving TLS with a certificate this machine does not trust: the TLS
    cause; with the certificate configured (FAPILOG_OTLP__CERTIFICATE): accepted."""
    certificate, key = self_signed_certificate(tmp_path)
    with OtlpReceiver(tls=(certificate, key)) as collector:
        env.update(
            FAPILOG_EXPORTERS="otlp",
            FAPILOG_OTLP__PROTOCOL=protocol,
            FAPILOG_OTLP__ENDPOINT=collector.endpoint(protocol),
        )
        code, results, _ = check(env)
        assert code == 1
        assert not results["otlp"]["accepted"]
        assert "TLS" in results["otlp"]["fix"], results
        env["FAPILOG_OTLP__CERTIFICATE"] = certificate
        code, results, _ = check(env)
        assert code == 0, results
        assert len(collector.logs) == 1


def test_check_names_a_host_name_that_does_not_resolve(env: dict[str, str]) -> None:
    env.update(FAPILOG_EXPORTERS="loki", FAPILOG_LOKI__URL="http://fapilog-check.invalid:3100")
    code, results, _ = check(env)
    assert code == 1
    assert "'fapilog-check.invalid' does not resolve" in results["loki"]["fix"], results


def test_config_app_import_failures_are_reported_without_a_traceback(
    env: dict[str, str], tmp_path: Path
) -> None:
    (tmp_path / "raises.py").write_text("raise RuntimeError('no database')\n")
    (tmp_path / "imports.py").write_text("import missing_dependency\napp = 1\n")
    raised = run(env, "config", "--app", "raises:app", cwd=tmp_path)
    assert raised.returncode == 1
    assert "importing raises:app failed: RuntimeError: no database" in raised.stderr
    assert "Traceback" not in raised.stderr
    missing = run(env, "config", "--app", "imports:app", cwd=tmp_path)
    assert missing.returncode == 1
    assert "missing_dependency" in missing.stderr and "Traceback" not in missing.stderr


INSTRUMENTED = """
from fastapi import FastAPI
from opentelemetry import trace
from fapilog import configure_logging
from fapilog.fastapi import instrument_app

app = FastAPI()
settings = configure_logging(
    exporters=["otlp"], otlp={{"endpoint": "{endpoint}", "traces": True}}, app=app
)
instrument_app(app, settings)
print("tracer provider:", type(trace.get_tracer_provider()).__name__)
print("middleware:", len(app.user_middleware))
"""


def test_config_app_instruments_nothing_even_when_the_app_asks_twice(
    env: dict[str, str], tmp_path: Path
) -> None:
    with OtlpReceiver() as collector:
        (tmp_path / "traced.py").write_text(INSTRUMENTED.format(endpoint=collector.grpc_endpoint))
        result = run(env, "config", "--app", "traced:app", cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert "tracer provider: ProxyTracerProvider" in result.stderr
        assert "middleware: 0" in result.stderr
        assert collector.requests == 0


def test_check_otlp_follows_the_sdks_own_insecure_variable(env: dict[str, str]) -> None:
    """An endpoint without a scheme is TLS for the SDK unless OTEL_EXPORTER_OTLP_[LOGS_]
    INSECURE says otherwise: the check connects as the exporter does."""
    with OtlpReceiver() as collector:
        env.update(
            FAPILOG_EXPORTERS="otlp",
            OTEL_EXPORTER_OTLP_ENDPOINT=f"127.0.0.1:{collector.grpc_port}",
            OTEL_EXPORTER_OTLP_LOGS_INSECURE="true",
        )
        code, results, _ = check(env)
        assert code == 0, results
        assert len(collector.logs) == 1
        env["OTEL_EXPORTER_OTLP_LOGS_INSECURE"] = "false"
        code, results, _ = check(env)
        assert code == 1
        assert "TLS" in results["otlp"]["fix"], results
