"""What the `otlp` exporter reports of an export, given what its transport learnt from the
collector (the `Delivery` the SDK exporter's HTTP session or gRPC stub fills in): records
rejected in a partial success, records too large for the gRPC limit, parts delivered before
a failure, which records a later attempt may deliver, and the diagnostics, scrubbed of the
header secrets. The SDK exporter is stood in for by one that answers as the transport
would; test_otlp_delivery.py has the same against real collectors on 127.0.0.1."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from opentelemetry.sdk.resources import Resource

from fapilog.exporters import ReadableLogRecord
from fapilog.exporters.contract import LogRecordExporter, LogRecordExportResult
from fapilog.exporters.otlp import SPEC, OtlpLogExporter
from fapilog.otel.logs import SeverityNumber, make_record
from fapilog.otel.otlp_logs import Delivery
from fapilog.settings import LoggingSettings
from queue_support import Listened

SUCCESS, FAILURE = LogRecordExportResult.SUCCESS, LogRecordExportResult.FAILURE


class Transport(LogRecordExporter):
    """An SDK exporter whose next export fills the Delivery by `answer` and returns
    `result` (or raises it)."""

    def __init__(self, delivery: Delivery) -> None:
        self.delivery = delivery
        self.answer: Callable[[Delivery], None] = lambda d: None
        self.result: Any = SUCCESS
        self.exports = 0
        self.shutdowns = 0

    def export(self, batch: Sequence[Any]) -> LogRecordExportResult:
        self.exports += 1
        self.answer(self.delivery)
        if isinstance(self.result, BaseException):
            raise self.result
        return self.result  # type: ignore[no-any-return]

    def shutdown(self) -> None:
        self.shutdowns += 1

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return False


def batch(count: int) -> list[ReadableLogRecord]:
    return [
        ReadableLogRecord(
            log_record=make_record(
                timestamp=n,
                severity_number=SeverityNumber.INFO,
                severity_text="INFO",
                body=f"e{n}",
                attributes={},
                context=None,
            ),
            resource=Resource({"service.name": "api"}),
        )
        for n in range(count)
    ]


def exporter(secrets: Sequence[str] = ("tok123",)) -> tuple[OtlpLogExporter, Transport]:
    delivery = Delivery()
    delivery.attached = True
    inner = Transport(delivery)
    return OtlpLogExporter(inner, delivery, "grpc collector:4317", secrets), inner


def outcome(otlp: OtlpLogExporter) -> tuple[Any, Any, Any]:
    return otlp.last_export_dropped, otlp.last_export_reason, otlp.last_export_retry


def test_a_clean_success_reports_nothing_lost() -> None:
    otlp, _ = exporter()
    assert otlp.export(batch(3)) == SUCCESS
    assert outcome(otlp) == (None, None, None)
    assert otlp.spool_destination == "grpc collector:4317"


def test_records_rejected_in_a_partial_success_are_lost_and_said_scrubbed(
    listened: Listened,
) -> None:
    otlp, inner = exporter()

    def partial(delivery: Delivery) -> None:
        delivery.rejected = 2
        delivery.messages.append("bad records, key tok123")

    inner.answer = partial
    assert otlp.export(batch(5)) == FAILURE
    assert outcome(otlp) == (2, "rejected", None)
    message, _ = listened.wait_for("otlp-rejected")
    assert message == (
        "fapilog OTLP log exporter: the collector rejected 2 of 5 records: bad records, "
        "key **********"
    )


def test_a_rejection_without_a_message_says_so_without_one(listened: Listened) -> None:
    otlp, inner = exporter()
    inner.answer = lambda d: setattr(d, "rejected", 1)
    assert otlp.export(batch(4)) == FAILURE
    message, _ = listened.wait_for("otlp-rejected")
    assert message == "fapilog OTLP log exporter: the collector rejected 1 of 4 records"


def test_a_warning_without_rejections_is_said_and_the_export_succeeds(
    listened: Listened,
) -> None:
    otlp, inner = exporter()
    inner.answer = lambda d: d.messages.extend(["first", "last tok123"])
    assert otlp.export(batch(2)) == SUCCESS
    assert outcome(otlp) == (None, None, None)
    message, _ = listened.wait_for("otlp-warning")
    assert message == (
        "fapilog OTLP log exporter: the collector accepted the records with a warning: "
        "last **********"
    )
    assert [r[0] for r in listened.reports] == ["otlp-warning"]


def test_records_too_large_for_the_grpc_limit_are_lost_and_said(listened: Listened) -> None:
    otlp, inner = exporter()

    def too_large(delivery: Delivery) -> None:
        delivery.too_large = 1
        delivery.delivered = 2

    inner.answer = too_large
    assert otlp.export(batch(3)) == FAILURE
    assert outcome(otlp) == (1, "too_large", None)
    message, _ = listened.wait_for("otlp-too-large")
    assert message == (
        "fapilog OTLP log exporter dropped 1 records larger than the collector's message "
        "limit (4194304 bytes) on their own"
    )


def test_a_failure_after_some_parts_were_delivered_loses_only_the_rest_for_good() -> None:
    otlp, inner = exporter()

    def parts(delivery: Delivery) -> None:
        delivery.delivered = 2

    inner.answer = parts
    inner.result = FAILURE
    assert otlp.export(batch(5)) == FAILURE
    # which records were delivered is not known: none is retried
    assert outcome(otlp) == (3, "export_failed", [])


def test_a_failure_delivering_more_than_the_batch_loses_nothing_more() -> None:
    otlp, inner = exporter()
    inner.answer = lambda d: setattr(d, "delivered", 9)
    inner.result = FAILURE
    assert otlp.export(batch(5)) == FAILURE
    assert outcome(otlp) == (None, None, [])


def test_a_failure_with_nothing_delivered_may_be_retried_whole() -> None:
    otlp, inner = exporter()
    inner.result = FAILURE
    records = batch(4)
    assert otlp.export(records) == FAILURE
    assert outcome(otlp) == (4, "export_failed", records)


def test_a_failure_the_collector_refused_for_good_is_not_retried() -> None:
    otlp, inner = exporter()
    inner.answer = lambda d: setattr(d, "refused", True)
    inner.result = FAILURE
    assert otlp.export(batch(4)) == FAILURE
    assert outcome(otlp) == (4, "export_failed", [])


@pytest.mark.parametrize(
    ("rejected", "too_large", "reason"),
    [(3, 1, "rejected"), (1, 3, "too_large"), (2, 2, "too_large")],
)
def test_losses_for_several_reasons_count_under_the_largest_share(
    rejected: int, too_large: int, reason: str
) -> None:
    otlp, inner = exporter()

    def answer(delivery: Delivery) -> None:
        delivery.rejected = rejected
        delivery.too_large = too_large

    inner.answer = answer
    assert otlp.export(batch(10)) == FAILURE
    assert outcome(otlp)[:2] == (rejected + too_large, reason)


def test_losses_are_never_more_than_the_batch() -> None:
    otlp, inner = exporter()

    def answer(delivery: Delivery) -> None:
        delivery.rejected = 4
        delivery.too_large = 4

    inner.answer = answer
    assert otlp.export(batch(5)) == FAILURE
    assert outcome(otlp)[0] == 5


def test_each_export_starts_from_a_clean_delivery() -> None:
    otlp, inner = exporter()
    answer = ExportLogsServiceResponse()
    answer.partial_success.rejected_log_records = 2
    answer.partial_success.error_message = "two bad"
    inner.answer = lambda d: d.read_answer(answer)
    assert otlp.export(batch(5)) == FAILURE
    assert outcome(otlp) == (2, "rejected", None)
    inner.answer = lambda d: None
    assert otlp.export(batch(5)) == SUCCESS
    assert outcome(otlp) == (None, None, None)
    assert otlp.stats()["rejected_records"] == 2


def test_the_sdk_exporter_raising_is_a_failure_said_scrubbed(listened: Listened) -> None:
    otlp, inner = exporter()
    inner.result = RuntimeError("header tok123 refused")
    records = batch(2)
    assert otlp.export(records) == FAILURE
    assert outcome(otlp) == (2, "export_failed", records)
    message, _ = listened.wait_for("otlp:logs")
    assert message == "fapilog OTLP logs exporter raised: RuntimeError('header ********** refused')"


def test_without_a_delivery_the_sdk_result_is_passed_on_as_is() -> None:
    delivery = Delivery()  # not attached: the transport does not report to it
    inner = Transport(delivery)
    inner.answer = lambda d: setattr(d, "rejected", 3)
    otlp = OtlpLogExporter(inner, delivery)
    assert otlp.export(batch(5)) == SUCCESS
    assert outcome(otlp) == (None, None, None)
    assert otlp.stats() == {}
    inner.result = FAILURE
    assert otlp.export(batch(5)) == FAILURE
    assert outcome(otlp) == (None, None, None)
    assert OtlpLogExporter(inner).stats() == {}


def test_shutdown_and_abort_close_the_sdk_exporter_once_and_exports_then_fail() -> None:
    otlp, inner = exporter()
    otlp.shutdown()
    otlp.abort()
    assert inner.shutdowns == 1
    assert otlp.export(batch(1)) == FAILURE
    assert inner.exports == 0
    other, other_inner = exporter()
    other.abort()
    assert other_inner.shutdowns == 1
    assert other.force_flush() is True


def test_a_new_exporter_has_lost_nothing_and_no_destination_unless_given() -> None:
    otlp = OtlpLogExporter(Transport(Delivery()))
    assert outcome(otlp) == (None, None, None)
    assert otlp.spool_destination == ""


def test_a_collector_that_answered_is_not_given_up_at_exit() -> None:
    otlp, inner = exporter()
    assert otlp.export(batch(1)) == SUCCESS
    otlp._guard.on_exit()
    assert inner.shutdowns == 0
    inner.result = FAILURE
    assert otlp.export(batch(1)) == FAILURE
    otlp._guard.on_exit()  # failing at exit: its retries are cut short
    assert inner.shutdowns == 1


def test_without_a_delivery_a_raising_sdk_exporter_is_a_failure() -> None:
    inner = Transport(Delivery())
    inner.result = RuntimeError("down")
    assert OtlpLogExporter(inner).export(batch(1)) == FAILURE


def test_rejections_and_records_too_large_are_said_as_errors(
    capfd: pytest.CaptureFixture[str],
) -> None:
    otlp, inner = exporter()

    def answer(delivery: Delivery) -> None:
        delivery.rejected = 1
        delivery.too_large = 1

    inner.answer = answer
    otlp.export(batch(3))
    said = {
        line["fapilog.diagnostic"]: line["level"]
        for line in map(json.loads, capfd.readouterr().err.splitlines())
        if line.get("fapilog.diagnostic", "").startswith("otlp")
    }
    assert said == {"otlp-rejected": "error", "otlp-too-large": "error"}


def test_the_exporter_made_from_settings_scrubs_the_logs_headers_from_what_it_says(
    monkeypatch: pytest.MonkeyPatch, listened: Listened
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_LOGS_HEADERS", "x-api-key=logsecret123")
    settings = LoggingSettings(otlp={"endpoint": "http://127.0.0.1:9", "protocol": "http/protobuf"})
    otlp = SPEC.factory(settings)
    assert isinstance(otlp, OtlpLogExporter)
    try:
        otlp._guard.call(
            lambda: (_ for _ in ()).throw(RuntimeError("key logsecret123 refused")),
            SUCCESS,
            FAILURE,
        )
        message, _ = listened.wait_for("otlp:logs")
        assert (
            message == "fapilog OTLP logs exporter raised: RuntimeError('key ********** refused')"
        )
    finally:
        otlp.shutdown()
