"""Redaction of sensitive keys and values before any exporter sees a record
(see docs/redaction.md).

`build_processors(settings)` returns the redaction processor placed last in the chain, just
before the OTel bridge, so every exporter (stdout, file, Loki, OTLP) and stdlib records get
the same treatment. `Redactor` is a plain structlog processor: usable in your own chains.

What is redacted (each value becomes the marker, ``[REDACTED]`` by default):
- by key, at any depth: a key in the key set (case-insensitive, ``-`` equal to ``_``), or a
  key containing one of the key fragments (then numbers are kept: ``max_tokens=100``);
- by value, in every string (the message included): credentials in URLs, ``Bearer`` and
  ``Basic`` credentials, JWTs, card numbers that pass the Luhn check, ``key=value`` /
  ``"key": "value"`` pairs whose key is sensitive, and your own regexes;
- the message and stack trace of a logged exception.

The processor runs on the caller's thread, so everything is prepared in `__init__`: key
verdicts are cached, strings seen clean are remembered (bounded), each value pattern runs
only when a cheap substring test says it could match, and int/float/bool/None values cost
nothing. Nested containers are copied when something in them changes, never mutated.
"""

from __future__ import annotations

from collections.abc import Callable, ItemsView, Iterable, MutableMapping
from typing import TYPE_CHECKING, Any

from fapilog import _diag
from fapilog.capture.coerce import coerce_key, coerce_value
from fapilog.capture.record import exception_of
from fapilog.capture.secrets import (
    Rule,
    build_scan,
    is_number,
    key_filter,
    luhn_valid,
    separators,
    stems,
    value_span,
)
from fapilog.otel.semconv import exception_attributes
from fapilog.settings.redaction import (
    BUILTIN_PATTERNS,
    DEFAULT_KEY_FRAGMENTS,
    DEFAULT_KEYS,
    DEFAULT_MARKER,
    RedactionSettings,
)

if TYPE_CHECKING:
    import re

    from structlog.typing import Processor

    from fapilog.settings import LoggingSettings

__all__ = ["AUDIT_KEY", "Redactor", "build_processors", "luhn_valid", "normalise_key"]

AUDIT_KEY = "fapilog.redacted"  # the audit attribute: ["password:key", "note:jwt", ...]

# key verdicts
_SCAN = 0  # an ordinary key: scan the value
_EXACT = 1  # a sensitive key: the value becomes the marker (None stays None)
_FRAGMENT = 2  # contains a sensitive fragment: redacted unless a number
_EXEMPT = 3  # trace ids: left alone when they are ids (else scanned)
_EXC = 4  # exc_info: the exception's text is redacted
_RENAME = 8  # (added to a verdict) the key itself holds a secret: it becomes its redacted text

_NUMBERS = frozenset({int, float, bool, type(None)})
_BYTES = frozenset({bytes, bytearray, memoryview})
_PAIR = frozenset({tuple, list})
_NAMES = (str, bytes, bytearray)  # what the name of a (name, value) pair may be
_EXEMPT_KEYS = frozenset({"trace_id", "span_id", "trace_flags"})
_HEX = frozenset("0123456789abcdefABCDEF")
_MAX_DEPTH = 32
_TRUNCATED = f"<truncated: nested deeper than {_MAX_DEPTH} levels>"
_CACHE_LIMIT = 4096  # entries in each cache before it is cleared
_CACHE_TEXT_LEN = 256  # longer strings are not remembered as clean
# the key written before a separator (`key = `, `"key": `): a run of these characters
_KEY_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-"
_KEY_WINDOW = 66
_QUOTES = ('"', "'")


def normalise_key(key: str) -> str:
    """How keys are compared: lower case, ``-`` read as ``_``."""
    return key.strip().lower().replace("-", "_")


def _key_text(key: Any) -> str:
    """The text a key that is not a plain str becomes on the way out."""
    if isinstance(key, (bytes, bytearray, memoryview)):
        return bytes(key).decode("utf-8", "surrogateescape")
    if isinstance(key, str):
        return str.__str__(key)
    return coerce_key(key)


def _unique(key: Any, taken: Any) -> Any:
    """`key`, or ``key#2``, ``key#3``... when a redacted key would replace another one."""
    if key not in taken:
        return key
    number = 2
    while f"{key}#{number}" in taken:
        number += 1
    return f"{key}#{number}"


