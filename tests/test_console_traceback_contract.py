"""The development console's traceback block: which frames it shows, folds or keeps, what it
says of each, the local variables it shows (redacted, shortened), and how a traceback given
as Python's text is read back into the same frames. In-process."""

from __future__ import annotations

import importlib
import json
import os
import re
import sys
import sysconfig
import traceback
from pathlib import Path
from typing import Any

import pytest
from rich.traceback import Frame

from fapilog.capture.redaction import Redactor
from fapilog.exporters.console_traceback import (
    INDENT,
    TracebackRenderer,
    _Collapsed,
    _package_paths,
    _parse,
    _position,
    _stdlib_paths,
)
from fapilog.otel.semconv import error_type

NEW_POSITIONS = sys.version_info >= (3, 11)  # code objects with co_positions()
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def renderer(**options: Any) -> TracebackRenderer:
    settings: dict[str, Any] = {
        "colors": False,
        "width": 100,
        "collapse": (),
        "show_locals": False,
        "redactor": None,
    }
    settings.update(options)
    return TracebackRenderer(**settings)


def caught(function: Any, *args: Any) -> BaseException:
    try:
        function(*args)
    except BaseException as exc:
        return exc
    raise AssertionError("did not raise")


def where(frames: list[Frame]) -> list[tuple[str, int, str]]:
    return [(frame.filename, frame.lineno, frame.name) for frame in frames]


def text_of(exc: BaseException) -> str:
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))


def whole(line: str) -> bool:
    """A line of the block: indented, nothing after its text (a blank line is the indent)."""
    return line.startswith(INDENT) and (line == line.rstrip() or line == INDENT)


def frame(filename: str, name: str = "f", lineno: int = 1) -> Frame:
    return Frame(filename=filename, lineno=lineno, name=name)


STARLETTE = os.path.join(os.path.dirname(importlib.import_module("starlette").__file__ or ""), "")
FASTAPI = os.path.join(os.path.dirname(importlib.import_module("fastapi").__file__ or ""), "")
STDLIB = os.path.join(sysconfig.get_paths()["stdlib"], "")
USER = "/srv/app/main.py"
FAPILOG_INIT = importlib.import_module("fapilog").__file__ or ""


# -- exceptions to render ----------------------------------------------------------------------


def _inner(value: str) -> None:
    raise KeyError(value)


def _outer_with_cause() -> None:
    try:
        _inner("k")
    except KeyError as exc:
        raise ValueError("lookup failed\nsecond line: with a colon") from exc


def _outer_with_context() -> None:
    try:
        _inner("k")
    except KeyError:
        raise RuntimeError("while handling")  # noqa: B904 - the implicit context is the subject


def _three_deep() -> None:
    try:
        _outer_with_cause()
    except ValueError:
        raise OSError("third")  # noqa: B904 - the implicit context is the subject


def _suppressed() -> None:
    try:
        _inner("k")
    except KeyError:
        raise LookupError("alone") from None


def _bare() -> None:
    raise StopAsyncIteration


def _json_error() -> None:
    json.loads("{nope")


def _blank_lines_in_message() -> None:
    raise ValueError("first\n\nthird")


def _cause_with_blank_lines_and_spaces() -> None:
    try:
        raise ValueError("first\n\nthird  ")
    except ValueError as exc:
        raise RuntimeError("ends with X") from exc


def _trailing_spaces() -> None:
    raise ValueError("spaces  ")


def _cause_never_raised() -> None:
    raise ValueError("v") from KeyError("never raised")


CHAINS = [
    _outer_with_cause,
    _outer_with_context,
    _three_deep,
    _suppressed,
    _bare,
    _json_error,
    _blank_lines_in_message,
    _cause_with_blank_lines_and_spaces,
    _cause_never_raised,
    _trailing_spaces,
]


# -- Python's text read back -------------------------------------------------------------------


@pytest.mark.parametrize("raiser", CHAINS, ids=[f.__name__ for f in CHAINS])
def test_text_is_read_back_into_the_exceptions_own_stacks(raiser: Any) -> None:
    exc = caught(raiser)
    direct = renderer()._stacks(exc)
    parsed = _parse(text_of(exc))
    assert parsed is not None
    assert [(s.exc_type, s.exc_value, s.is_cause, where(s.frames)) for s in parsed] == [
        (s.exc_type, s.exc_value, s.is_cause, where(s.frames)) for s in direct
    ]


