"""OAuth tokens in the ledger, with single-flight refresh across processes.

Implements the connectors' ``TokenStore`` protocol (``sync_pipelines.connectors.http``):
``get``/``save``/``refresh_lock``, plus ``seed``. The intended use by the QuickBooks client::

    with store.refresh_lock(realm):          # one refresher per realm, across processes
        ts = store.get(realm)                 # re-read: another process may just have refreshed
        if not ts.access_valid(now):
            new = call_intuit_refresh(ts.refresh_token.get_secret_value())
            store.save(realm, new)            # committed before the new token is used
    # use ts / new

Lock implementation:

* PostgreSQL: a dedicated connection holds ``pg_advisory_xact_lock(<ns>, hashtext('oauth:' ||
  realm))`` for the duration of the block (released at commit, or if the process dies). ``get`` and
  ``save`` run on other connections and do not take that lock, so they never self-deadlock.
* SQLite (file): an exclusive ``flock`` on ``<ledger file>.oauth-<hash of realm>.lock`` beside the
  database, plus a thread lock. A file lock rather than ``BEGIN IMMEDIATE`` because the database
  write lock would also block every audit row and invoice update (from this very process too)
  while the HTTP refresh is in flight.
* SQLite in memory: a thread lock (one process by definition).

Token values are registered with :mod:`sync_pipelines.ledger.redact`, so they can never reach an
audit row or an error text written by the ledger; ``TokenSet`` keeps them in ``SecretStr``.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from sync_pipelines.ledger import redact
from sync_pipelines.ledger._db import PG_LOCK_NAMESPACE, read_transaction, sqlite_file
from sync_pipelines.ledger.schema import oauth_tokens

try:  # one TokenSet class for connectors and ledger
    from sync_pipelines.connectors.http import TokenSet
except Exception:  # pragma: no cover - connectors unavailable: a compatible model
    from datetime import timedelta

    from pydantic import BaseModel, ConfigDict, SecretStr

    class TokenSet(BaseModel):  # type: ignore[no-redef]
        model_config = ConfigDict(frozen=True)
        refresh_token: SecretStr
        access_token: SecretStr | None = None
        access_expires_at: datetime | None = None
        refresh_expires_at: datetime | None = None

        def access_valid(self, now: datetime, skew: timedelta = timedelta(seconds=120)) -> bool:
            if self.access_token is None or self.access_expires_at is None:
                return False
            return now + skew < self.access_expires_at


if TYPE_CHECKING:
    from sync_pipelines.ledger.ledger import Ledger

__all__ = ["Connection", "LedgerTokenStore", "TokenSet", "RefreshLockTimeout"]


@dataclass(frozen=True)
class Connection:
    """One realm's stored connection, without its tokens."""

    realm_id: str
    access_expires_at: datetime | None
    refresh_expires_at: datetime | None  # None: QuickBooks did not say (a seeded token)
    refresh_rotated_at: datetime | None
    updated_at: datetime


class RefreshLockTimeout(TimeoutError):
    """Another process held the realm's refresh lock for longer than the timeout."""


def _plain(value: Any) -> str | None:
    if value is None:
        return None
    if hasattr(value, "get_secret_value"):
        value = value.get_secret_value()
    return str(value)


