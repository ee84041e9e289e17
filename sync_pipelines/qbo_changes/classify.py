"""What a QuickBooks record or webhook event says happened to an invoice (pure, no I/O).

QuickBooks shows the fate of an invoice in the invoice itself:

- **voided**: the invoice stays, its amounts and quantities zeroed and "Voided" prepended to its
  PrivateNote (Intuit developer blog, "Voiding Invoice Objects", 2016-04-06);
- **deleted**: it is gone; CDC lists it as ``{"status": "Deleted", "Id": ...}`` after the live
  records, a read answers 610 Object Not Found;
- **paid / partially paid**: ``Balance`` (still owed, in the invoice's currency) against
  ``TotalAmt``; a received Payment links the invoices it pays in ``Line[].LinkedTxn``
  (``TxnType`` Invoice).

Webhooks carry ids only and arrive late, twice and out of order, so an event is only a reason to
look at the invoice's *current* state; decisions are made from that state.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sync_pipelines import money

VOIDED = "voided"
DELETED = "deleted"
PAID = "paid"
PARTIALLY_PAID = "partially_paid"
UNPAID = "unpaid"
#: Every kind :func:`invoice_state` returns.
KINDS = (VOIDED, DELETED, PAID, PARTIALLY_PAID, UNPAID)

#: Entities whose changes matter here (CDC and webhooks).
WATCHED_ENTITIES = ("Invoice", "Payment")


class ChangeError(ValueError):
    """A QuickBooks record or inbox event that cannot be read; the message says what and where."""


@dataclass(frozen=True)
class InvoiceState:
    """An invoice as QuickBooks holds it now."""

    qbo_id: str
    kind: str  # one of KINDS
    sync_token: str | None = None
    last_updated: str | None = None
    total: Decimal | None = None
    balance: Decimal | None = None
    currency: str | None = None

    @property
    def amount_paid(self) -> Decimal | None:
        """TotalAmt - Balance, exact, in the invoice's currency (None for voided / deleted)."""
        if self.kind in (VOIDED, DELETED) or self.total is None or self.balance is None:
            return None
        return self.total - self.balance

    @property
    def version(self) -> str:
        """What identifies this state of the invoice (for run keys): SyncToken, else LastUpdatedTime."""
        return str(self.sync_token if self.sync_token is not None else self.last_updated or "")


def is_deleted(record: dict[str, Any]) -> bool:
    return str(record.get("status") or "") == "Deleted"


def is_voided(invoice: dict[str, Any]) -> bool:
    """QuickBooks keeps a voided invoice with zero amounts and "Voided" before its PrivateNote."""
    note = str(invoice.get("PrivateNote") or "")
    try:
        total = money.to_decimal(invoice.get("TotalAmt", "0"), what="TotalAmt")
    except (ArithmeticError, ValueError, TypeError):
        return False
    return note.startswith("Voided") and total == 0


def _record_id(record: Any, where: str) -> str:
    if not isinstance(record, dict):
        raise ChangeError(f"{where}: expected a JSON object, got {type(record).__name__}")
    rid = record.get("Id")
    if rid is None or str(rid).strip() == "":
        raise ChangeError(f"{where}: the record has no Id")
    return str(rid)


def invoice_state(record: dict[str, Any], *, where: str = "Invoice") -> InvoiceState:
    """Classify one Invoice record (a read, a query row or a CDC row, deleted ones included)."""
    qbo_id = _record_id(record, where)
    meta = record.get("MetaData") or {}
    last_updated = meta.get("LastUpdatedTime") if isinstance(meta, dict) else None
    sync_token = None if record.get("SyncToken") is None else str(record["SyncToken"])
    if is_deleted(record):
        return InvoiceState(qbo_id, DELETED, sync_token, last_updated)
    currency = ((record.get("CurrencyRef") or {}).get("value") if isinstance(record.get("CurrencyRef"), dict) else None)
    if is_voided(record):
        return InvoiceState(qbo_id, VOIDED, sync_token, last_updated, Decimal(0), Decimal(0), currency)
    where = f"{where} {qbo_id}"
    try:
        total = money.to_decimal(record["TotalAmt"], what=f"{where} TotalAmt")
        balance = money.to_decimal(record["Balance"], what=f"{where} Balance")
    except KeyError as exc:
        raise ChangeError(f"{where}: missing {exc.args[0]}") from None
    except (TypeError, ValueError) as exc:
        raise ChangeError(str(exc)) from None
    if not (total.is_finite() and balance.is_finite()) or balance < 0 or balance > total:
        raise ChangeError(f"{where}: Balance {balance} is not between 0 and TotalAmt {total}")
    if balance == 0:
        kind = PAID
    elif balance < total:
        kind = PARTIALLY_PAID
    else:
        kind = UNPAID
    return InvoiceState(qbo_id, kind, sync_token, last_updated, total, balance, currency)


def payment_invoice_ids(payment: dict[str, Any], *, where: str = "Payment") -> list[str]:
    """The invoices a Payment pays: its ``Line[].LinkedTxn`` with ``TxnType`` Invoice."""
    pid = _record_id(payment, where)
    lines = payment.get("Line") or []
    if not isinstance(lines, list):
        raise ChangeError(f"{where} {pid}: Line is not a list")
    out: list[str] = []
    for i, line in enumerate(lines):
        linked = line.get("LinkedTxn") if isinstance(line, dict) else None
        for txn in linked or []:
            if not isinstance(txn, dict):
                raise ChangeError(f"{where} {pid}: Line[{i}].LinkedTxn holds a {type(txn).__name__}")
            if txn.get("TxnType") == "Invoice" and txn.get("TxnId") is not None:
                out.append(str(txn["TxnId"]))
    return sorted(set(out), key=lambda s: (len(s), s))


@dataclass(frozen=True)
class EntityChange:
    """One change of a QuickBooks entity, from CDC or the webhook inbox."""

    realm_id: str
    entity: str  # Invoice | Payment | ...
    entity_id: str
    operation: str  # Create | Update | Delete | Void | Merge | Emailed (CDC: Update or Delete)
    version: str  # SyncToken, LastUpdatedTime or the event's time: what makes this change distinct

    @property
    def deleted(self) -> bool:
        return self.operation == "Delete"


def inbox_change(payload: Any, *, where: str = "inbox event") -> EntityChange:
    """An inbox row's payload (the webhook receiver's format, docs/architecture.md) as a change."""
    if not isinstance(payload, dict):
        raise ChangeError(f"{where}: payload is not a JSON object")
    missing = [k for k in ("realm_id", "entity", "entity_id", "operation") if not str(payload.get(k) or "").strip()]
    if missing:
        raise ChangeError(f"{where}: payload has no {', '.join(missing)}")
    return EntityChange(
        realm_id=str(payload["realm_id"]), entity=str(payload["entity"]), entity_id=str(payload["entity_id"]),
        operation=str(payload["operation"]), version=str(payload.get("occurred_at") or ""),
    )


def cdc_change(realm_id: str, entity: str, record: dict[str, Any]) -> EntityChange:
    """A CDC row as a change (deleted rows have ``status: "Deleted"``)."""
    rid = _record_id(record, f"CDC {entity}")
    meta = record.get("MetaData") or {}
    stamp = record.get("SyncToken")
    if stamp is None and isinstance(meta, dict):
        stamp = meta.get("LastUpdatedTime")
    return EntityChange(realm_id, entity, rid, "Delete" if is_deleted(record) else "Update", str(stamp or ""))
