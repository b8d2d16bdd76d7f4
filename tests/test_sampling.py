"""Outcome-aware sampling (docs/sampling.md): the request events of successful fast
requests sampled, every 4xx/5xx/slow event kept; records of unsampled traces dropped
with ``follow_trace_sampling`` unless the request goes badly; ``trace.sampled`` on every
line inside a trace and on no other."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import fapilog
from fapilog import configure_logging, get_logger
from sampling_support import lines, make_app, requests_in, serve, steps_in

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
UNSAMPLED = {"traceparent": f"00-{TRACE_ID}-00f067aa0ba902b7-00"}
SAMPLED = {"traceparent": f"00-{TRACE_ID}-00f067aa0ba902b7-01"}
SCHEMA = Path(__file__).resolve().parents[1] / "docs" / "json-line.schema.json"


def configured(tmp_path: Path, **request: Any) -> tuple[Any, Path]:
    path = tmp_path / "app.log"
    app = make_app(steps=1)
    configure_logging(app=app, exporters=["file"], file={"path": str(path)}, request=request)
    return app, path


def test_a_sample_rate_keeps_that_fraction_of_successful_events_and_every_error(
    tmp_path: Path,
) -> None:
    import random

    random.seed(20261202)  # (the rate's draws: the same on every run)
    # (no slow threshold: a loaded machine may take over a second for some of them)
    app, path = configured(tmp_path, event_sample_rate=0.1, buffer={"slow_ms": None})
    paths = [f"/ok?tag={n}" for n in range(1000)]
    paths += [f"/missing?tag={n}" for n in range(50)] + [f"/fail?tag={n}" for n in range(50)]
    serve(app, paths, concurrency=50)
    events = requests_in(lines(path))
    statuses = [event["http.response.status_code"] for event in events]
    assert 70 <= statuses.count(200) <= 130, statuses.count(200)
    assert statuses.count(404) == 50 and statuses.count(500) == 50
    assert fapilog.stats()["sampled_out"] == 1000 - statuses.count(200)


def test_sampling_never_drops_what_the_application_logs(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    app = make_app(steps=1)
    configure_logging(
        app=app,
        level="DEBUG",
        exporters=["file"],
        file={"path": str(path)},
        request={"event_sample_rate": 0.0, "buffer": {"slow_ms": None}},
    )
    serve(app, [f"/ok?tag={n}" for n in range(100)], concurrency=20)
    found = lines(path)
    assert len(steps_in(found)) == 100
    assert requests_in(found) == []


def test_slow_requests_events_are_always_kept(tmp_path: Path) -> None:
    app, path = configured(tmp_path, event_sample_rate=0.0, buffer={"slow_ms": 50})
    serve(app, ["/slow?tag=a&ms=80", "/ok?tag=b"])
    (event,) = requests_in(lines(path))
    assert event["url.path"] == "/slow"


def test_following_trace_sampling_drops_an_unsampled_successful_requests_records(
    tmp_path: Path,
) -> None:
    path = tmp_path / "app.log"
    app = make_app(steps=1)
    configure_logging(
        app=app,
        level="DEBUG",
        exporters=["file"],
        file={"path": str(path)},
        request={"follow_trace_sampling": True},
    )
    serve(app, ["/ok?tag=unsampled"], headers=UNSAMPLED)
    serve(app, ["/ok?tag=sampled"], headers=SAMPLED)
    serve(app, ["/warn?tag=unsampled-warn"], headers=UNSAMPLED)
    serve(app, ["/fail?tag=unsampled-5xx"], headers=UNSAMPLED)
    found = [line for line in lines(path) if line["logger"] != "httpx"]
    tags = {line["tag"] for line in steps_in(found)}
    # the sampled trace's records, and everything of the unsampled ones that went badly
    assert tags == {"sampled", "unsampled-warn", "unsampled-5xx"}
    # the events of the same three: the unsampled successful one's is dropped too
    events = sorted(
        (e["trace.sampled"], e["http.response.status_code"], e["url.path"])
        for e in requests_in(found)
    )
    assert events == [(False, 200, "/warn"), (False, 500, "/fail"), (True, 200, "/ok")]
    assert [line["message"] for line in found if line["level"] == "warning"] == ["something odd"]


def test_following_trace_sampling_outside_a_request(tmp_path: Path) -> None:
    from opentelemetry import trace
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

    path = tmp_path / "app.log"
    configure_logging(
        exporters=["file"], file={"path": str(path)}, request={"follow_trace_sampling": True}
    )
    log = get_logger("worker")
    unsampled = NonRecordingSpan(
        SpanContext(int(TRACE_ID, 16), 0x1234, is_remote=False, trace_flags=TraceFlags(0))
    )
    with trace.use_span(unsampled):
        log.info("dropped")
        log.warning("kept")
    log.info("no trace")
    found = [line["message"] for line in lines(path)]
    assert found == ["kept", "no trace"]
    assert fapilog.stats()["sampled_out"] == 1


def test_trace_sampled_is_on_every_line_in_a_trace_and_on_no_other(tmp_path: Path) -> None:
    app, path = configured(tmp_path)
    serve(app, ["/warn?tag=a"])
    get_logger("app").info("outside")
    found = lines(path)
    inside = [line for line in found if "trace_id" in line]
    outside = [line for line in found if "trace_id" not in line]
    assert inside and outside
    assert all(line["trace.sampled"] is True for line in inside)
    assert all("trace.sampled" not in line for line in outside)
    schema = json.loads(SCHEMA.read_text())
    assert schema["properties"]["trace.sampled"]["type"] == "boolean"
    assert "trace.sampled" in schema["dependentRequired"]["trace_id"]
