"""The sync ledger: what was (about to be) posted to QuickBooks, exactly once (DESIGN §6).

See ``README.md`` in this package for the schema, the state machine and the concurrency model.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from sync_pipelines import money
from sync_pipelines.ledger import redact
from sync_pipelines.ledger._db import create_ledger_engine, read_transaction, write_transaction
from sync_pipelines.ledger.schema import (
    VERSION_TABLE,
    audit_log,
    crm_writebacks,
    invoice_entries,
    invoices,
    webhook_inbox,
)
from sync_pipelines.ledger.types import (
    AuditRecord,
    BeginResult,
    InboxEvent,
    InvoiceRecord,
    LedgerHistory,
    PostedResult,
    Writeback,
)

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
AUDIT_SYSTEMS = ("harvest", "hubspot", "quickbooks", "oauth", "slack")
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


class Ledger:
    """The sync database. Thread-safe; one instance per process is enough.

    ``Ledger(url)`` takes a SQLAlchemy URL (``sqlite:///path/to/file.db`` or
    ``postgresql+psycopg2://...``; a bare ``postgresql://`` is pinned to psycopg2). Call
    :meth:`migrate` once at start-up before anything else.

    ``claim_seconds``: how long a ``"post"`` from :meth:`begin_posting` reserves the key (another
    caller gets ``"busy"`` meanwhile; after it, a crashed attempt is ``"resume_pending"``).
    ``lock_timeout``: seconds to wait for the ledger's write lock. ``clock``: returns an aware UTC
    datetime (tests).
    """

    def __init__(
        self,
        url: str | sa.URL,
        *,
        claim_seconds: float = 300.0,
        lock_timeout: float = 30.0,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.engine = create_ledger_engine(url, lock_timeout=lock_timeout)
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

    def __enter__(self) -> Ledger:
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
        return write_transaction(self.engine, lock_name, lock_timeout=self.lock_timeout)

    def _read(self) -> Any:
        return read_transaction(self.engine)

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

    # -- posting -----------------------------------------------------------------------------

    def begin_posting(
        self,
        key: str,
        *,
        realm_id: str,
        client_key: str,
        period: str,
        group_key: str,
        generation: int,
        payload: dict[str, Any],
        expected_total: Decimal,
        currency: str,
        request_id: str,
        doc_number: str,
        entries: Iterable[tuple[int, int]] = (),
        resume_attempt: int | None = None,
        project_totals: Mapping[int, Decimal] | None = None,
        carry_forward_hours: Decimal | None = None,
    ) -> BeginResult:
        """Decide whether `key` may be posted now, and if so record it as pending first.

        Runs in one locked write transaction. For a new key (or a held key that never reached
        QuickBooks) the row is written as ``pending`` with the exact payload (``money.dumps``),
        its hash, ``request_id``, ``doc_number`` and the entries (status ``pending``), claimed for
        ``claim_seconds``, and committed before this returns ``"post"``. See
        :class:`~sync_pipelines.ledger.types.BeginResult` for every action.

        `resume_attempt`: after a ``"resume_pending"`` whose DocNumber lookup found nothing in
        QuickBooks, pass its ``attempt`` to replace the pending row with this draft and get
        ``"post"`` (unless another process moved the row meanwhile).

        `project_totals` ({Harvest project id: amount}) and `carry_forward_hours` (retainer
        rollover) are the draft's billing facts that later months read back through
        :meth:`history`; they are stored with the draft and not part of the payload hash.
        """
        body = money.dumps(payload)
        facts = {
            "project_totals": _project_totals_text(project_totals),
            "carry_forward_hours": _dec_text(carry_forward_hours, "carry_forward_hours"),
        }
        new_hash = payload_hash(payload)
        total_text = _dec_text(expected_total, "expected_total")
        entry_list = [(int(e), int(c)) for e, c in entries]
        if len({e for e, _ in entry_list}) != len(entry_list):
            raise ValueError(f"{key}: duplicate entry ids in the draft")
        now = self.now()
        claim_until = now + timedelta(seconds=self.claim_seconds)
        new_total = _dec(total_text)

        with self._write() as conn:
            row = conn.execute(sa.select(invoices).where(invoices.c.key == key)).mappings().first()
            if row is None:
                conflicts = self._entry_conflicts(conn, key, [e for e, _ in entry_list])
                status = "held" if conflicts else "pending"
                reasons = self._conflict_reasons(conflicts)
                conn.execute(
                    invoices.insert().values(
                        key=key,
                        realm_id=realm_id,
                        client_key=client_key,
                        period=period,
                        group_key=group_key,
                        generation=int(generation),
                        status=status,
                        payload=body,
                        payload_hash=new_hash,
                        request_id=request_id,
                        doc_number=doc_number,
                        expected_total=total_text,
                        currency=currency,
                        attempts=0 if conflicts else 1,
                        claimed_until=None if conflicts else claim_until,
                        hold_reasons=json.dumps(reasons) if reasons else None,
                        created_at=now,
                        updated_at=now,
                        **facts,
                    )
                )
                self._replace_entries(conn, key, entry_list, now)
                if conflicts:
                    return BeginResult(
                        action="held", key=key, status="held", payload_hash=new_hash, new_total=new_total,
                        reasons=tuple(reasons), conflicting_entries=conflicts, doc_number=doc_number,
                        request_id=request_id,
                    )
                return BeginResult(
                    action="post", key=key, status="pending", payload_hash=new_hash, attempt=1,
                    request_id=request_id, doc_number=doc_number, payload_json=body,
                    claimed_until=claim_until, new_total=new_total,
                )

            status = row["status"]
            stored = dict(
                key=key, stored_hash=row["payload_hash"], qbo_id=row["qbo_id"], sync_token=row["sync_token"],
                qbo_doc_number=row["qbo_doc_number"], qbo_total_amt=_dec(row["qbo_total_amt"]),
                intuit_tid=row["intuit_tid"], old_total=_dec(row["expected_total"]), new_total=new_total,
                doc_number=row["doc_number"], request_id=row["request_id"], attempt=row["attempts"],
                payload_hash=new_hash,
            )
            if status in ("posted", "drift"):
                if new_hash == row["payload_hash"]:
                    if status == "drift":
                        conn.execute(
                            invoices.update().where(invoices.c.key == key).values(
                                status="posted", drift_payload=None, drift_payload_hash=None,
                                drift_expected_total=None, drift_detected_at=None, updated_at=now,
                            )
                        )
                    return BeginResult(action="skip_posted", status="posted", **stored)
                same_drift = row["drift_payload_hash"] == new_hash
                conn.execute(
                    invoices.update().where(invoices.c.key == key).values(
                        status="drift", drift_payload=body, drift_payload_hash=new_hash,
                        drift_expected_total=total_text,
                        drift_detected_at=row["drift_detected_at"] if same_drift else now, updated_at=now,
                    )
                )
                return BeginResult(action="drift", status="drift", **stored)

            if status == "voided":
                nxt = self._next_generation(conn, row["realm_id"], row["client_key"], row["period"], row["group_key"])
                return BeginResult(action="voided", status="voided", next_generation=nxt, **stored)

            # pending / failed / held
            claimed = row["claimed_until"]
            if status == "pending" and claimed is not None and claimed > now:
                return BeginResult(
                    action="busy", status=status, claimed_until=claimed,
                    retry_after_seconds=(claimed - now).total_seconds(), **stored,
                )
            if row["attempts"] > 0 and resume_attempt != row["attempts"]:
                return BeginResult(
                    action="resume_pending", status=status, payload_changed=new_hash != row["payload_hash"],
                    **stored,
                )
            conflicts = self._entry_conflicts(conn, key, [e for e, _ in entry_list])
            if conflicts:
                reasons = self._conflict_reasons(conflicts)
                conn.execute(
                    invoices.update().where(invoices.c.key == key).values(
                        status="held", payload=body, payload_hash=new_hash, expected_total=total_text,
                        currency=currency, hold_reasons=json.dumps(reasons), claimed_until=None, updated_at=now,
                        **facts,
                    )
                )
                self._replace_entries(conn, key, entry_list, now)
                stored["attempt"] = row["attempts"]
                return BeginResult(
                    action="held", status="held", reasons=tuple(reasons), conflicting_entries=conflicts, **stored
                )
            attempt = row["attempts"] + 1
            conn.execute(
                invoices.update().where(invoices.c.key == key).values(
                    status="pending", payload=body, payload_hash=new_hash, expected_total=total_text,
                    currency=currency, request_id=request_id, doc_number=doc_number, attempts=attempt,
                    claimed_until=claim_until, last_error=None, hold_reasons=None, updated_at=now, **facts,
                )
            )
            self._replace_entries(conn, key, entry_list, now)
            return BeginResult(
                action="post", key=key, status="pending", payload_hash=new_hash, stored_hash=row["payload_hash"],
                attempt=attempt, request_id=request_id, doc_number=doc_number, payload_json=body,
                claimed_until=claim_until, new_total=new_total, old_total=_dec(row["expected_total"]),
            )

    def _replace_entries(self, conn: Connection, key: str, entries: list[tuple[int, int]], now: datetime) -> None:
        conn.execute(invoice_entries.delete().where(invoice_entries.c.invoice_key == key))
        for chunk in _chunks(entries):
            conn.execute(
                invoice_entries.insert(),
                [
                    {"invoice_key": key, "entry_id": e, "billed_centi": c, "status": "pending", "updated_at": now}
                    for e, c in chunk
                ],
            )

    def _entry_conflicts(self, conn: Connection, key: str, entry_ids: Sequence[int]) -> dict[int, str]:
        """Entries among `entry_ids` already billed on another key."""
        found: dict[int, str] = {}
        for chunk in _chunks(list(entry_ids)):
            rows = conn.execute(
                sa.select(invoice_entries.c.entry_id, invoice_entries.c.invoice_key).where(
                    invoice_entries.c.entry_id.in_(chunk),
                    invoice_entries.c.status == "billed",
                    invoice_entries.c.invoice_key != key,
                )
            )
            found.update({int(e): k for e, k in rows})
        return found

    @staticmethod
    def _conflict_reasons(conflicts: dict[int, str]) -> list[str]:
        if not conflicts:
            return []
        by_key: dict[str, list[int]] = {}
        for entry, other in sorted(conflicts.items()):
            by_key.setdefault(other, []).append(entry)
        return [
            f"entries already billed on {other}: {', '.join(map(str, ids[:20]))}{' ...' if len(ids) > 20 else ''}"
            for other, ids in by_key.items()
        ]

    def record_posted(
        self,
        key: str,
        *,
        qbo_id: str,
        sync_token: str | None,
        qbo_doc_number: str | None,
        qbo_total_amt: Decimal,
        intuit_tid: str | None = None,
    ) -> PostedResult:
        """QuickBooks confirmed the invoice: record it and mark its entries billed, atomically.

        Compares ``qbo_total_amt`` with our ``expected_total`` exactly; a mismatch keeps the status
        ``posted`` but sets ``total_mismatch`` and a ``last_error`` text, and is returned as
        ``total_matches=False``. Idempotent for the same ``qbo_id``; a different ``qbo_id`` for an
        already posted key raises :class:`LedgerConflict` (two QBO invoices for one key).
        """
        amt_text = _dec_text(qbo_total_amt, "qbo_total_amt")
        amt = Decimal(amt_text)  # type: ignore[arg-type]
        now = self.now()
        conflict: str | None = None
        result: PostedResult | None = None
        with self._write() as conn:
            row = conn.execute(sa.select(invoices).where(invoices.c.key == key)).mappings().first()
            if row is None:
                raise LedgerError(f"record_posted: unknown invoice key {key}")
            expected = _dec(row["expected_total"])
            if row["status"] == "voided":
                raise LedgerError(f"record_posted: {key} is voided")
            if row["status"] in ("posted", "drift") and row["qbo_id"] == str(qbo_id):
                billed = conn.execute(
                    sa.select(sa.func.count()).select_from(invoice_entries).where(
                        invoice_entries.c.invoice_key == key, invoice_entries.c.status == "billed"
                    )
                ).scalar_one()
                result = PostedResult(
                    key=key, total_matches=not row["total_mismatch"], expected_total=expected,
                    qbo_total_amt=_dec(row["qbo_total_amt"]) or amt, entries_billed=int(billed),
                    already_posted=True,
                )
            elif row["status"] in ("posted", "drift"):
                msg = f"QuickBooks holds two invoices for this key: Id {row['qbo_id']} (recorded) and Id {qbo_id}"
                conn.execute(invoices.update().where(invoices.c.key == key).values(last_error=msg, updated_at=now))
                conflict = f"{key}: {msg}"  # raised after the commit, so the record survives
            else:
                matches = expected is not None and expected == amt
                error = None if matches else f"TotalAmt mismatch: QuickBooks {amt_text}, ours {row['expected_total']}"
                conn.execute(
                    invoices.update().where(invoices.c.key == key).values(
                        status="posted", qbo_id=str(qbo_id), sync_token=sync_token, qbo_doc_number=qbo_doc_number,
                        qbo_total_amt=amt_text, intuit_tid=intuit_tid, total_mismatch=not matches,
                        last_error=error, hold_reasons=None, claimed_until=None, posted_at=now, updated_at=now,
                    )
                )
                own = [
                    int(e)
                    for e in conn.execute(
                        sa.select(invoice_entries.c.entry_id).where(invoice_entries.c.invoice_key == key)
                    ).scalars()
                ]
                double = self._entry_conflicts(conn, key, own)
                updated = conn.execute(
                    invoice_entries.update().where(invoice_entries.c.invoice_key == key).values(
                        status="billed", updated_at=now
                    )
                )
                if double:
                    log.error("invoice %s bills %d entries already billed on other invoices", key, len(double))
                if not matches:
                    log.warning("invoice %s: %s", key, error)
                result = PostedResult(
                    key=key, total_matches=matches, expected_total=expected, qbo_total_amt=amt,
                    entries_billed=int(updated.rowcount), double_billed_entries=double,
                )
        if conflict is not None:
            log.error("%s", conflict)
            raise LedgerConflict(conflict)
        assert result is not None
        return result

    def record_failed(self, key: str, error: str) -> bool:
        """QuickBooks refused the invoice (or the call gave up): status ``failed``, entries stay
        unbilled, the claim is released. `error` is redacted and shortened to 500 characters.
        Returns False (and changes nothing) unless the key is pending or failed."""
        text = redact.short_error(error)
        now = self.now()
        with self._write() as conn:
            result = conn.execute(
                invoices.update()
                .where(invoices.c.key == key, invoices.c.status.in_(("pending", "failed")))
                .values(status="failed", last_error=text, claimed_until=None, updated_at=now)
            )
            return bool(result.rowcount)

    def record_held(
        self,
        key: str,
        *,
        reasons: Sequence[str],
        payload: dict[str, Any],
        realm_id: str | None = None,
        client_key: str | None = None,
        period: str | None = None,
        group_key: str | None = None,
        generation: int | None = None,
        expected_total: Decimal | None = None,
        currency: str | None = None,
        request_id: str | None = None,
        doc_number: str | None = None,
        entries: Iterable[tuple[int, int]] = (),
    ) -> str:
        """Record the invoice as held (never posted, reported with `reasons`).

        Creates the row when the key is new (then realm_id, client_key, period, group_key and
        generation are required) or moves a pending/failed/held row to held. A posted, drifted or
        voided key is left alone. Returns the row's status afterwards.
        """
        body = money.dumps(payload)
        new_hash = payload_hash(payload)
        total_text = _dec_text(expected_total, "expected_total")
        clean_reasons = [redact.short_error(r, 300) or "" for r in reasons]
        entry_list = [(int(e), int(c)) for e, c in entries]
        now = self.now()
        with self._write() as conn:
            row = conn.execute(sa.select(invoices.c.status).where(invoices.c.key == key)).first()
            if row is None:
                missing = [
                    n for n, v in (("realm_id", realm_id), ("client_key", client_key), ("period", period),
                                   ("group_key", group_key), ("generation", generation)) if v is None
                ]
                if missing:
                    raise ValueError(f"record_held: new key {key} needs {', '.join(missing)}")
                conn.execute(
                    invoices.insert().values(
                        key=key, realm_id=realm_id, client_key=client_key, period=period, group_key=group_key,
                        generation=int(generation), status="held", payload=body, payload_hash=new_hash,  # type: ignore[arg-type]
                        request_id=request_id, doc_number=doc_number, expected_total=total_text,
                        currency=currency, attempts=0, hold_reasons=json.dumps(clean_reasons),
                        created_at=now, updated_at=now,
                    )
                )
                self._replace_entries(conn, key, entry_list, now)
                return "held"
            if row.status not in ("pending", "failed", "held"):
                return str(row.status)
            values: dict[str, Any] = dict(
                status="held", payload=body, payload_hash=new_hash, hold_reasons=json.dumps(clean_reasons),
                claimed_until=None, updated_at=now,
            )
            if total_text is not None:
                values["expected_total"] = total_text
            if currency is not None:
                values["currency"] = currency
            conn.execute(invoices.update().where(invoices.c.key == key).values(**values))
            if entry_list:
                self._replace_entries(conn, key, entry_list, now)
            return "held"

    def record_voided(self, key: str) -> bool:
        """The invoice was voided or deleted in QuickBooks (CDC / webhook): status ``voided``, its
        entries are released (billable again under the next generation). False if unknown or
        already voided."""
        now = self.now()
        with self._write() as conn:
            result = conn.execute(
                invoices.update()
                .where(invoices.c.key == key, invoices.c.status != "voided")
                .values(status="voided", voided_at=now, claimed_until=None, updated_at=now)
            )
            if not result.rowcount:
                return False
            conn.execute(
                invoice_entries.update().where(invoice_entries.c.invoice_key == key).values(
                    status="released", updated_at=now
                )
            )
            return True

    def release_claim(self, key: str) -> bool:
        """Operator escape hatch: drop the in-flight claim of a pending key so the next
        ``begin_posting`` returns ``"resume_pending"`` at once (e.g. after a known crash)."""
        with self._write() as conn:
            result = conn.execute(
                invoices.update()
                .where(invoices.c.key == key, invoices.c.status == "pending")
                .values(claimed_until=None, updated_at=self.now())
            )
            return bool(result.rowcount)

    def find_by_qbo_id(self, realm_id: str, qbo_id: str) -> InvoiceRecord | None:
        """The invoice recorded with QuickBooks Id `qbo_id` (for CDC voids and deletes)."""
        with self._read() as conn:
            key = conn.execute(
                sa.select(invoices.c.key).where(invoices.c.realm_id == realm_id, invoices.c.qbo_id == str(qbo_id))
            ).scalar_one_or_none()
        return None if key is None else self.get_invoice(key)

    # -- generations & history -----------------------------------------------------------------

    def _next_generation(self, conn: Connection, realm_id: str, client_key: str, period: str, group_key: str) -> int:
        top = conn.execute(
            sa.select(sa.func.max(invoices.c.generation)).where(
                invoices.c.realm_id == realm_id, invoices.c.client_key == client_key,
                invoices.c.period == period, invoices.c.group_key == group_key,
            )
        ).scalar_one_or_none()
        return int(top or 0) + 1

    def next_generation(self, realm_id: str, client_key: str, period: str, group_key: str) -> int:
        """The generation for a re-issue: highest recorded generation + 1 (1 when none)."""
        with self._read() as conn:
            return self._next_generation(conn, realm_id, client_key, period, group_key)

    def history(
        self,
        realm_id: str,
        client_keys: Sequence[str] | None = None,
        period: str | None = None,
        *,
        entry_ids: Iterable[int] | None = None,
    ) -> LedgerHistory:
        """What the billing engine needs (see :class:`LedgerHistory`).

        ``billed_entries`` covers the whole realm (every client and period; limited to `entry_ids`
        when given). ``posted_totals``/``posted_by_key``/``billed_centi`` cover `client_keys` (all
        when None) over all periods, and so does ``project_totals``. ``generations`` covers
        `period` (all when None); ``carryover_hours`` needs `period` (hours carried into it).
        Map it to the billing engine's input with ``sync_pipelines.posting.history.billing_history``.
        """
        inv = invoices.c
        with self._read() as conn:
            billed: dict[int, str] = {}
            q = (
                sa.select(invoice_entries.c.entry_id, invoice_entries.c.invoice_key)
                .join(invoices, invoices.c.key == invoice_entries.c.invoice_key)
                .where(inv.realm_id == realm_id, invoice_entries.c.status == "billed")
            )
            if entry_ids is not None:
                ids = sorted({int(e) for e in entry_ids})
                for chunk in _chunks(ids):
                    billed.update({int(e): k for e, k in conn.execute(q.where(invoice_entries.c.entry_id.in_(chunk)))})
            else:
                billed.update({int(e): k for e, k in conn.execute(q)})

            posted_q = sa.select(
                inv.key, inv.client_key, inv.period, inv.expected_total, inv.project_totals, inv.carry_forward_hours
            ).where(inv.realm_id == realm_id, inv.status.in_(("posted", "drift")))
            if client_keys is not None:
                posted_q = posted_q.where(inv.client_key.in_(list(client_keys)))
            posted_by_key: dict[str, tuple[str, str, Decimal]] = {}
            totals: dict[tuple[str, str], Decimal] = {}
            project_totals: dict[str, dict[int, Decimal]] = {}
            carryover: dict[str, Decimal] = {}
            previous = _previous_period(period) if period is not None else None
            for key, client, per, total, ptotals, carry in conn.execute(posted_q):
                amount = Decimal(total) if total is not None else Decimal(0)
                posted_by_key[key] = (client, per, amount)
                totals[(client, per)] = totals.get((client, per), Decimal(0)) + amount
                if ptotals:
                    project_totals[key] = _project_totals(ptotals)
                if carry is not None and per == previous:
                    carryover[client] = max(carryover.get(client, Decimal(0)), Decimal(carry))

            centi_q = (
                sa.select(inv.client_key, inv.period, sa.func.sum(invoice_entries.c.billed_centi))
                .join(invoices, invoices.c.key == invoice_entries.c.invoice_key)
                .where(inv.realm_id == realm_id, invoice_entries.c.status == "billed")
                .group_by(inv.client_key, inv.period)
            )
            if client_keys is not None:
                centi_q = centi_q.where(inv.client_key.in_(list(client_keys)))
            centi = {(c, p): int(s or 0) for c, p, s in conn.execute(centi_q)}

            gen_q = sa.select(inv.client_key, inv.period, inv.group_key, inv.generation, inv.status).where(
                inv.realm_id == realm_id
            )
            if client_keys is not None:
                gen_q = gen_q.where(inv.client_key.in_(list(client_keys)))
            if period is not None:
                gen_q = gen_q.where(inv.period == period)
            latest: dict[tuple[str, str, str], tuple[int, str]] = {}
            for client, per, group, gen, status in conn.execute(gen_q):
                k = (client, per, group)
                if k not in latest or gen > latest[k][0]:
                    latest[k] = (int(gen), status)
            generations = {k: (g + 1 if st == "voided" else g) for k, (g, st) in latest.items()}
        return LedgerHistory(
            billed_entries=billed, posted_totals=totals, generations=generations,
            posted_by_key=posted_by_key, billed_centi=centi, project_totals=project_totals,
            carryover_hours=carryover,
        )

    # -- reading -----------------------------------------------------------------------------

    def _record(self, row: Any, entries: tuple[tuple[int, int, str], ...] = ()) -> InvoiceRecord:
        reasons = tuple(json.loads(row["hold_reasons"])) if row["hold_reasons"] else ()
        return InvoiceRecord(
            key=row["key"], realm_id=row["realm_id"], client_key=row["client_key"], period=row["period"],
            group_key=row["group_key"], generation=int(row["generation"]), status=row["status"],
            payload_hash=row["payload_hash"], request_id=row["request_id"], doc_number=row["doc_number"],
            qbo_id=row["qbo_id"], sync_token=row["sync_token"], qbo_doc_number=row["qbo_doc_number"],
            qbo_total_amt=_dec(row["qbo_total_amt"]), expected_total=_dec(row["expected_total"]),
            currency=row["currency"], intuit_tid=row["intuit_tid"], last_error=row["last_error"],
            attempts=int(row["attempts"]), total_mismatch=bool(row["total_mismatch"]), hold_reasons=reasons,
            created_at=row["created_at"], updated_at=row["updated_at"], posted_at=row["posted_at"],
            voided_at=row["voided_at"], claimed_until=row["claimed_until"],
            drift_payload_hash=row["drift_payload_hash"], drift_expected_total=_dec(row["drift_expected_total"]),
            drift_detected_at=row["drift_detected_at"], payload_json=row["payload"],
            drift_payload_json=row["drift_payload"], entries=entries,
            project_totals=_project_totals(row["project_totals"]), carry_forward_hours=_dec(row["carry_forward_hours"]),
        )

    def get_invoice(self, key: str) -> InvoiceRecord | None:
        """One invoice with its payload and entries (None if unknown)."""
        with self._read() as conn:
            row = conn.execute(sa.select(invoices).where(invoices.c.key == key)).mappings().first()
            if row is None:
                return None
            entries = tuple(
                (int(e), int(c), s)
                for e, c, s in conn.execute(
                    sa.select(invoice_entries.c.entry_id, invoice_entries.c.billed_centi, invoice_entries.c.status)
                    .where(invoice_entries.c.invoice_key == key)
                    .order_by(invoice_entries.c.entry_id)
                )
            )
        return self._record(row, entries)

    def status(
        self, period: str | None = None, client: str | None = None, *, realm_id: str | None = None,
        statuses: Sequence[str] | None = None,
    ) -> list[InvoiceRecord]:
        """Invoices for ``sync-pipelines ledger status`` (ordered by period, client, group,
        generation); entries are not loaded (use :meth:`get_invoice`)."""
        q = sa.select(invoices)
        if period is not None:
            q = q.where(invoices.c.period == period)
        if client is not None:
            q = q.where(invoices.c.client_key == client)
        if realm_id is not None:
            q = q.where(invoices.c.realm_id == realm_id)
        if statuses is not None:
            q = q.where(invoices.c.status.in_(list(statuses)))
        q = q.order_by(invoices.c.period, invoices.c.client_key, invoices.c.group_key, invoices.c.generation)
        with self._read() as conn:
            return [self._record(r) for r in conn.execute(q).mappings()]

    # -- audit (AuditSink) ---------------------------------------------------------------------

    def audit(
        self,
        system: str,
        method: str,
        path: str,
        status: int | None,
        duration_ms: int,
        request_id: str | None = None,
        trace_id: str | None = None,
        error: str | None = None,
    ) -> None:
        """Record one API call. The path loses its scheme, host, query string and fragment; every
        text field is redacted (known tokens, bearer credentials, secret-named parameters, long
        opaque strings). Never raises: a failure to audit is logged, the API call goes on."""
        try:
            values = dict(
                at=self.now(),
                system=(system or "?").lower()[:16],
                method=(method or "?").upper()[:10],
                path=redact.clean_path(path),
                status=None if status is None else int(status),
                duration_ms=None if duration_ms is None else int(duration_ms),
                request_id=(redact.redact(str(request_id)) or "")[:64] if request_id else None,
                trace_id=(redact.redact(str(trace_id)) or "")[:128] if trace_id else None,
                error=redact.short_error(error, 300) if error else None,
            )
            with self.engine.begin() as conn:
                conn.execute(audit_log.insert().values(**values))
        except Exception:  # noqa: BLE001 - auditing must never break the API call
            log.warning("could not write an audit row for %s %s", system, method, exc_info=True)

    def audit_records(self, limit: int = 100, system: str | None = None) -> list[AuditRecord]:
        """The latest audit rows, newest first."""
        q = sa.select(audit_log).order_by(audit_log.c.id.desc()).limit(limit)
        if system is not None:
            q = q.where(audit_log.c.system == system)
        with self._read() as conn:
            return [AuditRecord(**dict(r)) for r in conn.execute(q).mappings()]

    def prune_audit(self, older_than: datetime) -> int:
        """Delete audit rows older than `older_than`; returns how many."""
        with self.engine.begin() as conn:
            return int(conn.execute(audit_log.delete().where(audit_log.c.at < older_than)).rowcount)

    # -- CRM write-back ------------------------------------------------------------------------

    def enqueue_writeback(self, key: str, deal_id: str, properties: dict[str, Any]) -> str:
        """Queue the deal update for a posted invoice (idempotent: an existing row keeps its
        status; a pending/failed one gets the new properties). Returns the row's status."""
        now = self.now()
        body = money.dumps(properties)
        with self._write() as conn:
            row = conn.execute(
                sa.select(crm_writebacks.c.status).where(
                    crm_writebacks.c.invoice_key == key, crm_writebacks.c.deal_id == str(deal_id)
                )
            ).first()
            if row is None:
                conn.execute(
                    crm_writebacks.insert().values(
                        invoice_key=key, deal_id=str(deal_id), properties=body, status="pending", attempts=0,
                        created_at=now, updated_at=now,
                    )
                )
                return "pending"
            if row.status == "done":
                return "done"
            conn.execute(
                crm_writebacks.update()
                .where(crm_writebacks.c.invoice_key == key, crm_writebacks.c.deal_id == str(deal_id))
                .values(properties=body, status="pending", updated_at=now)
            )
            return "pending"

    def pending_writebacks(self, limit: int = 100) -> list[Writeback]:
        """Write-backs not done yet whose invoice is posted (oldest first)."""
        q = (
            sa.select(crm_writebacks)
            .join(invoices, invoices.c.key == crm_writebacks.c.invoice_key)
            .where(crm_writebacks.c.status != "done", invoices.c.status.in_(("posted", "drift")))
            .order_by(crm_writebacks.c.updated_at)
            .limit(limit)
        )
        with self._read() as conn:
            return [
                Writeback(
                    invoice_key=r["invoice_key"], deal_id=r["deal_id"], properties_json=r["properties"],
                    status=r["status"], attempts=int(r["attempts"]), last_error=r["last_error"],
                    updated_at=r["updated_at"],
                )
                for r in conn.execute(q).mappings()
            ]

    def record_writeback(self, key: str, deal_id: str, *, ok: bool, error: str | None = None) -> None:
        """Result of one write-back attempt (``done``, or ``failed`` to be retried)."""
        with self._write() as conn:
            conn.execute(
                crm_writebacks.update()
                .where(crm_writebacks.c.invoice_key == key, crm_writebacks.c.deal_id == str(deal_id))
                .values(
                    status="done" if ok else "failed", attempts=crm_writebacks.c.attempts + 1,
                    last_error=None if ok else redact.short_error(error), updated_at=self.now(),
                )
            )

    # -- webhook inbox -------------------------------------------------------------------------

    def inbox_put(self, source: str, event_id: str, payload: Any) -> bool:
        """Store a webhook event once per (source, event id); True if it was new."""
        stmt = (
            self._insert(webhook_inbox)
            .values(source=source, event_id=str(event_id), received_at=self.now(), payload=money.dumps(payload))
            .on_conflict_do_nothing(index_elements=[webhook_inbox.c.source, webhook_inbox.c.event_id])
        )
        with self.engine.begin() as conn:
            return bool(conn.execute(stmt).rowcount)

    def inbox_pending(self, limit: int = 100, source: str | None = None) -> list[InboxEvent]:
        q = sa.select(webhook_inbox).where(webhook_inbox.c.processed_at.is_(None)).order_by(webhook_inbox.c.id)
        if source is not None:
            q = q.where(webhook_inbox.c.source == source)
        with self._read() as conn:
            return [
                InboxEvent(
                    id=int(r["id"]), source=r["source"], event_id=r["event_id"], received_at=r["received_at"],
                    payload_json=r["payload"], processed_at=r["processed_at"],
                )
                for r in conn.execute(q.limit(limit)).mappings()
            ]

    def inbox_mark_processed(self, ids: Iterable[int]) -> int:
        ids = [int(i) for i in ids]
        n = 0
        with self.engine.begin() as conn:
            for chunk in _chunks(ids):
                n += int(
                    conn.execute(
                        webhook_inbox.update()
                        .where(webhook_inbox.c.id.in_(chunk), webhook_inbox.c.processed_at.is_(None))
                        .values(processed_at=self.now())
                    ).rowcount
                )
        return n
