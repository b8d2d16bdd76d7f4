"""fapilog's version (one place: the package, its metrics meter and its tracer read it)."""

__version__ = "0.1.0"
