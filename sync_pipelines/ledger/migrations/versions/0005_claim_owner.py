"""Who holds a posting claim: the Dagster run that claimed the key.

Revision ID: 0005_claim_owner
Revises: 0004_payments
Create Date: 2026-12-01

Additive: one nullable column. A claim without an owner (written before this revision, or by a
caller that does not say who it is) keeps the old rule: it blocks until `claimed_until`.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_claim_owner"
down_revision = "0004_payments"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("sync_invoices") as batch:
        batch.add_column(sa.Column("claimed_by", sa.String(64)))  # the claiming Dagster run id


def downgrade() -> None:
    with op.batch_alter_table("sync_invoices") as batch:
        batch.drop_column("claimed_by")
