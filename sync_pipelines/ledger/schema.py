"""The ledger's tables at the head revision (SQLAlchemy Core).

The migrations in ``migrations/versions`` are the source of truth for the DDL; this module is the
head schema the queries use, and ``test_schema_matches_migrations`` checks that the two agree.

Every table is prefixed ``sync_`` and the Alembic version table is ``sync_alembic_version`` so
that the ledger can share a PostgreSQL database with Dagster's own storage (which has its own
``alembic_version`` table) without either clobbering the other.

Exact numbers: amounts are stored as decimal *text* (``String(40)``, e.g. ``"1234.50"``), never as
a float or as SQLite's lossy NUMERIC affinity; payloads are JSON text written by
:func:`sync_pipelines.money.dumps`, so every Decimal keeps its digits. Timestamps are UTC
(``UtcDateTime`` attaches ``tzinfo=UTC`` on the way out, also on SQLite).
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa

metadata = sa.MetaData()

#: Invoice statuses (``sync_invoices.status``).
INVOICE_STATUSES = ("pending", "posted", "failed", "held", "voided", "drift")
#: Statuses of a (invoice, entry) link (``sync_invoice_entries.status``).
ENTRY_STATUSES = ("pending", "billed", "released")
#: Statuses of a CRM write-back (``sync_crm_writebacks.status``).
WRITEBACK_STATUSES = ("pending", "done", "failed")
#: Payment states of a posted invoice, from QuickBooks' Balance vs TotalAmt (``payment_status``).
PAYMENT_STATUSES = ("unpaid", "partially_paid", "paid")
#: How a voided invoice left QuickBooks (``voided_how``).
VOID_KINDS = ("voided", "deleted")

VERSION_TABLE = "sync_alembic_version"


class UtcDateTime(sa.types.TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend (SQLite stores naive text)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the ledger; use timezone-aware UTC")
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


def _id_type() -> sa.types.TypeEngine[int]:
    # SQLite autoincrements only an INTEGER PRIMARY KEY.
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


Amount = sa.String(40)  # exact decimal text

invoices = sa.Table(
    "sync_invoices",
    metadata,
    sa.Column("key", sa.String(255), primary_key=True),
    sa.Column("realm_id", sa.String(64), nullable=False),
    sa.Column("client_key", sa.String(100), nullable=False),
    sa.Column("period", sa.String(7), nullable=False),
    sa.Column("group_key", sa.String(255), nullable=False),
    sa.Column("generation", sa.Integer, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("payload", sa.Text, nullable=False),
    sa.Column("payload_hash", sa.String(64), nullable=False),
    sa.Column("request_id", sa.String(50)),
    sa.Column("doc_number", sa.String(21)),
    sa.Column("qbo_id", sa.String(64)),
    sa.Column("sync_token", sa.String(32)),
    sa.Column("qbo_doc_number", sa.String(64)),
    sa.Column("qbo_total_amt", Amount),
    sa.Column("expected_total", Amount),
    sa.Column("currency", sa.String(3)),
    sa.Column("intuit_tid", sa.String(128)),
    sa.Column("last_error", sa.Text),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
    sa.Column("posted_at", UtcDateTime),
    # revision 0002
    sa.Column("total_mismatch", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("hold_reasons", sa.Text),  # JSON list of strings
    sa.Column("claimed_until", UtcDateTime),
    sa.Column("voided_at", UtcDateTime),
    sa.Column("drift_payload", sa.Text),
    sa.Column("drift_payload_hash", sa.String(64)),
    sa.Column("drift_expected_total", Amount),
    sa.Column("drift_detected_at", UtcDateTime),
    # revision 0003
    sa.Column("project_totals", sa.Text),  # JSON {"<harvest project id>": amount} (deal caps)
    sa.Column("carry_forward_hours", Amount),  # retainer hours carried into the next period
    # revision 0004: what QuickBooks says happened to the invoice afterwards (CDC / webhooks)
    sa.Column("voided_how", sa.String(16)),  # voided | deleted (status voided)
    sa.Column("payment_status", sa.String(16)),  # unpaid | partially_paid | paid
    sa.Column("amount_paid", Amount),  # TotalAmt - Balance, invoice currency
    sa.Column("qbo_balance", Amount),
    sa.Column("payment_sync_token", sa.String(32)),  # SyncToken of the invoice version read
    sa.Column("payment_seen_at", UtcDateTime),
    # revision 0005: the Dagster run holding the claim (a claim whose run is dead is taken over)
    sa.Column("claimed_by", sa.String(64)),
    # revision 0006
    sa.Column("qbo_total_tax", Amount),  # QuickBooks' TxnTaxDetail.TotalTax (TotalAmt includes it)
    sa.CheckConstraint(
        "status IN ('pending', 'posted', 'failed', 'held', 'voided', 'drift')", name="ck_sync_invoices_status"
    ),
    sa.UniqueConstraint(
        "realm_id", "client_key", "period", "group_key", "generation", name="uq_sync_invoices_natural"
    ),
)
sa.Index("ix_sync_invoices_period_client", invoices.c.period, invoices.c.client_key)
sa.Index("ix_sync_invoices_status", invoices.c.status)
sa.Index("ix_sync_invoices_realm_qbo_id", invoices.c.realm_id, invoices.c.qbo_id)  # revision 0004

invoice_entries = sa.Table(
    "sync_invoice_entries",
    metadata,
    sa.Column(
        "invoice_key",
        sa.String(255),
        sa.ForeignKey("sync_invoices.key", ondelete="CASCADE", name="fk_sync_invoice_entries_invoice"),
        primary_key=True,
    ),
    sa.Column("entry_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("billed_centi", sa.BigInteger, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
    sa.CheckConstraint("status IN ('pending', 'billed', 'released')", name="ck_sync_invoice_entries_status"),
)
sa.Index("ix_sync_invoice_entries_entry", invoice_entries.c.entry_id)

crm_writebacks = sa.Table(
    "sync_crm_writebacks",
    metadata,
    sa.Column(
        "invoice_key",
        sa.String(255),
        sa.ForeignKey("sync_invoices.key", ondelete="CASCADE", name="fk_sync_crm_writebacks_invoice"),
        primary_key=True,
    ),
    sa.Column("deal_id", sa.String(64), primary_key=True),
    sa.Column("properties", sa.Text, nullable=False),  # JSON object (money.dumps)
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("last_error", sa.Text),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
    sa.CheckConstraint("status IN ('pending', 'done', 'failed')", name="ck_sync_crm_writebacks_status"),
)

oauth_tokens = sa.Table(
    "sync_oauth_tokens",
    metadata,
    sa.Column("realm_id", sa.String(64), primary_key=True),
    sa.Column("refresh_token", sa.Text, nullable=False),
    sa.Column("access_token", sa.Text),
    sa.Column("access_expires_at", UtcDateTime),
    sa.Column("refresh_rotated_at", UtcDateTime),
    sa.Column("updated_at", UtcDateTime, nullable=False),
    # revision 0002
    sa.Column("refresh_expires_at", UtcDateTime),
)

audit_log = sa.Table(
    "sync_audit_log",
    metadata,
    sa.Column("id", _id_type(), primary_key=True, autoincrement=True),
    sa.Column("at", UtcDateTime, nullable=False),
    sa.Column("system", sa.String(16), nullable=False),
    sa.Column("method", sa.String(10), nullable=False),
    sa.Column("path", sa.String(512), nullable=False),
    sa.Column("status", sa.Integer),
    sa.Column("duration_ms", sa.Integer),
    sa.Column("request_id", sa.String(64)),
    sa.Column("trace_id", sa.String(128)),
    sa.Column("error", sa.String(300)),
)
sa.Index("ix_sync_audit_log_at", audit_log.c.at)

webhook_inbox = sa.Table(
    "sync_webhook_inbox",
    metadata,
    sa.Column("id", _id_type(), primary_key=True, autoincrement=True),
    sa.Column("source", sa.String(32), nullable=False),
    sa.Column("event_id", sa.String(255), nullable=False),
    sa.Column("received_at", UtcDateTime, nullable=False),
    sa.Column("payload", sa.Text, nullable=False),
    sa.Column("processed_at", UtcDateTime),
    sa.UniqueConstraint("source", "event_id", name="uq_sync_webhook_inbox_event"),
)
sa.Index("ix_sync_webhook_inbox_unprocessed", webhook_inbox.c.processed_at)

# revision 0007: QuickBooks' per-company call budget, shared by every process using this ledger
# (sync_pipelines.ledger.call_budget). Times are epoch milliseconds of the database's clock.
qbo_call_slots = sa.Table(
    "sync_qbo_call_slots",
    metadata,
    sa.Column("id", _id_type(), primary_key=True, autoincrement=True),
    sa.Column("realm_id", sa.String(64), nullable=False),
    sa.Column("kind", sa.String(8), nullable=False),  # "call" (500/min, 10 in flight) or "batch" (40/min)
    sa.Column("started_ms", sa.BigInteger, nullable=False),
    sa.Column("lease_until_ms", sa.BigInteger, nullable=False),  # in flight until finished or this
    sa.Column("finished_ms", sa.BigInteger),
)
sa.Index("ix_sync_qbo_call_slots_realm_started", qbo_call_slots.c.realm_id, qbo_call_slots.c.kind,
         qbo_call_slots.c.started_ms)

qbo_call_pauses = sa.Table(
    "sync_qbo_call_pauses",
    metadata,
    sa.Column("realm_id", sa.String(64), primary_key=True),
    sa.Column("paused_until_ms", sa.BigInteger, nullable=False),  # after a 429: nobody calls before
)
