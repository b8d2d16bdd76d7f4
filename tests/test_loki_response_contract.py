"""What the Loki exporter reads from a push's error answer: the entries a distributor's 400
rejected, by reason; the entries an ingester ignored; the stream-limit and unknown-tenant
answers; `Retry-After`. The bodies are Loki's own messages (2.9-3.x). In-process."""

from __future__ import annotations

import email.utils
import types

import pytest

from fapilog.exporters import loki_response
from fapilog.exporters.loki_response import (
    MAX_ERROR_BODY,
    Undelivered,
    ingester_ignored,
    is_stream_limit,
    is_unknown_tenant,
    rejections,
    retry_after,
)

S = "stream '{app=\"api\"}'"
TOO_LONG = (
    f"max entry size '100' bytes exceeded for {S} while adding an entry with length 120 bytes"
)
TOO_OLD = f"entry for {S} has timestamp too old: 2020-01-01T00:00:00Z, oldest acceptable ..."
TOO_NEW = f"entry for {S} has timestamp too new: 2099-01-01T00:00:00Z"
DISALLOWED = f"{S} includes structured metadata, but this feature is disallowed. Please ..."
META_LARGE = f"{S} has structured metadata too large: '70000' bytes, limit: '65536'"
META_MANY = f"{S} has too many structured metadata labels: '130', limit: '128'"


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (TOO_LONG, "line_too_long"),
        (TOO_OLD, "greater_than_max_sample_age"),
        (TOO_NEW, "too_far_in_future"),
        (DISALLOWED, "disallowed_structured_metadata"),
        (META_LARGE, "structured_metadata_too_large"),
        (META_MANY, "structured_metadata_too_many"),
        # Loki writes the messages with capitals in places across versions
        (TOO_OLD.replace("entry", "Entry"), "greater_than_max_sample_age"),
    ],
)
def test_a_single_failure_is_one_entry_rejected_for_its_reason(message: str, reason: str) -> None:
    assert rejections(message) == {reason: 1}
    assert rejections(f"  {message}\n") == {reason: 1}


def test_groups_of_failures_add_up_by_reason() -> None:
    body = f"3 errors like: {TOO_LONG}; 2 errors like: {TOO_OLD}; 4 errors like: {TOO_LONG}"
    assert rejections(body) == {"line_too_long": 7, "greater_than_max_sample_age": 2}


def test_a_stream_label_value_spanning_lines_is_still_one_message() -> None:
    message = "entry for stream '{app=\"a\nb\"}' has timestamp too new: 2099"
    assert rejections(message) == {"too_far_in_future": 1}


@pytest.mark.parametrize(
    "body",
    [
        "",
        "   ",
        "stream '{app=\"api\"}' has too many labels",  # a whole stream: entries not counted
        "<html>502 Bad Gateway</html>",
        f"garbage first; 3 errors like: {TOO_LONG}",  # groups not from the start
        f"0 errors like: {TOO_LONG}",
        f"3 errors like: {TOO_LONG}; 2 errors like: something else",
        f"per stream rate limit exceeded: {TOO_LONG}",  # a reason's words inside another
        # each group's message ends where the next group begins: an unknown one is not read
        # together with the next one's words
        f"3 errors like: {S} is unknown; 2 errors like: {META_MANY}",
        TOO_LONG + "x" * MAX_ERROR_BODY,  # cut short: as long as the most read, or longer
    ],
)
def test_an_answer_that_does_not_say_how_many_entries_it_rejected_gives_none(body: str) -> None:
    assert rejections(body) is None


def test_the_longest_body_read_is_one_mebibyte() -> None:
    assert MAX_ERROR_BODY == 1024 * 1024
    message = TOO_OLD + "x" * (MAX_ERROR_BODY - 1 - len(TOO_OLD))
    assert len(message) == MAX_ERROR_BODY - 1
    assert rejections(message) == {"greater_than_max_sample_age": 1}
    assert rejections(message + "x") is None


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            "entry with timestamp 2024-01-01 ignored, reason: 'entry too far behind, oldest "
            'acceptable timestamp is: ...\', total ignored: 3 out of 10 for stream: {app="api"}',
            (3, 10),
        ),
        ('entry out of order, total ignored: 1 out of 1 for stream: {a="b"}\n', (1, 1)),
        ('total ignored: 1 out of 1 for stream: {a="b"}', None),  # neither reason
        ('entry out of order, total ignored: 1 out of 1 for stream: {a="b"} and more', None),
        ("entry out of order", None),
    ],
)
def test_an_ingesters_ignored_entries_are_read_with_their_stream_total(
    body: str, expected: tuple[int, int] | None
) -> None:
    assert ingester_ignored(body) == expected


def test_the_stream_limit_is_its_own_429_not_a_rate_limit() -> None:
    message = "Maximum active stream limit exceeded, reduce the number of active streams"
    assert is_stream_limit(429, message) is True
    assert is_stream_limit(429, message.upper()) is True
    assert is_stream_limit(429, "Ingestion rate limit exceeded") is False
    assert is_stream_limit(400, message) is False
    assert is_stream_limit(None, message) is False


def test_an_unknown_tenant_is_a_401_saying_no_org_id() -> None:
    assert is_unknown_tenant(401, "no org id\n") is True
    assert is_unknown_tenant(401, "No Org ID") is True
    assert is_unknown_tenant(401, "unauthorized") is False
    assert is_unknown_tenant(403, "no org id") is False


def test_undelivered_entries_are_counted_by_reason_refused_before_retried() -> None:
    undelivered = Undelivered()
    undelivered.count("too_far_in_future", 2)
    undelivered.count("server_error", 3, retry=True)
    undelivered.count("too_far_in_future", 1)
    undelivered.count("server_error", 4, retry=True)
    undelivered.count("line_too_long", 5, retry=False)
    assert undelivered.refused == {"too_far_in_future": 3, "line_too_long": 5}
    assert undelivered.retried == {"server_error": 7}
    assert undelivered.reasons() == [
        ("too_far_in_future", 3),
        ("line_too_long", 5),
        ("server_error", 7),
    ]
    assert undelivered.retry == []


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(None, None), ("", None), ("7", 7.0), ("2.5", 2.5), ("-3", 0.0), ("soon", None)],
)
def test_retry_after_in_seconds(value: str | None, seconds: float | None) -> None:
    assert retry_after(value) == seconds


def test_retry_after_as_an_http_date(monkeypatch: pytest.MonkeyPatch) -> None:
    now = 1_800_000_000.0
    monkeypatch.setattr(loki_response, "time", types.SimpleNamespace(time=lambda: now))
    later = email.utils.formatdate(now + 30, usegmt=True)
    earlier = email.utils.formatdate(now - 30, usegmt=True)
    assert retry_after(later) == 30.0
    assert retry_after(earlier) == 0.0
