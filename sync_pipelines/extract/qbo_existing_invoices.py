"""Invoices already in QuickBooks dated in a month: a full query, or a CDC catch-up on the stored frame.

QuickBooks Change Data Capture (`GET .../cdc?entities=Invoice&changedSince=`) returns every
invoice changed since a moment within the last 30 days, deleted ones as `{"status": "Deleted",
"Id"}`, at most 1,000 objects per response (api-contracts §1.10; Intuit recommends a daily CDC).
So a re-extraction merges the changes into the stored frame by QuickBooks Id: an invoice dated in
the month is added or replaced, one deleted or re-dated out of the month is dropped. It falls back
to the full query when the last extraction is older than the CDC window (with a safety margin),
or when the response is full (1,000 objects: more may have changed than it shows).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

import pandas as pd

from sync_pipelines import money
from sync_pipelines.connectors.quickbooks import quote

from .periods import month_bounds

if TYPE_CHECKING:  # pragma: no cover
    from sync_pipelines.connectors.quickbooks import QuickBooksClient

EXISTING_INVOICE_COLUMNS = ["qbo_id", "doc_number", "customer_id", "customer_name", "txn_date", "total",
                            "balance", "private_note"]
#: QuickBooks accepts changedSince up to 30 days back; a day less leaves room for clocks and slow runs.
CDC_WINDOW = timedelta(days=29)
CDC_MAX_OBJECTS = 1000
#: How far before the last extraction's start the catch-up begins: QuickBooks stamps
#: LastUpdatedTime on its own clock, which may run behind ours.
SAFETY_MARGIN = timedelta(hours=1)


@dataclass(frozen=True)
class ExistingInvoices:
    frame: pd.DataFrame
    mode: str  # "full" or "cdc"
    reason: str
    extracted_at: datetime  # when this extraction started (the next catch-up starts before it)
    changed: int  # invoices the CDC reported (0 for a full query)


def invoice_row(r: dict[str, Any]) -> dict[str, Any]:
    customer = r.get("CustomerRef") or {}
    return {
        "qbo_id": str(r.get("Id")),
        "doc_number": r.get("DocNumber"),
        "customer_id": str(customer.get("value")),
        "customer_name": customer.get("name"),
        "txn_date": r.get("TxnDate"),
        "total": str(money.to_decimal(r.get("TotalAmt", 0), what="TotalAmt")),
        "balance": str(money.to_decimal(r.get("Balance", 0), what="Balance")),
        "private_note": r.get("PrivateNote"),
    }


def invoices_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=EXISTING_INVOICE_COLUMNS, dtype=object)


def existing_invoices(
    client: QuickBooksClient,
    period: str,
    stored: pd.DataFrame | None = None,
    stored_at: datetime | None = None,
    *,
    now: datetime | None = None,
    full: bool = False,
) -> ExistingInvoices:
    """The month's invoices: by CDC from ``stored`` (extracted at ``stored_at``) when possible."""
    now = now or datetime.now(timezone.utc)
    first, last = month_bounds(period)
    reason = _why_full(stored, stored_at, now, full)
    if reason is None:
        assert stored is not None and stored_at is not None
        since = stored_at - SAFETY_MARGIN
        changes = client.cdc(["Invoice"], since).get("Invoice", [])
        if len(changes) < CDC_MAX_OBJECTS:
            frame = merge_invoice_changes(stored, changes, first.isoformat(), last.isoformat())
            return ExistingInvoices(frame, "cdc", f"changes since {since:%Y-%m-%dT%H:%M:%SZ} merged "
                                    f"({len(changes)} reported by QuickBooks)", now, len(changes))
        reason = f"QuickBooks CDC returned its maximum of {CDC_MAX_OBJECTS} objects: more may have changed"
    rows = client.query_all("Invoice", f"TxnDate >= {quote(first.isoformat())} AND TxnDate <= {quote(last.isoformat())}")
    return ExistingInvoices(invoices_frame([invoice_row(r) for r in rows]), "full", reason, now, 0)


def merge_invoice_changes(stored: pd.DataFrame, changes: list[dict[str, Any]], first: str, last: str) -> pd.DataFrame:
    """``stored`` with each changed invoice replaced, added (dated in ``[first, last]``) or dropped
    (deleted, or re-dated out of the month). Order: stored invoices keep their place."""
    rows = {str(r["qbo_id"]): _plain(r) for r in stored.to_dict("records")}
    for change in changes:
        qbo_id = str(change.get("Id"))
        txn_date = change.get("TxnDate")
        if change.get("status") == "Deleted" or not (isinstance(txn_date, str) and first <= txn_date <= last):
            rows.pop(qbo_id, None)
        else:
            rows[qbo_id] = invoice_row(change)
    return invoices_frame(list(rows.values()))


def _plain(row: dict[str, Any]) -> dict[str, Any]:
    # A Parquet round trip turns missing text into NaN; the query gives None.
    return {k: (None if not isinstance(v, str) and pd.isna(v) else v) for k, v in row.items()}


def _why_full(stored: pd.DataFrame | None, stored_at: datetime | None, now: datetime, full: bool) -> str | None:
    if full:
        return "full extraction requested"
    if stored is None or stored_at is None:
        return "no stored extraction of this month to catch up from"
    if now - stored_at + SAFETY_MARGIN >= CDC_WINDOW:
        return (f"last extraction {stored_at:%Y-%m-%d %H:%M} UTC is outside QuickBooks' CDC window "
                f"({CDC_WINDOW.days} days kept of its 30)")
    return None
