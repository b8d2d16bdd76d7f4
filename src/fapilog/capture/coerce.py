"""Turn any Python value into an OpenTelemetry AnyValue that also renders as JSON.

Runs on the caller's thread, but only for values that are not already primitive, so the
record is a snapshot taken at call time (a list mutated after `log.info()` does not change
what is exported). Nothing is ever dropped or turned into None: what cannot be represented
becomes a descriptive string, and a value that fails (a broken `__repr__`, an iterator that
raises, an integer too long to print) is replaced alone, never failing its record or
raising into the caller. Integers outside signed 64 bits become decimal strings (what
OpenTelemetry's int AnyValue and JSON consumers can hold), or `"<int: N digits>"` when
Python's int-to-string limit forbids their text (see `int_text`).

`ERROR_KEY` is the attribute a record carries when fapilog had to degrade it (an unknown
level, a message that could not be formatted, ...): a short text saying what was wrong.
"""

from __future__ import annotations

import datetime as _dt
import math
import sys
from collections.abc import Mapping
from decimal import Decimal
from enum import Enum
from pathlib import PurePath
from typing import Any
from uuid import UUID

__all__ = [
    "ERROR_KEY",
    "INT64_MAX",
    "INT64_MIN",
    "PRIMITIVES",
    "coerce_attributes",
    "coerce_key",
    "coerce_value",
    "int_text",
    "safe_repr",
    "safe_str",
]

# the values that are AnyValues as they are (an int only within signed 64 bits: check it)
PRIMITIVES: frozenset[type] = frozenset({str, int, bool, type(None)})
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
ERROR_KEY = "fapilog.error"
_MAX_DEPTH = 32
_RECURSION = "<recursion>"
# the digits of an int printed when Python's limit is disabled (or absent, before 3.10.7):
# beyond this, printing costs milliseconds to seconds, on the caller's thread
_DEFAULT_MAX_DIGITS = 4300
_LOG10_2 = math.log10(2)


def coerce_attributes(event: dict[str, Any]) -> None:
    """Coerce, in place, the values of `event` that are not plain str/bool/None or an int
    within signed 64 bits. Non-string keys become strings. Never raises."""
    for key, value in event.items():
        if type(value) not in PRIMITIVES or (type(value) is int and not _fits_int64(value)):
            event[key] = coerce_value(value)
    if any(type(key) is not str for key in event):
        for key in [k for k in event if type(k) is not str]:
            event[_key(key)] = event.pop(key)


def _fits_int64(value: int) -> bool:
    return INT64_MIN <= value <= INT64_MAX


def int_text(value: int) -> str:
    """An int as decimal text, or ``"<int: N digits>"`` when it has more digits than
    Python's int-to-string limit (`sys.get_int_max_str_digits()`; 4300 when the limit is
    disabled). The digits are counted without printing the number. Never raises."""
    try:
        value = int(value)
        magnitude = -value if value < 0 else value
        limit = _max_digits()
        # the bit length bounds the digits: fewer than (bits - 1) * log10(2) + 2
        if (magnitude.bit_length() - 1) * _LOG10_2 + 2 <= limit:
            return str(value)
        digits = _digits(magnitude)
        return f"<int: {digits} digits>" if digits > limit else str(value)
    except Exception:  # the limit lowered meanwhile, or a broken int subclass
        return "<int>"


def _digits(magnitude: int) -> int:
    """How many decimal digits `magnitude` (>= 10) has: estimated from its bit length,
    corrected by one comparison with a power of ten (the estimate may be one off)."""
    digits = int((magnitude.bit_length() - 1) * _LOG10_2) + 1
    if magnitude < 10 ** (digits - 1):
        return digits - 1
    if magnitude >= 10**digits:
        return digits + 1
    return digits


def _max_digits() -> int:
    getter = getattr(sys, "get_int_max_str_digits", None)
    limit = getter() if getter is not None else 0
    return limit if limit > 0 else _DEFAULT_MAX_DIGITS


def _key(key: Any) -> str:
    if isinstance(key, str):
        return key
    return coerce_key(key)


def coerce_key(key: Any) -> str:
    """The text a dict key that is not a str becomes (its coerced value, or its repr)."""
    coerced = coerce_value(key)
    return coerced if isinstance(coerced, str) else safe_repr(key)


def coerce_value(value: Any, _seen: frozenset[int] = frozenset(), _depth: int = 0) -> Any:
    """An AnyValue for `value`: str/int/float/bool/None/bytes, lists and str-keyed dicts of
    them. Never raises: a value that fails is replaced by a descriptive string, alone."""
    kind = type(value)
    if kind is str or kind is bool or value is None:
        return value
    if kind is int:
        return value if INT64_MIN <= value <= INT64_MAX else int_text(value)
    if kind is float:
        return value if math.isfinite(value) else repr(value)
    try:
        return _coerce_other(value, _seen, _depth)
    except Exception:  # a broken __str__, isoformat(), __iter__, property...
        return _unrepresentable(value)


def _coerce_other(value: Any, seen: frozenset[int], depth: int) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, Enum):
        return coerce_value(value.value, seen, depth)
    if isinstance(value, _dt.datetime):
        return value.isoformat()
    if isinstance(value, (_dt.date, _dt.time)):
        return value.isoformat()
    if isinstance(value, _dt.timedelta):
        return value.total_seconds()
    if isinstance(value, (UUID, Decimal, PurePath)):
        return str(value)
    if isinstance(value, bool):  # bool subclasses
        return bool(value)
    if isinstance(value, int):  # int subclasses (IntEnum handled above)
        return coerce_value(int(value))
    if isinstance(value, float):
        return coerce_value(float(value))
    if isinstance(value, str):
        return str(value)
    if isinstance(value, BaseException):
        return f"{type(value).__name__}: {safe_str(value)}"
    if isinstance(value, (Mapping, list, tuple, set, frozenset)):
        ident = id(value)
        if ident in seen:
            return _RECURSION
        if depth >= _MAX_DEPTH:
            return safe_repr(value)
        seen = seen | {ident}
        depth += 1
        if isinstance(value, Mapping):
            try:
                return {_key(k): coerce_value(v, seen, depth) for k, v in list(value.items())}
            except Exception:  # a broken Mapping implementation
                return safe_repr(value)
        items: Any = value
        if isinstance(value, (set, frozenset)):
            try:
                items = sorted(value)
            except Exception:  # unorderable items (or a comparison that raises)
                items = sorted(value, key=safe_repr)
        return [coerce_value(v, seen, depth) for v in items]
    return safe_repr(value)


def safe_repr(value: Any) -> str:
    """`repr(value)`, or a description of the value when its repr fails (an int too long
    to print: `int_text`). Never raises."""
    try:
        if type(value) is int:
            return int_text(value)
        return repr(value)
    except Exception:
        return _unrepresentable(value)


def safe_str(value: Any) -> str:
    """`str(value)`, else `safe_repr(value)`. Never raises."""
    try:
        if type(value) is int:
            return int_text(value)
        return str(value)
    except Exception:
        return safe_repr(value)


def _unrepresentable(value: Any) -> str:
    return f"<unrepresentable {type(value).__qualname__} object>"
