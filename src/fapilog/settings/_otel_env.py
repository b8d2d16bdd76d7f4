"""The standard ``OTEL_*`` variables as a pydantic-settings source.

It sits below ``FAPILOG_*`` and above the defaults: a setting takes the OpenTelemetry
variable's value only where neither the code nor a ``FAPILOG_*`` variable set it.
``OTEL_BLRP_*`` (the batch log record processor's queue) fill `QueueSettings`;
``OTEL_SERVICE_NAME`` and ``OTEL_RESOURCE_ATTRIBUTES`` are read where the Resource is built.

The ``OTEL_EXPORTER_OTLP_*`` variables are read by the OpenTelemetry SDK's exporters
themselves; `check_otlp_environment` checks the two that can hold credentials before fapilog
builds an exporter that reads them: a headers value the SDK would skip in part (logging the
item, a credential perhaps, in its warning), an endpoint with ``user:password@`` and an
``http(s)://`` endpoint that does not parse strictly (a space, no host, a bad port) are
refused with an error that shows them masked.
"""

from __future__ import annotations

import os
import re
from typing import Any

from pydantic.fields import FieldInfo
from pydantic_settings import PydanticBaseSettingsSource

from fapilog.settings._errors import has_userinfo, setting_error
from fapilog.settings._url import url_problem
from fapilog.settings.otlp import CREDENTIALS_IN_URL, ENDPOINT_FORM

__all__ = [
    "OTEL_BLRP",
    "OtelEnvSource",
    "check_otlp_environment",
    "otlp_variable",
    "sdk_disabled",
]

# queue field -> (variable, scale to fapilog's unit, whole number)
OTEL_BLRP: dict[str, tuple[str, float, bool]] = {
    "max_size": ("OTEL_BLRP_MAX_QUEUE_SIZE", 1.0, True),
    "batch_size": ("OTEL_BLRP_MAX_EXPORT_BATCH_SIZE", 1.0, True),
    "max_delay": ("OTEL_BLRP_SCHEDULE_DELAY", 0.001, False),  # milliseconds
    "export_timeout": ("OTEL_BLRP_EXPORT_TIMEOUT", 0.001, False),  # milliseconds
}


# OTEL_EXPORTER_OTLP_*HEADERS as the SDK parses them: items split at commas, each
# `key=value` with the specification's key characters and printable ASCII in the value
# (spaces too: the SDK's liberal form); an item that does not match is skipped
_HEADER_SEPARATOR = re.compile(r"[ \t]*,[ \t]*")
_HEADER_ITEM = re.compile(
    r"[ \t]*[\x21\x23-\x27\x2a\x2b\x2d\x2e\x30-\x39\x41-\x5a\x5e-\x7a\x7c\x7e]+[ \t]*="
    r"[ \t]*[\x20\x21\x23-\x2b\x2d-\x3a\x3c-\x5b\x5d-\x7e]*[ \t]*"
)


def otlp_variable(signal: str, kind: str) -> tuple[str, str] | None:
    """The variable the SDK's OTLP exporter of `signal` (``logs``, ``traces``) reads for
    `kind` (``HEADERS``, ``ENDPOINT``): ``OTEL_EXPORTER_OTLP_<SIGNAL>_<KIND>``, else
    ``OTEL_EXPORTER_OTLP_<KIND>``, the first one set and not empty, as (name, value)."""
    for name in (f"OTEL_EXPORTER_OTLP_{signal.upper()}_{kind}", f"OTEL_EXPORTER_OTLP_{kind}"):
        value = os.environ.get(name)
        if value:
            return name, value
    return None


def check_otlp_environment(signal: str, *, headers: bool, endpoint: bool) -> None:
    """Raise the ConfigurationError of the headers variable (`headers`: the exporter reads
    it) or the endpoint variable (`endpoint`) of `signal` that the SDK would not take as
    given; the value shown masked (header names kept, URL userinfo masked)."""
    found = otlp_variable(signal, "HEADERS") if headers else None
    if found is not None:
        name, raw = found
        items = _HEADER_SEPARATOR.split(raw)
        for number, item in enumerate(items, 1):
            if item and not _HEADER_ITEM.fullmatch(item.strip()):
                raise setting_error(
                    None,
                    f"item {number} of {len(items)} is not name=value (a header name, '=', "
                    "a value of printable ASCII characters); the OpenTelemetry SDK would "
                    "leave it out",
                    value=raw,
                    allowed="name=value pairs separated by commas, e.g. "
                    "authorization=Bearer%20<token>,x-tenant=a",
                    mask="mapping",
                    env=name,
                )
    found = otlp_variable(signal, "ENDPOINT") if endpoint else None
    if found is None:
        return
    name, raw = found
    if has_userinfo(raw):
        raise setting_error(None, CREDENTIALS_IN_URL, value=raw, mask="url", env=name)
    # an http(s) URL is parsed strictly; other targets (gRPC's host:port, unix:...) are the
    # SDK's to judge
    if raw.strip().lower().startswith(("http://", "https://")):
        problem = url_problem(raw)
        if problem is not None:
            raise setting_error(
                None,
                f"not a valid URL: {problem}; expected {ENDPOINT_FORM}",
                value=raw,
                mask="url",
                env=name,
            )


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


def sdk_disabled() -> bool:
    """Whether ``OTEL_SDK_DISABLED`` turns the OpenTelemetry SDK off, read as the SDK reads
    it (``true``, in any case): then nothing is exported over OTLP, neither logs nor spans;
    fapilog's local exporters keep working."""
    return os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true"
