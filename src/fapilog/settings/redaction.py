"""`FAPILOG_REDACTION__*`: what is replaced by the marker before any exporter sees a record
(see docs/redaction.md)."""

from __future__ import annotations

import json
import re
from typing import Annotated, Any

from pydantic import Field, field_validator
from pydantic_settings import NoDecode

from fapilog.settings._base import Section, parse_names

__all__ = [
    "BUILTIN_PATTERNS",
    "DEFAULT_KEYS",
    "DEFAULT_KEY_FRAGMENTS",
    "DEFAULT_MARKER",
    "RedactionSettings",
    "SENSITIVE_HEADERS",
]

DEFAULT_MARKER = "[REDACTED]"

# Keys whose values are always redacted (compared case-insensitively, '-' == '_').
DEFAULT_KEYS: tuple[str, ...] = (
    "password", "passwd", "pwd", "passphrase", "secret", "token", "access_token",
    "refresh_token", "api_key", "apikey", "auth", "authorization", "proxy-authorization",
    "credentials", "credential", "cookie", "set-cookie", "session", "credit_card",
    "card_number", "cvv", "ssn", "private_key",
)  # fmt: skip

# A key CONTAINING one of these (db_password, client_secret, csrf_token, x-api-key) has its
# text and structured values redacted; numbers stay (max_tokens=100 is not a secret).
DEFAULT_KEY_FRAGMENTS: tuple[str, ...] = (
    "password", "passwd", "passphrase", "secret", "token", "api_key", "apikey", "private_key",
)  # fmt: skip

# Value patterns built in (see fapilog.redaction for what each matches).
BUILTIN_PATTERNS: tuple[str, ...] = (
    "url_credentials", "bearer", "basic", "jwt", "card", "key_value", "aws_access_key",
    "aws_secret_key", "github_token", "gitlab_token", "slack_token", "private_key_block",
)  # fmt: skip

# Request/response headers always replaced by the marker, even when allowlisted.
SENSITIVE_HEADERS: tuple[str, ...] = (
    "authorization", "cookie", "set-cookie", "proxy-authorization", "x-api-key",
)  # fmt: skip


def _parse_patterns(value: Any) -> Any:
    """Regexes may contain commas, so they are not split on them: a JSON array of strings,
    or one regex."""
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return []
        if text.startswith("["):
            try:
                parsed = json.loads(text)
            except json.JSONDecodeError:
                return [text]  # a regex that starts with a character class
            if isinstance(parsed, list) and all(isinstance(item, str) for item in parsed):
                return parsed
        return [text]
    return value


class RedactionSettings(Section):
    """`FAPILOG_REDACTION__*`: what is replaced by the marker before any exporter sees it."""

    enabled: bool = Field(
        default=True, description="redact sensitive keys and values (turn off explicitly)"
    )
    marker: str = Field(
        default=DEFAULT_MARKER, min_length=1, description="what a redacted value becomes"
    )
    keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="more keys to redact, added to the default set"
    )
    allow_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="keys never redacted by name (removes them from the default set and "
        "the fragment rule)",
    )
    key_fragments: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: list(DEFAULT_KEY_FRAGMENTS),
        description="a key containing one of these is redacted too (numbers excepted)",
    )
    builtin_patterns: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: list(BUILTIN_PATTERNS),
        description="value patterns applied to every string: url_credentials, bearer, "
        "basic, jwt, card, key_value, aws_access_key, aws_secret_key, github_token, "
        "gitlab_token, slack_token, private_key_block",
    )
    patterns: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="more regexes (JSON array, or one regex) whose matches are redacted; "
        "a group named 'secret' limits the redaction to that group",
    )

    audit: bool = Field(
        default=False,
        description="add the attribute fapilog.redacted to each record that had something "
        "redacted: where, and by which rule (never the text)",
    )

    @field_validator("keys", "allow_keys", "key_fragments", "builtin_patterns", mode="before")
    @classmethod
    def _lists(cls, value: object) -> object:
        return parse_names(value)

    @field_validator("keys", "allow_keys", "key_fragments")
    @classmethod
    def _non_empty(cls, value: list[str]) -> list[str]:
        if any(not item.strip() for item in value):
            raise ValueError("empty key name")
        return list(dict.fromkeys(value))

    @field_validator("builtin_patterns")
    @classmethod
    def _known_patterns(cls, value: list[str]) -> list[str]:
        unknown = [name for name in value if name not in BUILTIN_PATTERNS]
        if unknown:
            raise ValueError(
                f"unknown builtin pattern(s) {', '.join(map(repr, unknown))}; "
                f"known: {', '.join(BUILTIN_PATTERNS)}"
            )
        return list(dict.fromkeys(value))

    @field_validator("patterns", mode="before")
    @classmethod
    def _patterns_list(cls, value: object) -> object:
        return _parse_patterns(value)

    @field_validator("patterns")
    @classmethod
    def _compilable(cls, value: list[str]) -> list[str]:
        for pattern in value:
            try:
                compiled = re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"invalid regex {pattern!r}: {exc}") from None
            if compiled.search("") is not None:
                raise ValueError(f"regex {pattern!r} matches the empty string")
        return value
