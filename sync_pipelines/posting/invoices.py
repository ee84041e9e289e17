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
its DocNumber fingerprint, because the earlier attempt may have landed.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from sync_pipelines import money
from sync_pipelines.connectors.http import ApiError, ApiValidationError
from sync_pipelines.connectors.quickbooks import QuickBooksClient, duplicate_txn_id
from sync_pipelines.ledger import Ledger
from sync_pipelines.posting.drafts import PostingDraft

log = logging.getLogger(__name__)

# Outcomes, as the reconciliation report and `ledger status` name them.
POSTED = "posted"
ALREADY_POSTED = "already_posted"
RECOVERED = "recovered"  # an earlier, unconfirmed attempt had landed: found by DocNumber
HELD = "held"
DRIFT = "drift"
FAILED = "failed"
BUSY = "busy"
VOIDED = "voided"


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
    total_matches: bool | None = None
    reasons: list[str] = field(default_factory=list)

    def as_row(self) -> dict[str, Any]:
        return {
            "invoice_key": self.key,
            "client_key": self.client_key,
            "period": self.period,
            "group_key": self.group_key,
            "outcome": self.outcome,
            "currency": self.currency,
            "expected_total": str(self.expected_total),
            "qbo_total": None if self.qbo_total is None else str(self.qbo_total),
            "total_matches": self.total_matches,
            "qbo_id": self.qbo_id,
            "doc_number": self.doc_number,
            "reasons": "; ".join(self.reasons),
        }


class PostingIncomplete(RuntimeError):
    """Some invoices could not be posted because QuickBooks was unavailable; a re-run finishes them."""


def post_drafts(
    drafts: Iterable[PostingDraft],
    *,
    qbo: QuickBooksClient,
    ledger: Ledger,
    home_currency: str,
) -> list[PostingOutcome]:
    """Post every ready draft, record every held one; never raises half-way through a batch.

    Transient failures (QuickBooks unavailable after retries) leave the key pending or failed in
    the ledger and are returned as ``failed`` outcomes; the caller decides whether to fail the
    run (the Dagster asset does, so that a retry finishes the job).
    """
    outcomes = []
    for draft in drafts:
        if draft.status != "ready":
            outcomes.append(_hold(draft, ledger, list(draft.hold_reasons)))
            continue
        try:
            outcomes.append(_post_one(draft, qbo=qbo, ledger=ledger, home_currency=home_currency))
        except ApiValidationError as exc:
            # QuickBooks refused this invoice (a validation fault): hold it whole, with the reason.
            reason = f"QuickBooks rejected the invoice: {exc}"
            outcomes.append(_hold(draft, ledger, [reason]))
        except ApiError as exc:
            ledger.record_failed(draft.key, str(exc))
            outcomes.append(_outcome(draft, FAILED, reasons=[str(exc)]))
    return outcomes


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


def _hold(draft: PostingDraft, ledger: Ledger, reasons: list[str]) -> PostingOutcome:
    ledger.record_held(
        draft.key,
        realm_id=draft.realm_id,
        client_key=draft.client_key,
        period=draft.period,
        group_key=draft.group_key,
        generation=draft.generation,
        reasons=reasons,
        payload=draft.payload,
        expected_total=draft.expected_total,
        currency=draft.currency,
    )
    log.warning("held invoice %s: %s", draft.key, "; ".join(reasons))
    return _outcome(draft, HELD, reasons=reasons)


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


class _CurrencyMismatch(Exception):
    pass


