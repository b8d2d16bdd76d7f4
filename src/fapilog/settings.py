"""`LoggingSettings`: every fapilog setting, read from arguments, the environment and defaults.

Precedence (highest first): keyword overrides to `configure_logging()`, a `LoggingSettings`
passed to it, `FAPILOG_*` environment variables, the standard `OTEL_*` variables where one
exists (service name, `OTEL_BLRP_*`), the defaults below. Nested sections use `__`:
`FAPILOG_QUEUE__MAX_SIZE=5000`. List settings accept JSON (`["stdout","file"]`) or the
comma-separated form people type (`stdout,file`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict, SettingsError

from fapilog._sections import CommaList, NameList, Section, parse_list, parse_mapping
from fapilog._sections.enrichment import RedactionSettings, SystemSettings
from fapilog._sections.file import FileSettings
from fapilog._sections.loki import LokiSettings
from fapilog._sections.otlp import OtlpSettings
from fapilog._sections.request import RequestSettings
from fapilog.exceptions import ConfigurationError

__all__ = [
    "ENV_PREFIX",
    "LEVELS",
    "LoggingSettings",
    "QueueSettings",
    "env_var_for",
    "parse_list",
    "reference_markdown",
    "settings_reference",
]

ENV_PREFIX = "FAPILOG_"
LEVELS: tuple[str, ...] = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_LEVEL_ALIASES = {"WARN": "WARNING", "FATAL": "CRITICAL", "EXCEPTION": "ERROR"}

Level = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
Environment = Literal["development", "test", "staging", "production"]
Overflow = Literal["drop_oldest", "drop_newest", "block", "sample"]


def env_var_for(*loc: str | int) -> str:
    """The environment variable of a setting path:
    ``("queue", "max_size")`` -> ``FAPILOG_QUEUE__MAX_SIZE``."""
    return ENV_PREFIX + "__".join(str(part).upper() for part in loc)


def _normalise_level(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        import logging

        name = logging.getLevelName(value)
        return name if name in LEVELS else value
    if isinstance(value, str):
        upper = value.strip().upper()
        return _LEVEL_ALIASES.get(upper, upper)
    return value


def _env_float(name: str, scale: float = 1.0) -> float | None:
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return None
    try:
        return float(raw) * scale
    except ValueError:
        raise ConfigurationError(
            f"{name}={raw!r} is invalid: expected a number", [{"env": name, "value": raw}]
        ) from None


class QueueSettings(Section):
    """The batching queue in front of each exporter (and the intake queue of the bridge)."""

    max_size: int = Field(default=1000, ge=1, description="records per exporter queue")
    batch_size: int = Field(default=512, ge=1, description="records per export call")
    max_delay: float = Field(
        default=0.2, ge=0, description="seconds a partial batch may wait for more records"
    )
    export_timeout: float = Field(default=10.0, gt=0, description="seconds per export call")
    overflow: Overflow = Field(default="drop_oldest", description="what to do when a queue is full")
    block_timeout: float = Field(
        default=0.05, ge=0, description="policy block: longest the caller waits for room"
    )
    sample_ratio: float = Field(
        default=0.1, ge=0, le=1, description="policy sample: share of sub-WARNING records kept"
    )
    high_water: float = Field(
        default=0.8, gt=0, le=1, description="policy sample: queue fill level where sampling starts"
    )


class LoggingSettings(BaseSettings):
    """All of fapilog's settings. Every field has an environment variable: ``FAPILOG_`` +
    the field name in upper case, nested sections joined with ``__``."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        case_sensitive=False,
        extra="forbid",
        validate_default=True,
    )

    level: Level = Field(default="INFO", description="minimum level logged")
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
    logger_levels: Annotated[dict[str, Level], NoDecode] = Field(
        default_factory=dict,
        description="per-logger minimum levels, e.g. uvicorn.access=WARNING,sqlalchemy=INFO",
    )
    capture_stdlib: bool = Field(
        default=True, description="route stdlib logging (and uvicorn's loggers) into fapilog"
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
    queue: QueueSettings = Field(default_factory=QueueSettings)
    file: FileSettings = Field(default_factory=FileSettings)
    loki: LokiSettings = Field(default_factory=LokiSettings)
    otlp: OtlpSettings = Field(default_factory=OtlpSettings)
    request: RequestSettings = Field(default_factory=RequestSettings)
    redaction: RedactionSettings = Field(default_factory=RedactionSettings)
    system: SystemSettings = Field(default_factory=SystemSettings)
    on_alert: Callable[[dict[str, Any]], None] | None = Field(
        default=None,
        exclude=True,
        description="called (in code only) when records start being dropped "
        "or an exporter keeps failing",
    )

    _OTEL_BLRP: ClassVar[Mapping[str, tuple[str, float]]] = {
        "max_size": ("OTEL_BLRP_MAX_QUEUE_SIZE", 1.0),
        "batch_size": ("OTEL_BLRP_MAX_EXPORT_BATCH_SIZE", 1.0),
        "max_delay": ("OTEL_BLRP_SCHEDULE_DELAY", 0.001),
        "export_timeout": ("OTEL_BLRP_EXPORT_TIMEOUT", 0.001),
    }

    def __init__(self, **values: Any) -> None:
        try:
            if "queue" not in values:
                blrp = self._queue_from_otel_env()
                if blrp:
                    values["queue"] = blrp
            super().__init__(**values)
        except ValidationError as exc:
            raise _configuration_error(exc) from None
        except SettingsError as exc:
            raise ConfigurationError(f"invalid fapilog settings: {exc}") from None

    @classmethod
    def _queue_from_otel_env(cls) -> dict[str, Any]:
        """The standard OTEL_BLRP_* variables, used where FAPILOG_QUEUE__* is not set."""
        result: dict[str, Any] = {}
        for field, (var, scale) in cls._OTEL_BLRP.items():
            if any(k.upper() == env_var_for("queue", field) for k in os.environ):
                continue
            value = _env_float(var, scale)
            if value is not None:
                result[field] = int(value) if field in ("max_size", "batch_size") else value
        return result

    @field_validator("level", mode="before")
    @classmethod
    def _level(cls, value: Any) -> Any:
        return _normalise_level(value)

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
            return {str(k): _normalise_level(v) for k, v in parsed.items()}
        return parsed

    def with_overrides(self, overrides: Mapping[str, Any]) -> LoggingSettings:
        """A copy with `overrides` applied and validated; the environment is not read again."""
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


def _allowed_values(error: Mapping[str, Any]) -> str | None:
    ctx = error.get("ctx") or {}
    expected = ctx.get("expected")
    if expected:
        return str(expected)
    if error.get("type") in ("bool_parsing", "bool_type"):
        return "true or false"
    if error.get("type", "").startswith(("int_", "float_")):
        return "a number"
    for bound, text in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
        if bound in ctx:
            return f"a number {text} {ctx[bound]}"
    return None


def _env_depth(loc: tuple[str, ...]) -> int:
    """How many parts of an error location name the setting (a section field: 2; a plain
    field: 1; the rest points inside a dict or list value)."""
    field = LoggingSettings.model_fields.get(loc[0])
    annotation = field.annotation if field is not None else None
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return 2
    return 1


def _configuration_error(exc: ValidationError) -> ConfigurationError:
    lines = []
    records = []
    for error in exc.errors(include_url=False):
        loc = tuple(part for part in error["loc"] if isinstance(part, (str, int)))
        # dict/list element errors point inside the field: name the field's variable
        field_loc = tuple(p for p in loc if isinstance(p, str))
        path = ".".join(str(p) for p in loc) or "settings"
        env = env_var_for(*field_loc[: _env_depth(field_loc)]) if field_loc else ENV_PREFIX + "*"
        value = error.get("input")
        message = error["msg"]
        if message.startswith("Value error, "):
            message = message[len("Value error, ") :]
        allowed = _allowed_values(error)
        line = f"{env} (setting {path!r}): {value!r} is invalid: {message}"
        if allowed and allowed not in message:
            line += f" (allowed: {allowed})"
        lines.append(line)
        records.append({"setting": path, "env": env, "value": repr(value), "error": message})
    return ConfigurationError("invalid fapilog settings:\n  " + "\n  ".join(lines), records)


def _type_name(annotation: Any) -> str:
    import typing

    if typing.get_origin(annotation) is Literal:
        return "one of: " + ", ".join(str(a) for a in typing.get_args(annotation))
    args = typing.get_args(annotation)
    if len(args) == 2 and type(None) in args:  # Optional[X]
        inner = next(a for a in args if a is not type(None))
        return _type_name(inner) + " (or unset)"
    # (a plain class only: on Python 3.10 `list[str]` is an instance of `type` too)
    plain = isinstance(annotation, type) and typing.get_origin(annotation) is None
    text = getattr(annotation, "__name__", None) if plain else None
    if text is None:
        text = str(annotation).replace("typing.", "").replace("NoneType", "None")
    for noise in ("Annotated[", ", NoDecode]", "pydantic.types.", "collections.abc."):
        text = text.replace(noise, "")
    text = text.replace("Literal['DEBUG', 'INFO', 'WARNING', 'ERROR', 'CRITICAL']", "level")
    return text


def _default_text(field: Any) -> str:
    value = field.default_factory() if field.default_factory is not None else field.default
    if isinstance(value, BaseModel):
        return ""
    if value is None:
        return "unset"
    if isinstance(value, (list, dict)):
        return json.dumps(value) if value else ("[]" if isinstance(value, list) else "{}")
    return str(value).lower() if isinstance(value, bool) else str(value)


def settings_reference(
    model: type[BaseModel] = LoggingSettings, prefix: tuple[str, ...] = ()
) -> list[tuple[str, str, str, str]]:
    """Every setting as (environment variable, type, default, description), sections
    expanded. docs/configuration.md is generated from this (`python -m fapilog.settings`)."""
    rows: list[tuple[str, str, str, str]] = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            rows.extend(settings_reference(annotation, (*prefix, name)))
            continue
        env = env_var_for(*prefix, name)
        if field.exclude:
            env = f"(code only: `{'.'.join((*prefix, name))}=`)"
        default = _default_text(field)
        if name == "mode" and isinstance(field.default, int):  # file permissions read as octal
            default = f"0o{field.default:o}"
        rows.append((env, _type_name(annotation), default, field.description or ""))
    return rows


def reference_markdown() -> str:
    lines = [
        "| Environment variable | Type | Default | Meaning |",
        "|---|---|---|---|",
    ]
    for env, kind, default, description in settings_reference():
        name = env if env.startswith("(") else f"`{env}`"
        shown = f"`{default}`" if default else ""
        lines.append(f"| {name} | {kind.replace('|', 'or')} | {shown} | {description} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # pragma: no cover - docs generator
    print(reference_markdown(), end="")
