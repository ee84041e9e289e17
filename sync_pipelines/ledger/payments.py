"""Payments QuickBooks recorded against posted invoices (CDC / webhooks, DESIGN §7).

Accounting is the source of truth for money: the ledger only mirrors what QuickBooks says about
an invoice we posted (its Balance against its TotalAmt), so the CRM can be told. Nothing here is
ever sent to QuickBooks.
"""

from __future__ import annotations

from decimal import Decimal

import sqlalchemy as sa

from sync_pipelines.ledger.base import LedgerError, LedgerMixinBase, _dec_text
from sync_pipelines.ledger.schema import PAYMENT_STATUSES, invoices


def _version(sync_token: str | None) -> int:
    # QuickBooks' SyncToken is a decimal counter bumped on every change of the entity.
    try:
        return int(str(sync_token))
    except (TypeError, ValueError):
        return -1


class PaymentsMixin(LedgerMixinBase):
    """Record an invoice's payment status as QuickBooks reports it."""

    def record_payment(
        self, key: str, *, status: str, amount_paid: Decimal, balance: Decimal, sync_token: str,
    ) -> bool:
        """Store ``status`` (unpaid | partially_paid | paid) and ``amount_paid`` for a posted
        invoice, read from the invoice version ``sync_token``. True when the recorded status or
        amount changed (the CRM must be told).

        Changes arrive out of order and more than once: a version older than the one already
        recorded is ignored, so the ledger always ends at QuickBooks' latest state. A voided,
        held, pending or unknown invoice is left alone (False)."""
        if status not in PAYMENT_STATUSES:
            raise LedgerError(f"record_payment: status must be one of {', '.join(PAYMENT_STATUSES)}, got {status!r}")
        paid_text = _dec_text(amount_paid, "amount_paid")
        balance_text = _dec_text(balance, "balance")
        with self._write() as conn:
            row = conn.execute(
                sa.select(invoices.c.status, invoices.c.payment_status, invoices.c.amount_paid,
                          invoices.c.payment_sync_token).where(invoices.c.key == key)
            ).mappings().first()
            if row is None or row["status"] not in ("posted", "drift"):
                return False
            if row["payment_sync_token"] is not None and _version(sync_token) < _version(row["payment_sync_token"]):
                return False
            changed = row["payment_status"] != status or (
                row["amount_paid"] is None or Decimal(row["amount_paid"]) != Decimal(paid_text or "0")
            )
            now = self.now()
            conn.execute(
                invoices.update().where(invoices.c.key == key).values(
                    payment_status=status, amount_paid=paid_text, qbo_balance=balance_text,
                    payment_sync_token=str(sync_token), payment_seen_at=now, updated_at=now,
                )
            )
            return changed
