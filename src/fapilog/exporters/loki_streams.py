"""What the Loki exporter sends for one record: its stream's labels, its line and its
structured metadata, laid out as Loki 3 lays out what it ingests over OTLP.

- **Labels** index the streams: the configured ones (`FAPILOG_LOKI__LABELS`), cleaned by
  `label_value`. A label taken from a record attribute goes through a cardinality guard
  (`LabelGuard`): within a window (`label_values_window`, 10 minutes) it takes at most
  `label_values_max` distinct values (100), ``__other__`` among them; the excess is sent as
  ``__other__`` and counted, so one attribute cannot exhaust Loki's stream limit.
- **Structured metadata** (when on): ``trace_id``, ``span_id`` and the resource attributes that
  are not labels, their names sanitised as Loki's OTLP ingestion does (``host.name`` ->
  ``host_name``).
- **The line** is fapilog's JSON line, lean: the resource attributes that are labels or
  structured metadata, and the trace ids sent as metadata, are not repeated in it
  (`resource_in_line` keeps the resource attributes). No key of the line clashes with a
  label or a metadata name under LogQL's ``| json`` (which would rename it ``<name>_extracted``):
  a clashing key is left out when the label or metadata holds its value, else kept as
  ``attr.<key>``. Without structured metadata the line carries those fields itself.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import orjson

from fapilog import _diag
from fapilog.exporters.contract import ReadableLogRecord
from fapilog.exporters.loki_config import label_value, parse_labels, sanitize_label_name
from fapilog.exporters.loki_protobuf import StreamKey
from fapilog.exporters.render import JsonRenderer, level_name
from fapilog.settings import LokiSettings

__all__ = ["LabelGuard", "LokiLines", "OTHER"]

OTHER = "__other__"
RESOURCE_FALLBACK: StreamKey = (("service_name", "unknown_service"),)
_MAX_RESOURCE_METADATA = 64  # resource attributes sent as metadata (Loki allows 128 entries)
_NAME_CACHE_SIZE = 4096
_TRACE_METADATA_BYTES = len("trace_id") + 32 + len("span_id") + 16
_COLLISION = "attr."


class LabelGuard:
    """At most `cap` distinct values per label (``__other__`` among them) among those seen
    within `window` seconds; the others become ``__other__``, counted by label in
    `folded`. A cap of 0 lets every value through."""

    def __init__(self, cap: int, window: float) -> None:
        self._cap = cap
        self._window = window
        self._seen: dict[str, OrderedDict[str, float]] = {}
        self.folded: dict[str, int] = {}

    def admit(self, name: str, value: str, now: float) -> str:
        if not self._cap:
            return value
        seen = self._seen.get(name)
        if seen is None:
            seen = self._seen[name] = OrderedDict()
        if value in seen:
            seen[value] = now
            seen.move_to_end(value)
            return value
        horizon = now - self._window
        while seen and next(iter(seen.values())) < horizon:
            seen.popitem(last=False)
        if len(seen) < self._cap - 1:  # (one value is kept for __other__)
            seen[value] = now
            return value
        folded = self.folded[name] = self.folded.get(name, 0) + 1
        if folded == 1:
            _diag.report(
                f"loki-label-folded:{name}",
                f"fapilog loki exporter: label {name!r} took more than {self._cap - 1} distinct "
                f"values within {self._window:g} s; the others are sent as {OTHER!r} "
                "(FAPILOG_LOKI__LABEL_VALUES_MAX, FAPILOG_LOKI__LABEL_VALUES_WINDOW)",
                level="warning",
            )
        return OTHER


class _Resource:
    """One resource's attributes, placed: labels' sources left out of the line, the others
    as metadata (when on) or in the line."""

    __slots__ = ("in_line", "metadata", "metadata_bytes", "resource", "values")

    def __init__(self, resource: Any, values: dict[str, str]) -> None:
        self.resource = resource  # (held: compared by identity)
        self.values = values  # label name -> value, for the labels taken from the resource
        self.in_line: dict[str, Any] = {}
        self.metadata: dict[str, str] = {}
        self.metadata_bytes = 0


class LokiLines:
    """Labels, line and metadata for records (see the module docstring); used on the
    exporter's worker thread only."""

    def __init__(self, settings: LokiSettings) -> None:
        self._settings = settings
        self._labels = parse_labels(settings.labels, settings.static_labels)
        self._static = tuple(sorted((k, label_value(v)) for k, v in settings.static_labels.items()))
        self._renderer = JsonRenderer()
        self._resources: dict[bool, _Resource] = {}
        self._names: dict[str, str] = {}
        self.guard = LabelGuard(settings.label_values_max, settings.label_values_window)

    # -- labels --------------------------------------------------------------------------

    def fallback_key(self) -> StreamKey:
        """The stream of a record whose own labels cannot be read: the static labels."""
        return self._static or RESOURCE_FALLBACK

    def key(self, readable: ReadableLogRecord, now: float) -> StreamKey:
        """The record's stream (`now`: time.monotonic(), for the cardinality guard)."""
        placed = self._resource(readable.resource, False)
        labels: dict[str, str] = dict(self._static)
        record = readable.log_record
        for label in self._labels:
            if label.name in placed.values:
                value = placed.values[label.name]
            elif label.source == "level":
                value = label_value(level_name(record))
            elif label.source == "logger":
                scope = readable.instrumentation_scope
                value = label_value(scope.name) if scope is not None else ""
            else:
                attributes = record.attributes or {}
                try:
                    value = label_value(attributes.get(label.source))
                except Exception:  # a value with no text (a foreign record's): no label
                    value = ""
                if value:
                    value = self.guard.admit(label.name, value, now)
            if value:
                labels[label.name] = value
        if not labels:  # Loki rejects a stream without labels
            return RESOURCE_FALLBACK
        return tuple(sorted(labels.items()))

    # -- line and metadata ---------------------------------------------------------------

    def entry(
        self, readable: ReadableLogRecord, key: StreamKey, metadata_on: bool
    ) -> tuple[bytes, dict[str, str] | None, int]:
        """The record's line, its structured metadata (None: none) and the bytes both
        count against the batch size."""
        parts = self._renderer.split(readable)
        if parts is None:
            whole = self._renderer.render(readable)
            return whole, None, len(whole)
        line, _ = parts
        placed = self._resource(readable.resource, metadata_on)
        metadata: dict[str, str] | None = None
        size = 0
        if metadata_on:
            if placed.metadata:
                metadata = dict(placed.metadata)
                size += placed.metadata_bytes
            trace_id = line.pop("trace_id", None)
            span_id = line.pop("span_id", None)
            if trace_id is not None:
                metadata = metadata or {}
                metadata["trace_id"] = trace_id
                size += _TRACE_METADATA_BYTES
                if span_id is not None:
                    metadata["span_id"] = span_id
        if self._settings.resource_in_line:  # (as asked: they may clash under | json)
            self._unclash(line, dict(key), metadata)
            line.update(placed.in_line)  # (the renderer renamed attributes clashing with them)
        else:
            line.update(placed.in_line)
            self._unclash(line, dict(key), metadata)
        rendered = self._renderer.dumps(line, readable)
        return rendered, metadata, size + len(rendered)

    def _unclash(
        self, line: dict[str, Any], labels: dict[str, str], metadata: dict[str, str] | None
    ) -> None:
        """Keys whose ``| json`` name is a label's or a metadata entry's: left out when that
        holds the same value, else renamed ``attr.<key>``."""
        names = self._names
        clashes: list[tuple[str, str]] = []
        for key in line:
            name = names.get(key)
            if name is None:
                if len(names) >= _NAME_CACHE_SIZE:
                    names.clear()
                name = names[key] = sanitize_label_name(key)
            if name in labels or (metadata is not None and name in metadata):
                clashes.append((key, name))
        for key, name in clashes:
            value = line.pop(key)
            held = labels.get(name)
            if held is None and metadata is not None:
                held = metadata.get(name)
            # (a label's value is cleaned: a text that lost characters so is kept in the line)
            try:
                same = held == (value if isinstance(value, str) else label_value(value))
            except Exception:  # a value with no text (a foreign record's)
                same = False
            if not same:
                line[_COLLISION + key] = value

    def _resource(self, resource: Any, metadata_on: bool) -> _Resource:
        placed = self._resources.get(metadata_on)
        if placed is not None and placed.resource is resource:
            return placed
        attributes = dict(resource.attributes) if resource is not None else {}
        values = {
            label.name: label_value(attributes.get(label.source))
            for label in self._labels
            if label.source in attributes
        }
        placed = _Resource(resource, values)
        sources = {label.source for label in self._labels}
        for name, value in self._renderer.resource_attributes(resource).items():
            is_label = name in sources
            meta_name = sanitize_label_name(name)
            if self._settings.resource_in_line:
                placed.in_line[name] = value
            elif (
                metadata_on
                and not is_label
                and len(placed.metadata) < _MAX_RESOURCE_METADATA
                and meta_name not in placed.metadata  # (else: in the line)
            ):
                text = _metadata_text(value)
                placed.metadata[meta_name] = text
                placed.metadata_bytes += len(meta_name) + len(text.encode("utf-8", "replace"))
            elif not is_label:
                placed.in_line[name] = value
        self._resources[metadata_on] = placed
        return placed


def _metadata_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    try:
        return orjson.dumps(value, default=str).decode()
    except Exception:
        return str(value)
