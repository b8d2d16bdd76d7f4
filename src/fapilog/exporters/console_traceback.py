"""Tracebacks on the development console, rendered by rich: each shown frame with its code
and the raising line highlighted, the frames of frameworks (``FAPILOG_CONSOLE__COLLAPSE``:
starlette, fastapi, anyio, uvicorn, fapilog by default) folded into one line each run
(``… 23 framework frames (fapilog, starlette, fastapi, anyio) …``), local variables on
request (``FAPILOG_CONSOLE__LOCALS``), redacted like every logged value.

Two sources. On the calling thread the console has the exception itself (the Redactor
replaces it by its text before the end of the chain, so `fapilog.pipeline.direct` keeps it
aside for the console): its frames are read there, while their local variables are what
they were when the record was logged. A record that reaches the console without it (a
foreign record, or one written from the queue) carries the traceback as text
(``exception.stacktrace``, redacted already): its frames are read back from Python's
traceback format; text that is not in that format is shown as it is, escaped.

Text from the application (exception messages, notes, local values, names) is escaped
(`console_text`), and the block is indented under its record: nothing in it can pass for a
record of its own.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import io
import os
import re
import sysconfig
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import islice
from types import BuiltinFunctionType, FrameType, FunctionType, ModuleType, TracebackType
from typing import TYPE_CHECKING, Any

from rich.console import Console, ConsoleRenderable, RenderResult, group
from rich.pretty import Node
from rich.style import Style
from rich.text import Text
from rich.traceback import Frame, Stack, Trace, Traceback

from fapilog.capture.coerce import coerce_value, safe_repr, safe_str
from fapilog.exporters.render import console_text
from fapilog.otel.semconv import error_type

if TYPE_CHECKING:
    from fapilog.capture.redaction import Redactor

__all__ = ["INDENT", "TracebackRenderer"]

INDENT = "    "  # every line of a traceback block starts with it
_EXTRA_LINES = 2  # lines of code shown around each frame's line
_MAX_FRAMES = 40  # frames shown per exception before rich hides the middle ones
_MAX_LOCAL = 160  # characters of a local variable's value
_COLLAPSED_STYLE = Style(dim=True, italic=True)
_FRAME_FIELDS = frozenset(field.name for field in dataclasses.fields(Frame))
_STACK_FIELDS = frozenset(field.name for field in dataclasses.fields(Stack))
_USER, _STDLIB, _FRAMEWORK = 0, 1, 2
# local variables not shown (a module frame's imports, functions and classes)
_NOT_SHOWN = (ModuleType, FunctionType, BuiltinFunctionType, type)


@dataclass
class _Collapsed(Frame):
    """A run of framework frames, shown as one line."""

    text: str = ""


def _frame(**fields: Any) -> Frame:
    """A rich Frame with the fields this rich version has (`last_instruction` is newer)."""
    return Frame(**{k: v for k, v in fields.items() if k in _FRAME_FIELDS})


def _stack(**fields: Any) -> Stack:
    return Stack(**{k: v for k, v in fields.items() if k in _STACK_FIELDS})


class _Traceback(Traceback):
    """rich's Traceback, with a run of collapsed frames shown as its one line."""

    @group()
    def _render_stack(self, stack: Stack) -> RenderResult:
        run: list[Frame] = []
        for frame in stack.frames:
            if isinstance(frame, _Collapsed):
                if run:
                    yield super()._render_stack(dataclasses.replace(stack, frames=run))
                    run = []
                yield Text(frame.text, style=_COLLAPSED_STYLE)
            else:
                run.append(frame)
        if run:
            yield super()._render_stack(dataclasses.replace(stack, frames=run))


def _package_paths(names: Iterable[str]) -> list[tuple[str, str]]:
    """(path prefix, package name) of each named package that is installed: its folder
    (with a trailing separator), or its file for a single-module package."""
    found: list[tuple[str, str]] = []
    for name in names:
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            continue
        if spec is None:
            continue
        places = list(spec.submodule_search_locations or [])
        paths = [os.path.join(place, "") for place in places]
        if not paths and spec.origin:
            paths = [spec.origin]
        for path in paths:
            found.append((path, name))
            real = os.path.realpath(path.rstrip(os.sep)) + (os.sep if path.endswith(os.sep) else "")
            if real != path:
                found.append((real, name))
    return found


def _stdlib_paths() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    found = set()
    for key in ("stdlib", "platstdlib"):
        path = paths.get(key)
        if path:
            found.add(os.path.join(path, ""))
            found.add(os.path.join(os.path.realpath(path), ""))
    return tuple(found)


_PACKAGES_DIRS = ("site-packages", "dist-packages")

# Python's traceback format (the text of `exception.stacktrace`)
_HEAD = "Traceback (most recent call last):"
_FILE = re.compile(r'^  File "(?P<file>.+)", line (?P<line>\d+), in (?P<name>.+)$')
_CAUSE = "The above exception was the direct cause of the following exception:"
_CONTEXT = "During handling of the above exception, another exception occurred:"
_TYPE = re.compile(r"^[A-Za-z_][\w.]*$")


