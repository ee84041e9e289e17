"""Posting safety: TotalAmt mismatch flag, hold reasons, in-flight claim, void time, drift record,
refresh-token expiry.

Revision ID: 0002_posting_safety
Revises: 0001_base
Create Date: 2026-11-22

Additive only (nullable columns or columns with a server default), so it upgrades a live ledger
without touching existing rows. Existing ``drift`` rows keep their status; their drift columns
are simply empty.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_posting_safety"
down_revision = "0001_base"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("sync_invoices") as batch:
        batch.add_column(sa.Column("total_mismatch", sa.Boolean, nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column("hold_reasons", sa.Text))
        batch.add_column(sa.Column("claimed_until", TS))
        batch.add_column(sa.Column("voided_at", TS))
        batch.add_column(sa.Column("drift_payload", sa.Text))
        batch.add_column(sa.Column("drift_payload_hash", sa.String(64)))
        batch.add_column(sa.Column("drift_expected_total", sa.String(40)))
        batch.add_column(sa.Column("drift_detected_at", TS))
    # Backfill: an invoice already posted with a TotalAmt different from ours gets the flag.
    op.execute(
        "UPDATE sync_invoices SET total_mismatch = "
        + ("1" if op.get_bind().dialect.name == "sqlite" else "TRUE")
        + " WHERE qbo_total_amt IS NOT NULL AND expected_total IS NOT NULL"
        " AND CAST(qbo_total_amt AS NUMERIC) <> CAST(expected_total AS NUMERIC)"
    )
    with op.batch_alter_table("sync_oauth_tokens") as batch:
        batch.add_column(sa.Column("refresh_expires_at", TS))


def downgrade() -> None:
    with op.batch_alter_table("sync_oauth_tokens") as batch:
        batch.drop_column("refresh_expires_at")
    with op.batch_alter_table("sync_invoices") as batch:
        for name in (
            "drift_detected_at",
            "drift_expected_total",
            "drift_payload_hash",
            "drift_payload",
            "voided_at",
            "claimed_until",
            "hold_reasons",
            "total_mismatch",
        ):
            batch.drop_column(name)
