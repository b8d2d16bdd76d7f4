"""The ``fapilog`` command line (docs/cli.md): ``fapilog config``, ``fapilog check`` and
``fapilog pretty``. The entry point is `fapilog.cli.main.main`."""

__all__: list[str] = []
