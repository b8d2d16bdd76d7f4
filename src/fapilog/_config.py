"""Kept for test suites written against earlier docs, which called `fapilog._config.reset()`:
use `fapilog.testing.reset()`."""

from fapilog.lifecycle.configure import reset

__all__ = ["reset"]
