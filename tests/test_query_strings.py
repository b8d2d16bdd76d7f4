"""No query string in clear in request-related output (`FAPILOG_REQUEST__QUERY`).

A query string carries secrets (an OAuth ``code=``, a signed URL's ``X-Amz-Signature=``, an
API ``key=``). fapilog's request event and server span record the path only; the servers'
access lines it routes (uvicorn, gunicorn, hypercorn, granian) lose the query string too,
or keep it with every value replaced by the redaction marker (``redacted``).

End to end: a real uvicorn serving a FastAPI app configured with fapilog, exporting to
stdout, a file, the strict Loki receiver and the OTLP receiver (logs and spans); then
gunicorn (uvicorn workers and its own asgi worker), hypercorn and granian, with formats that
print every atom that carries the query string. In process: the record shapes of each server
through the real pipeline, the helpers, URL-valued headers, both tracing modes' spans.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse
from gunicorn.glogging import SafeAtoms
from hypercorn.logging import AccessLogAtoms
from opentelemetry.instrumentation import _semconv
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from conftest import MemoryExporter, free_port
from fapilog import ConfigurationError, LoggingSettings, configure_logging
from fapilog.integrations.access_lines import (
    ACCESS_FILTER,
    CLEANED_LOGGERS,
    clean_target,
    clean_text,
    redact_query,
)
from fapilog.settings import RequestSettings
from fapilog.testing import capture_logs
from fastapi_support import app_lines, get, requests_of, server_spans
from peers.loki_receiver import LokiReceiver
from peers.otlp_receiver import OtlpReceiver
from test_servers import _server_command

M = "[REDACTED]"


def secret_values() -> dict[str, str]:
    """Random values no output may show (a prefix no id or timestamp has)."""
    return {key: f"zq{secrets.token_hex(8)}" for key in ("code", "X-Amz-Signature", "key")}


def query_of(values: dict[str, str]) -> str:
    return "&".join(f"{key}={value}" for key, value in values.items())


REDACTED_QUERY = f"code={M}&X-Amz-Signature={M}&key={M}"


def leaks(text: str, values: dict[str, str]) -> list[str]:
    return [value for value in values.values() if value in text]


# -- the helpers ------------------------------------------------------------------------


def test_targets_lose_the_query_string_or_its_values() -> None:
    assert clean_target("/cb?code=1&key=2", None) == "/cb"
    assert clean_target("/cb?code=1&key=2", M) == f"/cb?code={M}&key={M}"
    assert clean_target("/cb", None) == "/cb"
    assert clean_target("https://h/p?a=1#f", None) == "https://h/p"
    # a part without "=" may be a token itself: replaced whole; empty parts stay empty
    assert redact_query("token&a=1&&b=", "*") == "*&a=*&&b=*"
    assert redact_query("a=b=c", "*") == "a=*"


@pytest.mark.parametrize(
    ("text", "omitted", "redacted"),
    [
        ("GET /cb?code=1 HTTP/1.1", "GET /cb HTTP/1.1", f"GET /cb?code={M} HTTP/1.1"),
        ('1.2.3.4 - "WebSocket /ws?t=1" [accepted]', '1.2.3.4 - "WebSocket /ws" [accepted]',
         f'1.2.3.4 - "WebSocket /ws?t={M}" [accepted]'),
        ('"GET http://h/p?a=1&b HTTP/1.1" "(http://r/x?y=2)"', '"GET http://h/p HTTP/1.1" "(http://r/x)"',
         f'"GET http://h/p?a={M}&{M} HTTP/1.1" "(http://r/x?y={M})"'),
        ("no query? none here", "no query? none here", "no query? none here"),
    ],
)  # fmt: skip
def test_text_loses_the_query_string_of_every_path_and_url(
    text: str, omitted: str, redacted: str
) -> None:
    assert clean_text(text, None) == omitted
    assert clean_text(text, M) == redacted


def test_a_query_string_of_closing_brackets_is_cleaned_in_one_pass() -> None:
    # (no backtracking over the query: this would take minutes if there were)
    line = "GET /a?b=" + ")" * 200_000 + " HTTP/1.1"
    assert clean_text(line, None) == "GET /a" + ")" * 200_000 + " HTTP/1.1"


def test_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    assert RequestSettings().query == "omit"
    monkeypatch.setenv("FAPILOG_REQUEST__QUERY", " Redacted ")
    assert LoggingSettings().request.query == "redacted"
    monkeypatch.setenv("FAPILOG_REQUEST__QUERY", "keep")
    with pytest.raises(ConfigurationError, match="FAPILOG_REQUEST__QUERY"):
        LoggingSettings()


# -- every server's record shape, through the real pipeline ----------------------------------


def _log_like_servers(values: dict[str, str]) -> None:
    """One record per server, shaped as each server makes it (their own atom classes)."""
    query = query_of(values)
    referer = f"https://idp.example/authorize?{query}"
    logging.getLogger("uvicorn.access").info(
        '%s - "%s %s HTTP/%s" %d', "127.0.0.1:5000", "GET", f"/cb?{query}", "1.1", 200
    )
    logging.getLogger("uvicorn.error").info(
        '%s - "WebSocket %s" [accepted]', "127.0.0.1:5000", f"/ws?{query}"
    )
    gunicorn_atoms = SafeAtoms({
        "r": f"GET /cb?{query} HTTP/1.1", "s": 200, "U": "/cb", "q": query, "f": referer,
        "{referer}i": referer, "{raw_uri}e": f"/cb?{query}", "{query_string}e": query,
        "{http_referer}e": referer,
    })  # fmt: skip
    logging.getLogger("gunicorn.access").info(
        '"%(r)s" %(s)s q=%(q)s "%(f)s" %({referer}i)s %({raw_uri}e)s %({query_string}e)s '
        "%({http_referer}e)s",
        gunicorn_atoms,
    )
    scope = {"type": "http", "http_version": "1.1", "method": "GET", "scheme": "http",
             "path": "/cb", "query_string": query.encode(), "client": ("127.0.0.1", 5000),
             "headers": [(b"referer", referer.encode())]}  # fmt: skip
    hypercorn_atoms = AccessLogAtoms(scope, {"status": 200, "headers": []}, 0.01)  # type: ignore[arg-type]
    logging.getLogger("hypercorn.access").info(
        '"%(r)s" "%(R)s" %(s)s %(U)s %(Uq)s q=%(q)s "%(f)s" %({referer}i)s', hypercorn_atoms
    )
    granian_args = {"addr": "127.0.0.1", "method": "GET", "path": "/cb", "query_string": query,
                    "protocol": "HTTP/1.1", "status": 200, "_h0": referer}  # fmt: skip
    logging.getLogger("granian.access").info(
        '"%(method)s %(path)s?%(query_string)s %(protocol)s" %(status)d %(_h0)s', granian_args
    )


# {t}: what follows a target ("" or "?" and the redacted query); {q}: a bare query string
EXPECTED = {
    "uvicorn.access": '127.0.0.1:5000 - "GET /cb{t} HTTP/1.1" 200',
    "uvicorn.error": '127.0.0.1:5000 - "WebSocket /ws{t}" [accepted]',
    "gunicorn.access": '"GET /cb{t} HTTP/1.1" 200 q={q} "https://idp.example/authorize{t}" '
    "https://idp.example/authorize{t} /cb{t} {q} https://idp.example/authorize{t}",
    "hypercorn.access": '"GET /cb 1.1" "GET /cb{t} 1.1" 200 /cb /cb{t} q={q} '
    '"https://idp.example/authorize{t}" https://idp.example/authorize{t}',
    "granian.access": '"GET /cb?{q} HTTP/1.1" 200 https://idp.example/authorize{t}',
}


@pytest.mark.parametrize("mode", ["omit", "redacted"])
def test_every_servers_access_record_is_cleaned_before_any_handler(
    memory_exporter: MemoryExporter, mode: str, tmp_path: Path
) -> None:
    values = secret_values()
    configure_logging(exporters=[memory_exporter.name], request={"query": mode})
    # a handler of the application's own, beside fapilog's, sees the cleaned records too
    own = logging.FileHandler(tmp_path / "own.log")
    logging.getLogger().addHandler(own)
    try:
        _log_like_servers(values)
    finally:
        logging.getLogger().removeHandler(own)
        own.close()
    lines = {
        record.instrumentation_scope.name: record.log_record.body
        for record in memory_exporter.records()
        if record.instrumentation_scope.name in CLEANED_LOGGERS
    }
    redacted = mode == "redacted"
    t, q = (f"?{REDACTED_QUERY}", REDACTED_QUERY) if redacted else ("", "")
    assert lines == {name: line.format(t=t, q=q) for name, line in EXPECTED.items()}
    assert leaks(repr(lines) + (tmp_path / "own.log").read_text(), values) == []


def test_a_custom_marker_and_a_reconfiguration_apply_to_the_next_record(
    memory_exporter: MemoryExporter,
) -> None:
    access = logging.getLogger("uvicorn.access")
    fmt = '%s - "%s %s HTTP/%s" %d'
    configure_logging(exporters=[memory_exporter.name], request={"query": "redacted"},
                      redaction={"marker": "<hidden>"})  # fmt: skip
    access.info(fmt, "c", "GET", "/cb?code=1", "1.1", 200)
    configure_logging(exporters=[memory_exporter.name])
    access.info(fmt, "c", "GET", "/cb?code=1", "1.1", 200)
    bodies = [
        r.log_record.body
        for r in memory_exporter.records()
        if r.instrumentation_scope.name == "uvicorn.access"
    ]
    assert bodies == ['c - "GET /cb?code=<hidden> HTTP/1.1" 200', 'c - "GET /cb HTTP/1.1" 200']


def test_the_filter_is_on_the_routed_server_loggers_only_while_fapilog_routes_them() -> None:
    configure_logging()
    assert all(ACCESS_FILTER in logging.getLogger(name).filters for name in CLEANED_LOGGERS)
    configure_logging(capture_stdlib=False)
    assert not any(ACCESS_FILTER in logging.getLogger(name).filters for name in CLEANED_LOGGERS)


def test_a_preformatted_access_message_is_cleaned_too(memory_exporter: MemoryExporter) -> None:
    configure_logging(exporters=[memory_exporter.name])
    logging.getLogger("granian.access").info('"GET /cb?code=zz1 HTTP/1.1" 200')
    (body,) = [
        r.log_record.body
        for r in memory_exporter.records()
        if r.instrumentation_scope.name == "granian.access"
    ]
    assert body == '"GET /cb HTTP/1.1" 200'


# -- fapilog's own request event and spans, in process ----------------------------------------


def _redirecting_app() -> FastAPI:
    app = FastAPI()

    @app.get("/cb")
    async def callback(request: Request) -> dict[str, int]:
        return {"params": len(request.query_params)}

    @app.get("/login")
    async def login(request: Request) -> RedirectResponse:
        return RedirectResponse(f"https://app.example/cb?{request.url.query}")

    return app


@pytest.mark.parametrize("mode", ["omit", "redacted"])
def test_request_event_spans_and_url_headers_carry_no_query_values(
    spans: InMemorySpanExporter, tracing_mode: str, mode: str
) -> None:
    values = secret_values()
    query = query_of(values)
    app = _redirecting_app()
    configure_logging(app=app, request={"headers": ["referer", "location"], "query": mode})
    referer = f"https://idp.example/authorize?{query}"
    with capture_logs() as logs:
        assert get(app, f"/cb?{query}", headers={"Referer": referer}).status_code == 200
        assert get(app, f"/login?{query}").status_code == 307
    callback, login = requests_of(logs)
    suffix = f"?{REDACTED_QUERY}" if mode == "redacted" else ""
    assert callback["url.path"] == "/cb"
    assert callback["http.request.header.referer"] == [f"https://idp.example/authorize{suffix}"]
    assert login["http.response.header.location"] == [f"https://app.example/cb{suffix}"]
    (span, _) = server_spans(spans)
    attributes = dict(span.attributes or {})
    assert attributes.get("url.path", attributes.get("http.target")) == "/cb"
    assert attributes.get("url.query", "") in ("", REDACTED_QUERY)
    if "http.url" in attributes:  # the instrumentation's (older conventions)
        assert attributes["http.url"].endswith(f"/cb{suffix}")
    # (the test client's own httpx lines aside: they show the URL it requested)
    assert leaks(repr(app_lines(logs)) + repr(attributes), values) == []


def test_the_instrumentation_span_under_the_new_http_conventions(
    spans: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    # (the instrumentation reads OTEL_SEMCONV_STABILITY_OPT_IN once per process: read again)
    monkeypatch.setenv("OTEL_SEMCONV_STABILITY_OPT_IN", "http")
    monkeypatch.setattr(_semconv._OpenTelemetrySemanticConventionStability, "_initialized", False)
    values = secret_values()
    app = _redirecting_app()
    configure_logging(app=app, request={"tracing": "instrumentation", "query": "redacted"})
    try:
        get(app, f"/cb?{query_of(values)}")
    finally:
        monkeypatch.delenv("OTEL_SEMCONV_STABILITY_OPT_IN")
        _semconv._OpenTelemetrySemanticConventionStability._initialized = False
    (span,) = server_spans(spans)
    attributes = dict(span.attributes or {})
    assert attributes["url.path"] == "/cb" and attributes["url.query"] == REDACTED_QUERY
    assert leaks(repr(attributes), values) == []


# -- a real uvicorn, every sink --------------------------------------------------------------

UVICORN_APP = """
from fastapi import FastAPI, Request, WebSocket

