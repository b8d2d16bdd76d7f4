"""What the Loki exporter sends for one record: its stream's labels (with the cardinality
guard), its line and its structured metadata, and the bytes they count against a batch.
Exact values, in-process (the receiver-side view is in test_loki_exporter.py)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, set_span_in_context

from fapilog.exporters import ReadableLogRecord, loki_streams
from fapilog.exporters.loki_streams import OTHER, RESOURCE_FALLBACK, LabelGuard, LokiLines
from fapilog.otel.logs import SeverityNumber, make_record
from fapilog.settings import LokiSettings
from queue_support import Listened

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN_ID = "00f067aa0ba902b7"
TRACE_BYTES = len("trace_id") + 32 + len("span_id") + 16
RESOURCE = Resource(
    {
        "service.name": "api",
        "host.name": "h1",
        "deployment.environment.name": "prod",
        "k8s.pod": "p",
    }
)


def traced() -> Context:
    return set_span_in_context(
        NonRecordingSpan(
            SpanContext(
                trace_id=int(TRACE_ID, 16),
                span_id=int(SPAN_ID, 16),
                is_remote=False,
                trace_flags=TraceFlags(1),
            )
        )
    )


def record(
    attributes: dict[str, Any] | None = None,
    *,
    resource: Any = RESOURCE,
    scope: str | None = "app.db",
    context: Context | None = None,
    severity: SeverityNumber = SeverityNumber.WARN,
) -> ReadableLogRecord:
    return ReadableLogRecord(
        log_record=make_record(
            timestamp=1_000,
            severity_number=severity,
            severity_text=severity.name,
            body="hi",
            attributes=attributes or {},
            context=context,
        ),
        resource=resource,
        instrumentation_scope=InstrumentationScope(scope) if scope is not None else None,
    )


def lines(**settings: Any) -> LokiLines:
    return LokiLines(LokiSettings(**{"url": "http://127.0.0.1:1", **settings}))


# -- the cardinality guard ----------------------------------------------------------------


def test_the_guard_takes_cap_minus_one_values_and_folds_the_rest_into_other(
    listened: Listened,
) -> None:
    guard = LabelGuard(cap=3, window=600)
    assert [guard.admit("tenant", v, 0.0) for v in ("a", "b", "c", "a", "d")] == [
        "a",
        "b",
        OTHER,
        "a",
        OTHER,
    ]
    assert guard.folded == {"tenant": 2}
    message, _ = listened.wait_for("loki-label-folded:tenant")
    assert message == (
        "fapilog loki exporter: label 'tenant' took more than 2 distinct values within "
        "600 s; the others are sent as '__other__' (FAPILOG_LOKI__LABEL_VALUES_MAX, "
        "FAPILOG_LOKI__LABEL_VALUES_WINDOW)"
    )
    assert [r[0] for r in listened.reports].count("loki-label-folded:tenant") == 1


def test_each_label_has_its_own_cap() -> None:
    guard = LabelGuard(cap=2, window=600)
    assert guard.admit("a", "x", 0.0) == "x"
    assert guard.admit("b", "y", 0.0) == "y"
    assert guard.admit("a", "z", 0.0) == OTHER
    assert guard.folded == {"a": 1}


def test_a_value_unseen_for_the_window_makes_room_and_a_seen_one_is_renewed() -> None:
    guard = LabelGuard(cap=3, window=10.5)
    guard.admit("t", "a", 0.0)
    guard.admit("t", "b", 5.0)
    assert guard.admit("t", "c", 10.0) == OTHER
    assert guard.admit("t", "a", 10.5) == "a"  # renewed: now the newest
    assert guard.admit("t", "c", 15.6) == "c"  # b (5.0) is past 15.6 - 10.5; a is not
    assert guard.admit("t", "d", 15.6) == OTHER
    assert guard.admit("t", "d", 21.0) == OTHER  # a (10.5) is at the horizon: kept
    assert guard.admit("t", "d", 21.1) == "d"


def test_a_value_exactly_at_the_horizon_is_still_remembered() -> None:
    guard = LabelGuard(cap=2, window=10.0)
    guard.admit("t", "a", 0.0)
    assert guard.admit("t", "b", 10.0) == OTHER  # a at 0.0 == horizon: kept
    assert guard.admit("t", "b", 10.001) == "b"


def test_a_cap_of_zero_lets_every_value_through() -> None:
    guard = LabelGuard(cap=0, window=1)
    assert [guard.admit("t", str(n), 0.0) for n in range(500)] == [str(n) for n in range(500)]
    assert guard.folded == {}


# -- labels --------------------------------------------------------------------------------


def test_labels_come_from_the_resource_the_level_the_logger_and_attributes() -> None:
    made = lines(labels=["service_name", "env", "level", "logger", "tenant"])
    key = made.key(record({"tenant": 't"1', "env": "ignored"}), 0.0)
    assert key == (
        ("env", "prod"),
        ("level", "warning"),
        ("logger", "app.db"),
        ("service_name", "api"),
        ("tenant", "t_1"),
    )


def test_static_labels_are_added_cleaned_and_are_the_fallback() -> None:
    made = lines(labels=["tenant"], static_labels={"cluster": "eu\n1", "zone": "a"})
    assert made.key(record({"tenant": "x"}), 0.0) == (
        ("cluster", "eu_1"),
        ("tenant", "x"),
        ("zone", "a"),
    )
    assert made.key(record(), 0.0) == (("cluster", "eu_1"), ("zone", "a"))
    assert made.fallback_key() == (("cluster", "eu_1"), ("zone", "a"))
    assert lines(labels=["tenant"]).fallback_key() == RESOURCE_FALLBACK


def test_a_record_without_any_label_value_gets_the_fallback_stream() -> None:
    made = lines(labels=["tenant", "logger"])
    assert made.key(record(scope=None), 0.0) == RESOURCE_FALLBACK
    assert RESOURCE_FALLBACK == (("service_name", "unknown_service"),)


def test_an_attribute_label_goes_through_the_guard_a_resource_one_does_not() -> None:
    made = lines(labels=["service_name", "tenant"], label_values_max=2)
    assert made.key(record({"tenant": "a"}), 0.0) == (("service_name", "api"), ("tenant", "a"))
    assert made.key(record({"tenant": "b"}), 0.0) == (("service_name", "api"), ("tenant", OTHER))
    for name in ("x", "y", "z"):
        other = Resource({"service.name": name})
        assert made.key(record(resource=other), 0.0) == (("service_name", name),)
    assert made.guard.folded == {"tenant": 1}


def test_an_attribute_value_with_no_text_gives_no_label() -> None:
    class NoText:
        def __str__(self) -> str:
            raise RuntimeError("no text")

    made = lines(labels=["tenant", "level"])
    assert made.key(record({"tenant": NoText()}), 0.0) == (("level", "warning"),)


def test_the_resource_placement_is_remembered_per_resource_object() -> None:
    made = lines(labels=["service_name"])
    assert made.key(record(), 0.0) == (("service_name", "api"),)
    assert made.key(record(resource=Resource({"service.name": "b"})), 0.0) == (
        ("service_name", "b"),
    )
    assert made.key(record(), 0.0) == (("service_name", "api"),)


# -- line and metadata ---------------------------------------------------------------------


def entry(made: LokiLines, readable: ReadableLogRecord, metadata_on: bool) -> Any:
    key = made.key(readable, 0.0)
    line, metadata, size = made.entry(readable, key, metadata_on)
    return orjson.loads(line), metadata, size, len(line)


def test_with_metadata_the_ids_and_unlabelled_resource_go_to_metadata_not_the_line() -> None:
    made = lines(labels=["service_name", "env", "level", "logger", "tenant"])
    line, metadata, size, length = entry(
        made, record({"tenant": "t1", "user": "bob", "env": "x"}, context=traced()), True
    )
    assert line == {
        "timestamp": "1970-01-01T00:00:00.000001Z",
        "message": "hi",
        "trace.sampled": True,
        "user": "bob",
        "attr.env": "x",  # the label `env` holds another value (the resource's)
    }
    assert metadata == {
        "host_name": "h1",
        "k8s_pod": "p",
        "trace_id": TRACE_ID,
        "span_id": SPAN_ID,
    }
    resource_bytes = len("host_name") + 2 + len("k8s_pod") + 1
    assert size == resource_bytes + TRACE_BYTES + length


def test_without_metadata_the_line_carries_the_ids_and_the_resource() -> None:
    made = lines(labels=["service_name", "level"])
    line, metadata, size, length = entry(made, record({"user": "bob"}, context=traced()), False)
    assert metadata is None
    assert size == length
    assert line == {
        "timestamp": "1970-01-01T00:00:00.000001Z",
        "message": "hi",
        "logger": "app.db",
        "trace_id": TRACE_ID,
        "span_id": SPAN_ID,
        "trace.sampled": True,
        "user": "bob",
        "host.name": "h1",
        "deployment.environment.name": "prod",
        "k8s.pod": "p",
    }


def test_a_record_without_a_trace_has_only_the_resource_metadata() -> None:
    made = lines(labels=["service_name"])
    _, metadata, size, length = entry(made, record(), True)
    assert metadata == {"host_name": "h1", "deployment_environment_name": "prod", "k8s_pod": "p"}
    assert size == sum(len(k) + len(v) for k, v in metadata.items()) + length


def test_no_metadata_at_all_is_none_not_an_empty_dict() -> None:
    made = lines(labels=["service_name"])
    _, metadata, size, length = entry(made, record(resource=Resource({"service.name": "a"})), True)
    assert metadata is None
    assert size == length


def test_with_resource_in_line_the_resource_stays_in_the_line_and_only_ids_are_metadata() -> None:
    made = lines(labels=["service_name", "level"], resource_in_line=True)
    line, metadata, size, length = entry(made, record({"level": "x"}, context=traced()), True)
    assert metadata == {"trace_id": TRACE_ID, "span_id": SPAN_ID}
    assert size == TRACE_BYTES + length
    assert line["service.name"] == "api"
    assert line["host.name"] == "h1"
    assert line["attr.level"] == "x"
    assert "level" not in line


def test_a_clashing_key_whose_value_the_label_holds_is_left_out() -> None:
    made = lines(labels=["tenant", "code=http.status"])
    line, *_ = entry(made, record({"tenant": "a", "http.status": 200, "code": 200}), True)
    assert "tenant" not in line and "attr.tenant" not in line
    assert "code" not in line and "attr.code" not in line  # 200 as a label is "200"
    assert line["http.status"] == 200  # its name is http_status: no label of that name


def test_a_clashing_text_the_label_holds_only_cleaned_is_kept_renamed() -> None:
    made = lines(labels=["tenant"])
    line, *_ = entry(made, record({"tenant": 'a"b'}), True)  # the label holds a_b
    assert made.key(record({"tenant": 'a"b'}), 0.0) == (("tenant", "a_b"),)
    assert line["attr.tenant"] == 'a"b'
    assert "tenant" not in line


def test_a_clashing_key_with_no_text_is_kept_renamed() -> None:
    class NoText:
        def __str__(self) -> str:
            raise RuntimeError("no text")

        def __repr__(self) -> str:
            return "NoText()"

    made = lines(labels=["tenant", "level"])
    line, *_ = entry(made, record({"level": NoText()}), True)
    assert "attr.level" in line
    assert "level" not in line
    line, *_ = entry(made, record({"host_name": NoText()}), True)  # against the metadata
    assert "attr.host_name" in line
    assert "host_name" not in line


def test_a_metadata_name_clash_is_resolved_against_the_metadata_value() -> None:
    made = lines(labels=["service_name"])
    line, metadata, *_ = entry(made, record({"host_name": "h1", "k8s_pod": "other"}), True)
    assert metadata is not None and metadata["host_name"] == "h1"
    assert "host_name" not in line and "attr.host_name" not in line
    assert line["attr.k8s_pod"] == "other"


def test_at_most_64_resource_attributes_become_metadata_the_rest_stay_in_the_line() -> None:
    resource = Resource({"service.name": "api", **{f"r{n:03}": str(n) for n in range(70)}})
    made = lines(labels=["service_name"])
    line, metadata, *_ = entry(made, record(resource=resource), True)
    assert metadata is not None and len(metadata) == 64
    assert sorted(k for k in line if k.startswith("r")) == [f"r{n:03}" for n in range(64, 70)]


def test_resource_attributes_whose_names_clean_alike_keep_the_second_in_the_line() -> None:
    resource = Resource({"service.name": "api", "a.b": "1", "a_b": "2"})
    line, metadata, *_ = entry(lines(labels=["service_name"]), record(resource=resource), True)
    assert metadata == {"a_b": "1"}
    assert line["attr.a_b"] == "2"


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("s", "s"),
        (True, "true"),
        (False, "false"),
        (3, "3"),
        (2.5, "2.5"),
        (("x", 1), '["x",1]'),
    ],
)
def test_resource_metadata_values_are_text(value: Any, text: str) -> None:
    resource = Resource({"service.name": "api", "v": value})
    _, metadata, size, length = entry(
        lines(labels=["service_name"]), record(resource=resource), True
    )
    assert metadata == {"v": text}
    assert size == 1 + len(text) + length


def test_a_metadata_value_json_cannot_hold_is_its_str_else_json() -> None:
    class Odd:
        def __str__(self) -> str:
            return "odd"

    assert loki_streams._metadata_text(Odd()) == '"odd"'  # JSON, through its str
    assert loki_streams._metadata_text([1, Odd()]) == '[1,"odd"]'
    assert loki_streams._metadata_text({1: 2}) == "{1: 2}"  # orjson refuses int keys


def test_the_key_name_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loki_streams, "_NAME_CACHE_SIZE", 2)
    made = lines(labels=["tenant"])
    for n in range(5):
        line, *_ = entry(made, record({f"k{n}": 1, "tenant": "b"}), True)
        assert line[f"k{n}"] == 1 and "tenant" not in line
    assert len(made._names) <= 2


def test_the_first_folded_value_is_reported_at_once_as_a_warning(
    listened: Listened, capfd: pytest.CaptureFixture[str]
) -> None:
    guard = LabelGuard(cap=2, window=600)
    assert [guard.admit("zone-once", v, 0.0) for v in ("a", "b")] == ["a", OTHER]
    assert [r[0] for r in listened.reports] == ["loki-label-folded:zone-once"]
    written = [
        orjson.loads(line) for line in capfd.readouterr().err.splitlines() if "zone-once" in line
    ]
    assert [(w["fapilog.diagnostic"], w["level"]) for w in written] == [
        ("loki-label-folded:zone-once", "warning")
    ]


def test_with_resource_in_line_a_key_clashing_with_the_trace_metadata_is_renamed() -> None:
    made = lines(labels=["service_name"], resource_in_line=True)
    line, metadata, *_ = entry(
        made, record({"trace.id": "not the trace", "span.id": SPAN_ID}, context=traced()), True
    )
    assert metadata == {"trace_id": TRACE_ID, "span_id": SPAN_ID}
    assert line["attr.trace.id"] == "not the trace"
    assert "trace.id" not in line and "span.id" not in line and "attr.span.id" not in line


def test_a_record_without_a_resource_has_the_fallback_stream_and_its_line() -> None:
    made = lines(labels=["service_name", "level"])
    readable = record(resource=None)
    assert made.key(readable, 0.0) == (("level", "warning"),)
    line, metadata, *_ = entry(made, readable, True)
    assert metadata is None and line["message"] == "hi"
    assert lines(labels=["service_name"]).key(readable, 0.0) == RESOURCE_FALLBACK