class TracebackRenderer:
    """A traceback as the console's indented block (a list of lines, without newlines)."""

    __slots__ = ("_colors", "_framework", "_kinds", "_locals", "_redactor", "_stdlib", "_width")

    def __init__(
        self,
        *,
        colors: bool,
        width: int,
        collapse: Sequence[str],
        show_locals: bool,
        redactor: Redactor | None,
    ) -> None:
        self._colors = colors
        self._width = max(40, width - len(INDENT))
        self._framework = _package_paths(collapse)
        self._stdlib = _stdlib_paths()
        self._kinds: dict[str, tuple[int, str]] = {}
        self._locals = show_locals
        self._redactor = redactor

    # -- what each frame is ------------------------------------------------------------

    def _kind(self, filename: str) -> tuple[int, str]:
        """(user, stdlib or framework; the framework's package name) of a frame's file."""
        known = self._kinds.get(filename)
        if known is not None:
            return known
        kind: tuple[int, str] = (_USER, "")
        for prefix, name in self._framework:
            # a package's folder holds its files; a single-module package is its one file
            if filename.startswith(prefix) if prefix.endswith(os.sep) else filename == prefix:
                kind = (_FRAMEWORK, name)
                break
        else:
            if filename.startswith(self._stdlib) and not any(
                part in filename for part in _PACKAGES_DIRS
            ):
                kind = (_STDLIB, "")
        if len(self._kinds) >= 4096:
            self._kinds.clear()
        self._kinds[filename] = kind
        return kind

    def _collapse(self, frames: list[Frame]) -> list[Frame]:
        """Each run of framework frames (with the standard library's frames among them)
        as one `_Collapsed` frame; the last frame, where the exception was raised, is
        always shown."""
        if not self._framework or len(frames) < 2:
            return frames
        kinds = [self._kind(frame.filename) for frame in frames]
        shown: list[Frame] = []
        last = len(frames) - 1
        index = 0
        while index < len(frames):
            if kinds[index][0] == _USER or index == last:
                shown.append(frames[index])
                index += 1
                continue
            end = index
            while end < last and kinds[end][0] != _USER:
                end += 1
            names = list(dict.fromkeys(name for kind, name in kinds[index:end] if name))
            if names:
                count = end - index
                plural = "frame" if count == 1 else "frames"
                text = f"… {count} framework {plural} ({', '.join(names)}) …"
                shown.append(_Collapsed(filename="", lineno=0, name="", text=text))
            else:  # standard library frames alone: shown
                shown.extend(frames[index:end])
            index = end
        return shown

    # -- from the exception --------------------------------------------------------------

    def from_exception(self, exc: BaseException) -> list[str]:
        """The block of `exc`, read on the calling thread (never raises)."""
        try:
            return self._render(self._stacks(exc))
        except Exception:
            return [INDENT + console_text(f"{error_type(exc)}: {safe_str(exc)}")]

    def _text(self, text: str) -> str:
        """Text of the application shown in a traceback: redacted, escaped (line breaks
        kept as the block's own lines)."""
        if self._redactor is not None:
            text = self._redactor.redact_text(text)
        return "\n".join(console_text(line) for line in text.split("\n"))

    def _stacks(self, exc: BaseException) -> list[Stack]:
        stacks: list[Stack] = []
        seen: set[int] = set()
        current: BaseException | None = exc
        is_cause = False
        while current is not None and id(current) not in seen:
            seen.add(id(current))
            notes = getattr(current, "__notes__", None)
            stacks.append(
                _stack(
                    exc_type=console_text(error_type(current)),
                    exc_value=self._text(safe_str(current)),
                    is_cause=is_cause,
                    frames=self._frames(current.__traceback__),
                    notes=[self._text(safe_str(note)) for note in notes]
                    if isinstance(notes, list)
                    else [],
                )
            )
            if current.__cause__ is not None:
                current, is_cause = current.__cause__, True
            elif current.__context__ is not None and not current.__suppress_context__:
                current, is_cause = current.__context__, False
            else:
                break
        return stacks

    def _frames(self, tb: TracebackType | None) -> list[Frame]:
        frames: list[Frame] = []
        objects: list[FrameType] = []
        while tb is not None:
            frame = tb.tb_frame
            code = frame.f_code
            frames.append(
                _frame(
                    filename=console_text(code.co_filename or "?"),
                    lineno=tb.tb_lineno,
                    name=console_text(code.co_name),
                    last_instruction=_position(code, tb.tb_lasti),
                )
            )
            objects.append(frame)
            tb = tb.tb_next
        shown = self._collapse(frames)
        if self._locals:
            by_frame = dict(zip(map(id, frames), objects, strict=True))
            for item in shown:
                frame_object = by_frame.get(id(item))  # (None for a collapsed run)
                if frame_object is not None:
                    item.locals = self._locals_of(frame_object)
        return shown

    def _locals_of(self, frame: FrameType) -> dict[str, Node]:
        """The frame's local variables as rich shows them: values redacted (by their name,
        and in their text), shortened, escaped."""
        shown: dict[str, Node] = {}
        redactor = self._redactor
        for name, value in list(frame.f_locals.items()):
            if name.startswith("__") or isinstance(value, _NOT_SHOWN):
                continue
            text = safe_repr(value)
            if redactor is not None:
                # by its name and inside containers; an object is shown as its repr,
                # unless its logged form had something to redact
                redacted = redactor.redact_value({name: value}).get(name, redactor.marker)
                if redacted == redactor.marker and value != redactor.marker:
                    text = redactor.marker
                elif redacted is not value and (
                    isinstance(value, (str, bytes, dict, list, tuple))
                    or redacted != coerce_value(value)
                ):
                    text = safe_repr(redacted)
                text = redactor.redact_text(text)
            if len(text) > _MAX_LOCAL:
                text = text[: _MAX_LOCAL - 1] + "…"
            shown[console_text(name)] = Node(value_repr=console_text(text))
        return shown

    # -- from the text -------------------------------------------------------------------

    def from_text(self, text: str) -> list[str]:
        """The block of a traceback given as Python's text (``exception.stacktrace``);
        text in another format is shown as it is, each line indented and escaped."""
        try:
            stacks = _parse(text)
            if stacks is not None:
                for stack in stacks:
                    stack.frames = self._collapse(stack.frames)
                return self._render(stacks)
        except Exception:
            pass
        return [INDENT + console_text(line) for line in text.rstrip().split("\n")]

    # -- rendering -----------------------------------------------------------------------

    def _render(self, stacks: list[Stack]) -> list[str]:
        colors = self._colors
        console = Console(
            file=io.StringIO(),
            width=self._width,
            color_system="standard" if colors else None,
            force_terminal=colors,
            no_color=not colors,
            highlight=False,
            emoji=False,
            markup=False,
            legacy_windows=False,
            soft_wrap=False,
        )
        renderable: ConsoleRenderable = _Traceback(
            Trace(stacks=stacks),
            width=self._width,
            extra_lines=_EXTRA_LINES,
            show_locals=self._locals,
            max_frames=_MAX_FRAMES,
            word_wrap=True,
        )
        with console.capture() as captured:
            console.print(renderable)
        lines = captured.get().rstrip("\n").split("\n")
        return [INDENT + line.rstrip() for line in lines]  # (a blank line keeps its indent)


