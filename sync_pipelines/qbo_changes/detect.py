"""Detection: which of our invoices QuickBooks changed, from the webhook inbox and CDC.

This is what the ``quickbooks_changes`` sensor does each tick, kept cheap: it reads the inbox and
(on its own cadence) one CDC window, keeps only invoices the ledger posted, drops changes the ledger
already reflects, and returns :class:`ChangeSet`\\ s for a run to record. It writes nothing but the
processed marks of inbox events that need no run (not ours, already known, unreadable: the row and
its payload stay in the inbox table). The events a run answers are marked by that run.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from sync_pipelines.ledger import Ledger
from sync_pipelines.ledger.types import InvoiceRecord
from sync_pipelines.qbo_changes import classify, windows
from sync_pipelines.qbo_changes.classify import ChangeError, EntityChange, InvoiceState

#: Ledger statuses of an invoice that exists in QuickBooks (a change to it matters).
LIVE = ("posted", "drift")


def needs_recording(record: InvoiceRecord, state: InvoiceState) -> bool:
    """Whether the ledger does not yet reflect `state` of its invoice `record`."""
    if record.status not in LIVE:
        return False  # voided stays voided; pending/held/failed invoices are the posting's business
    if state.kind in (classify.VOIDED, classify.DELETED):
        return True
    if record.payment_sync_token is not None and state.sync_token is not None:
        try:
            if int(state.sync_token) <= int(record.payment_sync_token):
                return False  # an older (or the same) version than the one recorded
        except ValueError:
            pass
    recorded = (record.payment_status or classify.UNPAID, record.amount_paid or Decimal(0))
    return recorded != (state.kind, state.amount_paid or Decimal(0))


@dataclass
class ChangeSet:
    """The invoices of one realm a run must look at and record."""

    realm_id: str
    invoice_ids: set[str] = field(default_factory=set)
    payment_ids: set[str] = field(default_factory=set)
    versions: set[str] = field(default_factory=set)  # "Invoice:61:3": what makes this set distinct
    inbox_ids: set[int] = field(default_factory=set)

    def __bool__(self) -> bool:
        return bool(self.invoice_ids or self.payment_ids)

    def run_key(self) -> str:
        """Derived from the changes (entity, id, SyncToken / time): the same changes never run twice."""
        digest = hashlib.sha256("\n".join(sorted(self.versions)).encode()).hexdigest()[:24]
        return f"qbo-changes:{self.realm_id}:{digest}"

    def run_config(self) -> dict[str, Any]:
        def ids(values: Iterable[str]) -> list[str]:
            return sorted(values, key=lambda s: (len(s), s))

        return {
            "realm_id": self.realm_id, "invoice_ids": ids(self.invoice_ids), "payment_ids": ids(self.payment_ids),
            "inbox_ids": sorted(self.inbox_ids),
        }


@dataclass
class Detection:
    change_sets: dict[str, ChangeSet] = field(default_factory=dict)
    not_ours: int = 0  # changes of invoices (or payments of invoices) the ledger never posted
    already_known: int = 0  # changes the ledger already reflects
    unreadable: list[str] = field(default_factory=list)  # why each unreadable event/record was skipped
    done_inbox_ids: list[int] = field(default_factory=list)  # inbox events that need no run

    def change_set(self, realm_id: str) -> ChangeSet:
        return self.change_sets.setdefault(realm_id, ChangeSet(realm_id))


def drain_inbox(
    ledger: Ledger, detection: Detection, *, realms: Sequence[str], limit: int = 500,
) -> None:
    """Turn pending QuickBooks inbox events into change sets (ids only: the run reads the state)."""
    changes: list[tuple[int, EntityChange]] = []
    for event in ledger.inbox_pending(limit=limit, source="quickbooks"):
        try:
            changes.append((event.id, classify.inbox_change(event.payload(), where=f"inbox event {event.id} "
                                                                                  f"({event.event_id})")))
        except (ChangeError, ValueError) as exc:
            detection.unreadable.append(str(exc))
            detection.done_inbox_ids.append(event.id)
    known = {
        realm: ledger.invoices_by_qbo_id(realm, {c.entity_id for _, c in changes
                                                 if c.realm_id == realm and c.entity == "Invoice"})
        for realm in {c.realm_id for _, c in changes if c.realm_id in realms}
    }
    for event_id, change in changes:
        if change.realm_id not in realms:
            # Not a company this code location connects to: CDC of that company catches up once
            # it is connected; the event stays in the inbox table, marked processed.
            detection.not_ours += 1
            detection.done_inbox_ids.append(event_id)
        elif change.entity == "Invoice":
            record = known[change.realm_id].get(change.entity_id)
            if record is None:
                detection.not_ours += 1
            elif record.status not in LIVE:
                detection.already_known += 1
            else:
                cs = detection.change_set(change.realm_id)
                cs.invoice_ids.add(change.entity_id)
                cs.versions.add(_version(change))
                cs.inbox_ids.add(event_id)
                continue
            detection.done_inbox_ids.append(event_id)
        elif change.entity == "Payment" and not change.deleted:
            cs = detection.change_set(change.realm_id)
            cs.payment_ids.add(change.entity_id)
            cs.versions.add(_version(change))
            cs.inbox_ids.add(event_id)
        else:
            # Other entities, and deleted payments (they cannot be read any more; the invoices'
            # new balances come through CDC).
            detection.not_ours += 1
            detection.done_inbox_ids.append(event_id)


def _version(change: EntityChange) -> str:
    return f"{change.entity}:{change.entity_id}:{change.operation}:{change.version}"


@dataclass(frozen=True)
class CdcPoll:
    cursor: dict[str, str]  # entity -> ISO start of the next read
    gap: tuple[str, str] | None = None  # (old cursor, restart) when the cursor was past 30 days
    overflow: bool = False
    reads: int = 0
    complete: bool = True  # False: more changes wait beyond max_reads responses (read again soon)


def poll_cdc(
    ledger: Ledger,
    qbo: Any,
    realm_id: str,
    cursor: dict[str, str],
    detection: Detection,
    *,
    now: Callable[[], datetime],
    max_reads: int = 10,
    cap: int = windows.CDC_MAX_OBJECTS,
) -> CdcPoll:
    """Read CDC for Invoice and Payment since `cursor` (one read per entity, more when a response
    is full), add the changes of our invoices to `detection`, and return the advanced cursor.

    Each entity is read on its own so each gets CDC's whole 1,000-object allowance. The cursor of
    an entity moves only over responses fully processed; an API error propagates with the cursor
    unchanged (the caller keeps its old one)."""
    new_cursor = dict(cursor)
    gap: tuple[str, str] | None = None
    overflow = False
    reads = 0
    complete = True
    for entity in classify.WATCHED_ENTITIES:
        begin = windows.window_start(windows.parse_time(cursor.get(entity)), now())
        if begin.gap_from is not None and gap is None:
            gap = (begin.gap_from.isoformat(), begin.start.isoformat())
        # Whole seconds, as Intuit's examples write changedSince; flooring only widens the window.
        start = begin.start.replace(microsecond=0)
        for _ in range(max_reads):
            requested_at = now()
            records = qbo.cdc([entity], start).get(entity, [])
            reads += 1
            _add_cdc_records(ledger, realm_id, entity, records, detection)
            outcome = windows.after_read(start, requested_at, records, cap)
            overflow = overflow or outcome.overflow
            start = outcome.next_start.replace(microsecond=0)
            new_cursor[entity] = start.isoformat()
            if outcome.complete:
                break
        else:
            complete = False
    return CdcPoll(new_cursor, gap, overflow, reads, complete)


def _add_cdc_records(
    ledger: Ledger, realm_id: str, entity: str, records: Sequence[dict[str, Any]], detection: Detection,
) -> None:
    # Classify the whole response first, then look all its invoices up in the ledger at once.
    states: list[InvoiceState] = []
    paid_by: list[tuple[str, str]] = []  # (invoice id, version of the payment)
    for record in records:
        try:
            if entity == "Invoice":
                states.append(classify.invoice_state(record, where="CDC Invoice"))
            elif classify.is_deleted(record):
                detection.not_ours += 1  # a deleted payment: its invoices' CDC rows carry the new balances
            else:
                change = classify.cdc_change(realm_id, entity, record)
                for invoice_id in classify.payment_invoice_ids(record, where="CDC Payment"):
                    paid_by.append((invoice_id, f"Payment:{change.entity_id}:{change.version}:Invoice:{invoice_id}"))
        except ChangeError as exc:
            detection.unreadable.append(str(exc))
    known = ledger.invoices_by_qbo_id(realm_id, [s.qbo_id for s in states] + [i for i, _ in paid_by])
    for state in states:
        record = known.get(state.qbo_id)
        if record is None:
            detection.not_ours += 1
        elif not needs_recording(record, state):
            detection.already_known += 1
        else:
            _add(detection, realm_id, state.qbo_id, f"Invoice:{state.qbo_id}:{state.version}")
    for invoice_id, version in paid_by:
        record = known.get(invoice_id)
        if record is None:
            detection.not_ours += 1
        elif record.status not in LIVE:
            detection.already_known += 1
        else:
            _add(detection, realm_id, invoice_id, version)


def _add(detection: Detection, realm_id: str, invoice_id: str, version: str) -> None:
    cs = detection.change_set(realm_id)
    cs.invoice_ids.add(invoice_id)
    cs.versions.add(version)
