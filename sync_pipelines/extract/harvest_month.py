"""A month of Harvest time entries into the frame page by page, refreshed incrementally.

Memory follows the frame, not the API models: each page is validated, turned into columns and
dropped (DESIGN §11). A re-extraction of a month already extracted asks Harvest only for what
changed since the stored frame's newest ``updated_at`` (minus a safety margin), merges it in by
entry id, and checks the month's entry count, so a quiet day costs two or three calls.

Harvest reports no deletions: a deleted entry simply stops being listed, and ``updated_since``
cannot show an absence. So every incremental refresh asks for the month's ``total_entries``
(one call, ``per_page=1``) and compares it with the entries the refreshed frame holds. Every entry
Harvest now lists in the month is either unchanged since the stored read (so stored) or changed
(so just read), hence the refreshed set contains Harvest's; equal counts mean equal sets, and a
difference means an entry was deleted or moved to another month: the month is read again in full.
A full pull also happens every ``full_pull_every`` (default 7 days), for any change Harvest makes
without bumping ``updated_at``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

import pandas as pd

from sync_pipelines.connectors.harvest import conflict_rejections
from sync_pipelines.connectors.http import Rejected

from .frames import REJECTED_COLUMNS, TIME_ENTRY_COLUMNS, rejected_frame, time_entries_frame
from .periods import month_bounds

if TYPE_CHECKING:  # pragma: no cover
    from sync_pipelines.connectors.harvest import HarvestClient, ParsedPages

#: How far before the stored frame's newest ``updated_at`` a refresh starts asking: Harvest
#: stamps ``updated_at`` when an edit starts saving, so an edit committed just after our read
#: can carry a slightly earlier stamp than the newest one we saw.
SAFETY_MARGIN = timedelta(hours=1)
FULL_PULL_EVERY = timedelta(days=7)


@dataclass(frozen=True)
class StoredMonth:
    """What the last extraction of the month produced (read back from storage)."""

    frame: pd.DataFrame
    rejected: pd.DataFrame
    last_full_pull_at: datetime


@dataclass(frozen=True)
class MonthExtract:
    """The month's entries and quarantined records, and how they were obtained."""

    frame: pd.DataFrame
    rejected: pd.DataFrame
    mode: str  # "full" or "incremental"
    reason: str  # why this mode, for the operator
    last_full_pull_at: datetime
    api_calls: int
    entries_read: int  # records Harvest sent (valid or not) in this extraction
    entries_removed: int  # stored entries no longer listed (known only after a full pull)

    @property
    def high_water_mark(self) -> str | None:
        return high_water_mark(self.frame)


