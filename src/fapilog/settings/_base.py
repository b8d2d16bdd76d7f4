"""What every settings section shares: the `Section` base (unknown keys are an error), the
parsers of list and mapping values as people type them in the environment, `UNSET` (a
keyword of `configure_logging()` left out) and the docstrings listing each model's fields
(generated from the fields, so that `help()` shows them and they never go stale)."""

from __future__ import annotations

import enum
import inspect
import json
import sys
import typing
from typing import Annotated, Any, Final, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict
from pydantic_settings import NoDecode

from fapilog.settings._errors import env_var_for

__all__ = [
    "CommaList",
    "NameList",
    "Section",
    "StrMap",
    "UNSET",
    "Unset",
    "default_text",
    "document_fields",
    "parse_list",
    "parse_mapping",
    "parse_names",
    "parse_pairs",
    "section_model",
    "type_name",
]


class Unset(enum.Enum):
    """The type of `UNSET`: ``Literal[Unset.UNSET]``, the one value it has."""

    UNSET = "UNSET"

    def __repr__(self) -> str:
        return "UNSET"


UNSET: Final = Unset.UNSET
"""The default of `configure_logging()`'s keywords: the keyword was left out, so the setting
keeps its value from the `LoggingSettings` given or the environment (None is a value)."""


class Section(BaseModel):
    """Base of every nested settings section: unknown keys are an error."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def parse_list(value: Any) -> Any:
    """Accept a list, a JSON array string or a comma-separated string; other input is left
    for pydantic to reject with its own message."""
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return []
        if text.startswith("["):
            try:
                parsed = json.loads(text)
            except json.JSONDecodeError as exc:
                raise ValueError(
                    f"malformed list {value!r}: not valid JSON ({exc.msg}); "
                    "write a JSON array or comma-separated names, e.g. stdout,file"
                ) from None
            if not isinstance(parsed, list):  # pragma: no cover - '[' always parses to a list
                raise ValueError(f"malformed list {value!r}")
            return parsed
        items = [item.strip() for item in text.split(",")]
        if any(not item for item in items):
            raise ValueError(
                f"malformed list {value!r}: empty item; "
                "write comma-separated names, e.g. stdout,file"
            )
        return items
    return value


def parse_mapping(value: Any) -> Any:
    """Accept a dict, a JSON object string or ``name=value,name=value``."""
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return {}
        if text.startswith("{"):
            try:
                return json.loads(text)
            except json.JSONDecodeError as exc:
                raise ValueError(
                    f"malformed mapping {value!r}: not valid JSON ({exc.msg})"
                ) from None
        result: dict[str, str] = {}
        for part in text.split(","):
            name, sep, val = part.partition("=")
            if not sep or not name.strip() or not val.strip():
                raise ValueError(
                    f"malformed mapping {value!r}: write name=value pairs separated by commas"
                )
            result[name.strip()] = val.strip()
        return result
    return value


def parse_pairs(value: Any) -> Any:
    """`parse_mapping`, also accepting ``name:value`` pairs (``file:debug,loki:info``)."""
    if isinstance(value, str) and not value.strip().startswith("{"):
        parts = [part.strip() for part in value.split(",") if part.strip()]
        value = ",".join(part if "=" in part else part.replace(":", "=", 1) for part in parts)
    return parse_mapping(value)


def parse_names(value: Any) -> Any:
    """`parse_list`, with each name stripped and lower-cased."""
    parsed = parse_list(value)
    if isinstance(parsed, list):
        return [item.strip().lower() if isinstance(item, str) else item for item in parsed]
    return parsed


# List and mapping settings as people type them in the environment (NoDecode: not JSON-only)
CommaList = Annotated[list[str], NoDecode, BeforeValidator(parse_list)]
NameList = Annotated[list[str], NoDecode, BeforeValidator(parse_names)]
StrMap = Annotated[dict[str, str], NoDecode, BeforeValidator(parse_mapping)]


# -- the docstrings listing each model's fields ------------------------------------------

_FIELDS_HEADING = "Fields (name, environment variable: type, default; meaning):"


def type_name(annotation: Any) -> str:
    """A field's type as the settings reference and the docstrings show it."""
    if typing.get_origin(annotation) is Literal:
        return "one of: " + ", ".join(str(a) for a in typing.get_args(annotation))
    args = typing.get_args(annotation)
    if len(args) == 2 and type(None) in args:  # Optional[X]
        inner = next(a for a in args if a is not type(None))
        return type_name(inner) + " (or unset)"
    # (a plain class only: on Python 3.10 `list[str]` is an instance of `type` too)
    plain = isinstance(annotation, type) and typing.get_origin(annotation) is None
    text = getattr(annotation, "__name__", None) if plain else None
    if text is None:
        text = str(annotation).replace("typing.", "").replace("NoneType", "None")
    for noise in ("Annotated[", ", NoDecode]", "pydantic.types.", "collections.abc."):
        text = text.replace(noise, "")
    text = text.replace("Literal['DEBUG', 'INFO', 'WARNING', 'ERROR', 'CRITICAL']", "level")
    return text


def default_text(field: Any) -> str:
    """A field's default as the settings reference and the docstrings show it ("" for a
    section)."""
    value = field.default_factory() if field.default_factory is not None else field.default
    if isinstance(value, BaseModel):
        return ""
    if value is None:
        return "unset"
    if isinstance(value, (list, dict)):
        return json.dumps(value) if value else ("[]" if isinstance(value, list) else "{}")
    return str(value).lower() if isinstance(value, bool) else str(value)


def _intro(model: type[BaseModel]) -> str:
    """The model's own docstring (else its module's), without a generated field list."""
    own = model.__dict__.get("__doc__") or sys.modules[model.__module__].__doc__ or ""
    return inspect.cleandoc(own).split(_FIELDS_HEADING)[0].rstrip()


def _wrap(text: str, first: str, rest: str, width: int = 92) -> str:
    """`text` filled to `width`, breaking only between words (textwrap costs more at import)."""
    lines: list[str] = []
    line = ""
    for word in text.split():
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = rest + word
        else:
            line = f"{line} {word}" if line else first + word
    return "\n".join([*lines, line])


def section_model(annotation: Any) -> type[BaseModel] | None:
    """The section model a field's annotation is, or None for a plain setting."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def document_fields(model: type[BaseModel], prefix: tuple[str, ...] = ()) -> None:
    """Set the docstring of `model` (and of each section it has) to its own text followed
    by every field: name, environment variable, type, default and description. `prefix`:
    the path of the section (``("queue",)``) in `LoggingSettings`."""
    lines = [_intro(model), "", _FIELDS_HEADING, ""]
    for name, field in model.model_fields.items():
        path = (*prefix, name)
        env = "code only" if field.exclude else env_var_for(*path)
        section = section_model(field.annotation)
        if section is not None:
            document_fields(section, path)
            head = f"{name} ({env}__*): {section.__name__}; its fields: help({section.__name__})"
            meaning = field.description or _intro(section).split("\n\n")[0]
        else:
            default = default_text(field)
            if name == "mode" and isinstance(field.default, int):  # permissions read as octal
                default = f"0o{field.default:o}"
            head = f"{name} ({env}): {type_name(field.annotation)}; default {default or '-'}"
            meaning = field.description or ""
        lines.append(_wrap(head, "    ", "        "))
        if meaning:
            lines.append(_wrap(meaning, "        ", "        "))
    model.__doc__ = "\n".join(lines) + "\n"
