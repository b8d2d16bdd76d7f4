"""What a Loki push's error answer says about the entries of the request.

Loki validates a push entry by entry: it stores the valid entries and answers one 400 for
the rest (partial acceptance), its body grouping the failures by message, each group
``"<n> errors like: <message>"``, groups joined by ``"; "`` (a single failure has no count).
A stream over the tenant's active stream limit fails while the request's other streams are
stored, and the push answers 429 "Maximum active stream limit exceeded": that 429 does not go
away by waiting, unlike the rate-limit 429s, which refuse the whole request.

`rejections` reads a 400 body into the count of rejected entries by reason, named as Loki's
own validation metrics name them. It answers None when the body does not say how many
entries were rejected (a message about a whole stream, which counts once for all its entries;
a proxy's page; a body cut short): then the outcome of the request's entries is not known.
"""

from __future__ import annotations

import email.utils
import re
import time

from fapilog.exporters.loki_protobuf import Entry

__all__ = [
    "DISALLOWED_METADATA",
    "MAX_ERROR_BODY",
    "Undelivered",
    "is_stream_limit",
    "is_unknown_tenant",
    "rejections",
    "retry_after",
]

MAX_ERROR_BODY = 1024 * 1024  # the longest error body read (Loki's lists every failure)
DISALLOWED_METADATA = "disallowed_structured_metadata"
# entry-level validation messages (Loki 2.9-3.x, pkg/validation) -> the reason counted
_ENTRY_REASONS = (
    ("max entry size", "line_too_long"),
    ("timestamp too old", "greater_than_max_sample_age"),
    ("timestamp too new", "too_far_in_future"),
    ("entry too far behind", "out_of_order"),
    ("entry out of order", "out_of_order"),
    ("structured metadata, but this feature is disallowed", DISALLOWED_METADATA),
    ("structured metadata too large", "structured_metadata_too_large"),
    ("structured metadata too many", "structured_metadata_too_many"),
    ("too many structured metadata", "structured_metadata_too_many"),
)
_GROUP = re.compile(r"(?:^|; )(\d+) errors like: ")


def _reason(message: str) -> str | None:
    lowered = message.lower()
    for fragment, reason in _ENTRY_REASONS:
        if fragment in lowered:
            return reason
    return None


def rejections(body: str) -> dict[str, int] | None:
    """The entries a 400 answer rejected, by reason; None when it does not say."""
    text = body.strip()
    if not text or len(text) >= MAX_ERROR_BODY:
        return None
    starts = list(_GROUP.finditer(text))
    if not starts:
        groups = [(1, text)]
    elif starts[0].start() != 0:
        return None
    else:
        groups = []
        for index, match in enumerate(starts):
            end = starts[index + 1].start() if index + 1 < len(starts) else len(text)
            groups.append((int(match.group(1)), text[match.end() : end]))
    counted: dict[str, int] = {}
    for count, message in groups:
        reason = _reason(message)
        if reason is None or count <= 0:
            return None
        counted[reason] = counted.get(reason, 0) + count
    return counted


def is_stream_limit(status: int | None, body: str) -> bool:
    """Whether an answer is the active stream limit's 429 (not a transient rate limit)."""
    return status == 429 and "maximum active stream limit exceeded" in body.lower()


def is_unknown_tenant(status: int | None, body: str) -> bool:
    """Whether an answer is a multi-tenant Loki's 401 for a push without a tenant."""
    return status == 401 and "no org id" in body.lower()


class Undelivered:
    """What became of an export's entries that were not delivered, by reason: those refused
    for good (and those of unknown outcome) first, then those a later attempt may deliver
    (`retry`, the entries themselves)."""

    __slots__ = ("refused", "retried", "retry")

    def __init__(self) -> None:
        self.refused: dict[str, int] = {}
        self.retried: dict[str, int] = {}
        self.retry: list[Entry] = []

    def count(self, reason: str, entries: int, retry: bool = False) -> None:
        target = self.retried if retry else self.refused
        target[reason] = target.get(reason, 0) + entries

    def reasons(self) -> dict[str, int]:
        merged = dict(self.refused)
        for reason, entries in self.retried.items():
            merged[reason] = merged.get(reason, 0) + entries
        return merged


def retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, moment.timestamp() - time.time())