def _post_one(draft: PostingDraft, *, qbo: QuickBooksClient, ledger: Ledger, home_currency: str) -> PostingOutcome:
    try:
        customer_ref = _customer_ref(draft, qbo, home_currency)
    except _CurrencyMismatch as exc:
        return _hold(draft, ledger, [str(exc)])
    payload = {**draft.payload, "CustomerRef": customer_ref}

    begin = ledger.begin_posting(
        draft.key,
        realm_id=draft.realm_id,
        client_key=draft.client_key,
        period=draft.period,
        group_key=draft.group_key,
        generation=draft.generation,
        payload=payload,
        expected_total=draft.expected_total,
        currency=draft.currency,
        request_id=draft.request_id,
        doc_number=draft.doc_number,
        entries=list(draft.entries),
    )
    if begin.action == "resume_pending":
        # The earlier attempt may have reached QuickBooks before the crash: find it by its
        # DocNumber fingerprint before posting again (requestid replay alone is not a guarantee,
        # peers.md §3.1).
        found = qbo.find_invoice_by_doc_number(draft.doc_number)
        if found is not None:
            return _record(draft, ledger, found, RECOVERED)
        begin = ledger.begin_posting(
            draft.key,
            realm_id=draft.realm_id,
            client_key=draft.client_key,
            period=draft.period,
            group_key=draft.group_key,
            generation=draft.generation,
            payload=payload,
            expected_total=draft.expected_total,
            currency=draft.currency,
            request_id=draft.request_id,
            doc_number=draft.doc_number,
            entries=list(draft.entries),
            resume_attempt=begin.attempt,
        )

    if begin.action == "skip_posted":
        return _outcome(
            draft, ALREADY_POSTED, qbo_id=begin.qbo_id, doc_number=begin.qbo_doc_number,
            qbo_total=begin.qbo_total_amt, total_matches=begin.qbo_total_amt == draft.expected_total,
        )
    if begin.action == "drift":
        return _outcome(
            draft, DRIFT, qbo_id=begin.qbo_id, doc_number=begin.qbo_doc_number, qbo_total=begin.old_total,
            reasons=[
                f"posted invoice's inputs changed: posted {begin.old_total}, now {begin.new_total} "
                f"({draft.currency}); not re-posted"
            ],
        )
    if begin.action in ("held", "voided", "busy"):
        reasons = list(begin.reasons)
        if begin.action == "voided":
            reasons.append(f"invoice was voided in QuickBooks; reissue as generation {begin.next_generation}")
        if begin.action == "busy":
            reasons.append("another run is posting this invoice right now")
        return _outcome(draft, {"held": HELD, "voided": VOIDED, "busy": BUSY}[begin.action], reasons=reasons)
    if begin.action != "post":
        raise RuntimeError(f"unexpected ledger action {begin.action!r} for {draft.key}")

    body = money.loads(begin.payload_json) if begin.payload_json else payload
    try:
        created = qbo.create_invoice(body, draft.request_id)
    except ApiValidationError as exc:
        txn_id = duplicate_txn_id(exc)
        if txn_id is None:
            raise
        # 6140: our DocNumber is taken, and the fingerprint is ours: an earlier attempt landed.
        return _record(draft, ledger, qbo.get_invoice(txn_id), RECOVERED)
    return _record(draft, ledger, created, POSTED)


def _record(draft: PostingDraft, ledger: Ledger, invoice: dict[str, Any], outcome: str) -> PostingOutcome:
    total = money.to_decimal(invoice.get("TotalAmt", "0"), what="TotalAmt")
    posted = ledger.record_posted(
        draft.key,
        qbo_id=str(invoice["Id"]),
        sync_token=str(invoice.get("SyncToken", "0")),
        qbo_doc_number=invoice.get("DocNumber"),
        qbo_total_amt=total,
        intuit_tid=invoice.get("intuit_tid"),
    )
    reasons = []
    if not posted.total_matches:
        reasons.append(f"QuickBooks TotalAmt {total} differs from our total {draft.expected_total}")
        log.error("total mismatch on %s: QuickBooks %s, ours %s", draft.key, total, draft.expected_total)
    return _outcome(
        draft, outcome, qbo_id=str(invoice["Id"]), doc_number=invoice.get("DocNumber"),
        qbo_total=total, total_matches=posted.total_matches, reasons=reasons,
    )
