"""The exactly-once posting protocol (DESIGN §6) in one function, for the Dagster posting asset.

``post_invoice`` drives :meth:`Ledger.begin_posting` and a QuickBooks client through every case:

1. ``begin_posting`` records the key, exact payload and hash (pending, committed) or says why not;
2. ``resume_pending`` (an earlier attempt was never confirmed): look the DocNumber up in QuickBooks;
   found -> ``record_posted`` ("recovered"); not found -> claim the retry (``resume_attempt``) with
   the same requestid after a crash (a replay returns what a lost call created) or a fresh one
   after a QuickBooks error (a replay would return the old error);
3. POST the recorded payload with the requestid, then ``record_posted`` (entries billed, TotalAmt
   compared) -- or ``record_held`` on a validation fault (the invoice does not exist; a duplicate
   DocNumber fault 6140 means it does, so it is looked up and recovered), or ``record_failed`` on
   anything else (outage, auth): the next run resumes with a lookup.

A process that dies anywhere in between leaves a pending row claimed by its run; the next run
takes step 2 as soon as that run is known to be dead (or the claim expires). No path posts twice or bills an entry before QuickBooks confirmed the invoice.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol

from sync_pipelines import money
from sync_pipelines.ledger import redact
from sync_pipelines.ledger.ledger import Ledger
from sync_pipelines.ledger.types import BeginResult, PostedResult

#: Every value of :attr:`PostOutcome.outcome`.
OUTCOMES = ("posted", "recovered", "already_posted", "drift", "held", "busy", "voided", "failed")


class QboInvoiceApi(Protocol):
    """What ``post_invoice`` needs from ``connectors.quickbooks.QuickBooksClient``."""

    def create_invoice(self, payload: dict[str, Any], request_id: str) -> Mapping[str, Any]: ...

    def find_invoice_by_doc_number(self, doc_number: str) -> Mapping[str, Any] | None: ...

    def find_invoice_by_private_note(self, customer_id: str, txn_date: str, private_note: str) -> Mapping[str, Any] | None: ...


@dataclass(frozen=True)
class PostOutcome:
    """What happened to one invoice.

    ``outcome``: ``posted`` (created now), ``recovered`` (an earlier attempt had created it; found
    by DocNumber and recorded), ``already_posted`` (same payload posted before), ``drift``
    (posted before with a different payload: reported, not re-posted), ``held`` (entries billed
    elsewhere, or QuickBooks rejected the payload: ``message``), ``busy`` (another run is posting
    this key), ``voided`` (re-issue under ``begin.next_generation``), ``failed`` (outage or other
    error: ``message``; the next run resumes safely).
    """

    key: str
    outcome: str
    begin: BeginResult
    posted: PostedResult | None = None
    qbo_id: str | None = None
    total_matches: bool | None = None
    message: str | None = None
    error_class: str | None = None

    @property
    def ok(self) -> bool:
        """Posted now, recovered or already posted."""
        return self.outcome in ("posted", "recovered", "already_posted")


def _default_is_rejection(exc: Exception) -> bool:
    try:
        from sync_pipelines.connectors.http import ApiAuthError, ApiValidationError
    except Exception:  # pragma: no cover
        return False
    return isinstance(exc, ApiValidationError) and not isinstance(exc, ApiAuthError)


def _disconnected(exc: Exception) -> bool:
    from sync_pipelines.connectors.quickbooks import QboReconnectRequired

    return isinstance(exc, QboReconnectRequired)


def _stop_if_disconnected(exc: Exception) -> None:
    # QuickBooks refused the refresh token: every further call fails the same way until an
    # operator reconnects, so this is not one invoice's outcome; the caller stops the batch.
    if _disconnected(exc):
        raise exc


def _fresh_request_id(key: str, attempt: int) -> str:
    from sync_pipelines.billing.keys import request_id

    return request_id(f"{key}#attempt{attempt}")


def _record(ledger: Ledger, key: str, invoice: Mapping[str, Any]) -> PostedResult:
    total = invoice.get("TotalAmt")
    tax = (invoice.get("TxnTaxDetail") or {}).get("TotalTax")
    return ledger.record_posted(
        key,
        qbo_id=str(invoice["Id"]),
        sync_token=None if invoice.get("SyncToken") is None else str(invoice.get("SyncToken")),
        qbo_doc_number=invoice.get("DocNumber"),
        qbo_total_amt=money.to_decimal(total if total is not None else "NaN", what="TotalAmt"),
        intuit_tid=invoice.get("intuit_tid"),
        qbo_total_tax=None if tax is None else money.to_decimal(tax, what="TxnTaxDetail.TotalTax"),
        tax_inclusive=invoice.get("GlobalTaxCalculation") == "TaxInclusive",
    )


def find_posted(qbo: QboInvoiceApi, payload: Mapping[str, Any], doc_number: str) -> Mapping[str, Any] | None:
    """Look our invoice up in QuickBooks by its fingerprint (before re-posting a pending key).

    With a DocNumber in the payload, by DocNumber (filterable). Without one (the company numbers
    its invoices: CustomTxnNumbers off) by PrivateNote, which QuickBooks cannot filter on: the
    customer's invoices of the TxnDate are read and the note matched here.
    """
    if "DocNumber" in payload or not payload.get("PrivateNote"):
        return qbo.find_invoice_by_doc_number(doc_number)
    customer = (payload.get("CustomerRef") or {}).get("value")
    if customer is None or not payload.get("TxnDate"):
        return None
    return qbo.find_invoice_by_private_note(str(customer), str(payload["TxnDate"]), str(payload["PrivateNote"]))


def _message(exc: BaseException) -> str:
    return redact.short_error(f"{type(exc).__name__}: {exc}") or type(exc).__name__


@dataclass(frozen=True)
class ReadyToSend:
    """A key whose ledger row is pending and claimed by us, payload and hash recorded: the
    QuickBooks create may be sent now (alone or as a batch item) with ``request_id``."""

    key: str
    begin: BeginResult
    body: dict[str, Any]
    request_id: str
    doc_number: str


@dataclass(frozen=True)
class NeedsLookup:
    """``prepare_invoice(..., lookup=False)`` found the key pending from an earlier attempt: call
    it again with ``lookup=True`` (outside any ``one_transaction``: the lookup is an API call)."""

    key: str


def prepare_invoice(
    ledger: Ledger,
    qbo: QboInvoiceApi,
    key: str,
    *,
    lookup: bool = True,
    realm_id: str,
    client_key: str,
    period: str,
    group_key: str,
    generation: int,
    payload: dict[str, Any],
    expected_total: Decimal,
    currency: str,
    request_id: str,
    doc_number: str,
    entries: Iterable[tuple[int, int]] = (),
    project_totals: Mapping[int, Decimal] | None = None,
    carry_forward_hours: Decimal | None = None,
    claimant: str | None = None,
    claimant_alive: Callable[[str], bool] | None = None,
) -> ReadyToSend | PostOutcome | NeedsLookup:
    """Steps 1-2 of the protocol: the ledger row (exact payload + hash, pending, claimed) is
    committed, and a pending key left by an earlier attempt is first looked up by its fingerprint.
    Returns what to send, or the outcome when nothing is to be sent (already posted, recovered,
    drift, held, busy, voided, or ``failed`` when the lookup itself failed)."""
    fields: dict[str, Any] = dict(
        realm_id=realm_id, client_key=client_key, period=period, group_key=group_key, generation=generation,
        payload=payload, expected_total=expected_total, currency=currency, request_id=request_id,
        doc_number=doc_number, entries=list(entries), project_totals=project_totals,
        carry_forward_hours=carry_forward_hours, claimant=claimant, claimant_alive=claimant_alive,
    )
    r = ledger.begin_posting(key, **fields)

    if r.action == "resume_pending" and not lookup:
        return NeedsLookup(key)
    if r.action == "resume_pending":
        try:
            found = find_posted(qbo, payload, r.doc_number or doc_number)
        except Exception as exc:  # noqa: BLE001 - outage during the lookup: nothing changed
            _stop_if_disconnected(exc)
            return PostOutcome(key, "failed", r, message=_message(exc), error_class=type(exc).__name__)
        if found is not None:
            posted = _record(ledger, key, found)
            return PostOutcome(key, "recovered", r, posted, posted_qbo_id(found), posted.total_matches)
        # Crashed mid-call: the same requestid (a replay would return a lost creation). After a
        # QuickBooks error: a fresh one (a replay would return that error again).
        rid = r.request_id if (r.status == "pending" and r.request_id) else _fresh_request_id(key, r.attempt + 1)
        r = ledger.begin_posting(key, **{**fields, "request_id": rid}, resume_attempt=r.attempt)

    if r.action == "skip_posted":
        return PostOutcome(key, "already_posted", r, qbo_id=r.qbo_id)
    if r.action == "drift":
        return PostOutcome(
            key, "drift", r, qbo_id=r.qbo_id,
            message=f"posted with total {r.old_total}; the new draft totals {r.new_total} (not re-posted)",
        )
    if r.action == "held":
        return PostOutcome(key, "held", r, message="; ".join(r.reasons))
    if r.action == "voided":
        return PostOutcome(key, "voided", r, message=f"voided; re-issue as generation {r.next_generation}")
    if r.action in ("busy", "resume_pending"):
        return PostOutcome(
            key, "busy", r,
            message=f"another run is posting this invoice; retry in {r.retry_after_seconds or 0:.0f}s",
        )
    assert r.action == "post", r.action
    body = money.loads(r.payload_json or money.dumps(payload))
    return ReadyToSend(key, r, body, r.request_id or request_id, r.doc_number or doc_number)


def finish_invoice(
    ledger: Ledger,
    qbo: QboInvoiceApi,
    ready: ReadyToSend,
    *,
    created: Mapping[str, Any] | None = None,
    error: Exception | None = None,
    is_rejection: Callable[[Exception], bool] | None = None,
) -> PostOutcome:
    """Step 3's aftermath for one key: QuickBooks answered with the `created` invoice, or with
    `error` (the call's or the batch item's). Recorded as posted (TotalAmt compared), recovered
    (6140: the DocNumber exists, looked up), held (rejected) or failed (anything else: the next
    run resumes through the lookup). ``QboReconnectRequired`` is recorded as failed, then raised."""
    key, r, body = ready.key, ready.begin, ready.body
    rejected = is_rejection or _default_is_rejection
    if created is None:
        exc = error if error is not None else RuntimeError("QuickBooks gave no answer for this invoice")
        if _disconnected(exc):
            ledger.record_failed(key, _message(exc))
            raise exc
        if rejected(exc):
            if str(getattr(exc, "code", "")) == "6140":  # duplicate DocNumber: our invoice exists
                try:
                    found = qbo.find_invoice_by_doc_number(ready.doc_number)
                except Exception as exc2:  # noqa: BLE001
                    ledger.record_failed(key, _message(exc2))
                    _stop_if_disconnected(exc2)
                    return PostOutcome(key, "failed", r, message=_message(exc2), error_class=type(exc2).__name__)
                if found is not None:
                    posted = _record(ledger, key, found)
                    return PostOutcome(key, "recovered", r, posted, posted_qbo_id(found), posted.total_matches)
            reason = f"QuickBooks rejected the invoice: {_message(exc)}"
            ledger.record_held(key, reasons=[reason], payload=body)
            return PostOutcome(key, "held", r, message=reason, error_class=type(exc).__name__)
        ledger.record_failed(key, _message(exc))
        return PostOutcome(key, "failed", r, message=_message(exc), error_class=type(exc).__name__)
    posted = _record(ledger, key, created)
    message = None
    if not posted.total_matches:
        message = (f"QuickBooks TotalAmt {posted.qbo_total_amt} differs from ours {posted.expected_total}"
                   if posted.qbo_total_tax is None else
                   f"QuickBooks TotalAmt {posted.qbo_total_amt} less its tax {posted.qbo_total_tax} differs from "
                   f"our pre-tax total {posted.expected_total}")
    return PostOutcome(key, "posted", r, posted, posted_qbo_id(created), posted.total_matches, message)


def post_invoice(
    ledger: Ledger,
    qbo: QboInvoiceApi,
    key: str,
    *,
    is_rejection: Callable[[Exception], bool] | None = None,
    **fields: Any,
) -> PostOutcome:
    """Post one invoice draft exactly once (see the module docs): :func:`prepare_invoice`, one
    create call, :func:`finish_invoice`. `fields` are :func:`prepare_invoice`'s keywords. API errors
    become ``failed``/``held`` outcomes, except ``QboReconnectRequired`` (recorded as failed, then
    raised: nothing can be posted until the app is reconnected). Raises ``LedgerConflict`` if
    QuickBooks turns out to hold two invoices for the key, and ledger/database errors as they are.

    `claimant` / `claimant_alive`: see :meth:`Ledger.begin_posting` (a dead run's claim is taken
    over at once, through the DocNumber lookup)."""
    ready = prepare_invoice(ledger, qbo, key, **fields)
    if isinstance(ready, PostOutcome):
        return ready
    try:
        created = qbo.create_invoice(ready.body, ready.request_id)
    except Exception as exc:  # noqa: BLE001 - every API failure is recorded, none is lost
        return finish_invoice(ledger, qbo, ready, error=exc, is_rejection=is_rejection)
    return finish_invoice(ledger, qbo, ready, created=created)


def posted_qbo_id(invoice: Mapping[str, Any]) -> str:
    return str(invoice["Id"])
