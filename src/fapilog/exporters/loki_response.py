"""What a Loki push's error answer says about the entries of the request.

Loki answers a push in two stages (read from Loki 2.9's distributor and ingester):

- **The distributor validates entry by entry.** It stores the valid entries and answers one
  400 for the rest (partial acceptance), its body grouping the failures by message, each
  group ``"<n> errors like: <message>"``, groups joined by ``"; "`` (a single failure has no
  count). `rejections` reads it into the count of rejected entries by reason, named as
  Loki's own validation metrics name them.
- **The ingester stores stream by stream, and answers for the last stream only.** A stream
  over the tenant's active stream limit is refused while the request's other streams are
  stored (429 "Maximum active stream limit exceeded", which does not go away by waiting,
  unlike the rate-limit 429s); entries too far behind their stream's newest are ignored
  (a 400 ending ``"total ignored: <n> out of <m> for stream: {...}"``, `ingester_ignored`).
  Each stream's outcome overwrites the previous one's, so only a request of one stream has
  an exact answer: the exporter then sends one stream per request (`fapilog.exporters.loki`).

An answer that does not say how many entries it rejected (a message about a whole stream,
which counts once for all its entries; a proxy's page; a body cut short) gives None: the
outcome of the request's entries is then not known.
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
    "ingester_ignored",
    "is_stream_limit",
    "is_unknown_tenant",
    "rejections",
    "retry_after",
]

MAX_ERROR_BODY = 1024 * 1024  # the longest error body read (Loki's lists every failure)
DISALLOWED_METADATA = "disallowed_structured_metadata"
# the distributor's per-entry messages (Loki 2.9-3.x, pkg/validation), matched from their
# start: a label value quoted inside one cannot pass for another
_STREAM = r"(?:for )?stream '.*'"
_ENTRY_REASONS = tuple(
    (re.compile(pattern, re.IGNORECASE | re.DOTALL), reason)
    for pattern, reason in (
        (rf"max entry size '\d+' bytes exceeded {_STREAM} while adding an entry", "line_too_long"),
        (rf"entry {_STREAM} has timestamp too old", "greater_than_max_sample_age"),
        (rf"entry {_STREAM} has timestamp too new", "too_far_in_future"),
        (
            rf"{_STREAM} includes structured metadata, but this feature is disallowed",
            DISALLOWED_METADATA,
        ),
        (rf"{_STREAM} has structured metadata too large", "structured_metadata_too_large"),
        (rf"{_STREAM} has too many structured metadata", "structured_metadata_too_many"),
    )
)
_GROUP = re.compile(r"(?:^|; )(\d+) errors like: ")
_IGNORED = re.compile(r"total ignored: (\d+) out of (\d+) for stream: \{[^\n]*\}\s*\Z")


def _reason(message: str) -> str | None:
    for pattern, reason in _ENTRY_REASONS:
        if pattern.match(message):
            return reason
    return None


def rejections(body: str) -> dict[str, int] | None:
    """The entries a distributor's 400 rejected, by reason; None when it does not say."""
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


def ingester_ignored(body: str) -> tuple[int, int] | None:
    """(ignored, of) from an ingester's answer for one stream: entries out of order."""
    match = _IGNORED.search(body.strip())
    if match is None or ("too far behind" not in body and "out of order" not in body):
        return None
    return int(match.group(1)), int(match.group(2))


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

    def reasons(self) -> list[tuple[str, int]]:
        """(reason, entries) pairs: those refused for good first (a reason may come again
        among those to retry)."""
        return [*self.refused.items(), *self.retried.items()]


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
