"""What would fail record by record later fails `configure_logging()` now: a log file that
cannot be written (its directory cannot be created, a read-only directory, a path under a
regular file), a Loki URL or OTLP endpoint that does not parse strictly. Each error names
the variable and shows the value (its userinfo masked) and the reason."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import fapilog
from fapilog import ConfigurationError, configure_logging
from fapilog.settings._url import url_problem

ROOT_USER = hasattr(os, "geteuid") and os.geteuid() == 0
MASK = "**********"


def configure_file(path: str | Path, **file: Any) -> Any:
    return configure_logging(exporters=["file"], file={"path": str(path), **file})


def entries(directory: Path) -> list[str]:
    return sorted(item.name for item in directory.iterdir())


# -- the file exporter ---------------------------------------------------------------------


@pytest.mark.parametrize("multiprocess", ["lock", "per_process"])
def test_a_directory_that_cannot_be_created_fails_configure_logging(multiprocess: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        configure_file("/proc/nope/app.log", multiprocess=multiprocess)
    message = str(info.value)
    assert message.startswith("FAPILOG_FILE__PATH (setting 'file.path'): '/proc/nope/app.log'")
    assert "cannot create the directory /proc/nope" in message
    assert info.value.errors[0]["env"] == "FAPILOG_FILE__PATH"


def test_a_path_under_a_regular_file_fails_configure_logging(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "plain").write_text("not a directory\n")
    monkeypatch.setenv("FAPILOG_EXPORTERS", "file")
    monkeypatch.setenv("FAPILOG_FILE__PATH", str(tmp_path / "plain" / "logs" / "app.log"))
    with pytest.raises(ConfigurationError) as info:
        configure_logging()
    assert "FAPILOG_FILE__PATH" in str(info.value)
    assert f"{tmp_path / 'plain'} is not a directory" in str(info.value)
    assert entries(tmp_path) == ["plain"]  # nothing created


def unprivileged() -> list[str]:
    """A command prefix under which file permissions apply to a child: as root, without the
    capabilities that bypass them (root writes into a read-only directory)."""
    if not ROOT_USER:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: permissions cannot be enforced")
    return [setpriv, "--bounding-set=-dac_override,-dac_read_search", "--"]


CONFIGURE_FILE = """
import sys
import fapilog
try:
    fapilog.configure_logging(exporters=["file"], file={"path": sys.argv[1]})
except fapilog.ConfigurationError as exc:
    print(exc)
    sys.exit(3)
