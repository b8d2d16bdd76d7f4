"""Turn any Python value into an OpenTelemetry AnyValue that also renders as JSON.

Runs on the caller's thread, but only for values that are not already primitive, so the
record is a snapshot taken at call time (a list mutated after `log.info()` does not change
what is exported). Nothing is ever dropped or turned into None: what cannot be represented
becomes a descriptive string.
"""

from __future__ import annotations

import datetime as _dt
import math
from collections.abc import Mapping
from decimal import Decimal
from enum import Enum
from pathlib import PurePath
from typing import Any
from uuid import UUID

__all__ = ["PRIMITIVES", "coerce_attributes", "coerce_value"]

PRIMITIVES: frozenset[type] = frozenset({str, int, bool, type(None)})
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_MAX_DEPTH = 32
_RECURSION = "<recursion>"


def coerce_attributes(event: dict[str, Any]) -> None:
    """Coerce, in place, the values of `event` that are not plain str/int/bool/None.
    Non-string keys become strings."""
    for key, value in event.items():
        if type(value) not in PRIMITIVES or (type(value) is int and not _fits_int64(value)):
            event[key] = coerce_value(value)
    if any(type(key) is not str for key in event):
        for key in [k for k in event if type(k) is not str]:
            event[_key(key)] = event.pop(key)


def _fits_int64(value: int) -> bool:
    return _INT64_MIN <= value <= _INT64_MAX


def _key(key: Any) -> str:
    if isinstance(key, str):
        return key
    coerced = coerce_value(key)
    return coerced if isinstance(coerced, str) else _safe_repr(key)


def coerce_value(value: Any, _seen: frozenset[int] = frozenset(), _depth: int = 0) -> Any:
    """An AnyValue for `value`: str/int/float/bool/None/bytes, lists and str-keyed dicts of them."""
    kind = type(value)
    if kind is str or kind is bool or value is None:
        return value
    if kind is int:
        return value if _fits_int64(value) else str(value)
    if kind is float:
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, Enum):
        return coerce_value(value.value, _seen, _depth)
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
        return f"{type(value).__name__}: {_safe_str(value)}"
    if isinstance(value, (Mapping, list, tuple, set, frozenset)):
        ident = id(value)
        if ident in _seen:
            return _RECURSION
        if _depth >= _MAX_DEPTH:
            return _safe_repr(value)
        seen = _seen | {ident}
        depth = _depth + 1
        if isinstance(value, Mapping):
            try:
                return {_key(k): coerce_value(v, seen, depth) for k, v in list(value.items())}
            except Exception:  # a broken Mapping implementation
                return _safe_repr(value)
        items: Any = value
        if isinstance(value, (set, frozenset)):
            try:
                items = sorted(value)
            except TypeError:
                items = sorted(value, key=repr)
        return [coerce_value(v, seen, depth) for v in items]
    return _safe_repr(value)


def _safe_repr(value: Any) -> str:
    try:
        return repr(value)
    except Exception:
        return f"<unrepresentable {type(value).__qualname__} object>"


def _safe_str(value: Any) -> str:
    try:
        return str(value)
    except Exception:
        return _safe_repr(value)
