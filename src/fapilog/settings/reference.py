"""The settings reference: every setting with its environment variable, type, default and
meaning, expanded from the models. docs/configuration.md's table is generated from it
(``make docs``; a test fails when the page is stale)."""

from __future__ import annotations

from pydantic import BaseModel

from fapilog.settings._base import default_text, type_name
from fapilog.settings._errors import env_var_for
from fapilog.settings.model import LoggingSettings

__all__ = ["reference_markdown", "settings_reference"]


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
        default = default_text(field)
        if name == "mode" and isinstance(field.default, int):  # file permissions read as octal
            default = f"0o{field.default:o}"
        rows.append((env, type_name(annotation), default, field.description or ""))
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