def test_exceptions_never_raised_have_no_frames_and_are_read_back_too() -> None:
    exc = ValueError("outer")
    exc.__cause__ = KeyError("inner")
    parsed = _parse(text_of(exc))
    assert parsed is not None
    assert [(s.exc_type, s.exc_value, s.is_cause, s.frames) for s in parsed] == [
        ("ValueError", "outer", False, []),
        ("KeyError", "'inner'", True, []),
    ]


def test_a_cause_and_a_context_each_keep_their_kind_of_link() -> None:
    parsed = _parse(text_of(caught(_three_deep)))
    assert parsed is not None
    assert [(s.exc_type, s.is_cause) for s in parsed] == [
        ("OSError", False),
        ("ValueError", False),
        ("KeyError", True),
    ]


def test_the_frames_code_lines_carets_and_repeats_are_not_frames() -> None:
    text = "\n".join(
        [
            "Traceback (most recent call last):",
            '  File "/srv/app/main.py", line 12, in handler',
            "    total = price / count",
            "            ~~~~~~^~~~~~~",
            '  File "/srv/app/lib.py", line 3, in again',
            "    again()",
            "  [Previous line repeated 996 more times]",
            '  File "/srv/app/lib.py", line 4, in <lambda>',
            "ZeroDivisionError: division by zero",
        ]
    )
    parsed = _parse(text)
    assert parsed is not None
    [stack] = parsed
    assert where(stack.frames) == [
        ("/srv/app/main.py", 12, "handler"),
        ("/srv/app/lib.py", 3, "again"),
        ("/srv/app/lib.py", 4, "<lambda>"),
    ]
    assert (stack.exc_type, stack.exc_value, stack.is_cause) == (
        "ZeroDivisionError",
        "division by zero",
        False,
    )


def test_a_message_keeps_its_lines_its_blank_lines_and_its_colons() -> None:
    text = "\n".join(
        [
            "Traceback (most recent call last):",
            '  File "a.py", line 1, in f',
            "pkg.mod.Error: a: b",
            "",
            "c",
            "",
        ]
    )
    parsed = _parse(text)
    assert parsed is not None
    assert [(s.exc_type, s.exc_value) for s in parsed] == [("pkg.mod.Error", "a: b\n\nc")]


def test_an_exception_without_a_message_and_without_frames() -> None:
    parsed = _parse("KeyboardInterrupt\n")
    assert parsed is not None
    assert [(s.exc_type, s.exc_value, s.frames) for s in parsed] == [("KeyboardInterrupt", "", [])]


def test_an_earlier_exceptions_blank_lines_and_leading_blank_lines_are_dropped() -> None:
    text = "\n".join(
        [
            "",
            "Traceback (most recent call last):",
            '  File "a.py", line 1, in f',
            "KeyError: 'k'",
            "",
            "",
            "During handling of the above exception, another exception occurred:",
            "",
            "",
            "Traceback (most recent call last):",
            '  File "b.py", line 2, in g',
            "ValueError: v",
        ]
    )
    parsed = _parse(text)
    assert parsed is not None
    assert [(s.exc_type, s.exc_value, s.is_cause, where(s.frames)) for s in parsed] == [
        ("ValueError", "v", False, [("b.py", 2, "g")]),
        ("KeyError", "'k'", False, [("a.py", 1, "f")]),
    ]


@pytest.mark.parametrize(
    "text",
    [
        "",
        "\n\n",
        "just a sentence: with a colon",
        "Traceback (most recent call last):\n",
        'Traceback (most recent call last):\n  File "a.py", line 1, in f\n',
        "  + Exception Group Traceback (most recent call last):\n"
        '  |   File "a.py", line 1, in f\n'
        "  | ExceptionGroup: two (2 sub-exceptions)\n"
        "  +-+---------------- 1 ----------------\n"
        "    | ValueError: one\n",
        "Traceback (most recent call last):\nValueError: v\n\n"
        "The above exception was the direct cause of the following exception:\n\nnot a traceback",
    ],
    ids=["empty", "blank", "prose", "head-only", "no-exception", "group", "bad-second"],
)
def test_text_in_another_format_is_not_read_as_a_traceback(text: str) -> None:
    assert _parse(text) is None


