"""CRM write-back: the HubSpot deals an invoice bills get its QuickBooks id (DESIGN §6).

It is its own ledgered step, after posting:

1. **enqueue** (:func:`enqueue_writebacks`): for every invoice the ledger holds as *confirmed* by
   QuickBooks (``posted``, or ``drift``: posted, and its inputs changed since), the deals it bills
   get a row in ``sync_crm_writebacks`` with the properties to set. A pending, failed, held or
   voided invoice never enqueues, so the CRM never points at an invoice that does not exist.
   Enqueueing is idempotent and re-derived from the ledger on every run, so a crash between
   posting and enqueueing is repaired by the next run.
2. **drain** (:func:`drain_writebacks`): each write-back not done yet is PATCHed to HubSpot, then
   recorded ``done``; a failure is recorded (``failed``, with the error) and retried by the next
   run until done. Setting the same properties twice is harmless, so a crash after the PATCH and
   before ``record_writeback`` only repeats the PATCH.

Which deals: those linked to a Harvest project (deal property ``harvest_project_id``) whose time
is on the invoice. When none is linked, the client's HubSpot company's deals in the
ready-for-billing stage: that stage is the CRM's "bill this now" signal (the deal sensor of
DESIGN §7 watches it), so the deal waiting there is the one this invoice answers.
"""

from __future__ import annotations

import calendar
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from sync_pipelines.connectors.http import ApiError
from sync_pipelines.ledger import Ledger
from sync_pipelines.ledger.types import InvoiceRecord

log = logging.getLogger(__name__)

#: Deal properties written back (custom properties; created on first use when missing).
#: ``amount_paid`` is sent once QuickBooks reports a payment (qbo_changes/record.py).
PROPERTIES = ("qbo_invoice_id", "qbo_invoice_number", "billed_through", "billing_status", "amount_paid")
#: The HubSpot deal stage id meaning "ready for billing" (the fallback target, see module docs).
READY_FOR_BILLING_STAGE = "ready_for_billing"  # used when the rules configure no stage
DEAL_GROUP_PREFIX = "deal-"  # the group key of an invoice made from one deal's line items
#: Invoice states QuickBooks has confirmed: the only ones that may reach the CRM.
CONFIRMED = ("posted", "drift")
INVOICED = "invoiced"


@dataclass(frozen=True)
class PlannedWriteback:
    key: str
    deal_id: str
    properties: dict[str, str]
    why: str  # "project 2001" or "company 31000000000, stage ready_for_billing"


@dataclass(frozen=True)
class WritebackResult:
    key: str
    deal_id: str
    status: str  # done | failed
    error: str | None = None


def period_end(period: str) -> str:
    year, month = int(period[:4]), int(period[5:7])
    return f"{period}-{calendar.monthrange(year, month)[1]:02d}"


def writeback_properties(record: InvoiceRecord) -> dict[str, str]:
    """The deal properties for a confirmed invoice (HubSpot takes strings only).

    ``billing_status`` is ``invoiced`` until QuickBooks reports a payment, then ``paid`` or
    ``partially_paid`` with ``amount_paid`` (exact decimal text, in the invoice's currency): a
    first write-back that happens after the payment already carries it."""
    props = {
        "qbo_invoice_id": str(record.qbo_id or ""),
        "qbo_invoice_number": str(record.qbo_doc_number or record.doc_number or ""),
        "billed_through": period_end(record.period),
        "billing_status": INVOICED,
    }
    if record.payment_status is not None and record.amount_paid is not None:
        props["billing_status"] = INVOICED if record.payment_status == "unpaid" else record.payment_status
        props["amount_paid"] = format(record.amount_paid, "f")
    return props


def entry_projects(time_entries: pd.DataFrame) -> dict[int, int]:
    """Harvest entry id -> project id, from a ``time_entries`` frame."""
    if not len(time_entries):
        return {}
    return dict(zip(time_entries["entry_id"].astype(int).tolist(), time_entries["project_id"].astype(int).tolist()))


def deal_targets(
    project_ids: Iterable[int],
    deals: pd.DataFrame,
    company_id: str | None = None,
    ready_stages: Sequence[str] = (READY_FOR_BILLING_STAGE,),
) -> list[tuple[str, str]]:
    """(deal id, why) for the deals an invoice over `project_ids` writes back to (module docs)."""
    if deals is None or not len(deals):
        return []
    projects = {int(p) for p in project_ids}
    linked = deals[deals["harvest_project_id"].notna()]
    out = [
        (str(d), f"project {int(p)}")
        for d, p in zip(linked["deal_id"], linked["harvest_project_id"])
        if int(p) in projects
    ]
    if out or not company_id:
        return sorted(set(out))
    ready = deals[(deals["company_id"].astype(object) == str(company_id)) & deals["dealstage"].isin(list(ready_stages))]
    return sorted({(str(d), f"company {company_id}, stage {s}") for d, s in zip(ready["deal_id"], ready["dealstage"])})


