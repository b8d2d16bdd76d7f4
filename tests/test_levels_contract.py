"""The contract of `fapilog.lifecycle.levels`, in process: `set_level()`'s validation and
its exact error messages, the audit record of each change and each expiry (fields, who,
ttl), what an expiry puts back (after a change in a row too), the ttl timers (their
length, after a fork), `current_levels()`, and what a configuration (and a reset) sets:
the recorders' bounds and floor, admission at the end of the chain, the per-exporter
floor, the flight_recorder() blocks' floor, and the steps a held record takes."""

from __future__ import annotations

import types
from collections.abc import Iterator
from typing import Any

import pytest
from structlog.contextvars import merge_contextvars

import fapilog
import fapilog.testing
from conftest import MemoryExporter
from fapilog import configure_logging
from fapilog._levels import NAMES
from fapilog._state import NO_FLOOR, STATE, UNCONFIGURED_LEVEL
from fapilog.capture import admission
from fapilog.capture.context import merge_bound
from fapilog.capture.noise import FOLDING, NOISE
from fapilog.capture.processors import add_trace_context
from fapilog.capture.record import ADMISSION, OTelBridge
from fapilog.capture.recorder import DEFERRED, LIMITS
from fapilog.capture.redaction import Redactor
from fapilog.lifecycle import levels
from fapilog.pipeline.direct import AdmittingBridge, DirectBridge, keep_exception, write_released
from fapilog.pipeline.routes import ROUTES
from fapilog.settings import LoggingSettings

AUDIT = "fapilog.level.changed"
TOKEN = "s3cret-admin-token-0123456789"


def audits(memory_exporter: MemoryExporter) -> list[Any]:
    return [r for r in memory_exporter.records() if r.log_record.body == AUDIT]


def audit_fields(memory_exporter: MemoryExporter) -> list[dict[str, Any]]:
    return [dict(r.log_record.attributes) for r in audits(memory_exporter)]


@pytest.fixture
def configured(memory_exporter: MemoryExporter) -> MemoryExporter:
    configure_logging(exporters=[memory_exporter.name], logger_levels={"app": "ERROR"})
    return memory_exporter


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """levels' `time.time()`, set by the test."""
    now = [1_000_000.0]
    monkeypatch.setattr(levels, "time", types.SimpleNamespace(time=lambda: now[0]))
    return now


def _change(key: str | None) -> Any:
    return levels._CHANGES.active[key]


# -- set_level: validation ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (("loud",), f"unknown level 'loud': use one of {', '.join(NAMES)} (or a number)"),
        ((15,), f"unknown level 15: use one of {', '.join(NAMES)} (or a number)"),
        (("info", None, True), "ttl must be a number of seconds, got True"),
        (("info", None, "30"), "ttl must be a number of seconds, got '30'"),
        (("info", None, 0), "ttl must be between 0 and 604800 seconds (a week), got 0"),
        (("info", None, -1.5), "ttl must be between 0 and 604800 seconds (a week), got -1.5"),
        (
            ("info", None, 604800.5),
            "ttl must be between 0 and 604800 seconds (a week), got 604800.5",
        ),
        (("info", ""), "logger must be a logger name, got ''"),
        (("info", "   "), "logger must be a logger name, got '   '"),
        (("info", 7), "logger must be a logger name, got 7"),
    ],
)
def test_a_bad_argument_is_refused_saying_what_is_wrong_and_changes_nothing(
    configured: MemoryExporter, arguments: tuple[Any, ...], message: str
) -> None:
    with pytest.raises(ValueError) as raised:
        fapilog.set_level(*arguments)
    assert str(raised.value) == message
    assert levels.current_levels()["changes"] == []
    assert audits(configured) == []


def test_the_longest_ttl_is_a_week_and_a_logger_name_is_stripped(
    configured: MemoryExporter,
) -> None:
    fapilog.set_level(10, logger=" billing ", ttl=604800)
    assert STATE.logger_levels["billing"] == 10
    assert levels.current_levels()["changes"][0]["logger"] == "billing"
    (fields,) = audit_fields(configured)
    assert fields["level.logger"] == "billing" and fields["level.ttl"] == 604800.0