def test_text_in_another_format_is_shown_as_it_is_indented_and_escaped() -> None:
    text = "  + Exception Group Traceback (most recent call last):\n  | \x1b[31mred\x1b[0m\tx \n\n"
    assert renderer().from_text(text) == [
        INDENT + "  + Exception Group Traceback (most recent call last):",
        INDENT + "  | \\x1b[31mred\\x1b[0m\\tx",
    ]


def test_a_text_traceback_is_rendered_with_its_frames_folded_like_the_exceptions() -> None:
    text = "\n".join(
        [
            "Traceback (most recent call last):",
            '  File "/srv/app/main.py", line 12, in handler',
            f'  File "{STARLETTE}routing.py", line 3, in route',
            f'  File "{FASTAPI}routing.py", line 4, in run',
            '  File "/srv/app/views.py", line 7, in view',
            "ValueError: bad [bold]input[/bold] :smile:",
        ]
    )
    lines = renderer(collapse=("starlette", "fastapi")).from_text(text)
    shown = "\n".join(lines)
    assert "Traceback (most recent call last)" in lines[0]
    assert "handler" in shown and "view" in shown
    assert "… 2 framework frames (starlette, fastapi) …" in shown
    assert "route" not in shown and "run:" not in shown
    assert lines[-1] == INDENT + "ValueError: bad [bold]input[/bold] :smile:"


# -- which frames are shown --------------------------------------------------------------------


def test_without_packages_to_fold_the_frames_are_given_back_as_they_are() -> None:
    frames = [frame(STARLETTE + "a.py"), frame(USER)]
    assert renderer()._collapse(frames) is frames


def test_one_frame_is_always_shown_even_a_frameworks() -> None:
    frames = [frame(STARLETTE + "a.py")]
    assert renderer(collapse=("starlette",))._collapse(frames) is frames


def test_a_run_of_framework_frames_is_one_line_the_last_frame_always_shown() -> None:
    tb = renderer(collapse=("starlette", "fastapi"))
    first = [frame(STARLETTE + "a.py", "a"), frame(USER, "user")]
    shown = tb._collapse(first)
    assert [getattr(f, "text", f.name) for f in shown] == [
        "… 1 framework frame (starlette) …",
        "user",
    ]
    frames = [
        frame(USER, "user"),
        frame(STARLETTE + "a.py", "a"),
        frame(STDLIB + "json/decoder.py", "std"),
        frame(FASTAPI + "b.py", "b"),
        frame(STARLETTE + "c.py", "c"),
        frame(USER, "again"),
        frame(FASTAPI + "d.py", "d"),
        frame(STARLETTE + "e.py", "raised_here"),
    ]
    shown = tb._collapse(frames)
    assert [getattr(f, "text", f.name) for f in shown] == [
        "user",
        "… 4 framework frames (starlette, fastapi) …",
        "again",
        "… 1 framework frame (fastapi) …",
        "raised_here",
    ]
    assert all(isinstance(f, _Collapsed) == hasattr(f, "text") for f in shown)
    assert shown[0] is frames[0] and shown[2] is frames[5] and shown[4] is frames[7]


def test_standard_library_frames_alone_are_shown_and_before_a_framework_fold_with_it() -> None:
    tb = renderer(collapse=("starlette",))
    frames = [
        frame(USER, "user"),
        frame(STDLIB + "asyncio/events.py", "std1"),
        frame(STDLIB + "asyncio/base_events.py", "std2"),
        frame(USER, "again"),
        frame(STDLIB + "asyncio/events.py", "std3"),
        frame(STARLETTE + "a.py", "a"),
        frame(USER, "last"),
    ]
    shown = tb._collapse(frames)
    assert [getattr(f, "text", f.name) for f in shown] == [
        "user",
        "std1",
        "std2",
        "again",
        "… 2 framework frames (starlette) …",
        "last",
    ]


