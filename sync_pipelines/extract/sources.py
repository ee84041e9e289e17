"""One call per extract asset: pull from a connector, return (frame, rejected frame).

The Dagster assets in ``defs/`` stay thin: they build the clients (see
``sync_pipelines.connectors.factory``) and call these.
"""

from __future__ import annotations

import calendar
import re
from datetime import date
from typing import TYPE_CHECKING

import pandas as pd

from .frames import DEAL_PROPERTIES, catalog_frame, deals_frame, rejected_frame, time_entries_frame

if TYPE_CHECKING:  # pragma: no cover
    from sync_pipelines.connectors.harvest import HarvestClient
    from sync_pipelines.connectors.hubspot import HubSpotClient
    from sync_pipelines.connectors.quickbooks import QuickBooksClient


def month_bounds(period: str) -> tuple[date, date]:
    """``"2026-10"`` -> ``(date(2026, 10, 1), date(2026, 10, 31))``."""
    if not re.fullmatch(r"\d{4}-(0[1-9]|1[0-2])", period):
        raise ValueError(f"period must be YYYY-MM, got {period!r}")
    year, month = int(period[:4]), int(period[5:])
    return date(year, month, 1), date(year, month, calendar.monthrange(year, month)[1])


def harvest_time_entries(client: HarvestClient, period: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """All time entries spent in ``period`` (every client) and the quarantined ones."""
    first, last = month_bounds(period)
    result = client.list_time_entries(first, last)
    return time_entries_frame(result.records), rejected_frame(result.rejected)


def hubspot_deals(
    client: HubSpotClient, properties: list[str] | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every deal with the billing properties and its (primary) company id."""
    result = client.list_deals(list(properties or DEAL_PROPERTIES))
    company_ids = client.deal_company_ids([d.id for d in result.records])
    return deals_frame(result.records, company_ids), rejected_frame(result.rejected)


def qbo_catalog(client: QuickBooksClient) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Customers, items, classes and terms, active and inactive."""
    parts = [client.list_customers(), client.list_items(), client.list_classes(), client.list_terms()]
    frame = catalog_frame(*(p.records for p in parts))
    return frame, rejected_frame([r for p in parts for r in p.rejected])
