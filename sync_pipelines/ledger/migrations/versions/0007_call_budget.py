"""QuickBooks' per-company call budget shared across processes (slots and 429 pauses).

Revision ID: 0007_call_budget
Revises: 0006_companies
Create Date: 2026-12-01

Additive: two new tables of short-lived rows (a minute of call slots per company, one pause row
per company); no existing data changes.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_call_budget"
down_revision = "0006_companies"
branch_labels = None
depends_on = None


def _id_type() -> sa.types.TypeEngine[int]:
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "sync_qbo_call_slots",
        sa.Column("id", _id_type(), primary_key=True, autoincrement=True),
        sa.Column("realm_id", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("started_ms", sa.BigInteger, nullable=False),
        sa.Column("lease_until_ms", sa.BigInteger, nullable=False),
        sa.Column("finished_ms", sa.BigInteger),
    )
    op.create_index("ix_sync_qbo_call_slots_realm_started", "sync_qbo_call_slots",
                    ["realm_id", "kind", "started_ms"])
    op.create_table(
        "sync_qbo_call_pauses",
        sa.Column("realm_id", sa.String(64), primary_key=True),
        sa.Column("paused_until_ms", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("sync_qbo_call_pauses")
    op.drop_index("ix_sync_qbo_call_slots_realm_started", table_name="sync_qbo_call_slots")
    op.drop_table("sync_qbo_call_slots")
