"""What an extract asset's last materialisation of a month left behind, for an incremental refresh.

The state lives where it survives restarts and is visible to the operator: the materialisation's
own metadata (`path` of the stored frame, written by the IO manager; `quarantine_file` and
`rejected_records`; `last_full_pull_at`). Anything missing or inconsistent (a frame whose row
count is not the one recorded, a quarantine file edited by hand) gives None: the month is then
read in full, never refreshed from a state we cannot trust.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd

from sync_pipelines.extract.frames import DEAL_COLUMNS, REJECTED_COLUMNS, TIME_ENTRY_COLUMNS, rejected_frame
from sync_pipelines.extract.harvest_month import StoredMonth
from sync_pipelines.extract.hubspot_deals_refresh import StoredDeals
from sync_pipelines.extract.qbo_existing_invoices import EXISTING_INVOICE_COLUMNS


def last_materialization_metadata(context: dg.AssetExecutionContext) -> dict[str, Any] | None:
    """The metadata of this asset partition's latest materialisation (raw values), or None."""
    result = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=context.asset_key, asset_partitions=[context.partition_key]), limit=1
    )
    if not result.records:
        return None
    materialization = result.records[0].asset_materialization
    if materialization is None:
        return None
    return {k: getattr(v, "value", v) for k, v in materialization.metadata.items()}


def stored_harvest_month(context: dg.AssetExecutionContext) -> tuple[StoredMonth | None, str]:
    """The stored time entries of this month and why they can or cannot be used."""
    meta = last_materialization_metadata(context)
    if meta is None:
        return None, "not extracted before"
    path, full_at, rows = meta.get("path"), meta.get("last_full_pull_at"), meta.get("dagster/row_count")
    if not path or not full_at or rows is None:
        return None, "the last extraction recorded no refresh state"
    try:
        frame = pd.read_parquet(path)
        last_full = datetime.fromisoformat(str(full_at))
        rejected = _stored_rejected(meta)
    except (OSError, ValueError) as exc:
        return None, f"the stored extraction cannot be read ({type(exc).__name__})"
    if rejected is None or len(frame) != int(rows) or list(frame.columns) != list(TIME_ENTRY_COLUMNS):
        return None, "the stored extraction does not match what its materialisation recorded"
    return StoredMonth(frame, rejected, last_full), "stored extraction found"


def _stored_rejected(meta: dict[str, Any]) -> pd.DataFrame | None:
    count = int(meta.get("rejected_records") or 0)
    if count == 0:
        return rejected_frame([])
    path = meta.get("quarantine_file")
    if not path or not Path(str(path)).exists():
        return None
    raw = pd.read_csv(str(path), dtype=str, keep_default_na=False, na_values=[""])
    if len(raw) != count or list(raw.columns) != list(REJECTED_COLUMNS):
        return None
    return raw.astype(REJECTED_COLUMNS)


def stored_invoices(context: dg.AssetExecutionContext) -> tuple[pd.DataFrame | None, datetime | None]:
    """The stored QuickBooks invoices of this month and when that extraction started, or (None, None)."""
    meta = last_materialization_metadata(context)
    if meta is None or not meta.get("path") or not meta.get("extracted_at"):
        return None, None
    try:
        frame = pd.read_parquet(meta["path"])
        at = datetime.fromisoformat(str(meta["extracted_at"]))
    except (OSError, ValueError):
        return None, None
    if len(frame) != int(meta.get("dagster/row_count", -1)) or list(frame.columns) != EXISTING_INVOICE_COLUMNS:
        return None, None
    return frame, at


def stored_deals(context: dg.AssetExecutionContext) -> StoredDeals | None:
    """The stored HubSpot deals (and their rejected records) of this partition's last extraction."""
    meta = last_materialization_metadata(context)
    if meta is None or not meta.get("path") or not meta.get("extracted_at") or not meta.get("last_full_pull_at"):
        return None
    try:
        frame = pd.read_parquet(meta["path"])
        extracted_at = datetime.fromisoformat(str(meta["extracted_at"]))
        last_full = datetime.fromisoformat(str(meta["last_full_pull_at"]))
        rejected = _stored_rejected(meta)
    except (OSError, ValueError):
        return None
    if rejected is None or len(frame) != int(meta.get("dagster/row_count", -1)) or list(frame.columns) != list(DEAL_COLUMNS):
        return None
    return StoredDeals(frame.astype(DEAL_COLUMNS), rejected, extracted_at, last_full, meta.get("ready_for_billing_stage") or None)