def plan_writebacks(
    record: InvoiceRecord,
    projects_of_entries: Mapping[int, int],
    deals: pd.DataFrame,
    company_id: str | None = None,
    ready_stage: str | None = None,
) -> list[PlannedWriteback]:
    """The write-backs of one invoice (empty unless QuickBooks confirmed it). `record` must come
    from ``ledger.get_invoice`` (it needs the entries)."""
    if record.status not in CONFIRMED or not record.qbo_id:
        return []
    props = writeback_properties(record)
    if record.group_key.startswith(DEAL_GROUP_PREFIX):
        # Invoiced from one deal's line items: that deal, and no other of the company.
        return [PlannedWriteback(record.key, record.group_key[len(DEAL_GROUP_PREFIX):], props, "its line items")]
    projects = {projects_of_entries[e] for e, _, _ in record.entries if e in projects_of_entries}
    projects |= set(record.project_totals)
    stages = (ready_stage,) if ready_stage else (READY_FOR_BILLING_STAGE,)
    return [PlannedWriteback(record.key, deal, props, why)
            for deal, why in deal_targets(projects, deals, company_id, stages)]


def enqueue_writebacks(
    ledger: Ledger,
    keys: Iterable[str],
    projects_of_entries: Mapping[int, int],
    deals: pd.DataFrame,
    company_ids: Mapping[str, str | None] | None = None,
    ready_stage: str | None = None,
) -> list[PlannedWriteback]:
    """Queue the write-backs of every confirmed invoice among `keys` (idempotent; a done
    write-back stays done). `company_ids`: client key -> HubSpot company id (rules);
    `ready_stage`: the rules' `hubspot.ready_for_billing_stage`, when set."""
    planned: list[PlannedWriteback] = []
    for key in keys:
        record = ledger.get_invoice(key)
        if record is None:
            continue
        company = (company_ids or {}).get(record.client_key)
        for wb in plan_writebacks(record, projects_of_entries, deals, company, ready_stage):
            ledger.enqueue_writeback(wb.key, wb.deal_id, wb.properties)
            planned.append(wb)
    return planned


def _order(key: str) -> tuple[str, int, str]:
    # key = realm:client:period:group:gN. Older periods and generations first, so that when two
    # invoices write to one deal in a drain, the latest (billed_through, re-issue) is what stays.
    parts = key.split(":")
    try:
        generation = int(key.rsplit(":g", 1)[1])
    except (IndexError, ValueError):
        generation = 0
    return (parts[2] if len(parts) > 2 else "", generation, key)


def drain_writebacks(
    ledger: Ledger,
    hubspot: Any,
    keys: Iterable[str] | None = None,
    *,
    limit: int = 10_000,
) -> list[WritebackResult]:
    """PATCH every write-back not done yet (of `keys`, or all) and record each result.

    Never stops half-way: a failure is recorded and the next one tried. ``hubspot`` is a
    ``HubSpotClient`` (it retries 429/5xx itself). A deal property missing in the portal is
    created once (``ensure_deal_property``) and the PATCH retried.
    """
    wanted = None if keys is None else set(keys)
    pending = [w for w in ledger.pending_writebacks(limit=limit) if wanted is None or w.invoice_key in wanted]
    pending.sort(key=lambda w: (_order(w.invoice_key), w.deal_id))
    results: list[WritebackResult] = []
    properties_ensured = False
    for wb in pending:
        props = {k: str(v) for k, v in wb.properties().items()}
        try:
            try:
                hubspot.update_deal(wb.deal_id, props)
            except ApiError as exc:
                if getattr(exc, "code", None) != "PROPERTY_DOESNT_EXIST" or properties_ensured:
                    raise
                properties_ensured = True
                for name in PROPERTIES:
                    hubspot.ensure_deal_property(name)
                hubspot.update_deal(wb.deal_id, props)
        except ApiError as exc:
            error = str(exc)
            ledger.record_writeback(wb.invoice_key, wb.deal_id, ok=False, error=error)
            log.warning("write-back of %s to deal %s failed: %s", wb.invoice_key, wb.deal_id, error)
            results.append(WritebackResult(wb.invoice_key, wb.deal_id, "failed", error))
            continue
        ledger.record_writeback(wb.invoice_key, wb.deal_id, ok=True)
        results.append(WritebackResult(wb.invoice_key, wb.deal_id, "done"))
    return results
