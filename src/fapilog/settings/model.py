"""`LoggingSettings`: every fapilog setting, read from arguments, the environment and defaults.

Precedence (highest first): keyword overrides to `configure_logging()`, a `LoggingSettings`
passed to it, `FAPILOG_*` environment variables, the standard `OTEL_*` variables where one
exists (`OTEL_BLRP_*`; the service name and resource attributes are read where the Resource
is built), the defaults below. Nested sections use `__`: `FAPILOG_QUEUE__MAX_SIZE=5000`.
List settings accept JSON (`["stdout","file"]`) or the comma-separated form people type
(`stdout,file`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from fapilog import _diag, _levels
from fapilog.exceptions import ConfigurationError
from fapilog.settings._base import (
    CommaList,
    NameList,
    document_fields,
    parse_mapping,
    parse_pairs,
)
from fapilog.settings._errors import (
    ENV_PREFIX,
    Problem,
    configuration_error,
    from_validation_error,
)
from fapilog.settings._names import (
    ALLOW_UNKNOWN,
    allows_unknown,
    is_known,
    unknown_variables,
)
from fapilog.settings._otel_env import OtelEnvSource
from fapilog.settings.admin import AdminSettings
from fapilog.settings.console import ConsoleSettings
from fapilog.settings.file import FileSettings
from fapilog.settings.loki import LokiSettings
from fapilog.settings.otlp import OtlpSettings
from fapilog.settings.queue import QueueSettings
from fapilog.settings.redaction import RedactionSettings
from fapilog.settings.request import RequestSettings
from fapilog.settings.spool import SpoolSettings
from fapilog.settings.system import SystemSettings

__all__ = ["Environment", "LoggingSettings", "from_environment"]

Environment = Literal["development", "test", "staging", "production"]

# set while `from_environment()` builds the settings: it has reported the unknown variables
# itself, and goes on without them
_UNKNOWN_REPORTED: ContextVar[bool] = ContextVar("fapilog_unknown_reported", default=False)


class LoggingSettings(BaseSettings):
    """All of fapilog's settings. Every field has an environment variable: ``FAPILOG_`` +
    the field name in upper case, nested sections joined with ``__``; in code, each field is
    a keyword of `LoggingSettings(...)` and of `configure_logging(...)`."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        case_sensitive=False,
        extra="forbid",
        validate_default=True,
    )

    level: _levels.LevelName = Field(default="INFO", description="minimum level logged")
    env: Environment = Field(default="production", description="deployment environment")
    json_console: bool | None = Field(
        default=None,
        description="stdout as JSON lines (true) or the pretty console (false); "
        "unset: JSON unless env=development or stdout is a terminal",
    )
    service_name: str | None = Field(
        default=None, description="service.name; falls back to OTEL_SERVICE_NAME"
    )
    service_version: str | None = Field(default=None, description="service.version")
    exporters: NameList = Field(default_factory=lambda: ["stdout"], description="where records go")
    logger_levels: Annotated[dict[str, _levels.LevelName], NoDecode] = Field(
        default_factory=dict,
        description="per-logger minimum levels, e.g. uvicorn.access=WARNING,sqlalchemy=INFO",
    )
    exporter_levels: Annotated[dict[str, _levels.LevelName], NoDecode] = Field(
        default_factory=dict,
        description="per-exporter minimum levels, e.g. file:debug,loki:info (custom "
        "exporters too); exporters not named use `level`",
    )
    rate_limits: Annotated[dict[str, float], NoDecode] = Field(
        default_factory=dict,
        description="per-logger rate limits in records per second, e.g. noisy.lib:10 "
        "(a token bucket; dotted prefixes apply; what is over it is counted in stats())",
    )
    fold_repeats: float | None = Field(
        default=None,
        gt=0,
        le=3600,
        description="seconds: identical consecutive records of a logger within this window "
        "become one line and one 'repeated N times' line; unset: off",
    )
    capture_stdlib: bool = Field(
        default=True, description="route stdlib logging (and uvicorn's loggers) into fapilog"
    )
    capture_exceptions: bool = Field(
        default=True,
        description="log unhandled exceptions (main thread and other threads) as ERROR "
        "records, before the usual traceback on stderr",
    )
    shutdown_timeout: float = Field(
        default=5.0, gt=0, description="seconds to drain queues at exit / shutdown()"
    )
    enrichers: CommaList = Field(
        default_factory=list, description="custom enrichers applied, in this order"
    )
    exporter_options: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="options of custom exporters by exporter name, e.g. "
        "FAPILOG_EXPORTER_OPTIONS__MYSINK__ENDPOINT=http://x (see docs/exporters.md)",
    )
    allow_unknown: bool = Field(
        default=False,
        description="accept FAPILOG_* variables that are no setting (for programs sharing "
        "the prefix); by default each one is an error naming the closest setting",
    )
    queue: QueueSettings = Field(default_factory=QueueSettings)
    file: FileSettings = Field(default_factory=FileSettings)
    loki: LokiSettings = Field(default_factory=LokiSettings)
    otlp: OtlpSettings = Field(default_factory=OtlpSettings)
    spool: SpoolSettings = Field(default_factory=SpoolSettings)
    request: RequestSettings = Field(default_factory=RequestSettings)
    redaction: RedactionSettings = Field(default_factory=RedactionSettings)
    system: SystemSettings = Field(default_factory=SystemSettings)
    console: ConsoleSettings = Field(default_factory=ConsoleSettings)
    admin: AdminSettings = Field(default_factory=AdminSettings)
    on_alert: Callable[[dict[str, Any]], None] | None = Field(
        default=None,
        exclude=True,
        description="called (in code only) when records start being dropped "
        "or an exporter keeps failing",
    )

    def __init__(self, **values: Any) -> None:
        # a FAPILOG_* variable that no setting reads (misspelt) is an error naming the
        # closest setting, with the other problems; the settings never read it
        unknown: list[Problem] = []
        if not _UNKNOWN_REPORTED.get() and not allows_unknown(values, os.environ):
            unknown.extend(unknown_variables(os.environ, type(self)))
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise from_validation_error(exc, type(self), before=unknown) from None
        except SettingsError as exc:
            # an environment value pydantic-settings could not even parse (bad JSON)
            field = re.search(r'field "(\w+)"', str(exc))
            problem = Problem(
                field.group(1) if field else None,
                "not valid JSON" if field else f"invalid fapilog settings: {exc}",
                allowed="a JSON value" if field else None,
            )
            raise configuration_error([*unknown, problem]) from None
        if unknown:
            raise configuration_error(unknown, heading=True)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Code, then ``FAPILOG_*``, then the standard ``OTEL_*`` variables, then defaults.
        A ``FAPILOG_*`` variable that is no setting is never read (`__init__` names it)."""
        if isinstance(env_settings, EnvSettingsSource):
            env_settings.env_vars = {
                name: value
                for name, value in env_settings.env_vars.items()
                if not name.upper().startswith(ENV_PREFIX) or is_known(name, settings_cls)
            }
        return (init_settings, env_settings, OtelEnvSource(settings_cls))

    @field_validator("level", mode="before")
    @classmethod
    def _level(cls, value: Any) -> Any:
        return _levels.normalise(value)

    @field_validator("env", mode="before")
    @classmethod
    def _env(cls, value: Any) -> Any:
        if isinstance(value, str):
            lowered = value.strip().lower()
            return {"dev": "development", "prod": "production"}.get(lowered, lowered)
        return value

    @field_validator("exporters")
    @classmethod
    def _exporters_unique(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("at least one exporter is required, e.g. stdout")
        return list(dict.fromkeys(value))

    @field_validator("logger_levels", mode="before")
    @classmethod
    def _logger_levels(cls, value: Any) -> Any:
        parsed = parse_mapping(value)
        if isinstance(parsed, dict):
            return {str(k): _levels.normalise(v) for k, v in parsed.items()}
        return parsed

    @field_validator("exporter_levels", mode="before")
    @classmethod
    def _exporter_levels(cls, value: Any) -> Any:
        parsed = parse_pairs(value)
        if isinstance(parsed, dict):
            return {str(k).strip().lower(): _levels.normalise(v) for k, v in parsed.items()}
        return parsed

    @field_validator("rate_limits", mode="before")
    @classmethod
    def _rate_limits(cls, value: Any) -> Any:
        return parse_pairs(value)

    @field_validator("rate_limits")
    @classmethod
    def _positive_rates(cls, value: dict[str, float]) -> dict[str, float]:
        for name, rate in value.items():
            if not rate > 0 or rate == float("inf"):
                raise ValueError(f"the rate of {name!r} must be a positive number of records/s")
        return value

    def unknown_exporter_levels(self) -> str | None:
        """The error of `exporter_levels` naming an exporter that is not configured."""
        unknown = sorted(set(self.exporter_levels) - set(self.exporters))
        if not unknown:
            return None
        return (
            f"FAPILOG_EXPORTER_LEVELS (setting 'exporter_levels') names "
            f"{', '.join(map(repr, unknown))}, not among the exporters "
            f"({','.join(self.exporters)}): add it to FAPILOG_EXPORTERS or leave it out"
        )

    def with_overrides(self, overrides: Mapping[str, Any]) -> LoggingSettings:
        """A copy with `overrides` (field name -> value) applied and validated, outranking
        the environment. A mapping given for a section or a mapping setting is merged into
        the current one by key; a section model given replaces the section."""
        if not overrides:
            return self
        data = self.model_dump()
        data["on_alert"] = self.on_alert
        for key, given in overrides.items():
            value = given.model_dump() if isinstance(given, BaseModel) else given
            if isinstance(value, Mapping) and isinstance(data.get(key), dict):
                data[key] = {**data[key], **value}
            else:
                data[key] = value
        # init values outrank the environment, so every field comes from `data`
        return type(self)(**data)

    def use_json(self, stream_is_tty: bool) -> bool:
        """Whether stdout gets JSON lines: the explicit setting, else JSON unless development
        or a terminal."""
        if self.json_console is not None:
            return self.json_console
        return not (self.env == "development" or stream_is_tty)


# `help(LoggingSettings)` (and of each section) lists every field: generated, never stale
document_fields(LoggingSettings)


def from_environment(what: str) -> LoggingSettings:
    """Settings from the environment, for an implicit configuration (the first event logged
    before `configure_logging()`, `opentelemetry-instrument`): an application must start
    even when its logging configuration is wrong. Unknown ``FAPILOG_*`` variables are
    reported on stderr and left out, the other settings apply; invalid settings are reported
    (naming `what` needed them) and the defaults are used."""
    if not allows_unknown({}, os.environ):
        unknown = unknown_variables(os.environ, LoggingSettings)
        if unknown:
            said = " ".join(
                problem.line() + ("" if problem.line().endswith("?") else ".")
                for problem in unknown
            )
            _diag.report(
                f"settings-unknown:{what}",
                f"fapilog: {said} Ignored: the other settings apply ({ALLOW_UNKNOWN}=true "
                "turns this check off)",
                level="warning",
                variables=[problem.env for problem in unknown],
            )
    token = _UNKNOWN_REPORTED.set(True)
    try:
        return LoggingSettings()
    except ConfigurationError as exc:
        _diag.report(f"settings:{what}", f"fapilog: {exc}; using defaults", level="error")
        return LoggingSettings.model_construct()
    finally:
        _UNKNOWN_REPORTED.reset(token)