def test_each_file_is_the_users_the_standard_librarys_or_a_frameworks() -> None:
    tb = renderer(collapse=("fapilog", "fapilog.exporters", "starlette"))
    fapilog_dir = os.path.join(os.path.dirname(FAPILOG_INIT), "")
    assert tb._kind(fapilog_dir + "exporters/console.py") == (2, "fapilog")  # the first named
    assert tb._kind(STARLETTE + "routing.py") == (2, "starlette")
    assert tb._kind(os.__file__) == (1, "")
    assert tb._kind(STDLIB + "site-packages/thing/x.py") == (0, "")
    assert tb._kind(STDLIB + "dist-packages/thing/x.py") == (0, "")
    assert tb._kind(USER) == (0, "")
    assert tb._kind(STARLETTE.rstrip(os.sep) + "_extra/x.py") == (0, "")
    assert renderer()._kind(os.__file__) == (1, "")


def test_a_single_module_package_is_folded_by_its_file() -> None:
    module = importlib.import_module("typing_extensions")
    assert module.__file__ is not None
    tb = renderer(collapse=("typing_extensions",))
    assert tb._kind(module.__file__) == (2, "typing_extensions")
    assert tb._kind(module.__file__ + "x") == (0, "")


def test_the_kinds_remembered_stay_bounded() -> None:
    tb = renderer(collapse=("starlette",))
    for number in range(5000):
        assert tb._kind(f"/srv/app/module_{number}.py") == (0, "")
        assert len(tb._kinds) <= 4096
    assert tb._kind(STARLETTE + "a.py") == (2, "starlette")


def test_packages_are_found_by_their_folder_real_and_linked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = tmp_path / "real"
    (real / "fapilog_probe_pkg").mkdir(parents=True)
    (real / "fapilog_probe_pkg" / "__init__.py").write_text("")
    (real / "fapilog_probe_mod.py").write_text("")
    (tmp_path / "linked").symlink_to(real, target_is_directory=True)
    monkeypatch.syspath_prepend(str(tmp_path / "linked"))
    importlib.invalidate_caches()
    found = _package_paths(
        ["fapilog_probe_pkg", "fapilog_probe_mod", "no_such_package_x", "no_such.sub", ""]
    )
    assert found == [
        (str(tmp_path / "linked" / "fapilog_probe_pkg") + os.sep, "fapilog_probe_pkg"),
        (str(real / "fapilog_probe_pkg") + os.sep, "fapilog_probe_pkg"),
        (str(tmp_path / "linked" / "fapilog_probe_mod.py"), "fapilog_probe_mod"),
        (str(real / "fapilog_probe_mod.py"), "fapilog_probe_mod"),
    ]
    assert _package_paths(["starlette"])[0] == (STARLETTE, "starlette")
    found = _package_paths(["", "no_such_package_x", "no_such.sub", "starlette"])
    assert found[0] == (STARLETTE, "starlette")  # the names not found are passed over


def test_the_standard_library_is_known_by_both_of_its_folders() -> None:
    paths = _stdlib_paths()
    for key in ("stdlib", "platstdlib"):
        folder = sysconfig.get_paths()[key]
        assert os.path.join(folder, "") in paths
        assert os.path.join(os.path.realpath(folder), "") in paths
    assert all(path.endswith(os.sep) for path in paths)


# -- the exception itself ----------------------------------------------------------------------


def test_a_chain_is_each_exception_once_with_its_link_notes_and_frames() -> None:
    exc = caught(_three_deep)
    exc.__notes__ = ["a note \x1b[2J", "token=abc123"]
    stacks = renderer(redactor=Redactor())._stacks(exc)
    assert [(s.exc_type, s.exc_value, s.is_cause, s.notes) for s in stacks] == [
        ("OSError", "third", False, ["a note \\x1b[2J", "token=[REDACTED]"]),
        ("ValueError", "lookup failed\nsecond line: with a colon", False, []),
        ("KeyError", "'k'", True, []),
    ]
    summaries = traceback.extract_tb(exc.__traceback__)
    assert where(stacks[0].frames) == [(f.filename, f.lineno, f.name) for f in summaries]