# -- the audit record --------------------------------------------------------------------


def test_a_global_change_writes_one_warning_audit_record_with_exactly_its_fields(
    configured: MemoryExporter,
) -> None:
    fapilog.set_level("warn", ttl=30, who=42)
    (record,) = audits(configured)
    assert record.log_record.severity_text == "WARN"
    assert record.instrumentation_scope.name == "fapilog"
    fields = {k: v for k, v in record.log_record.attributes.items() if k.startswith("level.")}
    assert fields == {
        "level.logger": "",
        "level.from": "INFO",
        "level.to": "WARNING",
        "level.reason": "set",
        "level.ttl": 30.0,
        "level.who": "42",
    }
    assert isinstance(fields["level.ttl"], float)
    assert STATE.default_level == 30


def test_without_ttl_or_who_the_audit_record_has_neither_field(
    configured: MemoryExporter,
) -> None:
    fapilog.set_level("debug", logger="svc")
    (fields,) = audit_fields(configured)
    assert "level.ttl" not in fields and "level.who" not in fields
    assert fields["level.logger"] == "svc" and fields["level.from"] == "INFO"


def test_the_level_a_change_replaces_is_the_closest_entry_above_the_logger(
    configured: MemoryExporter,
) -> None:
    """`app.db` has no entry of its own: what it had came from `app`'s entry."""
    fapilog.set_level("debug", logger="app.db")
    fapilog.set_level("critical", logger="app.db")
    first, second = audit_fields(configured)
    assert (first["level.from"], first["level.to"]) == ("ERROR", "DEBUG")
    assert (second["level.from"], second["level.to"]) == ("DEBUG", "CRITICAL")


# -- expiry --------------------------------------------------------------------------------


def test_an_expiry_puts_back_the_loggers_level_and_writes_an_expired_audit_record(
    configured: MemoryExporter,
) -> None:
    fapilog.set_level("debug", logger="svc", ttl=3600, who="ops")
    change = _change("svc")
    levels._expire("svc", change.generation)
    assert STATE.logger_levels == {"app": 40}
    assert levels.current_levels()["changes"] == []
    assert change.timer is not None
    change.timer.cancel()
    _, expired = audit_fields(configured)
    assert {k: v for k, v in expired.items() if k.startswith("level.")} == {
        "level.logger": "svc",
        "level.from": "DEBUG",
        "level.to": "INFO",
        "level.reason": "expired",
        "level.who": "ops",
    }


def test_a_change_in_a_row_expires_back_to_what_came_before_the_first(
    configured: MemoryExporter,
) -> None:
    fapilog.set_level("debug", logger="app", ttl=3600)
    first_timer = _change("app").timer
    fapilog.set_level("warning", logger="app", ttl=3600)
    assert first_timer is not None and first_timer.finished.is_set()  # cancelled
    levels._expire("app", _change("app").generation)
    assert STATE.logger_levels == {"app": 40}
    assert [f["level.to"] for f in audit_fields(configured)] == ["DEBUG", "WARNING", "ERROR"]


def test_a_global_expiry_puts_the_global_level_back(configured: MemoryExporter) -> None:
    fapilog.set_level("error", ttl=3600)
    levels._expire(None, _change(None).generation)
    assert STATE.default_level == 20
    expired = audit_fields(configured)[-1]
    assert (expired["level.from"], expired["level.to"]) == ("ERROR", "INFO")
    assert expired["level.logger"] == ""


def test_an_expiry_overtaken_by_a_later_change_does_nothing(configured: MemoryExporter) -> None:
    fapilog.set_level("debug", logger="svc", ttl=3600)
    stale = _change("svc").generation
    fapilog.set_level("warning", logger="svc")  # for good: cancels the timer
    levels._expire("svc", stale)
    levels._expire("other", stale)
    assert STATE.logger_levels["svc"] == 30
    assert [f["level.reason"] for f in audit_fields(configured)] == ["set", "set"]