import fapilog

app = FastAPI()
fapilog.configure_logging(app=app)
log = fapilog.get_logger("app")


@app.get("/cb")
async def callback(request: Request) -> dict[str, int]:
    log.info("callback", params=len(request.query_params))
    return {"params": len(request.query_params)}


@app.websocket("/ws")
async def socket(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.close()
"""


@pytest.fixture
def sinks() -> Iterator[tuple[LokiReceiver, OtlpReceiver]]:
    with LokiReceiver() as loki, OtlpReceiver() as otlp:
        yield loki, otlp


# the server closes each connection: none is left idle to hold its graceful shutdown
CLOSE = {"Connection": "close"}


def _wait_until_serving(process: subprocess.Popen[bytes], port: int, err: Path) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            # (a long timeout: a connection the server accepted before its worker was up
            # is answered, not left behind, where it would hold the server's shutdown)
            httpx.get(f"http://127.0.0.1:{port}/ready", headers=CLOSE, timeout=30)
            return
        except httpx.HTTPError:
            assert process.poll() is None, err.read_text()[-3000:]
            assert time.monotonic() < deadline, "the server never answered"
            time.sleep(0.1)


def _websocket_handshake(port: int, path: str) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        return conn.recv(4096)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["omit", "redacted"])
def test_uvicorn_every_sink_shows_the_access_line_and_no_query_value(
    subprocess_env: dict[str, str],
    tmp_path: Path,
    sinks: tuple[LokiReceiver, OtlpReceiver],
    mode: str,
) -> None:
    loki, otlp = sinks
    values = secret_values()
    query = query_of(values)
    (tmp_path / "qs_app.py").write_text(UVICORN_APP)
    port = free_port()
    out, err, file = tmp_path / "stdout", tmp_path / "stderr", tmp_path / "app.log"
    env = {
        **subprocess_env,
        "PYTHONPATH": os.pathsep.join([str(tmp_path), subprocess_env["PYTHONPATH"]]),
        "FAPILOG_EXPORTERS": "stdout,file,loki,otlp",
        "FAPILOG_FILE__PATH": str(file),
        "FAPILOG_LOKI__URL": loki.url,
        "FAPILOG_OTLP__ENDPOINT": otlp.grpc_endpoint,
        "FAPILOG_OTLP__PROTOCOL": "grpc",
        "FAPILOG_OTLP__TRACES": "true",
        "FAPILOG_REQUEST__HEADERS": "referer",
        "FAPILOG_REQUEST__QUERY": mode,
    }
    command = [sys.executable, "-m", "uvicorn", "qs_app:app", "--host", "127.0.0.1",
               "--port", str(port), "--ws", "wsproto"]  # fmt: skip
    with out.open("wb") as stdout, err.open("wb") as stderr:
        process = subprocess.Popen(command, env=env, cwd=tmp_path, stdout=stdout, stderr=stderr)
    try:
        _wait_until_serving(process, port, err)
        referer = f"https://idp.example/authorize?{query}"
        response = httpx.get(
            f"http://127.0.0.1:{port}/cb?{query}", headers={"Referer": referer, **CLOSE}, timeout=10
        )
        assert response.json() == {"params": 3}
        assert _websocket_handshake(port, f"/ws?{query}").startswith(b"HTTP/1.1 101")
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    suffix = f"?{REDACTED_QUERY}" if mode == "redacted" else ""
    access_line = f'"GET /cb{suffix} HTTP/1.1" 200'
    socket_line = f'"WebSocket /ws{suffix}" [accepted]'

    stdout_lines = [json.loads(line) for line in out.read_text().splitlines()]
    file_lines = [json.loads(line) for line in file.read_text().splitlines()]
    spans = otlp.wait_for_spans(lambda got: any(s.name == "GET /cb" for s in got), timeout=15)
    logs = otlp.wait_for_logs(
        lambda got: any(access_line in str(entry.body) for entry in got), timeout=15
    )
    loki_entries = loki.entries()
    for lines in (stdout_lines, file_lines, [entry.json() for entry in loki_entries]):
        access = [e for e in lines if e["logger"] == "uvicorn.access" and "/cb" in e["message"]]
        assert [e["message"].split(" - ", 1)[1] for e in access] == [access_line]
        assert any(
            e["message"].endswith(socket_line) for e in lines if e["logger"] == "uvicorn.error"
        )
        (event,) = [e for e in lines if e["logger"] == "fapilog.request" and e["url.path"] == "/cb"]
        assert event["http.request.header.referer"] == [f"https://idp.example/authorize{suffix}"]
    assert any(access_line in str(entry.body) for entry in logs)
    (span,) = [s for s in spans if s.name == "GET /cb"]
    assert span.attributes["url.path"] == "/cb" and "url.query" not in span.attributes

    everything = "\n".join([
        out.read_text(), err.read_text(), file.read_text(),
        json.dumps([(e.line, e.metadata) for e in loki_entries]), repr(logs), repr(spans),
    ])  # fmt: skip
    assert leaks(everything, values) == []


# -- gunicorn, hypercorn, granian ------------------------------------------------------------

# formats that print every atom carrying the query string (or the Referer)
OTHER_SERVERS = {
    "gunicorn": [],  # uvicorn workers: uvicorn's access line, through gunicorn's access log
    "gunicorn-asgi": ["--access-logformat",
                      '"%(r)s" %(s)s q=%(q)s "%(f)s" %({raw_uri}e)s %({query_string}e)s'],
    "hypercorn": ["--access-logfile", "-", "--access-logformat",
                  '"%(r)s" "%(R)s" %(s)s %(Uq)s q=%(q)s "%(f)s"'],
    "granian": ["--access-log", "--access-log-fmt",
                '"%(method)s %(path)s?%(query_string)s" %(status)d %(header{referer})s'],
}  # fmt: skip
EXPECTED_LINE = {
    "gunicorn": '"GET /work/1 HTTP/1.1" 200',
    "gunicorn-asgi": '"GET /work/1 HTTP/1.1" 200 q= "https://idp.example/a" /work/1 ',
    "hypercorn": '"GET /work/1 1.1" "GET /work/1 1.1" 200 /work/1 q= "https://idp.example/a"',
    "granian": '"GET /work/1?" 200 https://idp.example/a',
}


def _other_server_command(server: str, port: int) -> list[str]:
    """tests/test_servers.py's command for `server`, with one worker (a worker still booting
    when SIGTERM arrives can hold the server's exit until its graceful timeout) and the
    access log on, in the format above."""
    command = _server_command(server.removesuffix("-asgi"), port, graceful=5)
    command[command.index("-w" if server.startswith("gunicorn") else "--workers") + 1] = "1"
    if server == "gunicorn-asgi":
        command[command.index("uvicorn_worker.UvicornWorker")] = "asgi"
    if server.startswith("gunicorn"):
        command += ["--access-logfile", "-"]
    if server == "granian":  # its options before the application
        return [*command[:-1], *OTHER_SERVERS[server], command[-1]]
    return [*command, *OTHER_SERVERS[server]]


@pytest.mark.slow
@pytest.mark.parametrize("server", list(OTHER_SERVERS))
def test_other_servers_access_lines_on_stdout_show_no_query_value(
    server: str, subprocess_env: dict[str, str], tmp_path: Path
) -> None:
    values = secret_values()
    query = query_of(values)
    port = free_port()
    out, err = tmp_path / "stdout", tmp_path / "stderr"
    env = {
        **subprocess_env,
        "FAPILOG_EXPORTERS": "stdout",
        "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent / "peers"),
                                       subprocess_env["PYTHONPATH"]]),
    }  # fmt: skip
    with out.open("wb") as stdout, err.open("wb") as stderr:
        process = subprocess.Popen(
            _other_server_command(server, port),
            env=env,
            cwd=tmp_path,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,
        )
    try:
        _wait_until_serving(process, port, err)
        response = httpx.get(
            f"http://127.0.0.1:{port}/work/1?{query}",
            headers={"Referer": f"https://idp.example/a?{query}", **CLOSE},
            timeout=10,
        )
        assert response.status_code == 200
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    text = out.read_text()
    lines = [
        line for line in text.splitlines() if "/work/1" in line and "fapilog.request" not in line
    ]
    assert len(lines) == 1, (text, err.read_text()[-2000:])
    (line,) = lines
    message = json.loads(line)["message"] if line.startswith("{") else line
    assert EXPECTED_LINE[server] in message, message
    assert leaks(text + err.read_text(), values) == []