def test_notes_that_are_not_a_list_are_left_out() -> None:
    exc = caught(_bare)
    exc.__notes__ = "not a list"  # type: ignore[attr-defined]
    [stack] = renderer()._stacks(exc)
    assert stack.notes == []


def test_a_cause_wins_over_a_context_and_a_cycle_ends() -> None:
    first, second = KeyError("one"), ValueError("two")
    first.__context__ = ValueError("context")
    first.__cause__ = second
    second.__cause__ = first
    stacks = renderer()._stacks(first)
    assert [(s.exc_type, s.exc_value, s.is_cause) for s in stacks] == [
        ("KeyError", "'one'", False),
        ("ValueError", "two", True),
    ]


def test_a_suppressed_context_ends_the_chain() -> None:
    exc = caught(_suppressed)
    assert exc.__context__ is not None
    stacks = renderer()._stacks(exc)
    assert [(s.exc_type, s.exc_value) for s in stacks] == [("LookupError", "alone")]


def test_an_exceptions_type_message_and_file_names_are_escaped() -> None:
    exc = ValueError("line\x1b[31m red\nnext\x07")
    [stack] = renderer()._stacks(exc)
    assert stack.exc_type == "ValueError"
    assert stack.exc_value == "line\\x1b[31m red\nnext\\x07"
    code = compile("raise KeyError('k')", "evil\x1b[2J.py", "exec")
    raised = caught(exec, code)
    [stack] = renderer()._stacks(raised)
    assert stack.frames[-1].filename == "evil\\x1b[2J.py"
    assert stack.frames[-1].name == "<module>"
    assert stack.exc_type == error_type(raised)


class _Broken(Exception):
    @property  # type: ignore[override]
    def __cause__(self) -> BaseException | None:
        raise RuntimeError("no cause today")


def test_an_exception_that_cannot_be_read_is_its_type_and_message_alone() -> None:
    exc = _Broken("bad \x1b[31m news")
    assert renderer().from_exception(exc) == [INDENT + f"{error_type(exc)}: bad \\x1b[31m news"]


def test_an_exception_is_rendered_with_its_framework_frames_folded() -> None:
    exc = caught(_json_error)
    lines = renderer(collapse=("json",)).from_exception(exc)
    shown = "\n".join(lines)
    assert all(whole(line) for line in lines)
    assert re.search(r"… \d+ framework frames? \(json\) …", shown)
    assert "_json_error" in shown
    assert INDENT + "json.decoder.JSONDecodeError: Expecting property name" in shown


# -- where the exception was raised ------------------------------------------------------------


class _Code:
    def __init__(self, positions: list[Any] | None = None, fails: bool = False) -> None:
        self._positions = positions or []
        self._fails = fails

    def co_positions(self) -> Any:
        if self._fails:
            raise RuntimeError("no positions")
        return iter(self._positions)


def test_the_raising_instructions_range_is_its_start_and_end() -> None:
    code = _Code([(1, 1, 0, 1), (2, 3, 4, 5), (6, 7, 8, 9)])
    assert _position(code, 0) == ((1, 0), (1, 1))
    assert _position(code, 1) == ((1, 0), (1, 1))
    assert _position(code, 2) == ((2, 4), (3, 5))
    assert _position(code, 4) == ((6, 8), (7, 9))
    assert _position(code, 5) == ((6, 8), (7, 9))


@pytest.mark.parametrize(
    ("code", "lasti"),
    [
        (object(), 2),
        (_Code([(1, 1, 0, 1)]), -1),
        (_Code([(1, 1, 0, 1)]), 2),
        (_Code([(1, 1, None, 1)]), 0),
        (_Code([(None, 1, 0, 1)]), 0),
        (_Code([(1, 1, 0, 1)], fails=True), 0),
    ],
    ids=["no-positions", "negative", "past-the-end", "no-column", "no-line", "raises"],
)
def test_no_range_where_the_code_does_not_say(code: Any, lasti: int) -> None:
    assert _position(code, lasti) is None


def _deep() -> int:
    a = 1
    b = [a, a, a]
    c = {"k": b, "n": len(b)}
    return c["n"] + {"k": b}["missing"] + len(b)


