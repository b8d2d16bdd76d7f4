"""fapilog's version (one place: the package, its metrics meter and its tracer read it)."""

__version__ = "1.0.0"
