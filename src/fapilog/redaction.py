"""Redaction of sensitive keys and values, as a structlog processor usable in your own
chains too (see docs/redaction.md; implemented in `fapilog.capture.redaction`)."""

from fapilog.capture.redaction import Redactor, luhn_valid, normalise_key

__all__ = ["Redactor", "luhn_valid", "normalise_key"]
