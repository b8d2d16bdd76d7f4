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

import base64
import binascii
import re
from collections.abc import Callable, Iterable, MutableMapping
from typing import TYPE_CHECKING, Any

from fapilog import _diag
from fapilog.capture.coerce import coerce_value
from fapilog.capture.record import exception_of
from fapilog.otel.semconv import exception_attributes
from fapilog.settings.redaction import (
    BUILTIN_PATTERNS,
    DEFAULT_KEY_FRAGMENTS,
    DEFAULT_KEYS,
    DEFAULT_MARKER,
    RedactionSettings,
)

if TYPE_CHECKING:
    from structlog.typing import Processor

    from fapilog.settings import LoggingSettings

__all__ = ["Redactor", "build_processors", "luhn_valid", "normalise_key"]

# key verdicts
_SCAN = 0  # an ordinary key: scan the value
_EXACT = 1  # a sensitive key: the value becomes the marker (None stays None)
_FRAGMENT = 2  # contains a sensitive fragment: redacted unless a number
_EXEMPT = 3  # never touched (trace ids)
_EXC = 4  # exc_info: the exception's text is redacted

_NUMBERS = frozenset({int, float, bool, type(None)})
_EXEMPT_KEYS = frozenset({"trace_id", "span_id", "trace_flags"})
_MAX_DEPTH = 32
_CACHE_LIMIT = 4096  # entries in each cache before it is cleared
_CACHE_TEXT_LEN = 256  # longer strings are not remembered as clean
# card guard: digits -> "0", other bytes -> "x" (spaces and dashes deleted), then look for
# 13 zeros in a row: a run of 13+ digits, possibly grouped
_DIGIT_CLASSES = bytes(48 if 48 <= b <= 57 else 120 for b in range(256))
_THIRTEEN_DIGITS = b"0" * 13

_URL_CREDENTIALS = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]{0,31}://)[^\s/?#]+@")
_BEARER = re.compile(r"(?i)\b(bearer)(\s+)[A-Za-z0-9\-._~+/]+=*")
_BASIC = re.compile(r"(?i)\b(basic)(\s+)([A-Za-z0-9+/]{4,}={0,2})(?![A-Za-z0-9+/=])")
_JWT = re.compile(r"\beyJ[A-Za-z0-9_\-]{5,}(?:\.[A-Za-z0-9_\-]*)*")
# 13-19 digits, optionally grouped by spaces or dashes, starting like a card number (2-6)
_CARD = re.compile(r"(?<!\w)(?<!\d\.)[2-6](?:[ \-]?[0-9]){12,18}(?!\w|\.\d)")
# the key written before a separator (`key = `, `"key": `): a run of these characters
_KEY_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-"
_KEY_WINDOW = 66
_QUOTES = ('"', "'")
# the value after a separator: an auth scheme and its credential, quoted, or up to a delimiter
_VALUE_AFTER = re.compile(
    r"[ \t]*(?:((?i:bearer|basic|digest|negotiate|token)[ \t]+[^\s\"'&,;]+)"
    r"|\"([^\"]*)\"|'([^']*)'|([^\s\"'&,;})\]]+))"
)


def normalise_key(key: str) -> str:
    """How keys are compared: lower case, ``-`` read as ``_``."""
    return key.strip().lower().replace("-", "_")


def luhn_valid(digits: str) -> bool:
    """The Luhn checksum of a string of digits (card numbers pass it)."""
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        if index % 2:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