def test_an_expiry_from_before_a_configuration_never_ends_a_later_change(
    configured: MemoryExporter,
) -> None:
    """(A timer that fired while a configuration ended its change, then waited for the
    lock, must not end the change made after the configuration.)"""
    fapilog.set_level("debug", logger="svc", ttl=3600)
    old = _change("svc").generation
    configure_logging(exporters=[configured.name], level="WARNING")
    fapilog.set_level("debug", logger="svc", ttl=3600)
    levels._expire("svc", old)
    assert STATE.logger_levels == {"svc": 10}


def test_a_ttl_timer_is_a_daemon_thread_of_that_length_that_expires_the_change(
    configured: MemoryExporter,
) -> None:
    fapilog.set_level("debug", logger="svc", ttl=0.05)
    timer = _change("svc").timer
    assert timer is not None
    assert (timer.interval, timer.daemon, timer.name) == (0.05, True, "fapilog-level-ttl")
    timer.join(10)
    assert "svc" not in STATE.logger_levels
    assert [f["level.reason"] for f in audit_fields(configured)] == ["set", "expired"]


def test_a_configuration_ends_the_changes_and_their_timers(configured: MemoryExporter) -> None:
    fapilog.set_level("debug", logger="svc", ttl=3600)
    timer = _change("svc").timer
    configure_logging(exporters=[configured.name], level="WARNING")
    assert timer is not None and timer.finished.is_set()
    assert levels.current_levels()["changes"] == []
    assert STATE.logger_levels == {} and STATE.default_level == 30


def test_after_a_fork_the_timers_restart_for_the_time_left(
    configured: MemoryExporter, clock: list[float]
) -> None:
    """(`_rearm_after_fork` runs in a forked child; called here directly.)"""
    fapilog.set_level("debug", logger="soon", ttl=100)
    fapilog.set_level("debug", logger="late", ttl=300)
    fapilog.set_level("debug", logger="forever")
    parents = [_change("soon").timer, _change("late").timer]
    lock = levels._LOCK
    clock[0] += 200  # "soon" is overdue, "late" has 100 s left
    try:
        levels._rearm_after_fork()
        assert levels._LOCK is not lock
        late = _change("late").timer
        assert late is not None and late not in parents and late.is_alive()
        assert late.interval == 100.0
        assert _change("forever").timer is None
        soon = _change("soon").timer
        assert soon is not None and soon.interval == 0.0
        soon.join(10)
        assert "soon" not in STATE.logger_levels
    finally:
        for timer in parents:
            assert timer is not None
            timer.cancel()


# -- current_levels ------------------------------------------------------------------------


def test_current_levels_names_every_level_and_the_seconds_each_change_has_left(
    memory_exporter: MemoryExporter, clock: list[float]
) -> None:
    configure_logging(
        exporters=[memory_exporter.name],
        level="WARNING",
        logger_levels={"b": "DEBUG", "a": "ERROR"},
        exporter_levels={memory_exporter.name: "INFO"},
    )
    fapilog.set_level("info", logger="c", ttl=100)
    fapilog.set_level("error")
    clock[0] += 12.3456789
    found = levels.current_levels()
    assert found == {
        "level": "ERROR",
        "loggers": {"a": "ERROR", "b": "DEBUG", "c": "INFO"},
        "exporters": {memory_exporter.name: "INFO"},
        "changes": [{"logger": "c", "expires_in": 87.654}, {"logger": None, "expires_in": None}],
    }
    assert list(found["loggers"]) == ["a", "b", "c"]


def test_set_level_before_any_configuration_configures_first_and_then_changes() -> None:
    """A configuration sets the levels, so it must come before the change, not after."""
    assert STATE.pipeline is None
    fapilog.set_level("warning")
    assert STATE.pipeline is not None
    assert levels.current_levels()["level"] == "WARNING"


# -- what a configuration sets ---------------------------------------------------------------


def test_the_recorders_bounds_come_from_the_buffer_settings(
    memory_exporter: MemoryExporter,
) -> None:
    configure_logging(
        exporters=[memory_exporter.name],
        request={
            "buffer": {
                "enabled": True,
                "level": "INFO",
                "max_records": 7,
                "max_bytes": 5000,
                "total_max_bytes": 90000,
            }
        },
    )
    assert (LIMITS.level, LIMITS.max_records) == (20, 7)
    assert (LIMITS.max_bytes, LIMITS.total_max_bytes) == (5000, 90000)
    assert STATE.capture_floor == 20


