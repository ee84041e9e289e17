"""Billing facts the next month needs: per-project totals (deal not-to-exceed caps) and the
retainer hours carried forward (rollover).

Revision ID: 0003_billing_facts
Revises: 0002_posting_safety
Create Date: 2026-11-23

Additive: two nullable columns; existing invoices simply have none (their projects count as zero
towards a deal cap and they carry no hours forward, as before this revision).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_billing_facts"
down_revision = "0002_posting_safety"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("sync_invoices") as batch:
        batch.add_column(sa.Column("project_totals", sa.Text))  # JSON {"<harvest project id>": amount}
        batch.add_column(sa.Column("carry_forward_hours", sa.String(40)))  # exact decimal text


def downgrade() -> None:
    with op.batch_alter_table("sync_invoices") as batch:
        batch.drop_column("carry_forward_hours")
        batch.drop_column("project_totals")