def test_the_range_is_the_one_pythons_own_traceback_shows() -> None:
    """(Python 3.11 and later; before, code has no positions and there is no range.)"""
    exc = caught(_deep)
    tb = exc.__traceback__
    assert tb is not None and tb.tb_next is not None
    tb = tb.tb_next
    assert tb.tb_lasti > 8
    summary: Any = traceback.extract_tb(exc.__traceback__)[-1]
    expected = (
        ((summary.lineno, summary.colno), (summary.end_lineno, summary.end_colno))
        if NEW_POSITIONS
        else None
    )
    assert _position(tb.tb_frame.f_code, tb.tb_lasti) == expected


# -- local variables ---------------------------------------------------------------------------


class _Thing:
    def __repr__(self) -> str:
        return "Thing()"

    def __str__(self) -> str:
        return "thing"


class _Credentials:
    def __init__(self, user: str, password: str) -> None:
        self.user, self.password = user, password

    def __repr__(self) -> str:
        return f"Credentials(user={self.user!r}, password={self.password!r})"


def _with_locals() -> None:
    password = "hunter2"  # noqa: F841
    config = {"token": "abc", "n": 1}  # noqa: F841
    thing = _Thing()  # noqa: F841
    word = "plain"  # noqa: F841
    said = "Authorization: Bearer abcdefghijklmnop"  # noqa: F841
    marker = "[REDACTED]"  # noqa: F841
    pair = ("a", "b")  # noqa: F841
    exactly = "x" * 158  # noqa: F841
    longer = "y" * 159  # noqa: F841
    escape = "\x1b[31m"  # noqa: F841
    pin = {"password": 12345}  # noqa: F841
    nested = {"k": {1, 2}}  # noqa: F841
    numbers = {1, 2}  # noqa: F841
    __hidden = 1
    module = os  # noqa: F841
    function = len  # noqa: F841
    kind = int  # noqa: F841
    helper = _inner  # noqa: F841
    raise ValueError("v")


def _local_values(redactor: Redactor | None) -> dict[str, str]:
    exc = caught(_with_locals)
    frames = renderer(show_locals=True, redactor=redactor)._frames(exc.__traceback__)
    assert frames[-1].name == "_with_locals"
    return {name: node.value_repr for name, node in (frames[-1].locals or {}).items()}


def test_local_variables_are_shown_redacted_by_name_and_in_their_text() -> None:
    assert _local_values(Redactor()) == {
        "password": "[REDACTED]",
        "config": "{'token': '[REDACTED]', 'n': 1}",
        "thing": "Thing()",
        "word": "'plain'",
        "said": "'Authorization: [REDACTED]'",
        "marker": "'[REDACTED]'",
        "pair": "('a', 'b')",
        "exactly": "'" + "x" * 158 + "'",
        "longer": "'" + "y" * 158 + "…",
        "escape": "'\\x1b[31m'",
        "pin": "{'password': '[REDACTED]'}",  # the redacted value, not the text's redaction
        "nested": "{'k': [1, 2]}",  # a container is shown as logged
        "numbers": "{1, 2}",
    }


def test_without_a_redactor_local_variables_are_their_repr() -> None:
    values = _local_values(None)
    assert values["password"] == "'hunter2'"
    assert values["config"] == "{'token': 'abc', 'n': 1}"
    assert values["said"] == "'Authorization: Bearer abcdefghijklmnop'"


def _with_an_object_holding_a_secret() -> None:
    credentials = _Credentials("ann", "hunter2")  # noqa: F841
    raise ValueError("v")


def test_an_object_whose_logged_form_holds_a_secret_is_shown_redacted() -> None:
    exc = caught(_with_an_object_holding_a_secret)
    frames = renderer(show_locals=True, redactor=Redactor())._frames(exc.__traceback__)
    [(name, node)] = (frames[-1].locals or {}).items()
    assert name == "credentials"
    assert "hunter2" not in node.value_repr


