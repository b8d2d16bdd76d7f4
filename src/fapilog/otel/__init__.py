"""The OpenTelemetry side: the bridge that turns captured records into LogRecords, the
Resource, the semantic conventions, OTLP export, and the adapters that are the only code
touching OpenTelemetry SDK internals (`logs`, `trace`, `configuration`)."""

__all__: list[str] = []
