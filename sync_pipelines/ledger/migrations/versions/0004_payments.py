"""What QuickBooks says happened to a posted invoice afterwards: voided or deleted, and paid.

Revision ID: 0004_payments
Revises: 0003_billing_facts
Create Date: 2026-12-01

Additive and safe on a live ledger: nullable columns on ``sync_invoices`` and an index on
(``realm_id``, ``qbo_id``). Invoices voided
before this revision keep ``voided_how`` empty (a void whose kind was not recorded); invoices
with no payment seen keep ``payment_status`` empty (shown as unpaid).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_payments"
down_revision = "0003_billing_facts"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("sync_invoices") as batch:
        batch.add_column(sa.Column("voided_how", sa.String(16)))  # voided | deleted
        batch.add_column(sa.Column("payment_status", sa.String(16)))  # unpaid | partially_paid | paid
        batch.add_column(sa.Column("amount_paid", sa.String(40)))  # exact decimal text, invoice currency
        batch.add_column(sa.Column("qbo_balance", sa.String(40)))  # exact decimal text, invoice currency
        batch.add_column(sa.Column("payment_sync_token", sa.String(32)))  # the invoice version it was read from
        batch.add_column(sa.Column("payment_seen_at", sa.DateTime(timezone=True)))
    # Change capture looks invoices up by their QuickBooks Id, thousands per sensor tick.
    op.create_index("ix_sync_invoices_realm_qbo_id", "sync_invoices", ["realm_id", "qbo_id"])


def downgrade() -> None:
    op.drop_index("ix_sync_invoices_realm_qbo_id", table_name="sync_invoices")
    with op.batch_alter_table("sync_invoices") as batch:
        for name in ("payment_seen_at", "payment_sync_token", "qbo_balance", "amount_paid", "payment_status",
                     "voided_how"):
            batch.drop_column(name)