def test_locals_are_kept_for_shown_frames_only_and_only_when_asked() -> None:
    exc = caught(_json_error)
    frames = renderer(collapse=("json",), show_locals=True)._frames(exc.__traceback__)
    for item in frames:
        if isinstance(item, _Collapsed):
            assert item.locals is None
        else:
            assert item.locals is not None
    assert any(isinstance(item, _Collapsed) for item in frames)
    assert frames[0].locals is not None and list(frames[0].locals) == ["args"]
    plain = renderer(collapse=("json",))._frames(exc.__traceback__)
    assert all(item.locals is None for item in plain)
    assert [getattr(f, "text", (f.filename, f.lineno, f.name)) for f in plain] == [
        getattr(f, "text", (f.filename, f.lineno, f.name)) for f in frames
    ]


# -- the rendered block ------------------------------------------------------------------------


def test_the_block_is_indented_within_its_width_plain_or_coloured() -> None:
    exc = caught(_three_deep)
    plain = renderer(width=60).from_exception(exc)
    assert all(whole(line) for line in plain)
    assert max(len(line) for line in plain) == 60
    assert not any(ANSI.search(line) for line in plain)
    coloured = renderer(width=60, colors=True).from_exception(exc)
    assert any(re.search(r"\x1b\[(?:\d+;)*3[1-7]m", line) for line in coloured)  # colours
    assert [ANSI.sub("", line).rstrip() or INDENT for line in coloured] == plain
    narrow = renderer(width=10).from_exception(exc)
    assert max(len(line) for line in narrow) == 40 + len(INDENT)


def test_the_raising_line_is_shown_with_two_lines_around_it() -> None:
    exc = caught(_inner, "k")
    lines = renderer(width=120).from_exception(exc)
    numbers = {int(n) for line in lines for n in re.findall(r"^ +│ (?:❱)? +(\d+) ", line)}
    called = caught.__code__.co_firstlineno + 2  # function(*args)
    raised = _inner.__code__.co_firstlineno + 1
    assert numbers == set(range(called - 2, called + 3)) | set(range(raised - 2, raised + 3))


def test_the_blocks_last_line_is_the_messages_last_line_whole() -> None:
    lines = renderer().from_exception(caught(_cause_with_blank_lines_and_spaces))
    assert lines[-1] == INDENT + "RuntimeError: ends with X"


def _recurse(depth: int) -> None:
    if depth:
        _recurse(depth - 1)
    raise ValueError("deep")


def test_a_deep_traceback_shows_forty_frames_and_hides_the_middle() -> None:
    shown = "\n".join(renderer(width=120).from_exception(caught(_recurse, 60)))
    assert re.search(r"\b22 frames hidden\b", shown)  # 62 frames, 40 shown


def test_markup_and_emoji_codes_in_a_message_are_shown_as_written() -> None:
    exc = ValueError("[bold]x[/bold] :smile:")
    lines = renderer(colors=True).from_exception(exc)
    assert ANSI.sub("", lines[-1]) == INDENT + "ValueError: [bold]x[/bold] :smile:"


def test_local_variables_are_shown_in_the_block_when_asked() -> None:
    exc = caught(_with_locals)
    shown = "\n".join(
        renderer(width=120, show_locals=True, redactor=Redactor()).from_exception(exc)
    )
    assert "'plain'" in shown and "[REDACTED]" in shown and "hunter2" not in shown
    hidden = "\n".join(renderer(width=120, redactor=Redactor()).from_exception(exc))
    assert "'plain'" not in hidden


def test_a_frame_knows_the_range_of_the_instruction_that_raised() -> None:
    exc = caught(_deep)
    frames = renderer()._frames(exc.__traceback__)
    summary: Any = traceback.extract_tb(exc.__traceback__)[-1]
    expected = (
        ((summary.lineno, summary.colno), (summary.end_lineno, summary.end_colno))
        if NEW_POSITIONS
        else None
    )
    assert getattr(frames[-1], "last_instruction", expected) == expected


def test_code_without_a_file_name_is_shown_as_a_question_mark() -> None:
    exc = caught(exec, compile("raise KeyError('k')", "", "exec"))
    [stack] = renderer()._stacks(exc)
    assert stack.frames[-1].filename == "?"


def test_an_exception_line_without_a_message_keeps_the_lines_after_it() -> None:
    parsed = _parse("KeyboardInterrupt\na note\nanother\n")
    assert parsed is not None
    assert [(s.exc_type, s.exc_value) for s in parsed] == [("KeyboardInterrupt", "a note\nanother")]
