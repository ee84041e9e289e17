"""What a triggered deal's assets read from HubSpot, Harvest and the ledger (one call each)."""

from __future__ import annotations

from datetime import date
from typing import TYPE_CHECKING

import pandas as pd

from sync_pipelines.billing.line_items import deal_group_key
from sync_pipelines.connectors.hubspot_stages import entered_properties
from sync_pipelines.extract.frames import DEAL_COLUMNS, DEAL_PROPERTIES, deals_frame, rejected_frame, time_entries_frame
from sync_pipelines.extract.sources import month_bounds
from sync_pipelines.triggers.deal_invoice import DealInvoiceRecord

if TYPE_CHECKING:  # pragma: no cover
    from sync_pipelines.connectors.harvest import HarvestClient
    from sync_pipelines.connectors.hubspot import HubSpotClient
    from sync_pipelines.ledger import Ledger


def read_deal(hubspot: HubSpotClient, deal_id: str, stage: str) -> tuple[pd.DataFrame, bool]:
    """The deal as HubSpot has it now (a one-row deals frame, empty when it does not exist) and
    whether it has line items."""
    found = hubspot.batch_read_deals([deal_id], DEAL_PROPERTIES + entered_properties(stage))
    companies = hubspot.deal_company_ids([deal_id]) if found.records else {}
    frame = deals_frame(found.records, companies, stage)
    has_items = bool(found.records) and bool(hubspot.deal_line_items([deal_id]).associations.get(deal_id))
    return frame, has_items


def project_deals(hubspot: HubSpotClient, deal: pd.DataFrame, stage: str) -> pd.DataFrame:
    """The triggered deal and every other deal linked to its Harvest project: the month-end prices
    the project with all their terms (dated rates, discount, not-to-exceed, PO), so the deal's
    invoice must too."""
    pid = deal["harvest_project_id"].iloc[0] if len(deal) else None
    if pid is None or pid is pd.NA:
        return deal
    found = hubspot.search_deals(
        [{"filters": [{"propertyName": "harvest_project_id", "operator": "EQ", "value": str(int(pid))}]}],
        DEAL_PROPERTIES + entered_properties(stage))
    others = [d for d in found.records if d.id != str(deal["deal_id"].iloc[0])]
    if not others:
        return deal
    frame = deals_frame(others, hubspot.deal_company_ids([d.id for d in others]), stage)
    return pd.concat([deal, frame], ignore_index=True)


def deal_row(frame: pd.DataFrame) -> dict | None:
    return None if not len(frame) else frame.iloc[0].to_dict()


def deal_frame_from_row(row: dict) -> pd.DataFrame:
    """A stored deal row (JSON) back to a one-row deals frame with the frame's dtypes."""
    rec = {c: row.get(c) for c in DEAL_COLUMNS}
    frame = pd.DataFrame([rec], columns=list(DEAL_COLUMNS), dtype=object)
    frame["harvest_project_id"] = pd.array([rec["harvest_project_id"]], dtype="Int64")
    return frame


def project_entries(harvest: HarvestClient, project_id: int, period: str, through: date
                    ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The project's time entries of `period` spent up to `through`, that Harvest has not marked
    billed (the ledger's own record of what we billed is applied by the engine), and the
    quarantined ones."""
    first, _ = month_bounds(period)
    result = harvest.list_time_entries(first, through, project_id=project_id, is_billed=False)
    return time_entries_frame(result.records), rejected_frame(result.rejected)


def earlier_invoices(ledger: Ledger, realm_id: str, client_key: str | None, deal_id: str) -> list[DealInvoiceRecord]:
    """The ledger's invoices of the deal (group key ``deal-<id>``), any period and generation."""
    gk = deal_group_key(deal_id)
    return [DealInvoiceRecord(r.key, r.period, r.status, r.generation)
            for r in ledger.status(client=client_key, realm_id=realm_id) if r.group_key == gk]
