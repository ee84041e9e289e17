"""CRM write-backs queued in the ledger: the HubSpot deal update for each posted invoice."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from sync_pipelines import money
from sync_pipelines.ledger import redact
from sync_pipelines.ledger.base import LedgerMixinBase
from sync_pipelines.ledger.schema import crm_writebacks, invoices
from sync_pipelines.ledger.types import Writeback


class WritebacksMixin(LedgerMixinBase):
    """Queue, list and record the results of deal write-backs."""

    # -- CRM write-back ------------------------------------------------------------------------

    def enqueue_writeback(self, key: str, deal_id: str, properties: dict[str, Any]) -> str:
        """Queue the deal update for a posted invoice (idempotent: an existing row keeps its
        status; a pending/failed one gets the new properties). Returns the row's status."""
        now = self.now()
        body = money.dumps(properties)
        with self._write() as conn:
            row = conn.execute(
                sa.select(crm_writebacks.c.status).where(
                    crm_writebacks.c.invoice_key == key, crm_writebacks.c.deal_id == str(deal_id)
                )
            ).first()
            if row is None:
                conn.execute(
                    crm_writebacks.insert().values(
                        invoice_key=key, deal_id=str(deal_id), properties=body, status="pending", attempts=0,
                        created_at=now, updated_at=now,
                    )
                )
                return "pending"
            if row.status == "done":
                return "done"
            conn.execute(
                crm_writebacks.update()
                .where(crm_writebacks.c.invoice_key == key, crm_writebacks.c.deal_id == str(deal_id))
                .values(properties=body, status="pending", updated_at=now)
            )
            return "pending"

    def requeue_writebacks(self, key: str, properties: dict[str, Any]) -> list[str]:
        """Send the invoice's deals new properties (e.g. its payment status): every write-back row
        of `key`, done or not, gets `properties` and goes back to ``pending``. Returns the deal
        ids; none when the invoice was never written back (its first write-back will carry the
        ledger's current state)."""
        body = money.dumps(properties)
        now = self.now()
        with self._write() as conn:
            deals = [str(d) for d in conn.execute(
                sa.select(crm_writebacks.c.deal_id).where(crm_writebacks.c.invoice_key == key)
                .order_by(crm_writebacks.c.deal_id)
            ).scalars()]
            if deals:
                conn.execute(
                    crm_writebacks.update().where(crm_writebacks.c.invoice_key == key)
                    .values(properties=body, status="pending", updated_at=now)
                )
        return deals

    def pending_writebacks(self, limit: int = 100) -> list[Writeback]:
        """Write-backs not done yet whose invoice is posted (oldest first)."""
        q = (
            sa.select(crm_writebacks)
            .join(invoices, invoices.c.key == crm_writebacks.c.invoice_key)
            .where(crm_writebacks.c.status != "done", invoices.c.status.in_(("posted", "drift")))
            .order_by(crm_writebacks.c.updated_at)
            .limit(limit)
        )
        with self._read() as conn:
            return [
                Writeback(
                    invoice_key=r["invoice_key"], deal_id=r["deal_id"], properties_json=r["properties"],
                    status=r["status"], attempts=int(r["attempts"]), last_error=r["last_error"],
                    updated_at=r["updated_at"],
                )
                for r in conn.execute(q).mappings()
            ]

    def record_writeback(self, key: str, deal_id: str, *, ok: bool, error: str | None = None) -> None:
        """Result of one write-back attempt (``done``, or ``failed`` to be retried)."""
        with self._write() as conn:
            conn.execute(
                crm_writebacks.update()
                .where(crm_writebacks.c.invoice_key == key, crm_writebacks.c.deal_id == str(deal_id))
                .values(
                    status="done" if ok else "failed", attempts=crm_writebacks.c.attempts + 1,
                    last_error=None if ok else redact.short_error(error), updated_at=self.now(),
                )
            )
