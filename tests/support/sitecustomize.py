"""Start coverage in child interpreters the tests launch (when COVERAGE_PROCESS_START is set)."""

try:
    import coverage

    coverage.process_startup()
except Exception:  # coverage not installed or not requested
    pass