def _position(code: Any, lasti: int) -> tuple[tuple[int, int], tuple[int, int]] | None:
    """The source range of the instruction that raised (Python 3.11 and later)."""
    positions = getattr(code, "co_positions", None)
    if positions is None or lasti < 0:
        return None
    try:
        found = next(islice(positions(), lasti // 2, lasti // 2 + 1), None)
    except Exception:
        return None
    if found is None or None in found:
        return None
    start_line, end_line, start_column, end_column = found
    return ((start_line, start_column), (end_line, end_column))


def _parse(text: str) -> list[Stack] | None:
    """Python's traceback text as rich stacks (the last exception first), or None when
    the text is not in that format (an exception group's tree, text of another kind)."""
    blocks: list[list[str]] = [[]]
    causes: list[bool] = []
    for line in text.rstrip("\n").split("\n"):
        if line in (_CAUSE, _CONTEXT):
            causes.append(line == _CAUSE)
            blocks.append([])
        else:
            blocks[-1].append(line)
    stacks: list[Stack] = []
    for index, block in enumerate(blocks):
        lines = block  # (the blank lines around a separator: before it, the message's end)
        while lines and not lines[0].strip():
            lines = lines[1:]
        stack = _parse_block(lines, causes[index] if index < len(causes) else False)
        if stack is None:
            return None
        stacks.append(stack)
    return stacks[::-1]


def _parse_block(lines: list[str], is_cause: bool) -> Stack | None:
    frames: list[Frame] = []
    position = 0
    if lines and lines[0] == _HEAD:
        position = 1
    while position < len(lines):
        line = lines[position]
        match = _FILE.match(line)
        if match is not None:
            frames.append(
                _frame(
                    filename=console_text(match["file"]),
                    lineno=int(match["line"]),
                    name=console_text(match["name"]),
                )
            )
        elif not line.startswith("    ") and not line.startswith("  [Previous line"):
            break
        position += 1
    rest = lines[position:]
    if not rest:
        return None
    # the exception: "module.Type: message" (its message may have more lines), or "Type"
    kind, sep, message = rest[0].partition(": ")
    if not _TYPE.match(kind):
        return None  # an exception group's tree, or text in another format
    message_lines = [message, *rest[1:]] if sep else rest[1:]
    value = "\n".join(console_text(line) for line in message_lines).strip("\n")
    return _stack(exc_type=console_text(kind), exc_value=value, is_cause=is_cause, frames=frames)