"""


def configure_unprivileged(path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*unprivileged(), sys.executable, "-c", CONFIGURE_FILE, str(path)],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_read_only_directory_fails_configure_logging(
    tmp_path: Path, subprocess_env: dict[str, str]
) -> None:
    directory = tmp_path / "ro"
    directory.mkdir()
    directory.chmod(0o500)
    try:
        child = configure_unprivileged(directory / "app.log", subprocess_env)
    finally:
        directory.chmod(0o700)
    assert child.returncode == 3, child.stderr
    assert child.stdout.startswith("FAPILOG_FILE__PATH (setting 'file.path')")
    assert f"cannot create files in {directory}: Permission denied" in child.stdout
    assert entries(directory) == []
    # once the directory is writable, the same configuration succeeds
    assert configure_unprivileged(directory / "app.log", subprocess_env).returncode == 0


def test_a_read_only_log_file_fails_configure_logging(
    tmp_path: Path, subprocess_env: dict[str, str]
) -> None:
    log = tmp_path / "app.log"
    log.write_text("")
    log.chmod(0o400)
    child = configure_unprivileged(log, subprocess_env)
    assert child.returncode == 3, child.stderr
    assert f"cannot open {log} for writing: Permission denied" in child.stdout
    log.chmod(0o600)
    assert configure_unprivileged(log, subprocess_env).returncode == 0


def test_a_writable_path_is_created_and_nothing_is_left_beside_the_log(tmp_path: Path) -> None:
    log = tmp_path / "new" / "deeper" / "app.log"
    configure_file(log)
    assert entries(log.parent) == []  # the directory made, the probe removed
    fapilog.get_logger("t").info("written")
    assert fapilog.force_flush(5)
    assert '"written"' in log.read_text()
    before = entries(log.parent)
    configure_file(log, backup_count=2)  # an existing file: opened, not touched
    assert entries(log.parent) == before


def test_the_file_path_is_checked_only_when_the_file_exporter_is_used() -> None:
    assert configure_logging(file={"path": "/proc/nope/app.log"}).exporters == ["stdout"]


def test_an_implicit_configuration_with_an_unwritable_file_starts_on_the_defaults(
    subprocess_env: dict[str, str],
) -> None:
    env = {
        **subprocess_env,
        "FAPILOG_EXPORTERS": "file",
        "FAPILOG_FILE__PATH": "/proc/nope/app.log",
    }
    script = "import fapilog\nfapilog.get_logger('app').warning('still here')\n"
    child = subprocess.run(
        [sys.executable, "-c", script],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert child.returncode == 0, child.stderr
    assert "FAPILOG_FILE__PATH" in child.stderr and "/proc/nope" in child.stderr
    assert '"still here"' in child.stdout  # on the default exporter, stdout


# -- URLs ----------------------------------------------------------------------------------

BAD_URLS = [
    ("http://loki host:3100", "it contains a space"),
    ("http://:3100", "it has no host"),
    ("ftp://loki:3100", "the scheme 'ftp' is not supported"),
    ("http://loki:abc", "the port 'abc' is not a number"),
    ("http://loki:99999", "the port 99999 is out of range"),
    ("http://loki:0", "the port 0 is out of range"),
    ("not-a-url", "it has no scheme"),
    ("loki:3100", "it has no scheme"),
    ("http://lo\tki:3100", "it contains the control character '\\t'"),
    ("http://[::1:3100", "the IPv6 address is not closed by ']'"),
]


@pytest.mark.parametrize(("url", "reason"), BAD_URLS)
def test_a_bad_loki_url_fails_showing_the_value_and_the_reason(
    monkeypatch: pytest.MonkeyPatch, url: str, reason: str
) -> None:
    monkeypatch.setenv("FAPILOG_EXPORTERS", "loki")
    monkeypatch.setenv("FAPILOG_LOKI__URL", url)
    with pytest.raises(ConfigurationError) as from_env:
        configure_logging()
    with pytest.raises(ConfigurationError) as from_code:
        configure_logging(exporters=["loki"], loki={"url": url})
    for error in (from_env.value, from_code.value):
        message = str(error)
        assert message.startswith(f"FAPILOG_LOKI__URL (setting 'loki.url'): {url!r} is invalid")
        assert f"not a valid URL: {reason}" in message
        assert "e.g. http://loki:3100" in message
        assert "<invalid>" not in message


@pytest.mark.parametrize(("url", "reason"), BAD_URLS)
def test_a_bad_otlp_endpoint_fails_showing_the_value_and_the_reason(
    monkeypatch: pytest.MonkeyPatch, url: str, reason: str
) -> None:
    monkeypatch.setenv("FAPILOG_OTLP__ENDPOINT", url)
    with pytest.raises(ConfigurationError) as from_env:
        configure_logging()
    monkeypatch.delenv("FAPILOG_OTLP__ENDPOINT")
    with pytest.raises(ConfigurationError) as from_code:
        configure_logging(exporters=["otlp"], otlp={"endpoint": url})
    for error in (from_env.value, from_code.value):
        message = str(error)
        assert f"FAPILOG_OTLP__ENDPOINT (setting 'otlp.endpoint'): {url!r} is invalid" in message
        assert f"not a valid URL: {reason}" in message


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://user:hunter2-secret@loki host:3100", f"'http://{MASK}@loki host:3100'"),
        # credentials in front of the URL: neither the value nor the "scheme" shows them
        ("user:hunter2-secret@https://loki:3100", f"'{MASK}@https://loki:3100'"),
    ],
)
def test_a_url_with_credentials_is_shown_masked(
    monkeypatch: pytest.MonkeyPatch, url: str, shown: str
) -> None:
    monkeypatch.setenv("FAPILOG_LOKI__URL", url)
    with pytest.raises(ConfigurationError) as loki:
        configure_logging(exporters=["loki"])
    monkeypatch.setenv("FAPILOG_OTLP__ENDPOINT", url)
    with pytest.raises(ConfigurationError) as otlp:
        configure_logging()
    for error in (loki.value, otlp.value):
        assert shown in str(error)
        assert "hunter2" not in str(error) and "hunter2" not in repr(error.errors)


def test_an_otel_http_endpoint_is_parsed_strictly_and_other_targets_left_to_the_sdk(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector host:4318")
    with pytest.raises(ConfigurationError) as info:
        configure_logging(exporters=["otlp"], otlp={"protocol": "http/protobuf"})
    message = str(info.value)
    assert message.startswith("OTEL_EXPORTER_OTLP_ENDPOINT='http://collector host:4318'")
    assert "not a valid URL: it contains a space" in message
    # gRPC's own target forms (host:port, unix:...) are the SDK's to judge
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "localhost:4317")
    assert configure_logging(exporters=["otlp"], otlp={"protocol": "grpc"}).exporters == ["otlp"]


@pytest.mark.parametrize(
    "url",
    [
        "http://loki:3100",
        "https://logs.example.com/loki/api/v1/push",
        "http://127.0.0.1:3100/",
        "http://[::1]:3100",
        "http://loki",
        "  http://loki:3100  ",
    ],
)
def test_valid_urls_are_accepted(url: str) -> None:
    assert url_problem(url) is None
    effective = configure_logging(exporters=["loki"], loki={"url": url}, otlp={"endpoint": url})
    assert effective.otlp.endpoint == url.strip()
