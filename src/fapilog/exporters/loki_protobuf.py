"""Loki's native push body: ``logproto.PushRequest`` in protobuf, snappy-compressed
(``FAPILOG_LOKI__ENCODING=protobuf``).

The message is built with the ``protobuf`` runtime (a dependency of the OTLP exporter) from a
descriptor written in this module after Loki's ``pkg/push/push.proto``, no generated code;
it encodes faster than a hand-written encoder did (docs/benchmarks.md). Stream labels travel
as one string in Prometheus/Go syntax (`labels_string`). Snappy comes from the optional
``cramjam`` package (``pip install 'cramjam>=2.8,<3'``, or fapilog's ``loki-protobuf`` extra).

`Entry` and `StreamKey` are what both encodings send, and `utf8_text` their one rule for
text: every label, line and structured metadata string is valid UTF-8, a lone surrogate
(what decoding with ``surrogateescape`` leaves of an undecodable byte) written as its escape,
visible text (``\\udcff``), as fapilog's JSON lines write it.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable, Sequence
from typing import Any

__all__ = [
    "Entry",
    "PROTOBUF_EXTRA",
    "StreamKey",
    "encode_push_request",
    "go_quote",
    "labels_string",
    "push_request_class",
    "snappy_compressor",
    "utf8_streams",
    "utf8_text",
]

PROTOBUF_EXTRA = "pip install 'cramjam>=2.8,<3'"
Entry = tuple[int, str, "dict[str, str] | None", int]  # ns, line, structured metadata, bytes
StreamKey = tuple[tuple[str, str], ...]  # a stream's labels, sorted by name

_GO_ESCAPES = {
    "\a": "\\a",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\v": "\\v",
    '"': '\\"',
    "\\": "\\\\",
}


def utf8_text(text: str) -> str:
    """`text` as valid UTF-8 can hold it: each lone surrogate becomes its escape as visible
    text (``chr(0xDCFF)`` becomes the six characters ``\\udcff``), the rest unchanged."""
    if text.isascii():
        return text
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def utf8_streams(streams: dict[StreamKey, list[Entry]]) -> dict[StreamKey, list[Entry]]:
    """`streams` with every label, line and structured metadata string made `utf8_text`
    (streams whose labels become the same are merged)."""
    clean: dict[StreamKey, list[Entry]] = {}
    for key, entries in streams.items():
        labels = tuple(sorted((utf8_text(name), utf8_text(value)) for name, value in key))
        clean.setdefault(labels, []).extend(
            (
                timestamp,
                utf8_text(line),
                {utf8_text(k): utf8_text(v) for k, v in metadata.items()} if metadata else None,
                size,
            )
            for timestamp, line, metadata, size in entries
        )
    for entries in clean.values():
        entries.sort(key=lambda entry: entry[0])
    return clean


def _go_char(char: str) -> str:
    escaped = _GO_ESCAPES.get(char)
    if escaped is not None:
        return escaped
    if char.isprintable():
        return char
    code = ord(char)
    if 0xD800 <= code <= 0xDFFF:  # a lone surrogate: its escape as text (see `utf8_text`)
        return f"\\\\u{code:04x}"
    if code < 0x20 or code == 0x7F:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def go_quote(value: str) -> str:
    """`value` as Go's ``strconv.Quote`` writes it (Python's `str.isprintable` is Go's
    ``unicode.IsPrint``: letters, marks, numbers, punctuation, symbols and the ASCII space)."""
    if value.isprintable() and '"' not in value and "\\" not in value:
        return f'"{value}"'
    return '"' + "".join(_go_char(char) for char in value) + '"'


def labels_string(key: StreamKey) -> str:
    """A stream's labels as Loki's protobuf body carries them: ``{env="prod", x="y"}``
    (`key` is sorted by name already)."""
    return "{" + ", ".join(f"{name}={go_quote(value)}" for name, value in key) + "}"


@functools.cache
def push_request_class() -> Any:
    """``logproto.PushRequest`` as a protobuf message class, from a descriptor written
    here after Loki's ``pkg/push/push.proto`` (no generated code), in a pool of its own.
    Imported through importlib: the protobuf package ships no type information."""
    descriptor_pb2 = importlib.import_module("google.protobuf.descriptor_pb2")
    descriptor_pool = importlib.import_module("google.protobuf.descriptor_pool")
    message_factory = importlib.import_module("google.protobuf.message_factory")
    timestamp_pb2 = importlib.import_module("google.protobuf.timestamp_pb2")
    kinds = descriptor_pb2.FieldDescriptorProto
    proto = descriptor_pb2.FileDescriptorProto(
        name="fapilog/loki/push.proto",
        package="logproto",
        syntax="proto3",
        dependency=["google/protobuf/timestamp.proto"],
    )
    messages: dict[str, list[tuple[str, int, str]]] = {  # name, number, message type
        "LabelPairAdapter": [("name", 1, ""), ("value", 2, "")],
        "EntryAdapter": [
            ("timestamp", 1, ".google.protobuf.Timestamp"),
            ("line", 2, ""),
            ("structuredMetadata", 3, ".logproto.LabelPairAdapter"),
        ],
        "StreamAdapter": [("labels", 1, ""), ("entries", 2, ".logproto.EntryAdapter")],
        "PushRequest": [("streams", 1, ".logproto.StreamAdapter")],
    }
    for message, fields in messages.items():
        described = proto.message_type.add(name=message)
        for name, number, type_name in fields:
            field = described.field.add(name=name, number=number)
            if not type_name:
                field.type, field.label = kinds.TYPE_STRING, kinds.LABEL_OPTIONAL
            else:
                field.type, field.type_name = kinds.TYPE_MESSAGE, type_name
                single = name == "timestamp"
                field.label = kinds.LABEL_OPTIONAL if single else kinds.LABEL_REPEATED
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(timestamp_pb2.DESCRIPTOR.serialized_pb)
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("logproto.PushRequest"))


def encode_push_request(streams: Sequence[tuple[str, Sequence[Entry]]]) -> bytes:
    """``logproto.PushRequest{repeated StreamAdapter streams = 1}`` for (labels string,
    entries) pairs: ``StreamAdapter{string labels = 1; repeated EntryAdapter entries = 2}``,
    ``EntryAdapter{Timestamp timestamp = 1; string line = 2; repeated LabelPairAdapter
    structuredMetadata = 3}``, ``LabelPairAdapter{string name = 1; string value = 2}``."""
    request = push_request_class()()
    for labels, entries in streams:
        add = request.streams.add(labels=labels).entries.add
        for timestamp, line, metadata, _ in entries:
            entry = add(line=line)
            stamp = entry.timestamp
            stamp.seconds, stamp.nanos = divmod(timestamp, 1_000_000_000)
            if metadata:
                pairs = entry.structuredMetadata
                for name, value in metadata.items():
                    pairs.add(name=name, value=value)
    body: bytes = request.SerializeToString()
    return body


def snappy_compressor() -> Callable[[bytes], Any]:
    """cramjam's raw-block snappy compressor; ImportError without the extra."""
    module = importlib.import_module("cramjam")
    compress: Callable[[bytes], Any] = module.snappy.compress_raw
    return compress
