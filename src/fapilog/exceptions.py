"""Exceptions fapilog raises to the application.

Only configuration raises: once `configure_logging()` has returned, nothing on the logging
path raises into the application.
"""

from __future__ import annotations

__all__ = ["ConfigurationError"]


class ConfigurationError(ValueError):
    """An invalid setting, raised by `configure_logging()` or `LoggingSettings()`.

    The message names the setting, its environment variable, the bad value and what is
    allowed, one line per problem. `errors` holds the same as structured data: one dict per
    problem with `setting`, `env`, `value` (its repr) when known, and always `error` (what
    is wrong; the message itself when no shorter text was given).
    """

    def __init__(self, message: str, errors: list[dict[str, str]] | None = None) -> None:
        super().__init__(message)
        self.errors: list[dict[str, str]] = [
            entry if "error" in entry else {**entry, "error": message} for entry in (errors or [])
        ]
