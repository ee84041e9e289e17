"""QuickBooks' tax on each posted invoice, recorded beside our pre-tax total.

Revision ID: 0006_companies
Revises: 0005_claim_owner
Create Date: 2026-12-01

Additive: one nullable column. Invoices posted before this revision have no recorded tax; their
TotalAmt comparison was made without tax, as before.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_companies"
down_revision = "0005_claim_owner"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("sync_invoices") as batch:
        batch.add_column(sa.Column("qbo_total_tax", sa.String(40)))  # TxnTaxDetail.TotalTax, exact text


def downgrade() -> None:
    with op.batch_alter_table("sync_invoices") as batch:
        batch.drop_column("qbo_total_tax")
