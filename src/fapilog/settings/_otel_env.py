"""The standard ``OTEL_*`` variables as a pydantic-settings source.

It sits below ``FAPILOG_*`` and above the defaults: a setting takes the OpenTelemetry
variable's value only where neither the code nor a ``FAPILOG_*`` variable set it.
``OTEL_BLRP_*`` (the batch log record processor's queue) fill `QueueSettings`;
``OTEL_SERVICE_NAME`` and ``OTEL_RESOURCE_ATTRIBUTES`` are read where the Resource is built.
"""

from __future__ import annotations

import os
from typing import Any

from pydantic.fields import FieldInfo
from pydantic_settings import PydanticBaseSettingsSource

from fapilog.settings._errors import setting_error

__all__ = ["OTEL_BLRP", "OtelEnvSource"]

# queue field -> (variable, scale to fapilog's unit, whole number)
OTEL_BLRP: dict[str, tuple[str, float, bool]] = {
    "max_size": ("OTEL_BLRP_MAX_QUEUE_SIZE", 1.0, True),
    "batch_size": ("OTEL_BLRP_MAX_EXPORT_BATCH_SIZE", 1.0, True),
    "max_delay": ("OTEL_BLRP_SCHEDULE_DELAY", 0.001, False),  # milliseconds
    "export_timeout": ("OTEL_BLRP_EXPORT_TIMEOUT", 0.001, False),  # milliseconds
}


def _number(name: str, scale: float) -> float | None:
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return None
    try:
        return float(raw) * scale
    except ValueError:
        raise setting_error(None, "expected a number", value=raw, env=name) from None


class OtelEnvSource(PydanticBaseSettingsSource):
    """`OTEL_BLRP_*` for the queue fields that nothing above this source set."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # (unused: __call__ builds the whole state)

    def __call__(self) -> dict[str, Any]:
        given = self.current_state.get("queue")
        if given is not None and not isinstance(given, dict):
            return {}  # a QueueSettings object from the code: taken as a whole
        queue: dict[str, Any] = {}
        for field, (variable, scale, whole) in OTEL_BLRP.items():
            if given is not None and field in given:
                continue
            value = _number(variable, scale)
            if value is not None:
                queue[field] = int(value) if whole else value
        return {"queue": queue} if queue else {}