@pytest.mark.parametrize(
    ("buffer", "token", "floor"),
    [
        ({"enabled": False, "level": "INFO"}, None, NO_FLOOR),
        ({"enabled": True, "level": "INFO"}, None, 20),
        ({"enabled": True, "level": "DEBUG"}, None, 10),
        ({"enabled": False}, TOKEN, 10),
        ({"enabled": True, "level": "INFO"}, TOKEN, 10),
    ],
)
def test_the_capture_floor_is_the_buffers_level_or_debug_with_an_admin_token(
    memory_exporter: MemoryExporter, buffer: dict[str, Any], token: str | None, floor: int
) -> None:
    configure_logging(
        exporters=[memory_exporter.name], request={"buffer": buffer}, admin={"token": token}
    )
    assert STATE.capture_floor == floor


FEATURES: dict[str, dict[str, Any]] = {
    "buffer": {"request": {"buffer": {"enabled": True}}},
    "token": {"admin": {"token": TOKEN}},
    "rate_limits": {"rate_limits": {"noisy": 5.0}},
    "fold_repeats": {"fold_repeats": 2.0},
    "follow": {"request": {"follow_trace_sampling": True}},
}


@pytest.mark.parametrize("feature", list(FEATURES))
def test_admission_runs_at_the_end_of_the_chain_only_for_the_features_that_need_it(
    memory_exporter: MemoryExporter, feature: str
) -> None:
    configure_logging(exporters=[memory_exporter.name])
    assert ADMISSION.admit is None and type(STATE.chain[-1]) is DirectBridge
    configure_logging(exporters=[memory_exporter.name], **FEATURES[feature])
    assert ADMISSION.admit is admission.admit
    assert type(STATE.chain[-1]) is AdmittingBridge
    assert ADMISSION.plain is (feature in ("buffer", "token"))
    assert admission.FOLLOW.on is (feature == "follow")
    assert (FOLDING.window == 2.0) is (feature == "fold_repeats")
    assert (list(NOISE.buckets) == ["noisy"]) is (feature == "rate_limits")
    configure_logging(exporters=[memory_exporter.name])  # and back
    assert ADMISSION.admit is None and ADMISSION.plain is True
    assert type(STATE.chain[-1]) is DirectBridge
    assert admission.FOLLOW.on is False and FOLDING.window is None and NOISE.buckets == {}


def test_per_exporter_levels_route_at_the_end_of_the_chain_without_admission(
    memory_exporter: MemoryExporter,
) -> None:
    configure_logging(
        exporters=[memory_exporter.name, "stdout"],
        exporter_levels={memory_exporter.name: "DEBUG", "stdout": "WARNING"},
    )
    assert ADMISSION.admit is None
    assert type(STATE.chain[-1]) is AdmittingBridge
    assert STATE.exporter_floor == 10
    assert ROUTES.levels == {memory_exporter.name: 10, "stdout": 30}
    done = STATE.want_capture(20)  # a flight_recorder() block, then its end
    done()
    assert ADMISSION.admit is None and type(STATE.chain[-1]) is AdmittingBridge
    configure_logging(exporters=[memory_exporter.name])
    assert STATE.exporter_floor == NO_FLOOR and ROUTES.levels == {}


def test_a_reset_puts_every_level_and_feature_back_to_unconfigured(
    memory_exporter: MemoryExporter,
) -> None:
    settings: dict[str, Any] = {}
    for feature in FEATURES.values():
        settings.update(feature)
    settings["request"] = {"buffer": {"enabled": True}, "follow_trace_sampling": True}
    configure_logging(
        exporters=[memory_exporter.name],
        logger_levels={"x": "DEBUG"},
        exporter_levels={memory_exporter.name: "DEBUG"},
        **settings,
    )
    fapilog.set_level("debug", logger="y", ttl=3600)
    timer = _change("y").timer
    fapilog.testing.reset()
    assert timer is not None and timer.finished.is_set()
    assert (STATE.default_level, STATE.logger_levels) == (UNCONFIGURED_LEVEL, {})
    assert (STATE.exporter_floor, STATE.capture_floor) == (NO_FLOOR, NO_FLOOR)
    assert ROUTES.levels == {} and levels._CHANGES.active == {}
    assert ADMISSION.admit is None and ADMISSION.plain is True
    assert admission.FOLLOW.on is False and FOLDING.window is None and NOISE.buckets == {}
    assert FOLDING.write is None and DEFERRED.active is False
    capture = levels._CAPTURE
    assert (capture.configured, capture.blocks, capture.admit, capture.routed) == (
        NO_FLOOR,
        {},
        False,
        False,
    )