class Redactor:
    """The redaction processor (see the module doc). Build it once; calling it is cheap."""

    __slots__ = (
        "_allowed",
        "_builtin",
        "_clean",
        "_exact",
        "_fragments",
        "_kv_filter",
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
    ) -> None:
        self.marker = marker
        self._allowed = frozenset(normalise_key(k) for k in allow_keys)
        self._exact = frozenset(normalise_key(k) for k in keys) - self._allowed
        self._fragments = tuple(sorted({normalise_key(f) for f in key_fragments}))
        self._verdicts: dict[Any, int] = {}
        self._clean: set[str] = set()
        self._kv_filter = _key_filter(self._exact, self._fragments)
        self._stems = _stems(self._exact | set(self._fragments))
        self._builtin = tuple(builtin_patterns)
        self._scan = self._build_scanner(list(self._builtin), list(patterns))

    @classmethod
    def from_settings(cls, settings: RedactionSettings) -> Redactor:
        return cls(
            marker=settings.marker,
            keys=(*DEFAULT_KEYS, *settings.keys),
            key_fragments=settings.key_fragments,
            allow_keys=settings.allow_keys,
            builtin_patterns=settings.builtin_patterns,
            patterns=settings.patterns,
        )

    # -- configuration -----------------------------------------------------------------

    def _build_scanner(
        self, builtin: list[str], custom: list[str | re.Pattern[str]]
    ) -> Callable[[str], str]:
        """One function applying every enabled value pattern to a string. Each pattern runs
        only when a substring test (C speed) says it could match."""
        unknown = sorted(set(builtin) - set(BUILTIN_PATTERNS))
        if unknown:
            raise ValueError(
                f"unknown builtin pattern(s) {unknown}; known: {', '.join(BUILTIN_PATTERNS)}"
            )
        marker = self.marker
        url = "url_credentials" in builtin
        bearer = "bearer" in builtin
        basic = "basic" in builtin
        jwt = "jwt" in builtin
        cards = "card" in builtin
        key_value = "key_value" in builtin
        customs = tuple(_custom_rule(re.compile(p) if isinstance(p, str) else p, marker)
                        for p in custom)  # fmt: skip
        key_values = self._redact_key_values

        def url_repl(match: re.Match[str]) -> str:
            return f"{match.group(1)}{marker}@"

        def scheme_repl(match: re.Match[str]) -> str:
            return f"{match.group(1)}{match.group(2)}{marker}"

        def basic_repl(match: re.Match[str]) -> str:
            try:
                decoded = base64.b64decode(match.group(3), validate=True)
            except (binascii.Error, ValueError):
                return match.group(0)
            if b":" not in decoded:
                return match.group(0)  # "basic configuration" is not a credential
            return f"{match.group(1)}{match.group(2)}{marker}"

        def marker_repl(match: re.Match[str]) -> str:
            return marker

        def card_repl(match: re.Match[str]) -> str:
            text = match.group(0)
            return marker if luhn_valid(text.replace(" ", "").replace("-", "")) else text

        url_sub, bearer_sub, basic_sub = _URL_CREDENTIALS.sub, _BEARER.sub, _BASIC.sub
        jwt_sub, card_sub = _JWT.sub, _CARD.sub

        def scan(text: str) -> str:
            lowered = text.lower()  # re.sub returns the same object when nothing matched
            if url and "://" in text and "@" in text:
                new = url_sub(url_repl, text)
                if new is not text:
                    text, lowered = new, new.lower()
            if bearer and "bearer" in lowered:
                new = bearer_sub(scheme_repl, text)
                if new is not text:
                    text, lowered = new, new.lower()
            if basic and "basic" in lowered:
                new = basic_sub(basic_repl, text)
                if new is not text:
                    text, lowered = new, new.lower()
            if jwt and "eyJ" in text:
                new = jwt_sub(marker_repl, text)
                if new is not text:
                    text, lowered = new, new.lower()
            if (
                cards
                and len(text) >= 13
                and _THIRTEEN_DIGITS
                in text.encode("utf-8", "ignore").translate(_DIGIT_CLASSES, b" -")
            ):
                new = card_sub(card_repl, text)
                if new is not text:
                    text, lowered = new, new.lower()
            if key_value and ("=" in text or ":" in text):
                text = key_values(text, lowered)
            for rule in customs:
                text = rule(text)
            return text

        return scan

    # -- keys --------------------------------------------------------------------------

    def _classify(self, key: Any) -> int:
        if type(key) is not str:
            return _SCAN
        if key == "event":
            verdict = _SCAN
        elif key == "exc_info":
            verdict = _EXC
        elif key in _EXEMPT_KEYS:
            verdict = _EXEMPT
        else:
            verdict = self._key_verdict(key)
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
        positions = _separators(text)
        if not positions:
            return positions
        if len(lowered) != len(text):  # non-ASCII case mapping changed the length
            return positions
        reverse = lowered[::-1]
        last = len(text) - 1
        match = self._kv_filter.match
        return [position for position in positions if match(reverse, last - position)]

    def _redact_key_values(self, text: str, lowered: str | None = None) -> str:
        """``password=hunter2``, ``"token": "abc"``, ``?api_key=k&x=1``: the value of a
        sensitive key written inside a string."""
        candidates = self._candidates(text, text.lower() if lowered is None else lowered)
        if not candidates:
            return text
        verdicts = self._verdicts
        pieces: list[str] | None = None
        last = 0
        for position in candidates:
            if position < last:
                continue  # inside a value already redacted
            head = text[max(0, position - _KEY_WINDOW) : position].rstrip(" \t")
            if head[-1:] in _QUOTES:
                head = head[:-1]
            key = head[len(head.rstrip(_KEY_CHARS)) :]
            if not key:
                continue
            verdict = verdicts.get(key)
            if verdict is None:
                verdict = self._classify(key)
            if verdict not in (_EXACT, _FRAGMENT):
                continue
            value_match = _VALUE_AFTER.match(text, position + 1)
            if value_match is None:
                continue
            group = value_match.lastindex or 0
            value = value_match.group(group)
            if not value or text.startswith(self.marker, value_match.start(group)):
                continue
            if verdict == _FRAGMENT and _is_number(value):
                continue
            if pieces is None:
                pieces = []
            pieces.append(text[last : value_match.start(group)])
            pieces.append(self.marker)
            last = value_match.end(group)
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
        if depth >= _MAX_DEPTH:
            return self.marker
        if kind is dict:
            return self._dict(value, depth, path)
        if kind is list or kind is tuple:
            return self._sequence(value, depth, path)
        if kind is bytes or kind is bytearray:
            return value
        coerced = coerce_value(value)  # objects, enums, sets, mappings: their logged form
        if coerced is value or type(coerced) is bytes:
            return coerced
        return self._value(coerced, depth, path)

    def _dict(self, value: dict[Any, Any], depth: int, path: set[int]) -> Any:
        ident = id(value)
        if ident in path:
            return "<recursion>"
        path.add(ident)
        copy: dict[Any, Any] | None = None
        verdicts = self._verdicts
        for key, item in value.items():
            verdict = verdicts.get(key)
            if verdict is None:
                verdict = self._classify(key)
            if verdict == _EXACT:
                new = item if item is None else self._masked(item, False)
            elif verdict == _FRAGMENT:
                new = item if type(item) in _NUMBERS else self._masked(item, True)
            elif verdict == _EXEMPT:
                continue
            else:
                new = self._value(item, depth + 1, path)
            if new is not item:
                if copy is None:
                    copy = dict(value)
                copy[key] = new
        path.discard(ident)
        return value if copy is None else copy

    def _masked(self, value: Any, keep_numbers: bool) -> Any:
        """The marker in place of a sensitive key's value. A list or tuple keeps its shape
        (a list of markers, numbers kept where the key only contains a sensitive word), so
        a field documented as an array (request headers) stays an array."""
        kind = type(value)
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
            new = self._value(item, depth + 1, path)
            if new is not item:
                if copy is None:
                    copy = list(value)
                copy[index] = new
        path.discard(ident)
        if copy is None:
            return value
        return copy if type(value) is list else tuple(copy)

    def _exception(self, exc_info: Any) -> dict[str, str] | None:
        """The exception of `exc_info` as its `exception.*` attributes, redacted."""
        exc = exception_of(exc_info)
        if exc is None:
            return None
        attributes = exception_attributes(exc)
        for key in ("exception.message", "exception.stacktrace"):
            attributes[key] = self.redact_text(attributes[key])
        return attributes

    # -- the processor -----------------------------------------------------------------

    def __call__(
        self, logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        try:
            return self._redact_event(event_dict)
        except Exception as exc:  # never raise into the application, never leak
            _diag.report("redaction", f"fapilog redaction failed, values withheld: {exc!r}")
            return self._withhold(event_dict)

    def _redact_event(self, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        verdicts = self._verdicts
        clean = self._clean
        changes: dict[str, Any] | None = None
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
            else:
                continue
            if new is not value:
                if changes is None:
                    changes = {}
                changes[key] = new
        if changes is not None:
            event_dict.update(changes)
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
                result[key] = value if type(value) in _NUMBERS else self.marker
        except Exception:
            result = {"event": self.marker}
        result["fapilog.redaction_failed"] = True
        return result

    def __repr__(self) -> str:
        return f"<fapilog.Redactor marker={self.marker!r} patterns={list(self._builtin)}>"


def _reversed_key(key: str) -> str:
    """A normalised key as a regex for reversed, lower-cased text ('_' matches '-' too)."""
    return "".join("[-_]" if char == "_" else re.escape(char) for char in reversed(key))


def _key_filter(exact: frozenset[str], fragments: tuple[str, ...]) -> re.Pattern[str]:
    """Matches, in reversed lower-cased text, a separator preceded by a sensitive key: an
    exact key (whole word), or a word containing a fragment."""
    word = r"[a-z0-9_.\-]"
    alternatives = []
    if exact:
        keys = "|".join(_reversed_key(k) for k in sorted(exact, key=len, reverse=True))
        alternatives.append(f"(?:{keys})(?!{word})")
    if fragments:
        parts = "|".join(_reversed_key(f) for f in sorted(fragments, key=len, reverse=True))
        alternatives.append(f"{word}{{0,64}}?(?:{parts})")
    if not alternatives:
        return re.compile(r"(?!x)x")  # never matches
    return re.compile(r"[=:][ \t]*[\"']?(?:" + "|".join(alternatives) + ")")


def _stems(keys: Iterable[str]) -> tuple[str, ...]:
    """Words of which every sensitive key contains at least one ("token" for access_token,
    "card" for credit_card): if none occurs in a text, no sensitive key does. One segment
    per key (split on '_', '.'), preferring segments other keys share; then a stem that
    contains another stem is dropped."""
    segmented = [[part for part in re.split(r"[_.]", key) if part] or [key] for key in keys]
    counts: dict[str, int] = {}
    for parts in segmented:
        for part in set(parts):
            counts[part] = counts.get(part, 0) + 1
    chosen = {max(parts, key=lambda p: (counts[p], len(p))) for parts in segmented}
    minimal = {s for s in chosen if not any(o != s and o in s for o in chosen)}
    return tuple(sorted(minimal, key=len))


def _separators(text: str) -> list[int]:
    """Positions of ``=`` and ``:`` in `text` (str.find: no regex engine), skipping the
    ``://`` of URLs."""
    positions: list[int] = []
    find = text.find
    index = find("=")
    while index != -1:
        positions.append(index)
        index = find("=", index + 1)
    index = find(":")
    while index != -1:
        if not text.startswith("//", index + 1):
            positions.append(index)
        index = find(":", index + 1)
    positions.sort()
    return positions


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _custom_rule(pattern: re.Pattern[str], marker: str) -> Callable[[str], str]:
    if "secret" in pattern.groupindex:

        def replace(match: re.Match[str]) -> str:
            start, end = match.span("secret")
            if start < 0:
                return match.group(0)
            base = match.start()
            text = match.group(0)
            return text[: start - base] + marker + text[end - base :]

        return lambda text: pattern.sub(replace, text)
    return lambda text: pattern.sub(lambda _match: marker, text)


def build_processors(settings: LoggingSettings) -> list[Processor]:
    """The redaction processor for `settings`, or nothing when redaction is turned off
    (``FAPILOG_REDACTION__ENABLED=false``)."""
    if not settings.redaction.enabled:
        return []
    return [Redactor.from_settings(settings.redaction)]
