"""What a secret looks like inside a string: the value patterns of redaction
(`fapilog.capture.redaction` applies them; docs/redaction.md lists them).

`build_scan()` returns one function applying every enabled pattern to a string, and the
same patterns one by one (named), for the redaction audit. Each pattern runs only when a
substring test (C speed) says it could match, so a string without a hint of a secret costs
a handful of `in` tests.

The credential formats (AWS access key ids, GitHub, GitLab and Slack tokens, PEM private
keys) are the formats those vendors publish for their tokens, the same ones secret scanners
such as gitleaks look for. Each pattern replaces the whole token, so the marker never
carries a part of it.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Iterable, Sequence

from fapilog.settings.redaction import BUILTIN_PATTERNS

__all__ = [
    "Rule",
    "build_scan",
    "is_number",
    "key_filter",
    "luhn_valid",
    "separators",
    "stems",
    "value_span",
]

Rule = tuple[str, Callable[[str], str]]  # (pattern name, text -> redacted text)

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

# vendor credentials, by pattern name. Each token has a dash (gitlab, slack, PEM), an
# underscore (github) or an AWS prefix, or is a webhook URL: `scan` looks for them (first
# `_VENDOR_HINT`, then each pattern) only in a text with such a hint.
_VENDORS: dict[str, re.Pattern[str]] = {
    # access key ids: AKIA (long-term), ASIA (temporary), ABIA, ACCA
    # (with the secret access key written right after it: a credentials file's row)
    "aws_access_key": re.compile(
        r"(?<![A-Za-z0-9])(?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}(?![A-Za-z0-9])"
        r"(?:[\s,;:|=\"']{1,5}[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=]))?"
    ),
    # a secret access key (40 characters, no shape of its own) after a name that says AWS:
    # aws_secret = "...", AWS_KEY: ...; only the key is replaced
    "aws_secret_key": re.compile(
        r"(?i:aws)[A-Za-z0-9_.\-]{0,24}[\"']?[ \t]*[:=][ \t]*[\"']?"
        r"(?P<secret>[A-Za-z0-9/+]{40})(?![A-Za-z0-9/+=])"
    ),
    # personal, OAuth, user-to-server, server-to-server, refresh; fine-grained PATs
    "github_token": re.compile(
        r"(?<![A-Za-z0-9])(?:gh[pousr]_[A-Za-z0-9]{20,255}|github_pat_\w{20,255})"
    ),
    # personal, deploy, runner, pipeline-trigger, CI-build, OAuth, feed, incoming-mail tokens
    "gitlab_token": re.compile(
        r"(?<![A-Za-z0-9])gl(?:pat|dt|rt|ptt|cbt|oas|soat|ft|imt|agent)-[A-Za-z0-9_\-]{20,255}"
    ),
    # bot, user, app-level, configuration tokens; incoming-webhook URLs
    "slack_token": re.compile(
        r"(?<![A-Za-z0-9])(?:xox[abposre]-|xapp-)[A-Za-z0-9\-]{10,255}"
        r"|(?<=hooks\.slack\.com/)(?:services|workflows|triggers)/[A-Za-z0-9/_\-]+"
    ),
    # a PEM (or PGP) private key block, to its END line (or to the end of a cut-off text)
    "private_key_block": re.compile(
        r"-----BEGIN[ A-Z0-9]*PRIVATE KEY(?: BLOCK)?-----"
        r"(?:.*?-----END[ A-Z0-9]*PRIVATE KEY(?: BLOCK)?-----|.*)",
        re.DOTALL,
    ),
}

# The end of an unquoted value in free text: a line break, or the next `key=` / `key:`
# (after a space, `&`, `;` or `,`; the key possibly quoted); in a URL query (`?k=v&`), the
# next `&`, `#`, space or quote. A quote followed by the end, a space or punctuation closes
# the string the value is written in.
_FREE_END = re.compile(
    r"[\r\n]"
    r"|(?<=[ \t&;,])[\"']?[A-Za-z_][A-Za-z0-9_.\-]*[\"']?[ \t]*(?:[=:](?!//)|%3[dDaA])"
    r"|[\"'](?=$|[\s,;:)}\]&])"
)
_URL_VALUE = re.compile(r"[^\s&#\"'<>]*")
_ENCODED_VALUE = re.compile(r"(?:(?!%26)[^\s&#\"'<>])*", re.IGNORECASE)
_CLOSERS = {"[": "]", "{": "}", "(": ")"}
_OPENERS = {"]": "[", "}": "{", ")": "("}
_BRACKETED_MAX = 4096  # the longest bracketed value looked for (every search stays short)


_VENDOR_HINT = re.compile(
    r"A(?:KIA|SIA|BIA|CCA)|(?i:aws)|gh[pousr]_|github_pat_|gl[a-z]{1,5}-|xox|xapp-"
    r"|hooks\.slack\.com|-----BEGIN"
)


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


def value_span(text: str, start: int, mode: str) -> tuple[int, int] | None:
    """Where the value written after a separator ends: (start, end) of what the marker
    replaces, or None when there is no value. `start` is just after the separator; `mode`
    is ``free`` (text), ``url`` (after ``?k=`` or ``&k=``) or ``encoded`` (after ``%3D``).

    A quoted value ends at its closing quote (backslash escapes skipped), a bracketed one
    at its closing bracket (the brackets replaced too: ``token=[REDACTED]``); an unquoted
    value in free text runs, spaces and semicolons included, up to the next ``key=``."""
    end = len(text)
    index = start
    while index < end and text[index] in " \t":
        index += 1
    if mode == "free" and index < end and text[index] in "\r\n":  # on the next line
        index += 2 if text.startswith("\r\n", index) else 1
        while index < end and text[index] in " \t":
            index += 1
    if index >= end:
        return None
    first = text[index]
    if mode == "url":
        match = _URL_VALUE.match(text, index)
        return (index, match.end()) if match and match.end() > index else None
    if mode == "encoded":
        match = _ENCODED_VALUE.match(text, index)
        return (index, match.end()) if match and match.end() > index else None
    if first in "\"'":
        return _quoted(text, index + 1, first)
    if first == "\\":  # an escaped quote: JSON inside a JSON string (\"password\": \"x\")
        quote = index
        while quote < end and text[quote] == "\\":
            quote += 1
        if quote < end and text[quote] in "\"'":
            close = text.find(text[index : quote + 1], quote + 1)
            close = end if close < 0 else close
            return (quote + 1, close) if close > quote + 1 else None
    closer = _CLOSERS.get(first)
    if closer is not None:
        span = _bracketed(text, index, first, closer)
        if span is not None:
            return span
    found = _FREE_END.search(text, index)
    stop = found.start() if found else end
    while stop > index and text[stop - 1] in " \t&;,":
        stop -= 1
    # a closing bracket the value did not open belongs to the text around it
    counts = {char: text.count(char, index, stop) for char in "()[]{}"}
    while stop > index and text[stop - 1] in _OPENERS:
        char = text[stop - 1]
        if counts[_OPENERS[char]] >= counts[char]:
            break
        counts[char] -= 1
        stop -= 1
    return (index, stop) if stop > index else None


def _quoted(text: str, start: int, quote: str) -> tuple[int, int] | None:
    """The inside of a quoted value starting at `start` (after its opening quote): up to
    the first quote not escaped by a backslash, or the end of the text."""
    position = start
    while True:
        close = text.find(quote, position)
        if close < 0:
            close = len(text)
            break
        backslashes = 0
        while backslashes < 64 and text[close - 1 - backslashes] == "\\":
            backslashes += 1
        if backslashes % 2 == 0:
            break
        position = close + 1
    return (start, close) if close > start else None


def _bracketed(text: str, start: int, opener: str, closer: str) -> tuple[int, int] | None:
    """A bracketed value, brackets included, if its closing bracket comes within
    `_BRACKETED_MAX` characters (else None: the value is read as unquoted text)."""
    limit = min(len(text), start + _BRACKETED_MAX)
    position, depth = start, 1
    while True:
        close = text.find(closer, position + 1, limit)
        if close < 0:
            return None
        depth += text.count(opener, position + 1, close) - 1
        if depth <= 0:
            return start, close + 1
        position = close


def key_filter(exact: frozenset[str], fragments: tuple[str, ...]) -> re.Pattern[str]:
    """Matches, in reversed lower-cased text, a separator (``=``, ``:``, or the ``%`` of a
    URL-encoded ``%3d``/``%3a``) preceded by a sensitive key: an exact key (a whole word,
    or after a URL-encoded character), or a word containing a fragment."""
    word = r"[a-z0-9_.\-]"
    alternatives = []
    if exact:
        keys = "|".join(_reversed_key(k) for k in sorted(exact, key=len, reverse=True))
        alternatives.append(f"(?:{keys})(?:(?!{word})|(?=[0-9a-f]{{2}}%))")
    if fragments:
        parts = "|".join(_reversed_key(f) for f in sorted(fragments, key=len, reverse=True))
        alternatives.append(f"{word}{{0,64}}?(?:{parts})")
    if not alternatives:
        return re.compile(r"(?!x)x")  # never matches
    # (between the separator and the key: blanks, a quote, backslashes escaping it)
    return re.compile(r"(?:[=:]|%)[ \t]*[\"']?\\*(?:" + "|".join(alternatives) + ")")


def _reversed_key(key: str) -> str:
    """A normalised key as a regex for reversed, lower-cased text ('_' matches '-' too)."""
    return "".join("[-_]" if char == "_" else re.escape(char) for char in reversed(key))


def stems(keys: Iterable[str]) -> tuple[str, ...]:
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
    # stems that begin alike become their common beginning (password, passwd, passphrase:
    # pass), as long as it keeps 4 letters: one test instead of several
    merged = sorted(minimal)
    index = 0
    while index < len(merged) - 1:
        common = _common_start(merged[index], merged[index + 1])
        if len(common) >= 4:
            merged[index : index + 2] = [common]
        else:
            index += 1
    return tuple(sorted(set(merged), key=len))


def _common_start(first: str, second: str) -> str:
    length = 0
    for a, b in zip(first, second, strict=False):
        if a != b:
            break
        length += 1
    return first[:length]


def separators(text: str, lowered: str) -> list[int]:
    """Positions of ``=`` and ``:`` in `text` (skipping the ``://`` of URLs), and of the
    ``%`` of URL-encoded ones (``%3D``, ``%3A``), found with str.find (no regex engine)."""
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
    if "%3" in text:
        for encoded in ("%3d", "%3a"):
            index = lowered.find(encoded)
            while index != -1:
                positions.append(index)
                index = lowered.find(encoded, index + 3)
    positions.sort()
    return positions


def is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _replacer(marker: str) -> Callable[[re.Match[str]], str]:
    """What a match becomes: the marker, or, when the pattern has a group named ``secret``,
    the match with only that group replaced (unchanged when the group did not take part)."""

    def replace(match: re.Match[str]) -> str:
        if "secret" not in match.re.groupindex:
            return marker
        start, end = match.span("secret")
        if start < 0:
            return match.group(0)
        base = match.start()
        text = match.group(0)
        return text[: start - base] + marker + text[end - base :]

    return replace


def _custom_rule(pattern: re.Pattern[str], marker: str) -> Callable[[str], str]:
    replace = _replacer(marker)
    return lambda text: pattern.sub(replace, text)


def build_scan(
    builtin: Sequence[str],
    custom: Sequence[str | re.Pattern[str]],
    marker: str,
    key_values: Callable[[str, str], str],
) -> tuple[Callable[[str], str], tuple[Rule, ...]]:
    """(one function applying every enabled pattern to a string, the same patterns one by
    one). `key_values(text, lowered)` is the `key_value` pattern (it needs the redactor's
    keys)."""
    unknown = sorted(set(builtin) - set(BUILTIN_PATTERNS))
    if unknown:
        raise ValueError(
            f"unknown builtin pattern(s) {unknown}; known: {', '.join(BUILTIN_PATTERNS)}"
        )
    url = "url_credentials" in builtin
    bearer = "bearer" in builtin
    basic = "basic" in builtin
    jwt = "jwt" in builtin
    cards = "card" in builtin
    key_value = "key_value" in builtin
    vendors = tuple(pattern for name, pattern in _VENDORS.items() if name in builtin)
    vendor_hint = _VENDOR_HINT.search
    customs = tuple(_custom_rule(re.compile(p) if isinstance(p, str) else p, marker)
                    for p in custom)  # fmt: skip

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

    vendor_repl = _replacer(marker)  # the whole token, or its group named "secret"

    def card_repl(match: re.Match[str]) -> str:
        text = match.group(0)
        return marker if luhn_valid(text.replace(" ", "").replace("-", "")) else text

    url_sub, bearer_sub, basic_sub = _URL_CREDENTIALS.sub, _BEARER.sub, _BASIC.sub
    jwt_sub, card_sub = _JWT.sub, _CARD.sub

    def scan(text: str) -> str:
        lowered = text.lower()  # re.sub returns the same object when nothing matched
        is_url = "://" in text
        if url and is_url and "@" in text:
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
            vendors
            and (
                ("-" in text and ("gl" in text or "x" in text or "-----" in text))
                or ("_" in text and ("gh" in text or "github_pat_" in text))
                or (
                    "A" in text
                    and ("AKIA" in text or "ASIA" in text or "ABIA" in text or "ACCA" in text)
                )
                or "aws" in lowered
                or (is_url and "hooks.slack" in text)
            )
            and vendor_hint(text)
        ):
            for pattern in vendors:
                new = pattern.sub(vendor_repl, text)
                if new is not text:
                    text, lowered = new, new.lower()
        if (
            cards
            and len(text) >= 13
            and _THIRTEEN_DIGITS in text.encode("utf-8", "ignore").translate(_DIGIT_CLASSES, b" -")
        ):
            new = card_sub(card_repl, text)
            if new is not text:
                text, lowered = new, new.lower()
        if key_value and ("=" in text or ":" in text or "%3" in text):
            text = key_values(text, lowered)
        for rule in customs:
            text = rule(text)
        return text

    rules: list[Rule] = []
    if url:
        rules.append(("url_credentials", lambda t: url_sub(url_repl, t)))
    if bearer:
        rules.append(("bearer", lambda t: bearer_sub(scheme_repl, t)))
    if basic:
        rules.append(("basic", lambda t: basic_sub(basic_repl, t)))
    if jwt:
        rules.append(("jwt", lambda t: jwt_sub(marker_repl, t)))
    for name, pattern in _VENDORS.items():
        if name in builtin:
            rules.append((name, lambda t, p=pattern: p.sub(vendor_repl, t)))  # type: ignore[misc]
    if cards:
        rules.append(("card", lambda t: card_sub(card_repl, t)))
    if key_value:
        rules.append(("key_value", lambda t: key_values(t, t.lower())))
    rules.extend((f"pattern[{index}]", rule) for index, rule in enumerate(customs))
    return scan, tuple(rules)
