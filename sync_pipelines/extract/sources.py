"""One call per extract asset: pull from a connector, return (frame, rejected frame).

The Dagster assets in ``defs/`` stay thin: they build the clients (see
``sync_pipelines.connectors.factory``) and call these.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd

from sync_pipelines import money
from sync_pipelines.billing.company import QboCompany, company_from_qbo
from sync_pipelines.connectors.http import FetchResult, Rejected
from sync_pipelines.connectors.hubspot_models import Deal
from sync_pipelines.connectors.hubspot_stages import entered_properties

from .frames import (
    DEAL_PROPERTIES,
    catalog_frame,
    deals_frame,
    line_items_frame,
    rejected_frame,
)
from .harvest_month import read_time_entries
from .periods import month_bounds

if TYPE_CHECKING:  # pragma: no cover
    from sync_pipelines.connectors.harvest import HarvestClient
    from sync_pipelines.connectors.hubspot import HubSpotClient
    from sync_pipelines.connectors.quickbooks import QuickBooksClient


def harvest_time_entries(client: HarvestClient, period: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """All time entries spent in ``period`` (every client) and the quarantined ones, read in full
    page by page (the month-end asset refreshes incrementally: ``harvest_month.extract_month``)."""
    first, last = month_bounds(period)
    return read_time_entries(client.time_entry_pages(first, last))


def hubspot_deals(
    client: HubSpotClient, properties: list[str] | None = None, stage: str | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every deal with the billing properties and its (primary) company id; with `stage` (the
    rules' ready-for-billing stage) also when each deal in it entered it (``stage_entered_at``).

    A deal whose `harvest_project_id` is not a Harvest project id (someone typed a project code)
    stays in the frame unlinked, and is also listed among the rejected records with the reason,
    so its billing overrides are visibly not applied instead of silently ignored.
    """
    return deals_frames(client, client.list_deals(deal_properties(properties, stage)), stage)


def deal_properties(properties: list[str] | None = None, stage: str | None = None) -> list[str]:
    """The deal properties :func:`hubspot_deals` reads."""
    return list(properties or DEAL_PROPERTIES) + (entered_properties(stage) if stage else [])


def deals_frames(client: HubSpotClient, result: FetchResult[Deal], stage: str | None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read deals (with their companies attached) as the deals frame and its rejected records."""
    company_ids = client.deal_company_ids([d.id for d in result.records])
    unlinkable = [
        Rejected("hubspot", "deal", d.id,
                 f"harvest_project_id {raw!r} is not a Harvest project id: the deal's billing overrides are not applied",
                 money.dumps(d.model_dump(mode="json"), strict=False))
        for d in result.records
        if (raw := (d.prop("harvest_project_id") or "").strip()) and not raw.isdigit()
    ]
    return deals_frame(result.records, company_ids, stage), rejected_frame([*result.rejected, *unlinkable])


def hubspot_deal_line_items(
    client: HubSpotClient, deals: pd.DataFrame, stage: str | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The line items of the deals in ``deals`` (the ``hubspot_deals`` frame) and the rejected ones.

    With ``stage`` (the rules' ``hubspot.ready_for_billing_stage``) only deals in that stage are
    read (the only ones invoiced from line items); without it, every deal's. A line item that is
    associated with a deal but rejected or not returned still gets a row (no price / quantity), so
    the engine holds that deal's invoice rather than invoicing it without the item.
    """
    if deals is None or len(deals) == 0:
        return line_items_frame([]), rejected_frame([])
    chosen = deals if stage is None else deals[deals["dealstage"] == stage]
    deal_ids = [str(d) for d in chosen["deal_id"].tolist() if not pd.isna(d)]
    if not deal_ids:
        return line_items_frame([]), rejected_frame([])
    result = client.deal_line_items(deal_ids)
    readable = {r.line_item.id for r in result.records}
    unreadable = [(deal_id, li) for deal_id, items in sorted(result.associations.items())
                  for li in items if li not in readable]
    return line_items_frame(result.records, unreadable), rejected_frame(result.rejected)


def qbo_catalog(client: QuickBooksClient) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Customers, items, classes and terms, active and inactive."""
    parts = [client.list_customers(), client.list_items(), client.list_classes(), client.list_terms()]
    frame = catalog_frame(*(p.records for p in parts))
    return frame, rejected_frame([r for p in parts for r in p.rejected])


def qbo_company(client: QuickBooksClient) -> tuple[QboCompany, pd.DataFrame]:
    """The company's settings and tax codes (DESIGN §5); malformed tax records are quarantined.

    A tax code whose record was rejected is simply unknown, so a client that names it is held
    rather than invoiced with a guessed rate.
    """
    codes, rates = client.list_tax_codes(), client.list_tax_rates()
    company = company_from_qbo(
        client.realm_id, client.preferences(), client.company_info(),
        [c.model_dump(mode="python") for c in codes.records], [r.model_dump(mode="python") for r in rates.records],
    )
    return company, rejected_frame([*codes.rejected, *rates.rejected])