class LedgerTokenStore:
    """QuickBooks OAuth tokens per realm, stored in ``sync_oauth_tokens``."""

    def __init__(self, ledger: Ledger, *, refresh_lock_timeout: float = 120.0) -> None:
        self._ledger = ledger
        self._engine = ledger.engine
        self.refresh_lock_timeout = refresh_lock_timeout
        self._thread_locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def __repr__(self) -> str:
        return f"LedgerTokenStore({self._ledger!r})"

    # -- read / write ------------------------------------------------------------------------

    def get(self, realm: str) -> TokenSet | None:
        """The stored tokens for `realm`, read fresh from the database (None if none stored)."""
        with read_transaction(self._engine) as conn:
            row = conn.execute(sa.select(oauth_tokens).where(oauth_tokens.c.realm_id == realm)).mappings().first()
        if row is None:
            return None
        redact.register_secret(row["refresh_token"])
        redact.register_secret(row["access_token"])
        return TokenSet(
            refresh_token=row["refresh_token"],
            access_token=row["access_token"],
            access_expires_at=row["access_expires_at"],
            refresh_expires_at=row["refresh_expires_at"],
        )

    def save(self, realm: str, tokens: Any) -> None:
        """Store `tokens` for `realm` (committed when this returns: persist before use).

        ``refresh_rotated_at`` moves only when the refresh token actually changed.
        """
        refresh = _plain(tokens.refresh_token)
        if not refresh:
            raise ValueError("refusing to store an empty refresh token")
        access = _plain(getattr(tokens, "access_token", None))
        redact.register_secret(refresh)
        redact.register_secret(access)
        now = self._ledger.now()
        values = {
            "realm_id": realm,
            "refresh_token": refresh,
            "access_token": access,
            "access_expires_at": getattr(tokens, "access_expires_at", None),
            "refresh_expires_at": getattr(tokens, "refresh_expires_at", None),
            "refresh_rotated_at": now,
            "updated_at": now,
        }
        ins = self._ledger._insert(oauth_tokens).values(**values)
        t = oauth_tokens.c
        stmt = ins.on_conflict_do_update(
            index_elements=[t.realm_id],
            set_={
                "refresh_token": ins.excluded.refresh_token,
                "access_token": ins.excluded.access_token,
                "access_expires_at": ins.excluded.access_expires_at,
                "refresh_expires_at": ins.excluded.refresh_expires_at,
                "updated_at": ins.excluded.updated_at,
                "refresh_rotated_at": sa.case(
                    (t.refresh_token != ins.excluded.refresh_token, ins.excluded.refresh_rotated_at),
                    else_=t.refresh_rotated_at,
                ),
            },
        )
        with self._engine.begin() as conn:
            conn.execute(stmt)

    def seed(self, realm: str, refresh_token: str | None) -> bool:
        """Store `refresh_token` for `realm` only if nothing is stored yet (the env var
        ``QBO_REFRESH_TOKEN`` seeds; later rotations live in the ledger and win). True if seeded."""
        if not refresh_token:
            return False
        redact.register_secret(refresh_token)
        now = self._ledger.now()
        stmt = (
            self._ledger._insert(oauth_tokens)
            .values(realm_id=realm, refresh_token=refresh_token, updated_at=now, refresh_rotated_at=now)
            .on_conflict_do_nothing(index_elements=[oauth_tokens.c.realm_id])
        )
        with self._engine.begin() as conn:
            result = conn.execute(stmt)
        return bool(result.rowcount)

    def rotated_at(self, realm: str) -> datetime | None:
        """When the stored refresh token last changed (None if nothing stored)."""
        with read_transaction(self._engine) as conn:
            return conn.execute(
                sa.select(oauth_tokens.c.refresh_rotated_at).where(oauth_tokens.c.realm_id == realm)
            ).scalar_one_or_none()

    def connections(self) -> list[Connection]:
        """Every connected realm with its token expiry, never a token (``sync-pipelines qbo status``)."""
        t = oauth_tokens.c
        with read_transaction(self._engine) as conn:
            rows = conn.execute(
                sa.select(t.realm_id, t.access_expires_at, t.refresh_expires_at, t.refresh_rotated_at, t.updated_at)
                .order_by(t.realm_id)
            ).mappings().all()
        return [Connection(realm_id=r["realm_id"], access_expires_at=r["access_expires_at"],
                           refresh_expires_at=r["refresh_expires_at"], refresh_rotated_at=r["refresh_rotated_at"],
                           updated_at=r["updated_at"]) for r in rows]

    # -- single flight -----------------------------------------------------------------------

    def _thread_lock(self, realm: str) -> threading.Lock:
        with self._guard:
            return self._thread_locks.setdefault(realm, threading.Lock())

    @contextmanager
    def refresh_lock(self, realm: str, timeout: float | None = None) -> Iterator[None]:
        """Hold the refresh lock for `realm` across threads and processes (see module docs).

        Raises :class:`RefreshLockTimeout` after `timeout` seconds (default
        ``refresh_lock_timeout``) of waiting.
        """
        timeout = self.refresh_lock_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        tlock = self._thread_lock(realm)
        if not tlock.acquire(timeout=max(timeout, 0)):
            raise RefreshLockTimeout(f"refresh lock for realm {realm} not acquired within {timeout:.0f}s")
        try:
            if self._engine.dialect.name == "postgresql":
                with self._pg_lock(realm, deadline):
                    yield
            else:
                path = sqlite_file(self._engine.url)
                if path is None:
                    yield
                else:
                    with self._file_lock(path, realm, deadline):
                        yield
        finally:
            tlock.release()

    lock = refresh_lock  # the name docs/architecture.md uses

    @contextmanager
    def _pg_lock(self, realm: str, deadline: float) -> Iterator[None]:
        remaining_ms = max(1, int((deadline - time.monotonic()) * 1000))
        with self._engine.connect() as conn, conn.begin():
            conn.exec_driver_sql(f"SET LOCAL lock_timeout = {remaining_ms}")
            try:
                conn.execute(
                    sa.text("SELECT pg_advisory_xact_lock(:ns, hashtext(:name))"),
                    {"ns": PG_LOCK_NAMESPACE, "name": f"oauth:{realm}"},
                )
            except sa.exc.OperationalError as exc:
                raise RefreshLockTimeout(f"refresh lock for realm {realm} not acquired in time") from exc
            yield

    @contextmanager
    def _file_lock(self, db_path: Any, realm: str, deadline: float) -> Iterator[None]:
        digest = hashlib.sha256(realm.encode()).hexdigest()[:16]
        lock_path = f"{db_path}.oauth-{digest}.lock"
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            _lock_fd(fd, deadline, realm)
            try:
                yield
            finally:
                _unlock_fd(fd)
        finally:
            os.close(fd)


def _lock_fd(fd: int, deadline: float, realm: str) -> None:
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        import msvcrt

        while True:
            try:
                msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
                return
            except OSError:
                if time.monotonic() >= deadline:
                    raise RefreshLockTimeout(f"refresh lock for realm {realm} not acquired in time") from None
                time.sleep(0.05)
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise RefreshLockTimeout(f"refresh lock for realm {realm} not acquired in time") from None
            time.sleep(0.02)


def _unlock_fd(fd: int) -> None:
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        import msvcrt

        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
        return
    fcntl.flock(fd, fcntl.LOCK_UN)


def utc_now() -> datetime:
    return datetime.now(timezone.utc)