def _is_id(value: Any) -> bool:
    """Whether a ``trace_id``/``span_id``/``trace_flags`` value is an id (an int, or 2, 16
    or 32 hex digits), which no pattern need look at."""
    kind = type(value)
    if kind is int:
        return True
    return kind is str and len(value) in (2, 16, 32) and _HEX.issuperset(value)


class Redactor:
    """The redaction processor (see the module doc). Build it once; calling it is cheap."""

    __slots__ = (
        "_allowed",
        "_audit",
        "_builtin",
        "_clean",
        "_exact",
        "_fragments",
        "_kv_filter",
        "_rules",
        "_scan",
        "_stems",
        "_verdicts",
        "marker",
    )

    def __init__(
        self,
        *,
        marker: str = DEFAULT_MARKER,
        keys: Iterable[str] = DEFAULT_KEYS,
        key_fragments: Iterable[str] = DEFAULT_KEY_FRAGMENTS,
        allow_keys: Iterable[str] = (),
        builtin_patterns: Iterable[str] = BUILTIN_PATTERNS,
        patterns: Iterable[str | re.Pattern[str]] = (),
        audit: bool = False,
    ) -> None:
        self.marker = marker
        self._allowed = frozenset(normalise_key(k) for k in allow_keys)
        self._exact = frozenset(normalise_key(k) for k in keys) - self._allowed
        self._fragments = tuple(sorted({normalise_key(f) for f in key_fragments}))
        self._verdicts: dict[Any, int] = {}
        self._clean: set[str] = set()
        self._kv_filter = key_filter(self._exact, self._fragments)
        self._stems = stems(self._exact | set(self._fragments))
        self._builtin = tuple(builtin_patterns)
        self._audit = audit
        scan, rules = build_scan(self._builtin, list(patterns), marker, self._redact_key_values)
        self._scan: Callable[[str], str] = scan
        self._rules: tuple[Rule, ...] = rules

    @classmethod
    def from_settings(cls, settings: RedactionSettings) -> Redactor:
        return cls(
            marker=settings.marker,
            keys=(*DEFAULT_KEYS, *settings.keys),
            key_fragments=settings.key_fragments,
            allow_keys=settings.allow_keys,
            builtin_patterns=settings.builtin_patterns,
            patterns=settings.patterns,
            audit=settings.audit,
        )

    # -- keys --------------------------------------------------------------------------

    def _classify(self, key: Any) -> int:
        kind = type(key)
        if kind is str:
            if key == "event":
                verdict = _SCAN
            elif key == "exc_info":
                verdict = _EXC
            elif key in _EXEMPT_KEYS:
                verdict = _EXEMPT
            else:
                verdict = self._key_verdict(key)
                if self.redact_text(key) != key:
                    verdict |= _RENAME
        else:  # bytes (a header name as servers hand it over), str subclasses, objects
            text = _key_text(key)
            verdict = self._key_verdict(text)
            if self.redact_text(text) != text:
                verdict |= _RENAME
        verdicts = self._verdicts
        if len(verdicts) >= _CACHE_LIMIT:
            verdicts.clear()
        verdicts[key] = verdict
        return verdict

    def _key_verdict(self, key: str) -> int:
        normal = normalise_key(key)
        if normal in self._allowed:
            return _SCAN
        if normal in self._exact:
            return _EXACT
        for fragment in self._fragments:
            if fragment in normal:
                return _FRAGMENT
        return _SCAN

    def is_sensitive_key(self, key: str) -> bool:
        """Whether values under `key` are redacted (numbers excepted for fragment keys)."""
        return self._key_verdict(key) in (_EXACT, _FRAGMENT)

    # -- values ------------------------------------------------------------------------

    def redact_text(self, text: str) -> str:
        """`text` with every value-pattern match replaced by the marker (the same object
        when nothing matched)."""
        clean = self._clean
        if text in clean:
            return text
        result = self._scan(text)
        if result is text or result == text:
            if len(text) <= _CACHE_TEXT_LEN:
                if len(clean) >= _CACHE_LIMIT:
                    clean.clear()
                clean.add(text)
            return text
        return result

    def _candidates(self, text: str, lowered: str) -> list[int]:
        """Separators that a sensitive-looking key precedes. Found with str.find, then
        checked by a regex anchored at each one on the reversed, lower-cased text (so it
        reads the key backwards from the separator, without scanning the whole text)."""
        for stem in self._stems:  # no sensitive word at all: nothing to look at (C speed)
            if stem in lowered:
                break
        else:
            return []
        positions = separators(text, lowered)
        if not positions:
            return positions
        if len(lowered) != len(text):  # non-ASCII case mapping changed the length
            return positions
        reverse = lowered[::-1]
        last = len(text) - 1
        match = self._kv_filter.match
        return [position for position in positions if match(reverse, last - position)]

    def _redact_key_values(self, text: str, lowered: str | None = None) -> str:
        """``password=hunter2``, ``"token": "a b"``, ``?api_key=k&x=1``, ``pwd%3Dk``: the
        value of a sensitive key written inside a string, replaced whole."""
        candidates = self._candidates(text, text.lower() if lowered is None else lowered)
        if not candidates:
            return text
        verdicts = self._verdicts
        pieces: list[str] | None = None
        last = 0
        for position in candidates:
            if position < last:
                continue  # inside a value already redacted
            encoded = text[position] == "%"
            head = text[max(0, position - _KEY_WINDOW) : position].rstrip(" \t")
            if head[-1:] in _QUOTES:
                head = head[:-1].rstrip("\\")  # (a quote escaped: JSON inside a string)
            key = head[len(head.rstrip(_KEY_CHARS)) :]
            before = head[-len(key) - 1 : -len(key)] if key else ""
            if before == "%" and len(key) > 2:  # after a URL-encoded character (%3F, %26)
                key, before = key[2:], "&"
            if not key:
                continue
            verdict = verdicts.get(key)
            if verdict is None:
                verdict = self._classify(key)
            if verdict not in (_EXACT, _FRAGMENT):
                continue
            mode = "encoded" if encoded else "url" if before in ("?", "&") else "free"
            span = value_span(text, position + (3 if encoded else 1), mode)
            if span is None:
                continue
            start, end = span
            value = text[start:end]
            if value == self.marker or (verdict == _FRAGMENT and is_number(value)):
                continue
            if pieces is None:
                pieces = []
            pieces.append(text[last:start])
            pieces.append(self.marker)
            last = end
        if pieces is None:
            return text
        pieces.append(text[last:])
        return "".join(pieces)

    def redact_value(self, value: Any) -> Any:
        """`value` (any type) with sensitive parts replaced; containers are copied when
        something in them changes."""
        return self._value(value, 0, set())

    def _value(self, value: Any, depth: int, path: set[int]) -> Any:
        kind = type(value)
        if kind is str:
            return self.redact_text(value)
        if kind in _NUMBERS:
            return value
        if kind in _BYTES:
            return self._bytes(value)
        if depth >= _MAX_DEPTH:
            return _TRUNCATED  # visibly cut, as deep as values are kept
        if kind is dict:
            return self._dict(value, depth, path)
        if kind is list or kind is tuple:
            return self._sequence(value, depth, path)
        if isinstance(value, ItemsView):  # headers.items(): a list of (name, value) pairs
            return self._sequence(list(value), depth, path)
        coerced = coerce_value(value)  # objects, enums, sets, mappings: their logged form
        if coerced is value:
            return coerced
        return self._value(coerced, depth, path)

    def _bytes(self, value: bytes | bytearray | memoryview) -> Any:
        """Bytes are scanned as the text they hold (bytes that are not UTF-8 kept as they
        are around it); redacted, they stay bytes."""
        raw = bytes(value)
        text = raw.decode("utf-8", "surrogateescape")
        redacted = self.redact_text(text)
        if redacted is text or redacted == text:
            return value
        return redacted.encode("utf-8", "surrogateescape")

    def _dict(self, value: dict[Any, Any], depth: int, path: set[int]) -> Any:
        ident = id(value)
        if ident in path:
            return "<recursion>"
        path.add(ident)
        copy: dict[Any, Any] | None = None
        renamed: dict[Any, Any] | None = None
        verdicts = self._verdicts
        for key, item in value.items():
            verdict = verdicts.get(key)
            if verdict is None:
                verdict = self._classify(key)
            if verdict == _SCAN:
                new = self._value(item, depth + 1, path)
            elif verdict == _EXEMPT and _is_id(item):
                continue
            else:
                if verdict & _RENAME:
                    if renamed is None:
                        renamed = {}
                    renamed[key] = self._value(key, depth, path)
                new = self._by_verdict(item, verdict & ~_RENAME, depth + 1, path)
            if new is not item:
                if copy is None:
                    copy = dict(value)
                copy[key] = new
        path.discard(ident)
        if renamed is not None:
            source = value if copy is None else copy
            result: dict[Any, Any] = {}
            for key, item in source.items():
                name = renamed.get(key)
                if name is None:
                    result[key] = item
                else:
                    result[_unique(name, result.keys() | source.keys())] = item
            return result
        return value if copy is None else copy

    def _by_verdict(self, value: Any, verdict: int, depth: int, path: set[int]) -> Any:
        """`value` redacted as its key's verdict says."""
        if verdict == _EXACT:
            return value if value is None else self._masked(value, False)
        if verdict == _FRAGMENT:
            return value if type(value) in _NUMBERS else self._masked(value, True)
        return self._value(value, depth, path)

    def _masked(self, value: Any, keep_numbers: bool) -> Any:
        """The marker in place of a sensitive key's value. A list or tuple keeps its shape
        (a list of markers, numbers kept where the key only contains a sensitive word), so
        a field documented as an array (request headers) stays an array; bytes stay bytes."""
        kind = type(value)
        if kind in _BYTES:
            return self.marker.encode()
        if kind is not list and kind is not tuple:
            return self.marker
        marker = self.marker
        return [item if keep_numbers and type(item) in _NUMBERS else marker for item in value]

    def _sequence(self, value: list[Any] | tuple[Any, ...], depth: int, path: set[int]) -> Any:
        ident = id(value)
        if ident in path:
            return "<recursion>"
        path.add(ident)
        copy: list[Any] | None = None
        for index, item in enumerate(value):
            if type(item) in _PAIR and len(item) == 2 and isinstance(item[0], _NAMES):
                new = self._pair(item, depth + 1, path)  # (name, value): a header
            else:
                new = self._value(item, depth + 1, path)
            if new is not item:
                if copy is None:
                    copy = list(value)
                copy[index] = new
        path.discard(ident)
        if copy is None:
            return value
        return copy if type(value) is list else tuple(copy)

    def _pair(self, pair: list[Any] | tuple[Any, ...], depth: int, path: set[int]) -> Any:
        """A (name, value) pair (``scope["headers"]``, ``headers.items()``): the value of a
        sensitive name is masked as the value of a sensitive key would be."""
        if depth >= _MAX_DEPTH:
            return _TRUNCATED
        name, item = pair
        key = bytes(name) if type(name) is bytearray else name  # (hashable)
        verdict = self._verdicts.get(key)
        if verdict is None:
            verdict = self._classify(key)
        new_name = self._value(name, depth, path) if verdict & _RENAME else name
        new = self._by_verdict(item, verdict & ~_RENAME, depth, path)
        if new is item and new_name is name:
            return pair
        return (new_name, new) if type(pair) is tuple else [new_name, new]

    def _exception(self, exc_info: Any) -> dict[str, str] | None:
        """The exception of `exc_info` as its `exception.*` attributes, redacted (its
        message, notes, causes and context are all in the stack trace)."""
        exc = exception_of(exc_info)
        if exc is None:
            return None
        attributes = exception_attributes(exc)
        for key in ("exception.type", "exception.message", "exception.stacktrace"):
            if key in attributes:
                attributes[key] = self.redact_text(attributes[key])
        return attributes

    # -- the processor -----------------------------------------------------------------

    def __call__(
        self, logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        try:
            if self._audit:
                return audit(self, event_dict)
            return self._redact_event(event_dict)
        except Exception as exc:  # never raise into the application, never leak
            _diag.report("redaction", f"fapilog redaction failed, values withheld: {exc!r}")
            return self._withhold(event_dict)

    def _redact_event(self, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        verdicts = self._verdicts
        clean = self._clean
        changes: dict[str, Any] | None = None
        renamed: list[str] | None = None
        has_exception = False
        new: Any
        for key, value in event_dict.items():
            kind = type(value)
            verdict = verdicts.get(key)
            if verdict is None:
                verdict = self._classify(key)
            if verdict == _SCAN:
                if kind is str:
                    if value in clean:
                        continue
                    new = self.redact_text(value)
                elif kind in _NUMBERS:
                    continue
                else:
                    new = self._value(value, 1, set())
            elif verdict == _EXACT:
                new = value if value is None else self._masked(value, False)
            elif verdict == _FRAGMENT:
                new = value if kind in _NUMBERS else self._masked(value, True)
            elif verdict == _EXC:
                has_exception = value is not None and value is not False
                continue
            elif verdict == _EXEMPT and _is_id(value):
                continue
            else:  # a trace id that is no id, or a key that is itself a secret
                if verdict & _RENAME:
                    if renamed is None:
                        renamed = []
                    renamed.append(key)
                new = self._by_verdict(value, verdict & ~_RENAME, 1, set())
            if new is not value:
                if changes is None:
                    changes = {}
                changes[key] = new
        if changes is not None:
            event_dict.update(changes)
        if renamed is not None:
            for key in renamed:
                item = event_dict.pop(key)
                event_dict[_unique(self.redact_text(key), event_dict)] = item
        if has_exception:
            attributes = self._exception(event_dict["exc_info"])
            if attributes is not None:
                # the redacted text replaces the exception (None: the bridge adds nothing)
                event_dict["exc_info"] = None
                event_dict.update(attributes)
        return event_dict

    def _withhold(self, event_dict: MutableMapping[str, Any]) -> dict[str, Any]:
        """After an internal error: keep the keys and numbers, withhold everything else."""
        result: dict[str, Any] = {}
        try:
            for key, value in list(event_dict.items()):
                if key == "exc_info":
                    continue
                name = key if type(key) is str and self.redact_text(key) == key else self.marker
                result[name] = value if type(value) in _NUMBERS else self.marker
        except Exception:
            result = {"event": self.marker}
        result["fapilog.redaction_failed"] = True
        return result

    def __repr__(self) -> str:
        return f"<fapilog.Redactor marker={self.marker!r} patterns={list(self._builtin)}>"


def audit(redactor: Redactor, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Redact `event_dict` and list in `AUDIT_KEY` each place that was redacted and by which
    rule (``nested.api_key:key``, ``message:jwt``), never the text. The values redaction
    replaced are new objects (containers are copied, never changed), so comparing before
    and after finds them."""
    before = list(event_dict.items())
    exc_info = event_dict.get("exc_info")
    result = redactor._redact_event(event_dict)
    found: list[str] = []
    for key, old in before:
        if key == "exc_info":
            continue
        name = key if key in result else redactor.redact_text(key)
        if name != key:
            found.extend(f"{name}:{rule}" for rule in _rules_matching(redactor, key))
        path = "message" if key == "event" else str(name)
        _compare(redactor, path, key, old, result.get(name), found=found)
    exc = exception_of(exc_info) if exc_info is not None else None
    if exc is not None and result.get("exc_info") is None:
        for key, text in exception_attributes(exc).items():
            if result.get(key) != text:
                found.extend(f"{key}:{rule}" for rule in _rules_matching(redactor, text))
    if found:
        result[AUDIT_KEY] = found
    return result


def _compare(
    redactor: Redactor, path: str, key: Any, old: Any, new: Any, *, found: list[str]
) -> None:
    if old is new:
        return
    verdict = redactor._verdicts.get(key, _SCAN) & ~_RENAME
    if verdict in (_EXACT, _FRAGMENT):
        found.append(f"{path}:{'key' if verdict == _EXACT else 'key_fragment'}")
        return
    kind = type(old)
    if kind is str:
        found.extend(f"{path}:{rule}" for rule in _rules_matching(redactor, old))
    elif kind in _BYTES:
        text = bytes(old).decode("utf-8", "surrogateescape")
        found.extend(f"{path}:{rule}" for rule in _rules_matching(redactor, text))
    elif kind is dict and type(new) is dict:
        for item_key, item in old.items():
            name = item_key if item_key in new else redactor.redact_text(str(item_key))
            if name != item_key:
                found.append(f"{path}.{name}:key_text")
            _compare(redactor, f"{path}.{name}", item_key, item, new.get(name), found=found)
    elif kind in _PAIR and type(new) in _PAIR and len(old) == len(new):
        header = len(old) == 2 and type(old[0]) in (str, bytes)
        for index, (item, item_new) in enumerate(zip(old, new, strict=True)):
            item_key = old[0] if header and index == 1 else None
            _compare(redactor, f"{path}[{index}]", item_key, item, item_new, found=found)
    elif new == _TRUNCATED:
        found.append(f"{path}:depth")
    else:
        found.append(f"{path}:value")


def _rules_matching(redactor: Redactor, text: str) -> list[str]:
    return [name for name, rule in redactor._rules if rule(text) != text] or ["value"]


def build_processors(settings: LoggingSettings) -> list[Processor]:
    """The redaction processor for `settings`, or nothing when redaction is turned off
    (``FAPILOG_REDACTION__ENABLED=false``)."""
    if not settings.redaction.enabled:
        return []
    return [Redactor.from_settings(settings.redaction)]
