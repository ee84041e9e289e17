"""Engine construction and the ledger's locking write transactions.

Concurrency model (documented in README.md):

* **SQLite**: pysqlite's own transaction handling is switched off and the ledger emits ``BEGIN``
  itself: ``BEGIN IMMEDIATE`` for write transactions (the database write lock is taken *before*
  the first read, so a read-decide-write sequence is serialised across processes; waiting is bounded
  by ``busy_timeout``), plain deferred ``BEGIN`` for reads. WAL journal mode lets readers run while
  a writer holds the lock.
* **PostgreSQL**: every write transaction first takes a transaction-scoped advisory lock
  (``pg_advisory_xact_lock(<ledger namespace>, hashtext(<name>))``) under a ``lock_timeout``; the
  lock is released at commit/rollback, also when the connection dies. Statements after the lock run
  in READ COMMITTED and so see everything committed before the lock was granted.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

#: First key of every advisory lock the ledger takes (ASCII "SYNC"), so they never collide with
#: another application's advisory locks on a shared database.
PG_LOCK_NAMESPACE = 0x53594E43 - (1 << 32) if 0x53594E43 >= (1 << 31) else 0x53594E43

_WRITE_OPTION = "sync_ledger_write"


def normalise_url(url: str | sa.URL) -> sa.URL:
    """A SQLAlchemy URL with ``postgresql://`` pinned to psycopg2 (SQLAlchemy 2.1 maps the bare
    scheme to psycopg 3, which we do not ship)."""
    u = sa.make_url(url)
    if u.drivername in ("postgresql", "postgres"):
        u = u.set(drivername="postgresql+psycopg2")
    return u


def sqlite_file(u: sa.URL) -> Path | None:
    """The database file of a file-based SQLite URL (None for memory databases and other backends)."""
    if u.get_backend_name() != "sqlite":
        return None
    db = u.database
    if not db or db == ":memory:" or db.startswith("file:") or u.query.get("mode") == "memory":
        return None
    return Path(db)


def create_ledger_engine(url: str | sa.URL, *, lock_timeout: float) -> Engine:
    u = normalise_url(url)
    backend = u.get_backend_name()
    if backend == "sqlite":
        path = sqlite_file(u)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(u, connect_args={"timeout": lock_timeout, "check_same_thread": False})
        busy_ms = int(lock_timeout * 1000)
        use_wal = path is not None

        @sa.event.listens_for(engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.isolation_level = None  # the ledger emits BEGIN itself
            cur = dbapi_connection.cursor()
            try:
                cur.execute(f"PRAGMA busy_timeout = {busy_ms}")
                cur.execute("PRAGMA foreign_keys = ON")
                if use_wal:
                    cur.execute("PRAGMA journal_mode = WAL")
            finally:
                cur.close()

        @sa.event.listens_for(engine, "begin")
        def _on_begin(conn: Connection) -> None:
            mode = "IMMEDIATE" if conn.get_execution_options().get(_WRITE_OPTION) else "DEFERRED"
            conn.exec_driver_sql(f"BEGIN {mode}")

        return engine
    if backend == "postgresql":
        return sa.create_engine(u, pool_pre_ping=True)
    raise ValueError(f"unsupported ledger backend {backend!r}: use sqlite:/// or postgresql+psycopg2://")


@contextmanager
def write_transaction(engine: Engine, lock_name: str, *, lock_timeout: float) -> Iterator[Connection]:
    """A transaction holding the ledger's write lock named `lock_name` (commits on success)."""
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            conn.execution_options(**{_WRITE_OPTION: True})
        with conn.begin():
            if engine.dialect.name == "postgresql":
                conn.exec_driver_sql(f"SET LOCAL lock_timeout = {int(lock_timeout * 1000)}")
                conn.execute(
                    sa.text("SELECT pg_advisory_xact_lock(:ns, hashtext(:name))"),
                    {"ns": PG_LOCK_NAMESPACE, "name": lock_name},
                )
            yield conn


@contextmanager
def read_transaction(engine: Engine) -> Iterator[Connection]:
    with engine.connect() as conn, conn.begin():
        yield conn
