"""Several processes (spawned) against one ledger: one "post" per key, one token refresh."""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime, timedelta, timezone

import pytest

from sync_pipelines.ledger import Ledger, TokenSet

from . import _workers
from .conftest import draft

N_PROCS = _workers.N_PROCS
N_KEYS = 12




def test_racing_begin_posting_gives_exactly_one_post(migrated_url: str, pool: ProcessPoolExecutor) -> None:
    ledger_url = migrated_url
    ledger = Ledger(ledger_url)
    try:
        drafts = [draft(client=f"c{i}", entries=[(10_000 + i, 100)]) for i in range(N_KEYS)]
        results = [item for out in _workers.together(pool, _workers.race_begin, [(ledger_url, drafts)] * N_PROCS) for item in out]
        assert len(results) == N_PROCS * N_KEYS
        per_key: dict[str, Counter] = {}
        for key, action in results:
            per_key.setdefault(key, Counter())[action] += 1
        assert len(per_key) == N_KEYS
        for key, counts in per_key.items():
            assert counts == Counter({"post": 1, "busy": N_PROCS - 1}), (key, counts)
        assert {(r.status, r.attempts) for r in ledger.status()} == {("pending", 1)}
    finally:
        ledger.dispose()


def test_token_refresh_is_single_flight_across_processes(migrated_url: str, pool: ProcessPoolExecutor) -> None:
    ledger_url = migrated_url
    ledger = Ledger(ledger_url)
    realm = "9130357"
    try:
        ledger.tokens.save(
            realm,
            TokenSet(refresh_token="RT-original-0001", access_token="AT-expired-0001",
                     access_expires_at=datetime.now(timezone.utc) - timedelta(minutes=5)),
        )
        results = _workers.together(pool, _workers.refresh_once, [(ledger_url, realm, "p1"), (ledger_url, realm, "p2")])
        assert Counter(kind for _, kind, _ in results) == Counter({"refreshed": 1, "reused": 1}), results
        tokens = {tok for _, _, tok in results}
        assert len(tokens) == 1  # the waiter read the token the refresher saved
        stored = ledger.tokens.get(realm)
        assert stored.refresh_token.get_secret_value() == tokens.pop()
        assert stored.access_valid(datetime.now(timezone.utc))
    finally:
        ledger.dispose()


def test_concurrent_migrate(ledger_url: str, pool: ProcessPoolExecutor) -> None:
    probe = Ledger(ledger_url)
    try:
        head = probe.head_revision()  # from the migration scripts; the database is still empty
    finally:
        probe.dispose()
    assert _workers.together(pool, _workers.migrate_worker, [(ledger_url,), (ledger_url,)]) == [head] * 2


def test_sqlite_write_transactions_take_the_lock_up_front(tmp_path) -> None:
    """BEGIN IMMEDIATE: the write lock is held before the first read of a write transaction."""
    import sqlite3

    from sync_pipelines.ledger._db import write_transaction

    path = tmp_path / "ledger.db"
    ledger = Ledger(f"sqlite:///{path}")
    ledger.migrate()
    try:
        with write_transaction(ledger.engine, "invoices", lock_timeout=1) as conn:
            conn.exec_driver_sql("SELECT 1")
            other = sqlite3.connect(path, timeout=0, isolation_level=None)
            try:
                with pytest.raises(sqlite3.OperationalError, match="locked"):
                    other.execute("BEGIN IMMEDIATE")
                assert other.execute("SELECT count(*) FROM sync_invoices").fetchone() == (0,)  # WAL: reads go on
            finally:
                other.close()
        # and a plain read transaction does not block writers
        with ledger._read() as conn:
            conn.exec_driver_sql("SELECT 1")
            other = sqlite3.connect(path, timeout=0, isolation_level=None)
            try:
                other.execute("BEGIN IMMEDIATE")
                other.execute("ROLLBACK")
            finally:
                other.close()
    finally:
        ledger.dispose()
