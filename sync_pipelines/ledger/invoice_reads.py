"""Reading invoices back from the ledger: the billing engine's history, one invoice, the status list."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from sync_pipelines.ledger.base import LedgerMixinBase, _chunks, _dec, _previous_period, _project_totals
from sync_pipelines.ledger.schema import invoice_entries, invoices
from sync_pipelines.ledger.types import InvoiceRecord, LedgerHistory


class InvoiceReadsMixin(LedgerMixinBase):
    """Read-only queries over invoices and their entries."""

    # -- history -----------------------------------------------------------------------------

    def history(
        self,
        realm_id: str,
        client_keys: Sequence[str] | None = None,
        period: str | None = None,
        *,
        entry_ids: Iterable[int] | None = None,
    ) -> LedgerHistory:
        """What the billing engine needs (see :class:`LedgerHistory`).

        ``billed_entries`` covers the whole realm (every client and period; limited to `entry_ids`
        when given). ``posted_totals``/``posted_by_key``/``billed_centi`` cover `client_keys` (all
        when None) over all periods, and so does ``project_totals``. ``generations`` covers
        `period` (all when None); ``carryover_hours`` needs `period` (hours carried into it).
        Map it to the billing engine's input with ``sync_pipelines.posting.history.billing_history``.
        """
        inv = invoices.c
        with self._read() as conn:
            billed: dict[int, str] = {}
            q = (
                sa.select(invoice_entries.c.entry_id, invoice_entries.c.invoice_key)
                .join(invoices, invoices.c.key == invoice_entries.c.invoice_key)
                .where(inv.realm_id == realm_id, invoice_entries.c.status == "billed")
            )
            if entry_ids is not None:
                ids = sorted({int(e) for e in entry_ids})
                for chunk in _chunks(ids):
                    billed.update({int(e): k for e, k in conn.execute(q.where(invoice_entries.c.entry_id.in_(chunk)))})
            else:
                billed.update({int(e): k for e, k in conn.execute(q)})

            posted_q = sa.select(
                inv.key, inv.client_key, inv.period, inv.expected_total, inv.project_totals, inv.carry_forward_hours
            ).where(inv.realm_id == realm_id, inv.status.in_(("posted", "drift")))
            if client_keys is not None:
                posted_q = posted_q.where(inv.client_key.in_(list(client_keys)))
            posted_by_key: dict[str, tuple[str, str, Decimal]] = {}
            totals: dict[tuple[str, str], Decimal] = {}
            project_totals: dict[str, dict[int, Decimal]] = {}
            carryover: dict[str, Decimal] = {}
            previous = _previous_period(period) if period is not None else None
            for key, client, per, total, ptotals, carry in conn.execute(posted_q):
                amount = Decimal(total) if total is not None else Decimal(0)
                posted_by_key[key] = (client, per, amount)
                totals[(client, per)] = totals.get((client, per), Decimal(0)) + amount
                if ptotals:
                    project_totals[key] = _project_totals(ptotals)
                if carry is not None and per == previous:
                    carryover[client] = max(carryover.get(client, Decimal(0)), Decimal(carry))

            centi_q = (
                sa.select(inv.client_key, inv.period, sa.func.sum(invoice_entries.c.billed_centi))
                .join(invoices, invoices.c.key == invoice_entries.c.invoice_key)
                .where(inv.realm_id == realm_id, invoice_entries.c.status == "billed")
                .group_by(inv.client_key, inv.period)
            )
            if client_keys is not None:
                centi_q = centi_q.where(inv.client_key.in_(list(client_keys)))
            centi = {(c, p): int(s or 0) for c, p, s in conn.execute(centi_q)}

            gen_q = sa.select(inv.client_key, inv.period, inv.group_key, inv.generation, inv.status).where(
                inv.realm_id == realm_id
            )
            if client_keys is not None:
                gen_q = gen_q.where(inv.client_key.in_(list(client_keys)))
            if period is not None:
                gen_q = gen_q.where(inv.period == period)
            latest: dict[tuple[str, str, str], tuple[int, str]] = {}
            for client, per, group, gen, status in conn.execute(gen_q):
                k = (client, per, group)
                if k not in latest or gen > latest[k][0]:
                    latest[k] = (int(gen), status)
            generations = {k: (g + 1 if st == "voided" else g) for k, (g, st) in latest.items()}
        return LedgerHistory(
            billed_entries=billed, posted_totals=totals, generations=generations,
            posted_by_key=posted_by_key, billed_centi=centi, project_totals=project_totals,
            carryover_hours=carryover,
        )

    # -- reading -----------------------------------------------------------------------------

    def _record(self, row: Any, entries: tuple[tuple[int, int, str], ...] = ()) -> InvoiceRecord:
        reasons = tuple(json.loads(row["hold_reasons"])) if row["hold_reasons"] else ()
        return InvoiceRecord(
            key=row["key"], realm_id=row["realm_id"], client_key=row["client_key"], period=row["period"],
            group_key=row["group_key"], generation=int(row["generation"]), status=row["status"],
            payload_hash=row["payload_hash"], request_id=row["request_id"], doc_number=row["doc_number"],
            qbo_id=row["qbo_id"], sync_token=row["sync_token"], qbo_doc_number=row["qbo_doc_number"],
            qbo_total_amt=_dec(row["qbo_total_amt"]), expected_total=_dec(row["expected_total"]),
            currency=row["currency"], intuit_tid=row["intuit_tid"], last_error=row["last_error"],
            attempts=int(row["attempts"]), total_mismatch=bool(row["total_mismatch"]), hold_reasons=reasons,
            created_at=row["created_at"], updated_at=row["updated_at"], posted_at=row["posted_at"],
            voided_at=row["voided_at"], claimed_until=row["claimed_until"],
            drift_payload_hash=row["drift_payload_hash"], drift_expected_total=_dec(row["drift_expected_total"]),
            drift_detected_at=row["drift_detected_at"], payload_json=row["payload"],
            drift_payload_json=row["drift_payload"], entries=entries,
            project_totals=_project_totals(row["project_totals"]), carry_forward_hours=_dec(row["carry_forward_hours"]),
            voided_how=row["voided_how"], payment_status=row["payment_status"], amount_paid=_dec(row["amount_paid"]),
            qbo_balance=_dec(row["qbo_balance"]), payment_sync_token=row["payment_sync_token"],
            qbo_total_tax=_dec(row["qbo_total_tax"]),
        )

    def get_invoice(self, key: str) -> InvoiceRecord | None:
        """One invoice with its payload and entries (None if unknown)."""
        with self._read() as conn:
            row = conn.execute(sa.select(invoices).where(invoices.c.key == key)).mappings().first()
            if row is None:
                return None
            entries = tuple(
                (int(e), int(c), s)
                for e, c, s in conn.execute(
                    sa.select(invoice_entries.c.entry_id, invoice_entries.c.billed_centi, invoice_entries.c.status)
                    .where(invoice_entries.c.invoice_key == key)
                    .order_by(invoice_entries.c.entry_id)
                )
            )
        return self._record(row, entries)

    def invoices_by_qbo_id(self, realm_id: str, qbo_ids: Iterable[str]) -> dict[str, InvoiceRecord]:
        """The invoices of `realm_id` recorded with one of `qbo_ids`, by QuickBooks Id (entries not
        loaded): one query per 500 ids, for change capture's thousands of lookups per tick."""
        ids = sorted({str(i) for i in qbo_ids})
        out: dict[str, InvoiceRecord] = {}
        with self._read() as conn:
            for chunk in _chunks(ids):
                q = (sa.select(invoices).where(invoices.c.realm_id == realm_id, invoices.c.qbo_id.in_(list(chunk)))
                     .order_by(invoices.c.generation))
                for row in conn.execute(q).mappings():
                    out[str(row["qbo_id"])] = self._record(row)
        return out

    def status(
        self, period: str | None = None, client: str | None = None, *, realm_id: str | None = None,
        statuses: Sequence[str] | None = None,
    ) -> list[InvoiceRecord]:
        """Invoices for ``sync-pipelines ledger status`` (ordered by period, client, group,
        generation); entries are not loaded (use :meth:`get_invoice`)."""
        q = sa.select(invoices)
        if period is not None:
            q = q.where(invoices.c.period == period)
        if client is not None:
            q = q.where(invoices.c.client_key == client)
        if realm_id is not None:
            q = q.where(invoices.c.realm_id == realm_id)
        if statuses is not None:
            q = q.where(invoices.c.status.in_(list(statuses)))
        q = q.order_by(invoices.c.period, invoices.c.client_key, invoices.c.group_key, invoices.c.generation)
        with self._read() as conn:
            return [self._record(r) for r in conn.execute(q).mappings()]
