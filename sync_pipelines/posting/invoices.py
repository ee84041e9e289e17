"""Post draft invoices to QuickBooks exactly once.

The order of operations is the product's promise (DESIGN §6):

1. the customer is found (inactive ones too) or created, so the payload is complete;
2. the ledger records the key, the exact payload and its hash *before* QuickBooks is called;
3. QuickBooks is called with ``requestid`` = the key's request id, so a retried call replays the
   first response instead of creating a second invoice;
4. the result is recorded, QuickBooks' ``TotalAmt`` compared with ours, and only then are the
   entries marked billed.

A key already posted with the same payload is skipped; with a different payload it is reported
as drift and never re-posted. A key left pending by a crash is first looked up in QuickBooks by
its DocNumber fingerprint, because the earlier attempt may have landed. Steps 2-4 are
:mod:`sync_pipelines.posting.protocol`; this module adds the customer and the held drafts.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from sync_pipelines import money, stopping
from sync_pipelines.connectors.http import ApiError, ApiValidationError
from sync_pipelines.connectors.quickbooks import QboReconnectRequired, QuickBooksClient
from sync_pipelines.ledger import Ledger
from sync_pipelines.posting.drafts import PostingDraft
from sync_pipelines.posting.drift import Drift, compare
from sync_pipelines.posting.protocol import PostOutcome, post_invoice

log = logging.getLogger(__name__)

# Outcomes are those of protocol.OUTCOMES (posted, recovered, already_posted, drift, held, busy,
# voided, failed); these two are the ones this module produces itself.
HELD = "held"
FAILED = "failed"
# Not attempted because the operator stopped the run (SIGTERM / Ctrl-C): no ledger row was
# written for it, the next run posts it.
STOPPED = "stopped"


@dataclass
class PostingOutcome:
    key: str
    client_key: str
    period: str
    group_key: str
    outcome: str
    expected_total: Decimal
    currency: str
    qbo_id: str | None = None
    doc_number: str | None = None
    qbo_total: Decimal | None = None
    qbo_total_tax: Decimal | None = None  # QuickBooks' TxnTaxDetail.TotalTax (qbo_total includes it)
    total_matches: bool | None = None
    reasons: list[str] = field(default_factory=list)
    drift: Drift | None = None  # outcome "drift": the delta and the proposed adjustment

    def as_row(self) -> dict[str, Any]:
        d = self.drift
        return {
            "invoice_key": self.key,
            "client_key": self.client_key,
            "period": self.period,
            "group_key": self.group_key,
            "outcome": self.outcome,
            "currency": self.currency,
            "expected_total": str(self.expected_total),
            "qbo_total": None if self.qbo_total is None else str(self.qbo_total),
            "qbo_total_tax": None if self.qbo_total_tax is None else str(self.qbo_total_tax),
            "total_matches": self.total_matches,
            "qbo_id": self.qbo_id,
            "doc_number": self.doc_number,
            "reasons": "; ".join(self.reasons),
            "delta_hours": None if d is None else str(d.delta_hours),
            "delta_amount": None if d is None else str(d.delta_amount),
            "adjustment": None if d is None or d.adjustment.payload is None else money.dumps(
                {"kind": d.adjustment.kind, "payload": d.adjustment.payload}, sort_keys=True),
        }


#: The columns of ``PostingOutcome.as_row`` (the ``qbo_invoices`` asset's frame).
OUTCOME_COLUMNS = ["invoice_key", "client_key", "period", "group_key", "outcome", "currency", "expected_total",
                   "qbo_total", "qbo_total_tax", "total_matches", "qbo_id", "doc_number", "reasons", "delta_hours", "delta_amount",
                   "adjustment"]


def post_drafts(
    drafts: Iterable[PostingDraft],
    *,
    qbo: QuickBooksClient,
    ledger: Ledger,
    home_currency: str,
    claimant: str | None = None,
    claimant_alive: Callable[[str], bool] | None = None,
) -> list[PostingOutcome]:
    """Post every ready draft, record every held one; never stops half-way through a batch.

    The per-invoice protocol (ledger row first, requestid, DocNumber lookup on resume, TotalAmt
    check) is :func:`sync_pipelines.posting.protocol.post_invoice`. Transient failures leave the
    key pending or failed in the ledger and come back as ``failed`` outcomes; the caller decides
    whether to fail the run (the Dagster asset does, so that a retry finishes the job).

    ``QboReconnectRequired`` (QuickBooks refused the refresh token) is raised, not recorded per
    invoice: every further call would fail the same way until an operator reconnects the app.

    A stop request (:mod:`sync_pipelines.stopping`) is honoured between invoices only: the drafts
    not yet started come back as ``stopped``. `claimant` / `claimant_alive` go to
    :func:`post_invoice` (a dead run's claim is taken over at once).
    """
    outcomes = []
    for draft in drafts:
        if stopping.requested():
            outcomes.append(_outcome(draft, STOPPED, reasons=[f"not attempted: the run was stopped ({stopping.signal_name()})"]))
            continue
        if draft.status != "ready":
            outcomes.append(_hold(draft, ledger, list(draft.hold_reasons)))
            continue
        try:
            customer_ref = _customer_ref(draft, qbo, home_currency)
        except QboReconnectRequired:
            raise
        except _CurrencyMismatch as exc:
            outcomes.append(_hold(draft, ledger, [str(exc)]))
            continue
        except ApiValidationError as exc:
            outcomes.append(_hold(draft, ledger, [f"QuickBooks refused the customer: {exc}"]))
            continue
        except ApiError as exc:
            outcomes.append(_outcome(draft, FAILED, reasons=[str(exc)]))
            continue
        result = post_invoice(
            ledger, qbo, draft.key, **draft.ledger_fields(),
            payload={**draft.payload, "CustomerRef": customer_ref},
            project_totals=draft.project_totals, carry_forward_hours=draft.carry_forward_hours,
            claimant=claimant, claimant_alive=claimant_alive,
        )
        outcome = _from_protocol(draft, result)
        if outcome.outcome == "drift":
            outcome = _with_drift(outcome, draft, ledger, {**draft.payload, "CustomerRef": customer_ref})
        outcomes.append(outcome)
    return outcomes


def _with_drift(outcome: PostingOutcome, draft: PostingDraft, ledger: Ledger, payload: dict[str, Any]) -> PostingOutcome:
    """Attach the delta (hours, money, entries) and the proposed adjustment to a drift outcome."""
    record = ledger.get_invoice(draft.key)
    if record is None:
        return outcome
    drift = compare(
        draft.key, draft.period, draft.currency, money.loads(record.payload_json), payload,
        posted_total=record.expected_total, new_total=draft.expected_total,
        posted_entries=[(e, c) for e, c, _ in record.entries], new_entries=draft.entries,
    )
    outcome.drift = drift
    outcome.reasons = [drift.summary()]
    return outcome


def _outcome(draft: PostingDraft, outcome: str, **kw: Any) -> PostingOutcome:
    return PostingOutcome(
        key=draft.key,
        client_key=draft.client_key,
        period=draft.period,
        group_key=draft.group_key,
        outcome=outcome,
        expected_total=draft.expected_total,
        currency=draft.currency,
        **kw,
    )


def _from_protocol(draft: PostingDraft, result: PostOutcome) -> PostingOutcome:
    begin, posted = result.begin, result.posted
    qbo_total = posted.qbo_total_amt if posted is not None else begin.qbo_total_amt
    if result.outcome == "drift":
        qbo_total = begin.old_total
    if result.outcome == "held":
        log.warning("held invoice %s: %s", draft.key, result.message)
    if result.total_matches is False:
        log.error("total mismatch on %s: %s", draft.key, result.message)
    if result.total_matches is not None:
        matches: bool | None = result.total_matches
    elif result.outcome == "already_posted":
        matches = not begin.total_mismatch  # compared pre-tax when it was posted
    else:
        matches = qbo_total == draft.expected_total if qbo_total is not None else None
    return _outcome(
        draft, result.outcome,
        qbo_id=result.qbo_id,
        doc_number=(posted.qbo_doc_number if posted is not None else None) or begin.qbo_doc_number
        or (draft.doc_number if result.ok and "DocNumber" in draft.payload else None),
        qbo_total=qbo_total,
        qbo_total_tax=posted.qbo_total_tax if posted is not None else begin.qbo_total_tax,
        total_matches=matches,
        reasons=[result.message] if result.message else [],
    )


def _hold(draft: PostingDraft, ledger: Ledger, reasons: list[str]) -> PostingOutcome:
    ledger.record_held(draft.key, reasons=reasons, payload=draft.payload, **draft.ledger_fields())
    log.warning("held invoice %s: %s", draft.key, "; ".join(reasons))
    return _outcome(draft, HELD, reasons=reasons)


class _CurrencyMismatch(Exception):
    pass


def _customer_ref(draft: PostingDraft, qbo: QuickBooksClient, home_currency: str) -> dict[str, str]:
    # CurrencyRef is accepted only with multicurrency on, and only at create; a home-currency
    # customer is created without it.
    currency = draft.currency if draft.currency != home_currency else None
    customer = qbo.find_or_create_customer(draft.customer_name, currency)
    existing = (customer.get("CurrencyRef") or {}).get("value")
    if existing and existing != draft.currency:
        raise _CurrencyMismatch(
            f"QuickBooks customer {draft.customer_name!r} is in {existing}, the invoice is in {draft.currency}"
        )
    return {"value": str(customer["Id"]), "name": customer.get("DisplayName", draft.customer_name)}
