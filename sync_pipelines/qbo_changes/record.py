"""Recording: what QuickBooks now holds for our invoices goes into the ledger, then to the CRM.

The ``record_quickbooks_changes`` run calls :func:`record_changes` with the ids a
:class:`~sync_pipelines.qbo_changes.detect.ChangeSet` collected. It reads each invoice's
*current* state (events are late, repeated and out of order, so only the state counts):

- voided in QuickBooks -> ``ledger.record_voided(key)``; deleted -> ``record_voided(key,
  deleted=True)``. Its time entries become billable again, and ``ledger reissue KEY`` needs no
  QuickBooks call;
- paid or partially paid -> ``ledger.record_payment(...)`` (exact Decimal, invoice currency), then
  the invoice's deals get ``billing_status`` and ``amount_paid`` through its ledgered write-back
  rows (retried until done).

It only ever *reads* QuickBooks: accounting is the source of truth for money, and nothing flows
from the CRM back into it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sync_pipelines.connectors.http import ApiNotFound
from sync_pipelines.ledger import Ledger
from sync_pipelines.posting.writeback import WritebackResult, drain_writebacks, writeback_properties
from sync_pipelines.qbo_changes import classify
from sync_pipelines.qbo_changes.classify import ChangeError, InvoiceState
from sync_pipelines.qbo_changes.detect import LIVE


#: Columns of :meth:`RecordedChange.as_row` (the run's "changes" table in the UI).
CHANGE_COLUMNS = ["key", "qbo_id", "change", "client", "period", "amount_paid", "currency", "deals"]


@dataclass(frozen=True)
class RecordedChange:
    key: str
    qbo_id: str
    kind: str  # voided | deleted | paid | partially_paid | unpaid
    client_key: str
    period: str
    amount_paid: str | None = None
    currency: str | None = None
    deals: tuple[str, ...] = ()

    def as_row(self) -> dict[str, Any]:
        return {"key": self.key, "qbo_id": self.qbo_id, "change": self.kind, "client": self.client_key,
                "period": self.period, "amount_paid": self.amount_paid or "", "currency": self.currency or "",
                "deals": ", ".join(self.deals)}


@dataclass
class RecordReport:
    recorded: list[RecordedChange] = field(default_factory=list)
    unchanged: int = 0  # ours, and the ledger already held this state
    not_ours: int = 0  # invoices the ledger never posted (e.g. keyed in by hand)
    problems: list[str] = field(default_factory=list)  # unreadable records, with why
    writebacks: list[WritebackResult] = field(default_factory=list)

    @property
    def failed_writebacks(self) -> list[WritebackResult]:
        return [w for w in self.writebacks if w.status != "done"]


def invoice_states(qbo: Any, invoice_ids: Iterable[str], report: RecordReport) -> dict[str, InvoiceState]:
    """The current state of each invoice: one ``Id IN (...)`` query for all, then a read of each
    one the query did not return, to tell a deletion (610 Object Not Found) from anything else."""
    ids = sorted(set(invoice_ids), key=lambda s: (len(s), s))
    found = qbo.invoices_by_id(ids) if ids else {}
    states: dict[str, InvoiceState] = {}
    for invoice_id in ids:
        row = found.get(invoice_id)
        if row is None:
            try:
                row = qbo.get_invoice(invoice_id)
            except ApiNotFound:
                states[invoice_id] = InvoiceState(invoice_id, classify.DELETED)
                continue
        try:
            states[invoice_id] = classify.invoice_state(row)
        except ChangeError as exc:
            report.problems.append(str(exc))
    return states


def invoices_of_payments(qbo: Any, payment_ids: Iterable[str], report: RecordReport) -> set[str]:
    out: set[str] = set()
    for payment_id in sorted(set(payment_ids)):
        try:
            payment = qbo.get_payment(payment_id)
        except ApiNotFound:
            # Deleted since the event: its invoices' balances changed and CDC brings them.
            report.problems.append(f"Payment {payment_id}: no longer in QuickBooks (deleted); CDC brings its invoices")
            continue
        try:
            out.update(classify.payment_invoice_ids(payment))
        except ChangeError as exc:
            report.problems.append(str(exc))
    return out


def record_changes(
    ledger: Ledger,
    qbo: Any,
    hubspot: Any | None,
    realm_id: str,
    invoice_ids: Iterable[str] = (),
    payment_ids: Iterable[str] = (),
) -> RecordReport:
    """Record the current QuickBooks state of our invoices among `invoice_ids` and the invoices
    the `payment_ids` pay (module docs). `hubspot` None: the ledger is updated and the deal
    updates stay queued for the next run."""
    report = RecordReport()
    wanted = set(invoice_ids) | invoices_of_payments(qbo, payment_ids, report)
    ours = ledger.invoices_by_qbo_id(realm_id, wanted)
    report.not_ours += len(wanted - set(ours))
    live = {i: r for i, r in ours.items() if r.status in LIVE}
    report.unchanged += len(ours) - len(live)  # voided stays voided: no need to ask QuickBooks
    states = invoice_states(qbo, live, report)
    for invoice_id, state in sorted(states.items()):
        record = live[invoice_id]
        if state.kind in (classify.VOIDED, classify.DELETED):
            if ledger.record_voided(record.key, deleted=state.kind == classify.DELETED):
                report.recorded.append(RecordedChange(record.key, invoice_id, state.kind, record.client_key,
                                                      record.period, currency=record.currency))
            else:
                report.unchanged += 1
            continue
        paid = state.amount_paid
        if paid is None or state.balance is None:
            report.unchanged += 1
            continue
        changed = ledger.record_payment(record.key, status=state.kind, amount_paid=paid, balance=state.balance,
                                        sync_token=state.version)
        if not changed:
            report.unchanged += 1
            continue
        deals = ledger.requeue_writebacks(record.key, writeback_properties(ledger.get_invoice(record.key)))
        report.recorded.append(RecordedChange(record.key, invoice_id, state.kind, record.client_key, record.period,
                                              amount_paid=format(paid, "f"), currency=state.currency or record.currency,
                                              deals=tuple(deals)))
    if hubspot is not None and ours:
        # Every pending write-back of these invoices, not only the ones queued now: a retried run
        # finds its payments already recorded and must still finish telling the CRM.
        report.writebacks = drain_writebacks(ledger, hubspot, [r.key for r in ours.values()])
    return report
