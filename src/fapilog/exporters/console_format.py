"""The development console's line: time, level, logger, message, then the key=value pairs,
aligned; the FastAPI request event as ``GET /items/7 → 200 in 3.2 ms``.

::

    12:00:00.123 [info    ] app.orders     order placed                 order_id=7 trace_id=4bf92f35
    12:00:00.131 [info    ] fapilog.request GET /items/7 → 200 in 3.2 ms http.route=/items/{item_id}

Colours come from rich: each style is rendered by rich once, to the ANSI codes that go
around a piece of text, and lines are assembled from those (rich's `Text` renders a line in
about 200 µs, too slow for a log call; the codes are the same). Everything that comes from
the application or a client (message, logger name, keys, values) is escaped
(`fapilog.exporters.render.console_text`): a record is one line, and no escape sequence but
the console's own colours reaches the terminal.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import IO, Any, NamedTuple

from rich.cells import cell_len
from rich.color import ColorSystem
from rich.style import Style

from fapilog.capture.coerce import safe_str
from fapilog.exporters.render import console_text, console_value

__all__ = [
    "ConsoleLine",
    "Palette",
    "REQUEST_FIELDS",
    "REQUEST_LOGGER",
    "Shown",
    "colors_wanted",
    "is_terminal",
]

# the FastAPI middleware's request event (fapilog.integrations.middleware): its logger and
# the attributes its console line is made of
REQUEST_LOGGER = "fapilog.request"
_METHOD, _PATH = "http.request.method", "url.path"
_STATUS, _DURATION = "http.response.status_code", "duration_ms"
REQUEST_FIELDS = frozenset({_METHOD, _PATH, _STATUS, _DURATION})
_COMPLETED = "request completed"

_LEVEL_WIDTH = 8  # "critical", "warning "
_HEAD_WIDTH = 44  # logger and message are padded to this many cells: the pairs align
_ID_DIGITS = 8  # trace and span ids are shortened to their first hex digits

# rich style definitions, by the names the line uses
STYLES = {
    "time": "dim",
    "debug": "blue",
    "info": "green",
    "warning": "yellow",
    "error": "bold red",
    "critical": "bold white on red",
    "other": "magenta",  # a level fapilog does not name (a foreign record's)
    "logger": "blue",
    "message": "bold",
    "key": "cyan",
    "ids": "dim",
    "method": "bold",
    "2xx": "green",
    "3xx": "cyan",
    "4xx": "yellow",
    "5xx": "bold red",
    "note": "dim",
}


def colors_wanted(stream: IO[Any] | None) -> bool:
    """Whether the console colours its lines: never with ``NO_COLOR`` set (no-color.org),
    always with ``FORCE_COLOR`` set (any value but empty), else when the stream is a
    terminal (and ``TERM`` is not ``dumb``)."""
    environ = os.environ
    if environ.get("NO_COLOR"):
        return False
    if environ.get("FORCE_COLOR"):
        return True
    if environ.get("TERM") == "dumb":
        return False
    return is_terminal(stream)


def is_terminal(stream: IO[Any] | None) -> bool:
    """Whether `stream` is a terminal (False for a stream without `isatty`, or closed)."""
    try:
        return bool(stream is not None and stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


class Palette:
    """The ANSI codes before and after a piece of text, per style name, rendered once by
    rich; empty strings when colours are off."""

    __slots__ = ("codes", "on")

    def __init__(self, colors: bool) -> None:
        self.on = colors
        self.codes: dict[str, tuple[str, str]] = {}
        for name, definition in STYLES.items():
            if colors:
                rendered = Style.parse(definition).render("\0", color_system=ColorSystem.STANDARD)
                before, _, after = rendered.partition("\0")
                self.codes[name] = (before, after)
            else:
                self.codes[name] = ("", "")

    def paint(self, name: str, text: str) -> str:
        before, after = self.codes[name]
        return f"{before}{text}{after}" if before else text


class Shown(NamedTuple):
    """What one console line shows, read from a capture or from a LogRecord."""

    timestamp: int  # ns since the epoch
    level: str  # lower case: "info"
    logger: str
    message: Any
    fields: Mapping[Any, Any]  # the record's attributes (not copied)
    skip: frozenset[str]  # keys of `fields` that are not shown as pairs
    trace_id: int  # 0: none
    span_id: int


_clock_cache: list[Any] = [-1, "", -1, ""]  # second, its text, millisecond, its text


def _clock(ns: int) -> str:
    """Local time of day with milliseconds: ``12:00:00.123`` (a negative `ns`: no time
    known, ``--:--:--.---``)."""
    if ns < 0:
        return "--:--:--.---"
    millis = ns // 1_000_000
    cache = _clock_cache
    if cache[2] == millis:
        text: str = cache[3]
        return text
    seconds, rest = divmod(millis, 1000)
    if cache[0] != seconds:
        cache[1] = time.strftime("%H:%M:%S", time.localtime(seconds))
        cache[0] = seconds
    text = f"{cache[1]}.{rest:03d}"
    cache[2], cache[3] = millis, text
    return text


def _cells(text: str) -> int:
    return len(text) if text.isascii() else cell_len(text)


def _duration(value: Any) -> str:
    if type(value) is float or type(value) is int:
        if value < 1000:
            return f"{value:.1f} ms"
        return f"{value / 1000:.2f} s"
    return console_value(value)


class ConsoleLine:
    """Renders one `Shown` as its console line (without the newline). Logger names are
    shown as `names` makes them (the redactor's text redaction: a name never carries a
    secret out), once per name."""

    __slots__ = ("_keys", "_levels", "_loggers", "_names", "palette")

    def __init__(self, palette: Palette, names: Any = None) -> None:
        self.palette = palette
        self._names = names
        self._loggers: dict[str, tuple[str, int]] = {}
        self._levels: dict[str, str] = {}
        self._keys: dict[Any, str] = {}

    def _logger(self, name: str) -> tuple[str, int]:
        shown = self._loggers.get(name)
        if shown is None:
            text = console_text(self._names(name) if self._names is not None else name)
            if len(self._loggers) >= 1024:
                self._loggers.clear()
            shown = self._loggers[name] = (self.palette.paint("logger", text), _cells(text))
        return shown

    def _key(self, key: Any) -> str:
        """``key=`` as the line shows it (escaped, coloured), kept per key."""
        name = console_text(key if type(key) is str else safe_str(key))
        shown: str = self.palette.paint("key", name) + "="
        if len(self._keys) >= 4096:
            self._keys.clear()
        self._keys[key] = shown
        return shown

    def _level(self, level: str) -> str:
        shown = self._levels.get(level)
        if shown is None:
            style = level if level in STYLES and level not in _NOT_LEVELS else "other"
            text = console_text(level)
            shown = self._levels[level] = self.palette.paint(style, f"{text:<{_LEVEL_WIDTH}}")
        return shown

    def render(self, shown: Shown) -> str:
        paint = self.palette.paint
        fields = shown.fields
        skip = shown.skip
        logger, width = self._logger(shown.logger)
        if shown.logger == REQUEST_LOGGER and _METHOD in fields and _PATH in fields:
            head, cells = self._request(shown)
            skip = skip | REQUEST_FIELDS
        else:
            message = shown.message
            if type(message) is not str:
                message = "" if message is None else safe_str(message)
            text = console_text(message)
            head, cells = paint("message", text), _cells(text)
        parts = [
            f"{paint('time', _clock(shown.timestamp))} [{self._level(shown.level)}] {logger} {head}"
        ]
        keys = self._keys
        for key, value in fields.items():
            if key in skip:
                continue
            shown_key = keys.get(key)
            if shown_key is None:
                shown_key = self._key(key)
            parts.append(shown_key + console_value(value))
        if shown.trace_id:
            ids = f"trace_id={shown.trace_id:032x}"[: 9 + _ID_DIGITS]
            if shown.span_id:
                ids += f" span_id={shown.span_id:016x}"[: 9 + _ID_DIGITS]
            parts.append(paint("ids", ids))
        if len(parts) > 1:
            used = width + 1 + cells
            if used < _HEAD_WIDTH:  # the pairs start at the same column
                parts[0] += " " * (_HEAD_WIDTH - used)
        return " ".join(parts)

    def _request(self, shown: Shown) -> tuple[str, int]:
        """``GET /items/7 → 200 in 3.2 ms`` (and the event's message when the request did
        not complete: ``· request failed``), and its width in cells."""
        paint = self.palette.paint
        fields = shown.fields
        method = console_text(safe_str(fields[_METHOD]))
        path = console_text(safe_str(fields[_PATH]))
        status = fields.get(_STATUS)
        if type(status) is int and 100 <= status <= 599:
            code = str(status)
            painted = paint(f"{status // 100}xx" if status >= 200 else "note", code)
        else:
            code = "-" if status is None else console_value(status)
            painted = code
        text = f"{method} {path} → {code}"
        head = f"{paint('method', method)} {path} → {painted}"
        if _DURATION in fields:
            duration = _duration(fields[_DURATION])
            text += f" in {duration}"
            head += f" in {duration}"
        message = shown.message
        if message != _COMPLETED:
            note = " · " + console_text(message if type(message) is str else safe_str(message))
            text += note
            head += paint("note", note)
        return head, _cells(text)


# style names that are not levels
_NOT_LEVELS = frozenset(STYLES) - {"debug", "info", "warning", "error", "critical"}
