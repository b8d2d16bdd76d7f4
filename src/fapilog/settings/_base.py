"""What every settings section shares: the `Section` base (unknown keys are an error) and the
parsers of list and mapping values as people type them in the environment."""

from __future__ import annotations

import json
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict
from pydantic_settings import NoDecode

__all__ = [
    "CommaList",
    "NameList",
    "Section",
    "StrMap",
    "parse_list",
    "parse_mapping",
    "parse_names",
]


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
