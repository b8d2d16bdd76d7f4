"""`fapilog config`: the effective settings, each with where its value came from.

A value's source is one of (highest precedence first): a keyword of the application's
`configure_logging()` call or a `LoggingSettings` it built in code (with ``--app``), a
``FAPILOG_*`` variable (named), a standard ``OTEL_*`` variable fapilog or the OpenTelemetry
SDK falls back to (named), or the default. Secrets never appear: credentials and header
values are masked, URLs keep their userinfo masked, and custom exporters' options go
through fapilog's default redaction.

``--app module:attr`` imports the application in record-only mode
(`fapilog.lifecycle.configure.recording`): its `configure_logging()` calls are validated
and recorded, and nothing is started.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo

from fapilog.capture.redaction import Redactor
from fapilog.exceptions import ConfigurationError
from fapilog.exporters.loki_config import validate
from fapilog.lifecycle.configure import Recorded, check_settings, recording
from fapilog.otel.otlp import check_log_settings
from fapilog.otel.resource import build_resource
from fapilog.settings import LoggingSettings, RedactionSettings
from fapilog.settings._base import section_model
from fapilog.settings._errors import MASK, Masked, env_var_for, masked, setting_error
from fapilog.settings._otel_env import OTEL_BLRP

__all__ = ["AppNotFound", "Row", "Source", "app_settings", "check_exporters", "rows"]

# the OTEL_* variables a setting left unset falls back to, the first one set wins (read by
# the OpenTelemetry SDK's OTLP exporters; `fapilog.settings._otel_env` for the queue's)
_OTEL_FALLBACKS: dict[tuple[str, ...], tuple[str, ...]] = {
    ("otlp", kind.lower()): (f"OTEL_EXPORTER_OTLP_LOGS_{kind}", f"OTEL_EXPORTER_OTLP_{kind}")
    for kind in (
        "ENDPOINT",
        "PROTOCOL",
        "HEADERS",
        "CERTIFICATE",
        "COMPRESSION",
        "TIMEOUT",
        "CLIENT_CERTIFICATE",
        "CLIENT_KEY",
    )
}
_OTEL_FALLBACKS[("otlp", "insecure")] = (
    "OTEL_EXPORTER_OTLP_LOGS_INSECURE",
    "OTEL_EXPORTER_OTLP_INSECURE",
)
_OTEL_FALLBACKS.update(
    {("queue", field): (variable,) for field, (variable, *_) in OTEL_BLRP.items()}
)


@dataclass(frozen=True)
class Source:
    """Where a value came from: `kind` is ``default``, ``environment`` (a ``FAPILOG_*``
    variable), ``otel`` (an ``OTEL_*`` variable), ``keyword`` (a `configure_logging()`
    keyword) or ``code`` (a `LoggingSettings` built in code); `name` says which."""

    kind: str
    name: str


@dataclass(frozen=True)
class Row:
    setting: str  # dotted: "queue.max_size"
    env: str  # its variable: "FAPILOG_QUEUE__MAX_SIZE"
    value: Any  # as shown: JSON-compatible, secrets masked
    source: Source

    def as_json(self) -> dict[str, Any]:
        return {
            "setting": self.setting,
            "env": self.env,
            "value": self.value,
            "source": self.source.name,
            "kind": self.source.kind,
        }


class AppNotFound(Exception):
    """``--app module:attr`` names nothing importable."""


def _environ_upper() -> dict[str, str]:
    return {name.upper(): name for name in os.environ}


def _leaves(
    model: type[BaseModel], prefix: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], FieldInfo]]:
    for name, field in model.model_fields.items():
        if field.exclude:
            continue  # code only (on_alert): no value to show
        section = section_model(field.annotation)
        if section is not None:
            yield from _leaves(section, (*prefix, name))
        else:
            yield (*prefix, name), field


def _value(settings: BaseModel, path: tuple[str, ...]) -> Any:
    value: Any = settings
    for part in path:
        value = getattr(value, part)
    return value


def _shown(value: Any, field: FieldInfo, path: tuple[str, ...]) -> Any:
    """`value` as it may be printed: JSON-compatible, every credential masked."""
    how = next((item.how for item in field.metadata if isinstance(item, Masked)), None)
    if isinstance(value, SecretStr):
        return MASK
    if isinstance(value, Mapping) and any(isinstance(v, SecretStr) for v in value.values()):
        return {str(name): MASK for name in value}
    if how == "url" and isinstance(value, str):
        return _redactor().redact_text(masked(value, how))  # (a token in its query too)
    if how is not None and value is not None:
        return masked(value, how)
    if path == ("exporter_options",) and value:
        return _shown(_redacted(value), field, ())
    if isinstance(value, str):
        return _redactor().redact_text(value)
    if isinstance(value, (bytes, bytearray)):
        return _redactor().redact_text(bytes(value).decode("utf-8", "backslashreplace"))
    if path[-1:] == ("mode",) and isinstance(value, int):
        return f"0o{value:o}"  # file permissions read as octal
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, Mapping):
        return {str(k): _shown(v, field, ()) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_shown(item, field, ()) for item in value]
    return str(value)


_REDACTOR: list[Redactor] = []


def _redactor() -> Redactor:
    """fapilog's default redaction, whatever the application's redaction settings say."""
    if not _REDACTOR:
        _REDACTOR.append(Redactor.from_settings(RedactionSettings()))
    return _REDACTOR[0]


def _redacted(options: Mapping[str, Any]) -> Any:
    """Custom exporters' options through the default redaction (a ``password`` or
    ``api_key`` option is masked)."""
    event = {str(name): dict(values) for name, values in options.items()}
    return _redactor()(None, "info", event)


def _env_source(path: tuple[str, ...], environ: Mapping[str, str]) -> Source | None:
    """The FAPILOG_* variable(s) that set `path`: its own, a whole section's JSON, or the
    per-key variables of a mapping setting (``FAPILOG_LOGGER_LEVELS__UVICORN``)."""
    own = env_var_for(*path)
    names = [environ[own]] if own in environ else []
    names += sorted(environ[name] for name in environ if name.startswith(own + "__"))
    section = env_var_for(path[0])
    if not names and len(path) > 1 and section in environ:
        try:  # a whole section as JSON: the source of the keys it names
            given = json.loads(os.environ[environ[section]])
        except ValueError:
            given = {}
        if isinstance(given, dict) and path[1] in given:
            names = [environ[section]]
    return Source("environment", ", ".join(names)) if names else None


def _otel_source(path: tuple[str, ...]) -> tuple[Source, str] | None:
    for name in _OTEL_FALLBACKS.get(path, ()):
        value = os.environ.get(name, "").strip()
        if value:
            return Source("otel", name), value
    return None


def _service_name(settings: LoggingSettings) -> tuple[str, Source]:
    """The effective ``service.name`` (the Resource's) when no setting gave one, and the
    variable it came from."""
    built = str(build_resource(settings).attributes.get("service.name", "unknown_service"))
    if os.environ.get("OTEL_SERVICE_NAME", "").strip():
        return built, Source("otel", "OTEL_SERVICE_NAME")
    if "service.name=" in os.environ.get("OTEL_RESOURCE_ATTRIBUTES", ""):
        return built, Source("otel", "OTEL_RESOURCE_ATTRIBUTES")
    return built, _DEFAULT


def _code_source(path: tuple[str, ...], recorded: Recorded, from_env: Any) -> Source | None:
    """The source of `path` when the application's code set it: a keyword of its call, or
    the `LoggingSettings` it passed (where that differs from the environment's value)."""
    keyword = path[0]
    given = recorded.keywords.get(keyword, _MISSING)
    if given is not _MISSING:
        if len(path) == 1 or isinstance(given, BaseModel):
            return Source("keyword", f"configure_logging({keyword}=...)")
        if isinstance(given, Mapping) and path[1] in given:
            return Source("keyword", f"configure_logging({keyword}={{{path[1]!r}: ...}})")
    if recorded.given is not None and (
        from_env is _MISSING or _value(recorded.given, path) != from_env
    ):
        return Source("code", "LoggingSettings(...) in code")
    return None


_MISSING: Any = object()
_DEFAULT = Source("default", "default")


def check_exporters(settings: LoggingSettings) -> None:
    """Raise the ConfigurationError `configure_logging()` would raise for the exporters'
    settings, without creating an exporter (no connection, no file): unknown exporter
    names, Loki's rules, OTLP's settings and variables. (Whether the log file can be
    written is `fapilog check`'s to find out.)"""
    check_settings(settings)  # exporter names, enrichers, the Resource
    if "file" in settings.exporters:
        path = Path(settings.file.path).expanduser()
        if path.is_dir():
            raise setting_error(
                "file.path", "it is a directory; give the path of a file", value=str(path)
            )
    if "loki" in settings.exporters:
        validate(settings.loki)
    if "otlp" in settings.exporters:
        check_log_settings(settings)


def rows(settings: LoggingSettings, recorded: Recorded | None = None) -> list[Row]:
    """Every setting of `settings` with its value (masked) and source. `recorded`: the
    application's `configure_logging()` call the settings come from (``--app``)."""
    environ = _environ_upper()
    from_env: LoggingSettings | None = None
    if recorded is not None and recorded.given is not None:
        try:
            from_env = LoggingSettings()
        except ConfigurationError:
            from_env = None
    result: list[Row] = []
    for path, field in _leaves(LoggingSettings):
        value = _value(settings, path)
        source: Source | None = None
        if recorded is not None:
            env_value = _value(from_env, path) if from_env is not None else _MISSING
            source = _code_source(path, recorded, env_value)
        source = source or _env_source(path, environ)
        if source is None and path == ("service_name",):
            value, source = _service_name(settings)
        elif source is None and path in _OTEL_FALLBACKS:
            fallback = _otel_source(path)
            if fallback is not None:
                source, raw = fallback
                if path[0] == "otlp":  # left unset: the SDK's exporter reads the variable
                    value = raw
        if path == ("otlp", "headers") and isinstance(value, str):
            shown: Any = masked(value, "mapping")  # (the variable's text: names shown)
        else:
            shown = _shown(value, field, path)
        result.append(Row(".".join(path), env_var_for(*path), shown, source or _DEFAULT))
    return result


def app_settings(
    target: str, factory: bool = False
) -> tuple[LoggingSettings, Recorded | None, int]:
    """Import ``module:attr`` in record-only mode (calling it with `factory`) and return the
    settings of the last `configure_logging()` call it made, that call, and how many calls
    there were. Without a call: the environment's settings, None and 0 (what fapilog uses
    when the application logs without configuring it). Raises `ConfigurationError` as the
    application's call did, `AppNotFound` when `target` names nothing."""
    module_name, _, attribute = target.partition(":")
    if not module_name or not attribute:
        raise AppNotFound(f"--app takes module:attribute (e.g. main:app), got {target!r}")
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # (as uvicorn does: the app is found from here)
    # what the application prints on import goes to stderr: stdout is the report's
    with recording() as calls, contextlib.redirect_stdout(sys.stderr):
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name or module_name.startswith(f"{exc.name}."):
                raise AppNotFound(f"no module named {module_name!r} (from {os.getcwd()})") from None
            raise
        found: Any = module
        for part in attribute.split("."):
            if not hasattr(found, part):
                raise AppNotFound(f"module {module_name!r} has no attribute {attribute!r}")
            found = getattr(found, part)
        if factory:
            found()
    if not calls:
        return LoggingSettings(), None, 0
    last = calls[-1]
    return last.settings, last, len(calls)
