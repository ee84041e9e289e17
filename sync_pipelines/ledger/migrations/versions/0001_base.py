"""Base ledger schema: invoices, invoice entries, CRM write-backs, OAuth tokens, audit, inbox.

Revision ID: 0001_base
Revises:
Create Date: 2026-11-22

Frozen: never edit a released revision; add a new one.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001_base"
down_revision = None
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
AMOUNT = sa.String(40)


def _id() -> sa.types.TypeEngine:
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "sync_invoices",
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
        sa.Column("qbo_total_amt", AMOUNT),
        sa.Column("expected_total", AMOUNT),
        sa.Column("currency", sa.String(3)),
        sa.Column("intuit_tid", sa.String(128)),
        sa.Column("last_error", sa.Text),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("posted_at", TS),
        sa.CheckConstraint(
            "status IN ('pending', 'posted', 'failed', 'held', 'voided', 'drift')", name="ck_sync_invoices_status"
        ),
        sa.UniqueConstraint(
            "realm_id", "client_key", "period", "group_key", "generation", name="uq_sync_invoices_natural"
        ),
    )
    op.create_index("ix_sync_invoices_period_client", "sync_invoices", ["period", "client_key"])
    op.create_index("ix_sync_invoices_status", "sync_invoices", ["status"])

    op.create_table(
        "sync_invoice_entries",
        sa.Column(
            "invoice_key",
            sa.String(255),
            sa.ForeignKey("sync_invoices.key", ondelete="CASCADE", name="fk_sync_invoice_entries_invoice"),
            primary_key=True,
        ),
        sa.Column("entry_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("billed_centi", sa.BigInteger, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.CheckConstraint("status IN ('pending', 'billed', 'released')", name="ck_sync_invoice_entries_status"),
    )
    op.create_index("ix_sync_invoice_entries_entry", "sync_invoice_entries", ["entry_id"])

    op.create_table(
        "sync_crm_writebacks",
        sa.Column(
            "invoice_key",
            sa.String(255),
            sa.ForeignKey("sync_invoices.key", ondelete="CASCADE", name="fk_sync_crm_writebacks_invoice"),
            primary_key=True,
        ),
        sa.Column("deal_id", sa.String(64), primary_key=True),
        sa.Column("properties", sa.Text, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("last_error", sa.Text),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.CheckConstraint("status IN ('pending', 'done', 'failed')", name="ck_sync_crm_writebacks_status"),
    )

    op.create_table(
        "sync_oauth_tokens",
        sa.Column("realm_id", sa.String(64), primary_key=True),
        sa.Column("refresh_token", sa.Text, nullable=False),
        sa.Column("access_token", sa.Text),
        sa.Column("access_expires_at", TS),
        sa.Column("refresh_rotated_at", TS),
        sa.Column("updated_at", TS, nullable=False),
    )

    op.create_table(
        "sync_audit_log",
        sa.Column("id", _id(), primary_key=True, autoincrement=True),
        sa.Column("at", TS, nullable=False),
        sa.Column("system", sa.String(16), nullable=False),
        sa.Column("method", sa.String(10), nullable=False),
        sa.Column("path", sa.String(512), nullable=False),
        sa.Column("status", sa.Integer),
        sa.Column("duration_ms", sa.Integer),
        sa.Column("request_id", sa.String(64)),
        sa.Column("trace_id", sa.String(128)),
        sa.Column("error", sa.String(300)),
    )
    op.create_index("ix_sync_audit_log_at", "sync_audit_log", ["at"])

    op.create_table(
        "sync_webhook_inbox",
        sa.Column("id", _id(), primary_key=True, autoincrement=True),
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("event_id", sa.String(255), nullable=False),
        sa.Column("received_at", TS, nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("processed_at", TS),
        sa.UniqueConstraint("source", "event_id", name="uq_sync_webhook_inbox_event"),
    )
    op.create_index("ix_sync_webhook_inbox_unprocessed", "sync_webhook_inbox", ["processed_at"])


def downgrade() -> None:
    op.drop_index("ix_sync_webhook_inbox_unprocessed", "sync_webhook_inbox")
    op.drop_table("sync_webhook_inbox")
    op.drop_index("ix_sync_audit_log_at", "sync_audit_log")
    op.drop_table("sync_audit_log")
    op.drop_table("sync_oauth_tokens")
    op.drop_table("sync_crm_writebacks")
    op.drop_index("ix_sync_invoice_entries_entry", "sync_invoice_entries")
    op.drop_table("sync_invoice_entries")
    op.drop_index("ix_sync_invoices_status", "sync_invoices")
    op.drop_index("ix_sync_invoices_period_client", "sync_invoices")
    op.drop_table("sync_invoices")
