"""CDC window arithmetic (pure): where a read starts, and where the next one does.

QuickBooks CDC (``GET .../cdc?entities=...&changedSince=T``) returns what changed from ``T`` to now,
with two limits (api-contracts.md §1.10):

- ``changedSince`` must lie within the last **30 days**. A cursor older than that cannot be read
  any more: reading restarts at the limit and the gap is reported (it is for a full reconcile).
- at most **1,000 objects** per response, live records ordered by LastUpdatedTime and deleted ones
  after them. A full response is cut somewhere; CDC has no upper bound to shorten the window with,
  so the window is shortened from the other end: it is taken as read up to the latest
  LastUpdatedTime it returned, and the next read starts there (records of that instant are read
  again; changes are deduplicated downstream).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from sync_pipelines.qbo_changes.classify import is_deleted

CDC_MAX_AGE = timedelta(days=30)
CDC_MAX_OBJECTS = 1000
#: The start is kept this far inside the 30 days, so it is still inside when QuickBooks checks it.
LIMIT_MARGIN = timedelta(minutes=5)
#: Each complete read ends this long before it was sent: a change committed while we read (or a
#: QuickBooks clock a little behind ours) is read again next time rather than missed.
OVERLAP = timedelta(minutes=2)


@dataclass(frozen=True)
class WindowStart:
    start: datetime
    #: The cursor, when it was older than CDC reaches: [gap_from, start) cannot be read by CDC.
    gap_from: datetime | None = None


def window_start(cursor: datetime | None, now: datetime) -> WindowStart:
    """Where the next CDC read starts for a cursor (None: never read; start as far back as CDC goes)."""
    limit = now - CDC_MAX_AGE + LIMIT_MARGIN
    if cursor is None:
        return WindowStart(limit)
    if cursor < limit:
        return WindowStart(limit, gap_from=cursor)
    return WindowStart(min(cursor, now))


@dataclass(frozen=True)
class ReadOutcome:
    #: True when the response held everything changed since the read's start.
    complete: bool
    #: Where the next read starts (the cursor once this response is processed).
    next_start: datetime
    #: More than the cap changed at one instant: CDC cannot return them all (full reconcile).
    overflow: bool = False


def parse_time(value: Any) -> datetime | None:
    """QuickBooks' ISO times (``2026-11-30T10:15:00-08:00``, ``...Z``) as aware datetimes."""
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=timezone.utc)


def _stamp(record: dict[str, Any]) -> datetime | None:
    meta = record.get("MetaData")
    return parse_time(meta.get("LastUpdatedTime")) if isinstance(meta, dict) else None


def after_read(
    start: datetime, requested_at: datetime, records: Sequence[dict[str, Any]], cap: int = CDC_MAX_OBJECTS,
) -> ReadOutcome:
    """What one entity's CDC response (read from `start`, sent at `requested_at`) covered."""
    if len(records) < cap:
        return ReadOutcome(True, max(start, requested_at - OVERLAP))
    # Cut at the cap. Live records come first, by LastUpdatedTime, then deleted ones: if deleted
    # ones are present the cut is among them, so the live part is complete and the next read starts
    # at the last deleted record; otherwise at the last live one.
    deleted = [r for r in records if is_deleted(r)]
    tail = deleted if deleted else list(records)
    stamps = [s for s in (_stamp(r) for r in tail) if s is not None]
    latest = max(stamps) if stamps else None
    if latest is None or latest <= start:
        # A thousand changes in one instant: no shorter window exists. Take what came and report it.
        return ReadOutcome(True, max(start, requested_at - OVERLAP), overflow=True)
    return ReadOutcome(False, latest)
