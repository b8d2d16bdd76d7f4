"""The Loki exporter's request bodies: a batch's streams cut into requests of at most
``batch_bytes`` of line and metadata bytes, each encoded as JSON (gzip if configured) or as
Loki's native protobuf body, snappy-compressed (`fapilog.exporters.loki_protobuf`)."""

from __future__ import annotations

import gzip
from typing import Any

import orjson

from fapilog.exporters.loki_protobuf import (
    Entry,
    StreamKey,
    encode_push_request,
    labels_string,
    push_request_class,
    snappy_compressor,
    utf8_streams,
)
from fapilog.settings import LokiSettings

__all__ = ["Chunk", "RequestEncoder"]

Chunk = dict[StreamKey, list[Entry]]
_LABELS_CACHE_SIZE = 1024


class RequestEncoder:
    """Cuts and encodes requests for one exporter's settings; `headers` are the body's."""

    def __init__(self, settings: LokiSettings) -> None:
        self._limit = settings.batch_bytes
        protobuf = settings.encoding == "protobuf"
        # protobuf: always snappy, never Content-Encoding (Loki would accept gzip on top,
        # but compressing snappy output again only costs CPU)
        self._snappy = snappy_compressor() if protobuf else None
        if protobuf:
            push_request_class()  # built once, here rather than on the first push
        self._gzip = settings.gzip and not protobuf
        self._label_strings: dict[StreamKey, str] = {}
        self.headers = {
            "Content-Type": "application/x-protobuf" if protobuf else "application/json"
        }
        if self._gzip:
            self.headers["Content-Encoding"] = "gzip"

    def chunks(self, streams: Chunk, *, one_stream: bool = False) -> list[Chunk]:
        """Cut the streams into requests of at most batch_bytes (an entry larger than that
        goes alone), of one stream each with `one_stream`; entries sorted by time within
        each stream."""
        limit = self._limit
        chunks: list[Chunk] = []
        current: Chunk = {}
        used = 0
        for key, entries in streams.items():
            if one_stream and current:
                chunks.append(current)
                current, used = {}, 0
            entries.sort(key=lambda entry: entry[0])
            for entry in entries:
                if used and used + entry[3] > limit:
                    chunks.append(current)
                    current, used = {}, 0
                current.setdefault(key, []).append(entry)
                used += entry[3]
        if current:
            chunks.append(current)
        return chunks

    def encode(self, chunk: Chunk) -> bytes:
        """The request body, compressed. Text that is not valid UTF-8 (labels are made so
        where they are read) is made so here rather than cost the request."""
        try:
            return self._encode_valid(chunk)
        except (UnicodeEncodeError, TypeError, ValueError):
            return self._encode_valid(utf8_streams(chunk))

    def _encode_valid(self, chunk: Chunk) -> bytes:
        if self._snappy is not None:
            streams = [(self._labels_string(key), entries) for key, entries in chunk.items()]
            return bytes(self._snappy(encode_push_request(streams)))
        body = _encode_json(chunk)
        return gzip.compress(body, compresslevel=6) if self._gzip else body

    def _labels_string(self, key: StreamKey) -> str:
        cache = self._label_strings
        text = cache.get(key)
        if text is None:
            if len(cache) >= _LABELS_CACHE_SIZE:
                cache.clear()
            text = cache[key] = labels_string(key)
        return text


def _encode_json(chunk: Chunk) -> bytes:
    streams = []
    for key, entries in chunk.items():
        values: list[list[Any]] = []
        for timestamp, line, metadata, _ in entries:
            if metadata is None:
                values.append([str(timestamp), line])
            else:
                values.append([str(timestamp), line, metadata])
        streams.append({"stream": dict(key), "values": values})
    return orjson.dumps({"streams": streams})
