"""The one table of log levels: the setting's name, the stdlib number, the OpenTelemetry
`SeverityNumber` and the text a JSON line shows.

Every part of fapilog that converts between these reads this module: settings (level
names and aliases), the logger's level methods, stdlib routing, the request event's level by
status, queue shedding (warnings and errors are shed last) and rendering.
"""

from __future__ import annotations

from typing import Any, Literal, NamedTuple

from fapilog.otel.logs import SeverityNumber

__all__ = [
    "ALIASES",
    "BY_METHOD",
    "BY_NAME",
    "ERROR_SEVERITY",
    "LEVELS",
    "Level",
    "LevelName",
    "NAMES",
    "OTEL_TEXT",
    "WARN_SEVERITY",
    "level_for_number",
    "method_for_number",
    "normalise",
    "number_of",
    "severity_for_number",
    "text_of",
]


LevelName = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
"""A level as a setting takes it (after `normalise`); the same names as `NAMES`."""


class Level(NamedTuple):
    name: str  # the setting's value and the record's severity_text: "WARNING"
    number: int  # stdlib logging: 30
    severity: SeverityNumber  # OpenTelemetry: WARN (13)
    text: str  # what the JSON line's "level" shows: "warning"


LEVELS: tuple[Level, ...] = (
    Level("DEBUG", 10, SeverityNumber.DEBUG, "debug"),
    Level("INFO", 20, SeverityNumber.INFO, "info"),
    Level("WARNING", 30, SeverityNumber.WARN, "warning"),
    Level("ERROR", 40, SeverityNumber.ERROR, "error"),
    Level("CRITICAL", 50, SeverityNumber.FATAL, "critical"),
)
NAMES: tuple[str, ...] = tuple(level.name for level in LEVELS)
BY_NAME: dict[str, Level] = {level.name: level for level in LEVELS}
ALIASES: dict[str, str] = {"WARN": "WARNING", "FATAL": "CRITICAL", "EXCEPTION": "ERROR"}
_DEBUG, _INFO, _WARNING, _ERROR, _CRITICAL = LEVELS
# structlog's / stdlib's level method names
BY_METHOD: dict[str, Level] = {
    "debug": _DEBUG,
    "info": _INFO,
    "msg": _INFO,
    "warning": _WARNING,
    "warn": _WARNING,
    "error": _ERROR,
    "exception": _ERROR,
    "critical": _CRITICAL,
    "fatal": _CRITICAL,
}
WARN_SEVERITY = SeverityNumber.WARN.value  # 13: shed after everything below it
ERROR_SEVERITY = SeverityNumber.ERROR.value  # 17: shed last
_BY_NUMBER = {level.number: level for level in LEVELS}
# severity ranges (1-4 TRACE, 5-8 DEBUG, ... 21-24 FATAL) -> the JSON text of their base
_JSON_TEXT = {"warn": "warning", "fatal": "critical"}
_TEXT_BY_SEVERITY = ((21, "critical"), (17, "error"), (13, "warning"), (9, "info"), (5, "debug"))


def normalise(value: Any) -> Any:
    """A level as given (``"warn"``, ``" info "``, ``logging.WARNING``) -> its name
    (``"WARNING"``); anything else is returned unchanged, for validation to reject."""
    if isinstance(value, int) and not isinstance(value, bool):
        level = _BY_NUMBER.get(value)
        return level.name if level is not None else value
    if isinstance(value, str):
        upper = value.strip().upper()
        return ALIASES.get(upper, upper)
    return value


def number_of(name: str) -> int:
    """The stdlib number of a (normalised) level name."""
    return BY_NAME[name].number


def severity_for_number(number: int) -> SeverityNumber:
    """The OpenTelemetry severity of any stdlib level number, as the OpenTelemetry logs data
    model maps them: each stdlib level's base severity plus up to 3 for the numbers just
    above it (21 -> INFO2, 25 -> INFO4), FATAL4 above 53. Below DEBUG, the TRACE range
    (1-4) the same way, from a customary TRACE = 5 (1-5 -> TRACE, 6 -> TRACE2, 8 and 9 ->
    TRACE4); UNSPECIFIED for 0 (NOTSET) and below."""
    if number < 10:
        if number < 1:
            return SeverityNumber.UNSPECIFIED
        return SeverityNumber(max(1, min(number - 4, 4)))
    if number > 53:
        return SeverityNumber.FATAL4
    base = _BY_NUMBER[min(number // 10 * 10, 50)]
    return SeverityNumber(base.severity.value + min(number % 10, 3))


def level_for_number(number: int, name: str | None = None) -> Level:
    """The table's level for a stdlib number, or a level of its own for a custom number
    (`name`, else ``"LEVEL <n>"``, becomes its text)."""
    level = _BY_NUMBER.get(number)
    if level is not None and (name is None or name == level.name):
        return level
    shown = name if name is not None else f"LEVEL {number}"
    return Level(shown, number, severity_for_number(number), shown.lower())


def method_for_number(number: int) -> str:
    """The level method that logs at stdlib `number` (between levels: the one below)."""
    level = _BY_NUMBER.get(number)
    if level is not None:
        return level.text
    return "info" if number < 30 else "warning" if number < 40 else "error"


# A record's severity text for OpenTelemetry: the logs data model's short names, as the
# SDK's logging handler writes them ("WARN", "FATAL"), one text per level whatever path the
# record took; every other level's name is its text, as the SDK's handler has it (a custom
# level's, "NOTICE", and stdlib's for a level it has no name for, "Level 7")
OTEL_TEXT: dict[str, str] = {"WARNING": "WARN", "CRITICAL": "FATAL"}


def text_of(severity_text: str | None, severity_number: SeverityNumber | None) -> str:
    """What a JSON line's ``level`` shows for a record: its severity text in lower case
    (``WARN`` read as ``warning``, ``FATAL`` as ``critical``), else the text of its severity
    range."""
    if severity_text:
        lowered = severity_text.lower()
        return _JSON_TEXT.get(lowered, lowered)
    if severity_number is None:
        return "info"
    value = severity_number.value
    for floor, text in _TEXT_BY_SEVERITY:
        if value >= floor:
            return text
    return "trace"