def read_time_entries(pages: ParsedPages[Any]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every page of ``pages`` into (frame, rejected frame): one page of models alive at a time.

    Same result as building the frame from ``HarvestClient.list_time_entries``: repeats read once,
    an id sent with two different contents quarantined in every version, never billed.
    """
    parts: list[pd.DataFrame] = []
    rejected: list[Rejected] = []
    for page in pages:
        if page.records:
            parts.append(time_entries_frame(page.records))
        rejected.extend(page.rejected)
        del page
    frame = _concat(parts, TIME_ENTRY_COLUMNS)
    conflicting = pages.conflicts()
    if conflicting:
        ids = {str(rid) for rid in conflicting}
        frame = frame[~frame["entry_id"].astype(str).isin(ids)].reset_index(drop=True)
        rejected = [r for r in rejected if r.record_id not in ids]
        rejected.extend(conflict_rejections(pages.entity, conflicting))
    return frame, rejected_frame(rejected)


def extract_month(
    client: HarvestClient,
    period: str,
    stored: StoredMonth | None = None,
    *,
    now: datetime | None = None,
    full: bool = False,
    full_pull_every: timedelta = FULL_PULL_EVERY,
    safety_margin: timedelta = SAFETY_MARGIN,
) -> MonthExtract:
    """The month's time entries: incrementally from ``stored`` when it can be trusted, else in full."""
    now = now or datetime.now(timezone.utc)
    calls_before = client.requests_made
    first, last = month_bounds(period)
    reason = _why_full(stored, now, full, full_pull_every)
    if reason is None:
        assert stored is not None
        since = _parse_ts(high_water_mark(stored.frame)) - safety_margin  # type: ignore[operator]
        changed, changed_rejected = read_time_entries(client.time_entry_pages(first, last, updated_since=since))
        entries_read = len(changed) + len(changed_rejected)
        # A running timer's hours grow without an edit, so its updated_at may not move: re-read
        # the month's running entries whenever the stored frame has one.
        if bool(stored.frame["is_running"].any()):
            running, running_rejected = read_time_entries(client.time_entry_pages(first, last, is_running=True))
            running = running[~running["entry_id"].isin(changed["entry_id"])]
            changed = _concat([changed, running], TIME_ENTRY_COLUMNS)
            changed_rejected = _concat([changed_rejected, running_rejected], REJECTED_COLUMNS)
            entries_read += len(running) + len(running_rejected)
        frame, rejected = merge_changes(stored.frame, stored.rejected, changed, changed_rejected)
        harvest_total = client.count_time_entries(first, last)
        held = entries_held(frame, rejected)
        if harvest_total is not None and harvest_total == held:
            return MonthExtract(
                frame, rejected, "incremental",
                f"changes since {since.strftime('%Y-%m-%dT%H:%M:%SZ')} merged; Harvest lists {held} entries, as stored",
                stored.last_full_pull_at, client.requests_made - calls_before, entries_read, 0,
            )
        reason = (
            "Harvest gave no total_entries to check the refreshed month against" if harvest_total is None else
            f"Harvest lists {harvest_total} entries in the month, the refreshed extract holds {held}: "
            "an entry was deleted or moved to another month, so the month is read again in full"
        )
    frame, rejected = read_time_entries(client.time_entry_pages(first, last))
    removed = 0
    if stored is not None:
        removed = int((~stored.frame["entry_id"].isin(frame["entry_id"])).sum())
    return MonthExtract(frame, rejected, "full", reason, now, client.requests_made - calls_before,
                        len(frame) + len(rejected), removed)


def merge_changes(
    frame: pd.DataFrame, rejected: pd.DataFrame, changed: pd.DataFrame, changed_rejected: pd.DataFrame
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Stored rows replaced by id with what changed (a changed entry keeps its place; new ones
    go last); a stored quarantined record whose id came back is replaced too, valid or not."""
    changed_ids = set(changed["entry_id"].astype(str)) | set(changed_rejected["record_id"].dropna().astype(str))
    stored_ids = frame["entry_id"].astype(str)
    position = pd.Series(range(len(frame)), index=stored_ids.to_numpy())
    keep = frame[~stored_ids.isin(changed_ids)]
    merged = _concat([keep, changed], TIME_ENTRY_COLUMNS)
    # Same ids in the same order as before: a refresh does not reshuffle the frame.
    order = merged["entry_id"].astype(str).map(position)
    order = order.fillna(len(frame) + pd.Series(range(len(merged)), index=merged.index)).astype("int64")
    merged = merged.iloc[order.argsort(kind="stable")].reset_index(drop=True)
    kept_rejected = rejected[~rejected["record_id"].astype(str).isin(changed_ids) | rejected["record_id"].isna()]
    return merged, _concat([kept_rejected, changed_rejected], REJECTED_COLUMNS)


def entries_held(frame: pd.DataFrame, rejected: pd.DataFrame) -> int:
    """Distinct Harvest entries the extract accounts for: billed-or-reported rows plus quarantined
    records (one per id, however many versions; each record without an id counts once)."""
    ids = set(frame["entry_id"].astype(str)) | set(rejected["record_id"].dropna().astype(str))
    return len(ids) + int(rejected["record_id"].isna().sum())


def high_water_mark(frame: pd.DataFrame) -> str | None:
    """The newest ``updated_at`` in the frame (UTC, ISO-8601), Harvest's own clock: None if none."""
    if not len(frame):
        return None
    stamps = pd.to_datetime(frame["updated_at"], utc=True, errors="coerce", format="ISO8601")
    newest = stamps.max()
    return None if pd.isna(newest) else newest.strftime("%Y-%m-%dT%H:%M:%SZ")


def _why_full(stored: StoredMonth | None, now: datetime, full: bool, every: timedelta) -> str | None:
    if full:
        return "full extraction requested"
    if stored is None:
        return "no stored extraction of this month to refresh"
    if high_water_mark(stored.frame) is None:
        return "the stored extraction has no entries to refresh from"
    if now - stored.last_full_pull_at >= every:
        return f"last full read {stored.last_full_pull_at:%Y-%m-%d %H:%M} UTC is {every.days} days or more ago"
    return None


def _parse_ts(text: str | None) -> datetime:
    assert text is not None
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)


def _concat(parts: list[pd.DataFrame], columns: dict[str, Any]) -> pd.DataFrame:
    parts = [p for p in parts if len(p)]
    if not parts:
        return _empty(columns)
    if len(parts) == 1:
        return parts[0].reset_index(drop=True)
    return pd.concat(parts, ignore_index=True)[list(columns)]


def _empty(columns: dict[str, Any]) -> pd.DataFrame:
    return pd.DataFrame({name: pd.Series([], dtype=dtype) for name, dtype in columns.items()})
