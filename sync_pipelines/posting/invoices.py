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
:mod:`sync_pipelines.posting.protocol`; this module adds the customers, the held drafts and the
QuickBooks batches (:mod:`sync_pipelines.posting.batches`: 30 invoices a call, every item's ledger
row written before its batch is sent, every item's answer recorded on its own).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from sync_pipelines import money, stopping
from sync_pipelines.connectors.http import ApiError, ApiValidationError
from sync_pipelines.connectors.quickbooks import BATCH_MAX_ITEMS, QboReconnectRequired, QuickBooksClient
from sync_pipelines.ledger import Ledger
from sync_pipelines.posting.drafts import PostingDraft
from sync_pipelines.posting.drift import Drift, compare
from sync_pipelines.posting.batches import TRANSIENT_ROUNDS, batch_item_id, resolve_customers, send_invoice_batch
from sync_pipelines.posting.protocol import NeedsLookup, PostOutcome, ReadyToSend, post_invoice, prepare_invoice

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
    batch_size: int = BATCH_MAX_ITEMS,
    concurrency: int = 3,
) -> list[PostingOutcome]:
    """Post every ready draft, record every held one; never stops half-way through a batch.
    Outcomes come back in the drafts' order.

    Customers are looked up together and the missing ones created in batches; invoices go in
    QuickBooks batches of `batch_size` (≤ 30) items, each item's ledger row committed before its
    batch is sent and each item's answer recorded on its own (:mod:`sync_pipelines.posting.batches`).
    Up to `concurrency` batches are in the air at once (each in its own thread, each with its own
    keys). ``batch_size=1`` (or a client without ``batch``) posts one create call per invoice,
    one after another, through :func:`sync_pipelines.posting.protocol.post_invoice`, the same
    protocol.

    Transient failures leave the key pending or failed in the ledger and come back as ``failed``
    outcomes; the caller decides whether to fail the run (the Dagster asset does, so that a retry
    finishes the job).

    ``QboReconnectRequired`` (QuickBooks refused the refresh token) is raised, not recorded per
    invoice: every further call would fail the same way until an operator reconnects the app.

    A stop request (:mod:`sync_pipelines.stopping`) is honoured between batches only: the drafts
    not yet started come back as ``stopped``. `claimant` / `claimant_alive` go to
    :func:`prepare_invoice` (a dead run's claim is taken over at once).
    """
    drafts = list(drafts)
    outcomes: dict[int, PostingOutcome] = {}
    ready: list[int] = []
    for i, draft in enumerate(drafts):
        if draft.status != "ready":
            outcomes[i] = _hold(draft, ledger, list(draft.hold_reasons))
        else:
            ready.append(i)
    if not 1 <= batch_size <= BATCH_MAX_ITEMS:
        raise ValueError(f"batch_size must be 1..{BATCH_MAX_ITEMS}")
    batching = batch_size > 1 and hasattr(qbo, "batch")

    refs: dict[int, dict[str, str]] = {}
    if ready and not stopping.requested():
        for i, ref in _customer_refs([(i, drafts[i]) for i in ready], qbo, ledger, home_currency, batching,
                                     outcomes).items():
            refs[i] = ref

    todo = [i for i in ready if i in refs]
    rounds = 0
    while todo:
        retry: list[int] = []
        source = iter(todo)
        take = threading.Lock()

        def next_draft() -> int | None:
            with take:
                return next(source, None)

        def stop(i: int) -> None:
            outcomes[i] = _outcome(drafts[i], STOPPED, reasons=[
                f"not attempted: the run was stopped ({stopping.signal_name()})"])

        def one_by_one() -> None:
            while (i := next_draft()) is not None:
                if stopping.requested():
                    stop(i)
                    continue
                result = post_invoice(ledger, qbo, drafts[i].key, **_fields(drafts[i], refs[i], claimant, claimant_alive))
                outcomes[i] = _finish(drafts[i], result, refs[i], ledger)

        def batcher() -> None:
            # Drafts are taken from the shared list a batch at a time; their ledger rows are
            # written in one transaction (one commit for 30 rows), committed before the batch is
            # sent. Keys settled without a call (already posted, drift, busy, recovered by the
            # lookup) leave room that the next drafts fill, so every batch carries `batch_size`.
            while True:
                to_send: list[tuple[int, ReadyToSend]] = []
                while len(to_send) < batch_size:
                    chunk = [i for _ in range(batch_size - len(to_send)) if (i := next_draft()) is not None]
                    if not chunk:
                        break
                    settled: list[tuple[int, PostOutcome]] = []
                    lookups: list[int] = []
                    with ledger.one_transaction():
                        for i in chunk:
                            if stopping.requested():
                                stop(i)
                                continue
                            prepared = prepare_invoice(ledger, qbo, drafts[i].key, lookup=False,
                                                       **_fields(drafts[i], refs[i], claimant, claimant_alive))
                            if isinstance(prepared, NeedsLookup):
                                lookups.append(i)
                            elif isinstance(prepared, PostOutcome):
                                settled.append((i, prepared))
                            else:
                                to_send.append((i, prepared))
                    for i in lookups:  # pending from an earlier attempt: fingerprint lookup first
                        prepared = prepare_invoice(ledger, qbo, drafts[i].key,
                                                   **_fields(drafts[i], refs[i], claimant, claimant_alive))
                        if isinstance(prepared, PostOutcome):
                            settled.append((i, prepared))
                        elif isinstance(prepared, ReadyToSend):
                            to_send.append((i, prepared))
                    for i, result in settled:
                        outcomes[i] = _finish(drafts[i], result, refs[i], ledger)
                if not to_send:
                    return
                for part in _distinct_bids(to_send):
                    sent = send_invoice_batch(ledger, qbo, [r for _, r in part])
                    for (i, _), item in zip(part, sent):
                        outcomes[i] = _finish(drafts[i], item.outcome, refs[i], ledger)
                        if item.transient and rounds < TRANSIENT_ROUNDS:
                            retry.append(i)

        if not batching:
            one_by_one()
        else:
            # A few batches at once: while one waits for QuickBooks (150-400 ms a call, seconds
            # for 30 invoices) the next one's ledger rows are written. The company's call budget
            # (10 in flight, 40 batches a minute) is enforced below, in the client's limiters.
            workers = max(1, min(concurrency, -(-len(todo) // batch_size)))
            if workers == 1:
                batcher()
            else:
                with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="qbo-batch") as pool:
                    for future in [pool.submit(batcher) for _ in range(workers)]:
                        future.result()
        todo, rounds = sorted(retry), rounds + 1
        if todo:
            log.info("re-sending %d invoice(s) whose batch items failed transiently (round %d)", len(todo), rounds)
    for i in ready:
        if i not in outcomes:  # stopped before the customers were resolved
            outcomes[i] = _outcome(drafts[i], STOPPED, reasons=[
                f"not attempted: the run was stopped ({stopping.signal_name()})"])
    return [outcomes[i] for i in range(len(drafts))]


def _distinct_bids(items: list[tuple[int, ReadyToSend]]) -> list[list[tuple[int, ReadyToSend]]]:
    """`items` as batches without two keys of one bId (a 1-in-10^12 chance; never in one batch)."""
    parts: list[list[tuple[int, ReadyToSend]]] = []
    for item in items:
        bid = batch_item_id(item[1].key)
        for part in parts:
            if all(batch_item_id(r.key) != bid for _, r in part):
                part.append(item)
                break
        else:
            parts.append([item])
    return parts


def _fields(draft: PostingDraft, customer_ref: dict[str, str], claimant: str | None,
            claimant_alive: Callable[[str], bool] | None) -> dict[str, Any]:
    return dict(
        **draft.ledger_fields(), payload={**draft.payload, "CustomerRef": customer_ref},
        project_totals=draft.project_totals, carry_forward_hours=draft.carry_forward_hours,
        claimant=claimant, claimant_alive=claimant_alive,
    )


def _finish(draft: PostingDraft, result: PostOutcome, customer_ref: dict[str, str], ledger: Ledger) -> PostingOutcome:
    outcome = _from_protocol(draft, result)
    if outcome.outcome == "drift":
        outcome = _with_drift(outcome, draft, ledger, {**draft.payload, "CustomerRef": customer_ref})
    return outcome


def _customer_refs(
    ready: list[tuple[int, PostingDraft]], qbo: QuickBooksClient, ledger: Ledger, home_currency: str,
    batching: bool, outcomes: dict[int, PostingOutcome],
) -> dict[int, dict[str, str]]:
    """Each ready draft's CustomerRef; a draft whose customer cannot be had is held (refused
    name, currency mismatch) or failed (outage) into `outcomes`."""
    # CurrencyRef is accepted only with multicurrency on, and only at create; a home-currency
    # customer is created without it.
    wanted: dict[str, str | None] = {}
    for _, draft in ready:
        wanted.setdefault(draft.customer_name, draft.currency if draft.currency != home_currency else None)
    customers: dict[str, dict[str, Any] | ApiError] = {}
    if batching:
        customers = resolve_customers(qbo, wanted)
    refs: dict[int, dict[str, str]] = {}
    for i, draft in ready:
        customer = customers.get(draft.customer_name)
        if customer is None:
            try:
                customer = qbo.find_or_create_customer(draft.customer_name, wanted[draft.customer_name])
            except QboReconnectRequired:
                raise
            except ApiError as exc:
                customer = exc
            customers[draft.customer_name] = customer
        if isinstance(customer, ApiValidationError):
            outcomes[i] = _hold(draft, ledger, [f"QuickBooks refused the customer: {customer}"])
            continue
        if isinstance(customer, ApiError):
            outcomes[i] = _outcome(draft, FAILED, reasons=[str(customer)])
            continue
        existing = (customer.get("CurrencyRef") or {}).get("value")
        if existing and existing != draft.currency:
            outcomes[i] = _hold(draft, ledger, [
                f"QuickBooks customer {draft.customer_name!r} is in {existing}, the invoice is in {draft.currency}"])
            continue
        refs[i] = {"value": str(customer["Id"]), "name": customer.get("DisplayName", draft.customer_name)}
    return refs


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
