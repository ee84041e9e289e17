"""HubSpot deals refreshed incrementally: a search window on ``hs_lastmodifieddate``, merged by deal id.

A re-extraction asks the search API only for deals modified since the last extraction started
(minus a safety margin: search is eventually consistent), windowed past its 10,000-result cap by
``HubSpotClient.search_deals``; their companies are read again for those deals only (v4 batch
associations, 100 a call). Archived (deleted) deals are never returned by search, so, as for
Harvest, the refreshed set is checked against the portal's deal count (one search call,
``limit=1``, its ``total``): a difference means a deal was archived, and all deals are read again.
A changed association may not move ``hs_lastmodifieddate`` (not documented), so a full read also
happens every ``FULL_PULL_EVERY`` and whenever the ready-for-billing stage (which decides the
properties read) changed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING

import pandas as pd

from .frames import DEAL_COLUMNS, REJECTED_COLUMNS
from .sources import deal_properties, deals_frames

if TYPE_CHECKING:  # pragma: no cover
    from sync_pipelines.connectors.hubspot import HubSpotClient

SAFETY_MARGIN = timedelta(hours=1)
FULL_PULL_EVERY = timedelta(days=7)


@dataclass(frozen=True)
class StoredDeals:
    frame: pd.DataFrame
    rejected: pd.DataFrame
    extracted_at: datetime  # when that extraction started
    last_full_pull_at: datetime
    stage: str | None  # the ready-for-billing stage it was read for


@dataclass(frozen=True)
class DealsExtract:
    frame: pd.DataFrame
    rejected: pd.DataFrame
    mode: str  # "full" or "incremental"
    reason: str
    extracted_at: datetime
    last_full_pull_at: datetime
    deals_read: int


def extract_deals(
    client: HubSpotClient,
    stored: StoredDeals | None = None,
    *,
    stage: str | None = None,
    now: datetime | None = None,
    full: bool = False,
) -> DealsExtract:
    now = now or datetime.now(timezone.utc)
    reason = _why_full(stored, stage, now, full)
    if reason is None:
        assert stored is not None
        since = stored.extracted_at - SAFETY_MARGIN
        changed = client.search_deals_modified_between(since, now + timedelta(minutes=1), deal_properties(None, stage))
        frame_changed, rejected_changed = deals_frames(client, changed, stage)
        frame, rejected = merge_deals(stored.frame, stored.rejected, frame_changed, rejected_changed)
        total = client.count_deals()
        held = len(set(frame["deal_id"].astype(str)) | set(rejected.loc[rejected["entity"] == "deal", "record_id"]
                                                             .dropna().astype(str)))
        if total is not None and total == held:
            return DealsExtract(frame, rejected, "incremental",
                                f"deals modified since {since:%Y-%m-%dT%H:%M:%SZ} merged; HubSpot holds {held}, as stored",
                                now, stored.last_full_pull_at, len(changed.records) + len(changed.rejected))
        reason = ("HubSpot gave no total to check the refreshed deals against" if total is None else
                  f"HubSpot holds {total} deals, the refreshed extract {held}: a deal was archived, so all are read again")
    frame, rejected = deals_frames(client, client.list_deals(deal_properties(None, stage)), stage)
    return DealsExtract(frame, rejected, "full", reason, now, now, len(frame))


def merge_deals(frame: pd.DataFrame, rejected: pd.DataFrame, changed: pd.DataFrame,
                changed_rejected: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Stored deals replaced by id with the changed ones (in place; new deals last); a stored
    rejection of a changed deal is replaced by whatever the new read says about it."""
    ids = set(changed["deal_id"].astype(str)) | set(changed_rejected["record_id"].dropna().astype(str))
    stored_ids = frame["deal_id"].astype(str)
    position = pd.Series(range(len(frame)), index=stored_ids.to_numpy())
    parts = [p for p in (frame[~stored_ids.isin(ids)], changed) if len(p)]
    merged = pd.concat(parts, ignore_index=True)[list(DEAL_COLUMNS)] if parts else frame.iloc[0:0]
    order = merged["deal_id"].astype(str).map(position)
    order = order.fillna(len(frame) + pd.Series(range(len(merged)), index=merged.index)).astype("int64")
    merged = merged.iloc[order.argsort(kind="stable")].reset_index(drop=True).astype(DEAL_COLUMNS)
    kept = rejected[~rejected["record_id"].astype(str).isin(ids) | rejected["record_id"].isna()]
    parts = [p for p in (kept, changed_rejected) if len(p)]
    merged_rejected = (pd.concat(parts, ignore_index=True)[list(REJECTED_COLUMNS)] if parts else rejected.iloc[0:0])
    return merged, merged_rejected.reset_index(drop=True).astype(REJECTED_COLUMNS)


def _why_full(stored: StoredDeals | None, stage: str | None, now: datetime, full: bool) -> str | None:
    if full:
        return "full extraction requested"
    if stored is None:
        return "no stored extraction to refresh"
    if stored.stage != stage:
        return "the ready-for-billing stage changed since the last read"
    if now - stored.last_full_pull_at >= FULL_PULL_EVERY:
        return f"last full read {stored.last_full_pull_at:%Y-%m-%d %H:%M} UTC is {FULL_PULL_EVERY.days} days or more ago"
    return None
