"""The ledger's foundations: errors, URLs, the payload hash, value helpers, and ``LedgerBase``
(engine, transactions, schema migrations) that the concern mixins of
:class:`~sync_pipelines.ledger.ledger.Ledger` build on.

See ``README.md`` in this package for the schema, the state machine and the concurrency model.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from contextlib import contextmanager, nullcontext
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

import sqlalchemy as sa

from sync_pipelines import money
from sync_pipelines.ledger._db import create_ledger_engine, read_transaction, write_transaction
from sync_pipelines.ledger.schema import VERSION_TABLE

# One logger for the whole ledger, under the name it had before the split into modules, so that
# log filters and handlers configured for it keep working.
log = logging.getLogger("sync_pipelines.ledger.ledger")

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
_INVOICE_LOCK = "invoices"
_CHUNK = 500


class LedgerError(RuntimeError):
    """A request the ledger cannot honour (unknown key, impossible transition)."""


class LedgerConflict(LedgerError):
    """QuickBooks holds two different invoices for one key (recorded in ``last_error``)."""


def default_ledger_url(dagster_home: str) -> str:
    """The default ledger: a SQLite file beside Dagster's own storage."""
    return f"sqlite:///{dagster_home}/sync_ledger.db"


def ledger_url_from_env(environ: Any = None) -> str:
    """``SYNC_DATABASE_URL``, else the default SQLite file under ``DAGSTER_HOME`` (DESIGN §8)."""
    import os

    env = os.environ if environ is None else environ
    url = (env.get("SYNC_DATABASE_URL") or "").strip()
    if url:
        return url
    home = (env.get("DAGSTER_HOME") or "").strip()
    if not home:
        raise LedgerError("set SYNC_DATABASE_URL, or DAGSTER_HOME for the default SQLite ledger")
    return default_ledger_url(home)


def payload_hash(payload: Any) -> str:
    """sha256 of the canonical JSON of `payload` (sorted keys, no spaces, exact Decimals)."""
    canonical = money.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _dec_text(value: Any, what: str) -> str | None:
    if value is None:
        return None
    d = money.to_decimal(value, what=what)
    if not d.is_finite():
        raise ValueError(f"{what}: {d} is not a finite amount")
    return format(d, "f")


def _project_totals_text(totals: Mapping[int, Any] | None) -> str | None:
    if not totals:
        return None
    return money.dumps(
        {str(int(p)): money.to_decimal(v, what=f"project_totals[{p}]") for p, v in sorted(totals.items())}
    )


def _project_totals(text: str | None) -> dict[int, Decimal]:
    if not text:
        return {}
    return {int(p): money.to_decimal(v) for p, v in money.loads(text).items()}


def _previous_period(period: str) -> str:
    year, month = (int(x) for x in period.split("-"))
    return f"{year - 1}-12" if month == 1 else f"{year}-{month - 1:02d}"


def _dec(text: str | None) -> Decimal | None:
    return None if text is None else Decimal(text)


def _chunks(items: Sequence[Any], size: int = _CHUNK) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


