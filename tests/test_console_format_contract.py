"""The development console's line, exactly: time, level, logger, message, the pairs aligned
at one column, the shortened trace ids, the FastAPI request line (``GET /items/7 → 200 in
3.2 ms``) and its colours; when colours are on. In-process, on `ConsoleLine` itself."""

from __future__ import annotations

import io
import time
from typing import Any

import pytest

from fapilog.exporters import console_format
from fapilog.exporters.console_format import (
    REQUEST_LOGGER,
    ConsoleLine,
    Palette,
    Shown,
    colors_wanted,
    is_terminal,
)

NS = 1_700_000_000_123_456_789  # .123 s past a second
ESC = "\x1b["


def clock(ns: int = NS) -> str:
    return time.strftime("%H:%M:%S", time.localtime(ns // 1_000_000_000)) + ".123"


def shown(
    message: Any = "order placed",
    *,
    logger: str = "app.orders",
    level: str = "info",
    fields: dict[Any, Any] | None = None,
    skip: frozenset[str] = frozenset(),
    trace_id: int = 0,
    span_id: int = 0,
    timestamp: int = NS,
) -> Shown:
    return Shown(timestamp, level, logger, message, fields or {}, skip, trace_id, span_id)


def plain() -> ConsoleLine:
    return ConsoleLine(Palette(False))


def test_a_line_is_time_level_logger_message_then_the_pairs_at_column_44() -> None:
    line = plain().render(shown(fields={"order_id": 7, "note": "a b"}))
    head = f"{clock()} [info    ] app.orders order placed"
    # logger + space + message: 10 + 1 + 12 = 23 cells, padded to 44, then a space
    assert line == head + " " * (44 - 23) + " order_id=7 note='a b'"


def test_a_long_head_is_not_padded() -> None:
    message = "m" * 40
    line = plain().render(shown(message, fields={"k": 1}))
    assert line == f"{clock()} [info    ] app.orders {message} k=1"


def test_a_head_one_cell_short_of_the_column_gets_one_space() -> None:
    message = "m" * 32  # 10 + 1 + 32 = 43
    line = plain().render(shown(message, fields={"k": 1}))
    assert line.endswith(f"{message}  k=1")


def test_without_pairs_nothing_is_padded() -> None:
    assert plain().render(shown()) == f"{clock()} [info    ] app.orders order placed"


def test_wide_characters_count_as_two_cells_for_the_alignment() -> None:
    line = plain().render(shown("日本", fields={"k": 1}))  # 10 + 1 + 4 = 15 cells
    assert line == f"{clock()} [info    ] app.orders 日本" + " " * (44 - 15) + " k=1"


def test_skipped_fields_are_not_shown_and_keys_are_escaped_text() -> None:
    line = plain().render(
        shown(fields={"a": 1, "hidden": 2, 3: "x", "b\nc": 4}, skip=frozenset({"hidden"}))
    )
    assert line.endswith(" a=1 3=x b\\nc=4")
    assert "hidden" not in line


@pytest.mark.parametrize(
    ("message", "text"),
    [(None, ""), (42, "42"), ("two\nlines", "two\\nlines"), (b"raw", "b'raw'")],
)
def test_a_message_that_is_not_text_is_shown_as_text(message: Any, text: str) -> None:
    assert plain().render(shown(message)) == f"{clock()} [info    ] app.orders {text}"


def test_trace_and_span_ids_are_shortened_to_eight_digits() -> None:
    line = plain().render(shown(trace_id=0x4BF92F3577B34DA6A3CE929D0E0E4736, span_id=0xF067AA))
    assert line.endswith(" trace_id=4bf92f35 span_id=00000000")
    only_trace = plain().render(shown(trace_id=0xAB))
    assert only_trace.endswith(" trace_id=00000000")
    assert "span_id" not in only_trace


def test_no_time_known_is_shown_as_dashes() -> None:
    line = plain().render(shown(timestamp=-1))
    assert line.startswith("--:--:--.--- [info    ]")


def test_the_clock_shows_the_milliseconds_of_each_record() -> None:
    line = ConsoleLine(Palette(False))
    first = line.render(shown(timestamp=NS))
    later = line.render(shown(timestamp=NS + 5_000_000))  # 5 ms later, same second
    next_second = line.render(shown(timestamp=NS + 1_000_000_000))
    assert first.startswith(clock() + " ")
    assert later.startswith(clock()[:-4] + ".128 ")
    assert next_second.startswith(clock(NS + 1_000_000_000)[:-4] + ".123 ")


def test_levels_are_padded_to_eight_and_an_unknown_one_is_escaped() -> None:
    assert "[critical]" in plain().render(shown(level="critical"))
    assert "[warning ]" in plain().render(shown(level="warning"))
    assert "[no\\ttab ]" in plain().render(shown(level="no\ttab"))


def test_logger_names_go_through_the_given_redaction_once_per_name() -> None:
    seen: list[str] = []

    def names(name: str) -> str:
        seen.append(name)
        return name.replace("secret", "[REDACTED]")

    line = ConsoleLine(Palette(False), names)
    assert " db.secret.pool " in " " + line.render(shown(logger="db.secret.pool")).replace(
        "[REDACTED]", "secret"
    )
    assert "[REDACTED]" in line.render(shown(logger="db.secret.pool"))
    assert seen == ["db.secret.pool"]


def test_the_caches_of_names_and_keys_are_bounded() -> None:
    line = plain()
    for n in range(1024):
        line.render(shown(logger=f"l{n}"))
    assert len(line._loggers) == 1024
    line.render(shown(logger="one more"))
    assert list(line._loggers) == ["one more"]
    for n in range(4096):
        line._key(f"k{n}")
    assert len(line._keys) == 4096
    line._key("one more")
    assert list(line._keys) == ["one more"]


# -- the request line ---------------------------------------------------------------------


def request(
    status: Any = 200, duration: Any = 3.25, message: Any = "request completed", **extra: Any
) -> Shown:
    fields: dict[str, Any] = {"http.request.method": "GET", "url.path": "/items/7"}
    if status is not None:
        fields["http.response.status_code"] = status
    if duration is not None:
        fields["duration_ms"] = duration
    fields.update(extra)
    return shown(message, logger=REQUEST_LOGGER, fields=fields)


@pytest.mark.parametrize(
    ("status", "duration", "message", "head"),
    [
        (200, 3.25, "request completed", "GET /items/7 → 200 in 3.2 ms"),
        (200, 999.94, "request completed", "GET /items/7 → 200 in 999.9 ms"),
        (200, 1000, "request completed", "GET /items/7 → 200 in 1.00 s"),
        (200, 12345.6, "request completed", "GET /items/7 → 200 in 12.35 s"),
        (200, 7, "request completed", "GET /items/7 → 200 in 7.0 ms"),
        (200, "slow", "request completed", "GET /items/7 → 200 in slow"),
        (200, True, "request completed", "GET /items/7 → 200 in True"),
        (None, None, "request failed", "GET /items/7 → - · request failed"),
        (99, 1.0, "request completed", "GET /items/7 → 99 in 1.0 ms"),
        (600, 1.0, "request completed", "GET /items/7 → 600 in 1.0 ms"),
        ("200", 1.0, "request completed", "GET /items/7 → 200 in 1.0 ms"),
        (500, 2.0, 42, "GET /items/7 → 500 in 2.0 ms · 42"),
    ],
)
def test_the_request_line(status: Any, duration: Any, message: Any, head: str) -> None:
    line = plain().render(request(status, duration, message, **{"http.route": "/items/{id}"}))
    start = f"{clock()} [info    ] fapilog.request {head}"
    assert line.startswith(start)
    assert line.endswith(" http.route=/items/{id}")
    assert "http.request.method=" not in line and "duration_ms=" not in line


def test_the_request_line_is_aligned_by_its_cells() -> None:
    line = plain().render(request(200, 1.5, k=1))
    head = "fapilog.request GET /items/7 → 200 in 1.5 ms"  # 44 cells: no padding
    assert line == f"{clock()} [info    ] {head} k=1"
    short = plain().render(request(204, None, k=1))
    head = "fapilog.request GET /items/7 → 204"
    assert short == f"{clock()} [info    ] {head}" + " " * (44 - len(head)) + " k=1"


def test_a_request_event_without_method_and_path_is_a_plain_line() -> None:
    line = plain().render(shown("request completed", logger=REQUEST_LOGGER, fields={"x": 1}))
    assert " request completed" in line and "→" not in line


def test_method_and_path_from_a_client_are_escaped() -> None:
    line = plain().render(
        shown(
            "request completed",
            logger=REQUEST_LOGGER,
            fields={"http.request.method": "G\x1b[31mET", "url.path": "/a\nb", "duration_ms": 1},
        )
    )
    assert "G\\x1b[31mET /a\\nb → - in 1.0 ms" in line


# -- colours --------------------------------------------------------------------------------


def codes(text: str) -> list[str]:
    """The text between escape sequences, with each sequence as ESC."""
    return text.split("\x1b")


@pytest.mark.parametrize(
    ("status", "color"),
    [(200, "32"), (301, "36"), (404, "33"), (503, "1;31"), (599, "1;31"), (100, "2")],
)
def test_the_status_is_coloured_by_its_class(status: int, color: str) -> None:
    line = ConsoleLine(Palette(True)).render(request(status, 1.5))
    assert f"{ESC}{color}m{status}{ESC}0m in 1.5 ms" in line
    assert f"{ESC}1mGET{ESC}0m /items/7 → " in line


def test_an_unfinished_request_notes_its_message_dimmed() -> None:
    line = ConsoleLine(Palette(True)).render(request(None, None, "request failed"))
    assert f"GET{ESC}0m /items/7 → -{ESC}2m · request failed{ESC}0m" in line


def test_a_coloured_line_paints_each_part_and_aligns_as_the_plain_one() -> None:
    line = ConsoleLine(Palette(True)).render(
        shown(level="error", fields={"k": 1}, trace_id=0xAB, span_id=0xCD)
    )
    assert line.startswith(f"{ESC}2m{clock()}{ESC}0m [{ESC}1;31merror   {ESC}0m] ")
    assert f"{ESC}34mapp.orders{ESC}0m {ESC}1morder placed{ESC}0m" + " " * 21 in line
    assert line.endswith(f" {ESC}36mk{ESC}0m=1 {ESC}2mtrace_id=00000000 span_id=00000000{ESC}0m")


def test_an_unknown_level_is_magenta() -> None:
    line = ConsoleLine(Palette(True)).render(shown(level="trace"))
    assert f"[{ESC}35mtrace   {ESC}0m]" in line
    assert f"[{ESC}35mnote    {ESC}0m]" in ConsoleLine(Palette(True)).render(shown(level="note"))


def test_without_colours_the_palette_adds_nothing() -> None:
    palette = Palette(False)
    assert palette.on is False
    assert palette.paint("error", "x") == "x"
    assert set(palette.codes) == set(console_format.STYLES)


# -- when colours are on ------------------------------------------------------------------


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


class Broken(io.StringIO):
    def isatty(self) -> bool:
        raise ValueError("closed")


@pytest.mark.parametrize(
    ("environ", "stream", "wanted"),
    [
        ({}, Tty(), True),
        ({}, io.StringIO(), False),
        ({"NO_COLOR": "1"}, Tty(), False),
        ({"NO_COLOR": ""}, Tty(), True),
        ({"FORCE_COLOR": "1"}, io.StringIO(), True),
        ({"FORCE_COLOR": ""}, io.StringIO(), False),
        ({"FORCE_COLOR": "1", "NO_COLOR": "1"}, Tty(), False),
        ({"TERM": "dumb"}, Tty(), False),
        ({"TERM": "dumb", "FORCE_COLOR": "1"}, io.StringIO(), True),
        ({"TERM": "xterm"}, Tty(), True),
        ({}, None, False),
        ({}, Broken(), False),
    ],
)
def test_colours_follow_no_color_force_color_term_and_the_terminal(
    environ: dict[str, str], stream: Any, wanted: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("NO_COLOR", "FORCE_COLOR", "TERM"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    assert colors_wanted(stream) is wanted


def test_a_stream_without_isatty_is_no_terminal() -> None:
    assert is_terminal(object()) is False  # type: ignore[arg-type]
    assert is_terminal(Tty()) is True


def test_an_unfinished_request_line_is_aligned_with_its_note() -> None:
    line = plain().render(request(None, None, "failed", k=1))
    head = "fapilog.request GET /items/7 → - · failed"
    assert line == f"{clock()} [info    ] {head}" + " " * (44 - len(head)) + " k=1"


def test_the_first_nanoseconds_of_the_epoch_are_a_time_not_dashes() -> None:
    assert (
        plain()
        .render(shown(timestamp=0))
        .startswith(time.strftime("%H:%M:%S", time.localtime(0)) + ".000 ")
    )


def test_only_the_request_logger_with_method_and_path_gets_the_request_line() -> None:
    for logger, fields in [
        ("app", {"url.path": "/x", "http.request.method": "GET"}),
        ("app", {"url.path": "/x"}),
        (REQUEST_LOGGER, {"url.path": "/x"}),
    ]:
        line = plain().render(shown("hello", logger=logger, fields=fields))
        assert " hello" in line and "→" not in line
