"""`FAPILOG_ADMIN__*`: the runtime level route and the per-request debug header (see
docs/sampling.md). Both stay off until a token is set."""

from __future__ import annotations

import re

from pydantic import Field, SecretStr, field_validator

from fapilog.settings._base import Section

__all__ = ["AdminSettings"]

_HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")  # an RFC 9110 token
MIN_TOKEN_LENGTH = 16


class AdminSettings(Section):
    """The level route (`GET`/`PUT` on `path`) and the debug header, both enabled by
    `token`; never mounted without one."""

    token: SecretStr | None = Field(
        default=None,
        description="bearer token of the level route and value of the debug header "
        f"(at least {MIN_TOKEN_LENGTH} characters); unset: no route, no debug header",
    )
    path: str = Field(
        default="/_fapilog/levels",
        description="path of the level route (GET shows the levels, PUT changes one)",
    )
    debug_header: str = Field(
        default="X-Fapilog-Debug",
        description="request header that, carrying the token, exports that request's DEBUG records",
    )

    @field_validator("token", mode="before")
    @classmethod
    def _token(cls, value: object) -> object:
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        if isinstance(value, str):
            text = value.strip()
            if not text:
                return None
            if len(text) < MIN_TOKEN_LENGTH:
                raise ValueError(
                    f"the token must have at least {MIN_TOKEN_LENGTH} characters "
                    "(e.g. the output of: python -c 'import secrets; print(secrets.token_hex())')"
                )
            return text
        return value

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        if not value.startswith("/") or len(value) < 2:
            raise ValueError(f"path {value!r} must start with '/', e.g. /_fapilog/levels")
        return value.rstrip("/") or value

    @field_validator("debug_header")
    @classmethod
    def _header(cls, value: str) -> str:
        if not _HEADER_NAME.match(value):
            raise ValueError(f"{value!r} is not a valid HTTP header name, e.g. X-Fapilog-Debug")
        return value
