"""The settings reference: every setting with its environment variable, type, default and
meaning, expanded from the models. docs/configuration.md's table is generated from it
(``make docs``; a test fails when the page is stale)."""

from __future__ import annotations

import json
import typing
from typing import Any, Literal

from pydantic import BaseModel

from fapilog.settings._errors import env_var_for
from fapilog.settings.model import LoggingSettings

__all__ = ["reference_markdown", "settings_reference"]


def _type_name(annotation: Any) -> str:
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
    expanded. docs/configuration.md is generated from this (`make docs`)."""
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