class LedgerBase:
    """Engine, transactions and schema of the ledger; the concerns are mixins (see ``Ledger``)."""

    def __init__(
        self,
        url: str | sa.URL,
        *,
        claim_seconds: float = 300.0,
        lock_timeout: float = 30.0,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.engine = create_ledger_engine(url, lock_timeout=lock_timeout)
        self._thread = threading.local()  # the connection of one_transaction, per thread
        self.claim_seconds = claim_seconds
        self.lock_timeout = lock_timeout
        self._clock = clock or (lambda: datetime.now(timezone.utc))
        from sync_pipelines.ledger.tokens import LedgerTokenStore

        self.tokens = LedgerTokenStore(self)

    def __repr__(self) -> str:
        return f"Ledger({self.engine.url.render_as_string(hide_password=True)!r})"

    def now(self) -> datetime:
        return self._clock()

    def dispose(self) -> None:
        """Close pooled connections (call before forking or at exit)."""
        self.engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.dispose()

    # -- plumbing ----------------------------------------------------------------------------

    def _insert(self, table: sa.Table) -> Any:
        if self.engine.dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        return insert(table)

    def _write(self, lock_name: str = _INVOICE_LOCK) -> Any:
        outer = getattr(self._thread, "conn", None)
        if outer is not None:
            return self._joined(outer, lock_name)
        return write_transaction(self.engine, lock_name, lock_timeout=self.lock_timeout)

    def _read(self) -> Any:
        outer = getattr(self._thread, "conn", None)
        if outer is not None:
            return nullcontext(outer)
        return read_transaction(self.engine)

    @contextmanager
    def _joined(self, conn: Any, lock_name: str) -> Iterator[Any]:
        # Inside one_transaction: the outer transaction already holds the invoice lock (SQLite:
        # the database's write lock); PostgreSQL takes the named lock too, held to the commit.
        if lock_name not in self._thread.locks and self.engine.dialect.name == "postgresql":
            from sync_pipelines.ledger._db import PG_LOCK_NAMESPACE

            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:ns, hashtext(:name))"),
                         {"ns": PG_LOCK_NAMESPACE, "name": lock_name})
        self._thread.locks.add(lock_name)
        yield conn

    @contextmanager
    def one_transaction(self) -> Iterator[None]:
        """Every ledger write this thread makes inside the block commits together at its end (one
        commit for a batch's 30 rows instead of 30). Make no API call inside it: the audit row of
        a call is written on its own connection and would wait for this one's lock."""
        if getattr(self._thread, "conn", None) is not None:
            yield
            return
        with write_transaction(self.engine, _INVOICE_LOCK, lock_timeout=self.lock_timeout) as conn:
            self._thread.conn, self._thread.locks = conn, {_INVOICE_LOCK}
            try:
                yield
            finally:
                self._thread.conn = None

    # -- schema ------------------------------------------------------------------------------

    def _alembic_config(self) -> Any:
        from alembic.config import Config

        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
        return cfg

    def migrate(self, revision: str = "head") -> None:
        """Upgrade the schema to `revision` (default head). Idempotent, additive, safe on a live
        ledger; concurrent callers are serialised by the ledger's write lock."""
        from alembic import command

        self._alembic(command.upgrade, revision)

    def downgrade(self, revision: str) -> None:
        """Downgrade the schema to `revision` (operator rollback of a release; drops the newer
        columns and their data, keeps every row)."""
        from alembic import command

        self._alembic(command.downgrade, revision)

    def _alembic(self, fn: Callable[..., Any], revision: str) -> None:
        cfg = self._alembic_config()
        sqlite = self.engine.dialect.name == "sqlite"
        with self.engine.connect() as conn:
            if sqlite:
                # Batch (copy-and-move) migrations must not fire ON DELETE CASCADE; the pragma is a
                # no-op inside a transaction, so set it on the raw connection first.
                conn.connection.driver_connection.execute("PRAGMA foreign_keys = OFF")  # type: ignore[union-attr]
                conn.execution_options(sync_ledger_write=True)
            try:
                with conn.begin():
                    if self.engine.dialect.name == "postgresql":
                        from sync_pipelines.ledger._db import PG_LOCK_NAMESPACE

                        conn.exec_driver_sql(f"SET LOCAL lock_timeout = {int(self.lock_timeout * 1000)}")
                        conn.execute(
                            sa.text("SELECT pg_advisory_xact_lock(:ns, hashtext('migrate'))"),
                            {"ns": PG_LOCK_NAMESPACE},
                        )
                    cfg.attributes["connection"] = conn
                    fn(cfg, revision)
            finally:
                if sqlite:
                    conn.connection.driver_connection.execute("PRAGMA foreign_keys = ON")  # type: ignore[union-attr]

    def current_revision(self) -> str | None:
        """The schema revision stored in the database (None before the first migrate)."""
        with self._read() as conn:
            if not sa.inspect(conn).has_table(VERSION_TABLE):
                return None
            return conn.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar_one_or_none()

    def head_revision(self) -> str:
        from alembic.script import ScriptDirectory

        head = ScriptDirectory.from_config(self._alembic_config()).get_current_head()
        assert head is not None
        return head


if TYPE_CHECKING:
    # What a mixin may use of the base, for the type checker; at run time the mixins are plain
    # classes and ``Ledger`` puts ``LedgerBase`` last in its bases.
    LedgerMixinBase = LedgerBase
else:
    LedgerMixinBase = object
