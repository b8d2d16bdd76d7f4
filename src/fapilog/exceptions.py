"""Exceptions fapilog raises to the application.

Only configuration raises: once `configure_logging()` has returned, nothing on the logging
path raises into the application.
"""

from __future__ import annotations

__all__ = ["ConfigurationError"]


class ConfigurationError(ValueError):
    """An invalid setting, raised by `configure_logging()` or `LoggingSettings()`.

    The message names the setting, its environment variable, the bad value and what is
    allowed, one line per problem (worded by `fapilog.settings._errors`). `errors` holds the
    same as structured data: one dict per problem with `env` and `error` (what is wrong; the
    message itself when no shorter text was given), and where they apply `setting`, `value`
    (its repr; masked for a secret) and `allowed`.
    """

    def __init__(self, message: str, errors: list[dict[str, str]] | None = None) -> None:
        super().__init__(message)
        self.errors: list[dict[str, str]] = [
            entry if "error" in entry else {**entry, "error": message} for entry in (errors or [])
        ]