# -- flight_recorder() blocks ---------------------------------------------------------------


def test_blocks_lower_the_gate_while_they_run_and_the_last_one_puts_it_back(
    memory_exporter: MemoryExporter,
) -> None:
    configure_logging(exporters=[memory_exporter.name])
    info_1 = STATE.want_capture(20)
    assert ADMISSION.plain is True  # (no trace-following, rate limit or folding configured)
    info_2 = STATE.want_capture(20)
    assert STATE.capture_floor == 20 and ADMISSION.admit is admission.admit
    debug = STATE.want_capture(10)
    assert STATE.capture_floor == 10
    debug()
    assert STATE.capture_floor == 20
    info_1()
    assert STATE.capture_floor == 20 and ADMISSION.admit is admission.admit
    info_2()
    assert STATE.capture_floor == NO_FLOOR and ADMISSION.admit is None
    assert type(STATE.chain[-1]) is DirectBridge
    info_2()  # (one end too many changes nothing)
    assert STATE.capture_floor == NO_FLOOR and levels._CAPTURE.blocks == {}


def test_a_block_above_the_configured_floor_leaves_it(memory_exporter: MemoryExporter) -> None:
    configure_logging(exporters=[memory_exporter.name], request={"buffer": {"enabled": True}})
    done = STATE.want_capture(30)
    assert STATE.capture_floor == 10
    done()
    assert STATE.capture_floor == 10 and ADMISSION.admit is admission.admit


# -- the steps a held record takes -----------------------------------------------------------


def _enricher(logger: Any, method: str, event_dict: Any) -> Any:
    return event_dict


@pytest.fixture
def restored_deferred() -> Iterator[None]:
    yield
    DEFERRED.clear()
    FOLDING.write = None


def test_a_held_record_takes_the_enrichers_now_and_redaction_at_release(
    restored_deferred: None,
) -> None:
    redactor = Redactor.from_settings(LoggingSettings().redaction)
    bridge = OTelBridge()
    chain = [merge_contextvars, add_trace_context, _enricher, keep_exception, redactor, bridge]
    levels.defer_redaction(chain)
    assert DEFERRED.before == [merge_bound, add_trace_context, _enricher]
    assert DEFERRED.after == [redactor] and DEFERRED.active is True
    assert DEFERRED.write is write_released and FOLDING.write is write_released


def test_without_an_enricher_a_held_record_leaves_the_trace_ids_to_its_context(
    restored_deferred: None,
) -> None:
    levels.defer_redaction([merge_contextvars, add_trace_context, OTelBridge()])
    assert DEFERRED.before == [merge_bound] and DEFERRED.after == []
    levels.defer_redaction([add_trace_context, DirectBridge()])
    assert DEFERRED.before == []


def test_the_end_of_a_chain_that_is_not_fapilogs_is_left_alone(
    memory_exporter: MemoryExporter,
) -> None:
    configure_logging(exporters=[memory_exporter.name])
    saved = list(STATE.chain)
    try:
        STATE.chain[:] = []
        levels._admitting(True, True, True)
        assert STATE.chain == []
        STATE.chain[:] = [merge_contextvars, _enricher]
        levels._admitting(True, True, True)
        assert STATE.chain == [merge_contextvars, _enricher]
        assert ADMISSION.admit is admission.admit
    finally:
        STATE.chain[:] = saved
        levels._admitting(False, False, True)
    assert type(STATE.chain[-1]) is DirectBridge
