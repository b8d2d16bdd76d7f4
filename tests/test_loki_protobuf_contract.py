"""The protobuf push's text, exactly: labels quoted as Go's ``strconv.Quote`` writes them,
every string made valid UTF-8 (a lone surrogate shown as its escape), streams whose labels
become the same merged in time order. In-process (the receiver's view is in
test_loki_protobuf.py and test_loki_labels_utf8.py)."""

from __future__ import annotations

import pytest

from fapilog.exporters.loki_protobuf import Entry, StreamKey, go_quote, utf8_streams, utf8_text


@pytest.mark.parametrize(
    ("text", "made"),
    [
        ("plain", "plain"),
        ("ok é ✓ 😀", "ok é ✓ 😀"),
        ("a\udcffb", "a\\udcffb"),
        ("\ud800é", "\\ud800é"),
    ],
    ids=["ascii", "unicode", "surrogate", "surrogate-first"],
)
def test_text_is_made_valid_utf8_a_lone_surrogate_shown_as_its_escape(text: str, made: str) -> None:
    assert utf8_text(text) == made
    made.encode("utf-8")  # (valid)


@pytest.mark.parametrize(
    ("value", "quoted"),
    [
        ("api", '"api"'),
        ("a\\b", '"a\\\\b"'),
        ('say "hi"', '"say \\"hi\\""'),
        ("\x00\x1f\x7f", '"\\x00\\x1f\\x7f"'),
        ("\u0085\ud7ff\ue000\uffff", '"\\u0085\\ud7ff\\ue000\\uffff"'),
        ("\ud800\udfff", '"\\\\ud800\\\\udfff"'),  # as `utf8_text` shows them
        ("\U000e0001", '"\\U000e0001"'),
        ("\U00010000 é", '"\U00010000 é"'),
    ],
    ids=["plain", "backslash", "quotes", "controls", "bmp", "surrogates", "astral", "printable"],
)
def test_a_label_value_is_quoted_as_go_quotes_it(value: str, quoted: str) -> None:
    assert go_quote(value) == quoted


def test_streams_are_made_utf8_and_merged_in_time_order() -> None:
    bad: StreamKey = (("app", "x\udcff"), ("env", "prod"))
    shown: StreamKey = (("app", "x\\udcff"), ("env", "prod"))
    other: StreamKey = (("app", "y"),)
    streams: dict[StreamKey, list[Entry]] = {
        bad: [(3, "c", {"k\udcff": "v\udcff"}, 10), (1, "z line", None, 11)],
        shown: [(2, "a line", {}, 12)],
        other: [(5, "o\udcff", {"k": "v"}, 13)],
    }
    assert utf8_streams(streams) == {
        shown: [
            (1, "z line", None, 11),
            (2, "a line", None, 12),  # (no metadata: None)
            (3, "c", {"k\\udcff": "v\\udcff"}, 10),
        ],
        other: [(5, "o\\udcff", {"k": "v"}, 13)],
    }
    assert list(streams[bad]) == [(3, "c", {"k\udcff": "v\udcff"}, 10), (1, "z line", None, 11)]


def test_labels_become_sorted_by_their_cleaned_names() -> None:
    key: StreamKey = (("b", "1"), ("a\udcff", "2"))
    assert list(utf8_streams({key: [(1, "l", None, 1)]})) == [(("a\\udcff", "2"), ("b", "1"))]


def test_entries_at_the_same_time_keep_their_order() -> None:
    key: StreamKey = (("a", "1"),)
    entries: list[Entry] = [(5, "b", None, 1), (5, "a", None, 1), (4, "c", None, 1)]
    assert utf8_streams({key: entries})[key] == [
        (4, "c", None, 1),
        (5, "b", None, 1),
        (5, "a", None, 1),
    ]
