"""Schema migrations: idempotent, upgrade a live ledger without loss, match the head schema."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal

import sqlalchemy as sa

from sync_pipelines.ledger import Ledger
from sync_pipelines.ledger.schema import metadata

from .conftest import REALM, draft


def _snapshot(engine: sa.Engine) -> dict[str, list[tuple]]:
    out = {}
    with engine.connect() as conn:
        for table in metadata.sorted_tables:
            if not sa.inspect(conn).has_table(table.name):  # added by a later revision (0007)
                continue
            cols = [c.name for c in table.columns if c.name in {x["name"] for x in sa.inspect(conn).get_columns(table.name)}]
            out[table.name] = sorted(
                tuple(map(str, r)) for r in conn.execute(sa.text(f"SELECT {', '.join(cols)} FROM {table.name}"))
            )
    return out


def _assert_kept(before: dict[str, list[tuple]], after: dict[str, list[tuple]]) -> None:
    """Every old column of every old row is intact (new columns come after the old ones)."""
    for table, rows in before.items():
        if rows:
            assert [r[: len(rows[0])] for r in after[table]] == rows, table
        else:
            assert after[table] == [], table


def test_migrate_twice_is_a_noop(ledger_url: str) -> None:
    ledger = Ledger(ledger_url)
    try:
        assert ledger.current_revision() is None
        ledger.migrate()
        head = ledger.head_revision()
        assert ledger.current_revision() == head == "0007_call_budget"
        d = draft()
        key = d.pop("key")
        ledger.begin_posting(key, **d)
        ledger.audit("quickbooks", "POST", "/v3/company/1/invoice", 200, 12)
        before = _snapshot(ledger.engine)
        ledger.migrate()
        ledger.migrate()
        assert ledger.current_revision() == head
        assert _snapshot(ledger.engine) == before
        with ledger.engine.connect() as conn:
            tables = set(sa.inspect(conn).get_table_names())
        assert {t.name for t in metadata.sorted_tables} | {"sync_alembic_version"} <= tables
        assert "alembic_version" not in tables  # never collides with Dagster's own version table
    finally:
        ledger.dispose()


def test_upgrade_from_base_keeps_data(ledger_url: str) -> None:
    ledger = Ledger(ledger_url)
    try:
        ledger.migrate("0001_base")
        assert ledger.current_revision() == "0001_base"
        now = datetime(2026, 10, 31, 12, 0, tzinfo=timezone.utc)
        d = draft()
        key = d["key"]
        with ledger.engine.begin() as conn:
            conn.execute(
                sa.text(
                    "INSERT INTO sync_invoices (key, realm_id, client_key, period, group_key, generation, status,"
                    " payload, payload_hash, request_id, doc_number, qbo_id, sync_token, qbo_doc_number,"
                    " qbo_total_amt, expected_total, currency, intuit_tid, attempts, created_at, updated_at, posted_at)"
                    " VALUES (:key, :realm, 'acme', '2026-10', 'all', 1, 'posted', :payload, :hash, :rid, :doc,"
                    " '130', '0', :doc, '1500.01', '1500.00', 'USD', 'tid-1', 1, :now, :now, :now)"
                ),
                dict(key=key, realm=REALM, payload='{"Line": [{"Amount": 1500.00}]}', hash="0" * 64,
                     rid=d["request_id"], doc=d["doc_number"], now=now),
            )
            conn.execute(
                sa.text(
                    "INSERT INTO sync_invoice_entries (invoice_key, entry_id, billed_centi, status, updated_at)"
                    " VALUES (:key, 1001, 400, 'billed', :now), (:key, 1002, 600, 'billed', :now)"
                ),
                dict(key=key, now=now),
            )
            conn.execute(
                sa.text(
                    "INSERT INTO sync_oauth_tokens (realm_id, refresh_token, access_token, updated_at)"
                    " VALUES (:realm, 'RT-before-upgrade-0001', NULL, :now)"
                ),
                dict(realm=REALM, now=now),
            )
            conn.execute(
                sa.text(
                    "INSERT INTO sync_crm_writebacks (invoice_key, deal_id, properties, status, attempts, created_at, updated_at)"
                    " VALUES (:key, '8805', '{}', 'pending', 0, :now, :now)"
                ),
                dict(key=key, now=now),
            )
        before = _snapshot(ledger.engine)

        ledger.migrate("0002_posting_safety")  # step by step, as a ledger that lived through each release
        assert ledger.current_revision() == "0002_posting_safety"
        _assert_kept(before, _snapshot(ledger.engine))
        ledger.migrate()
        assert ledger.current_revision() == ledger.head_revision() == "0007_call_budget"
        _assert_kept(before, _snapshot(ledger.engine))
        rec = ledger.get_invoice(key)
        assert rec.status == "posted" and rec.qbo_total_amt == Decimal("1500.01")
        assert rec.qbo_total_tax is None  # 0006: posted before tax was recorded
        assert rec.total_mismatch  # backfilled by 0002
        assert rec.project_totals == {} and rec.carry_forward_hours is None  # 0003 columns empty
        assert rec.entries == ((1001, 400, "billed"), (1002, 600, "billed"))
        assert ledger.history(REALM).billed_entries == {1001: key, 1002: key}
        ts = ledger.tokens.get(REALM)
        assert ts.refresh_token.get_secret_value() == "RT-before-upgrade-0001" and ts.refresh_expires_at is None
        # the upgraded ledger works normally
        d.pop("key")
        assert ledger.begin_posting(key, **d).action == "drift"  # hash differs from the old row's
    finally:
        ledger.dispose()


def test_schema_matches_migrations(ledger: Ledger) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    with ledger.engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True, "version_table": "sync_alembic_version"})
        diff = compare_metadata(ctx, metadata)
    assert diff == []


def test_downgrade_keeps_rows_and_upgrades_again(ledger: Ledger) -> None:
    """SQLite drops columns by copying tables: foreign keys must not cascade-delete entries."""
    from .conftest import post

    d = draft()
    post(ledger, d)
    ledger.tokens.seed(REALM, "RT-downgrade-000001")
    ledger.downgrade("0001_base")
    assert ledger.current_revision() == "0001_base"
    with ledger.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM sync_invoice_entries")).scalar_one() == 2
        assert conn.execute(sa.text("SELECT status FROM sync_invoices")).scalar_one() == "posted"
        cols = {c["name"] for c in sa.inspect(conn).get_columns("sync_invoices")}
        assert "total_mismatch" not in cols and "project_totals" not in cols
    ledger.migrate()
    rec = ledger.get_invoice(d["key"])
    assert rec.status == "posted" and len(rec.entries) == 2 and not rec.total_mismatch
    assert ledger.tokens.get(REALM).refresh_token.get_secret_value() == "RT-downgrade-000001"
    d.pop("key")
    assert ledger.begin_posting(rec.key, **d).action == "skip_posted"
