"""QuickBooks' throttle per company, shared by every process that uses this ledger.

Intuit counts per company (realm) and app, whoever calls: ≤ 500 requests a minute, ≤ 10 in flight
(and ≤ 10 a second), ≤ 40 batch calls a minute; beyond that it answers 429. The month-end, a
deal-triggered run and a CLI command can post to one company at once, so an in-process limiter is
not enough: each would believe it has the whole budget.

Here the budget lives in the ledger database (SQLite file or PostgreSQL, the same one every process
already shares): each call takes a slot row in ``sync_qbo_call_slots`` inside a write transaction
holding the ledger lock ``qbo-budget:<realm>`` (SQLite ``BEGIN IMMEDIATE``; a PostgreSQL advisory
lock), after counting the slots of the last minute/second and those still in flight; it marks the
slot finished when the response is read. A 429 writes a pause (``sync_qbo_call_pauses``) that every
process honours before its next call. A process that dies holding a slot loses it after `lease`
seconds (Intuit abandons a request after 120 s).

Why not pyrate-limiter's SQL buckets: they count rates only (no in-flight cap, no shared pause after
a 429), its PostgreSQL bucket wants a psycopg 3 pool beside our psycopg2 engine, and its SQLite
bucket keeps its own file and lock. Two small tables under the ledger's own locks cover both
backends with the locking the ledger already proves in its tests.

Times are epoch milliseconds from the database's clock on PostgreSQL (processes on several
machines agree) and from this machine's clock on SQLite (one machine by construction).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from sync_pipelines.ledger.schema import qbo_call_pauses, qbo_call_slots

if TYPE_CHECKING:
    from sync_pipelines.ledger.ledger import Ledger

#: A slot left behind by a process that died is freed after this many seconds.
DEFAULT_LEASE_SECONDS = 120.0
_IN_FLIGHT_POLL = 0.02  # seconds between looks when all 10 slots are in flight
_MARGIN_MS = 1_000  # added to each minute window (a tenth of it to the second window)
_PRUNE_EVERY = 64  # acquisitions between deletes of slots older than two minutes


class CallBudget:
    """One company's shared budget: :attr:`calls` for every request, :attr:`batches` for batch
    calls on top. Both quack like :class:`sync_pipelines.connectors.http.RateLimiter`
    (``acquire()`` context manager, ``throttled(seconds)``), so ``QuickBooksClient(limiter=...,
    batch_limiter=...)`` takes them as they are."""

    def __init__(
        self,
        ledger: Ledger,
        realm_id: str,
        *,
        per_minute: int = 500,
        per_second: int = 10,
        in_flight: int = 10,
        batches_per_minute: int = 40,
        lease: float = DEFAULT_LEASE_SECONDS,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.ledger = ledger
        self.realm_id = str(realm_id)
        self.per_minute, self.per_second, self.in_flight = per_minute, per_second, in_flight
        self.batches_per_minute = batches_per_minute
        self.lease_ms = int(lease * 1000)
        self._sleep = sleep
        self._lock_name = f"qbo-budget:{self.realm_id}"
        self._taken = itertools.count(1)
        self.waited = 0.0  # seconds this process slept for the budget (tests, metrics)
        self.calls = _Gate(self, "call")
        self.batches = _Gate(self, "batch")

    # -- time
    def _now_ms(self, conn: Connection) -> int:
        if conn.dialect.name == "postgresql":
            return int(conn.execute(sa.text("SELECT (EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::bigint")).scalar_one())
        return time.time_ns() // 1_000_000

    # -- slots
    def _try_take(self, kind: str) -> tuple[int | None, float]:
        """Take a slot (its id, 0) or say how long to wait (None, seconds)."""
        s, p = qbo_call_slots.c, qbo_call_pauses.c
        with self.ledger._write(self._lock_name) as conn:
            now = self._now_ms(conn)
            paused = conn.execute(sa.select(p.paused_until_ms).where(p.realm_id == self.realm_id)).scalar()
            if paused is not None and paused > now:
                return None, (paused - now) / 1000
            mine = (s.realm_id == self.realm_id) & (s.kind == kind)
            # Windows a little longer than Intuit's: our slot starts before the request reaches
            # QuickBooks, and a call arriving a few ms early in its window would be a 429.
            if kind == "batch":
                checks = [(self.batches_per_minute, 60_000 + _MARGIN_MS)]
            else:
                checks = [(self.per_minute, 60_000 + _MARGIN_MS), (self.per_second, 1_000 + _MARGIN_MS // 10)]
            for limit, window in checks:
                # The oldest slot that must leave the window before one more fits in it.
                row = conn.execute(
                    sa.select(s.started_ms).where(mine, s.started_ms > now - window)
                    .order_by(s.started_ms.desc()).offset(limit - 1).limit(1)
                ).scalar()
                if row is not None:
                    return None, max(0.001, (row + window - now) / 1000)
            if kind == "call":
                busy = conn.execute(sa.select(sa.func.count()).select_from(qbo_call_slots).where(
                    mine, s.finished_ms.is_(None), s.lease_until_ms > now)).scalar_one()
                if busy >= self.in_flight:
                    return None, _IN_FLIGHT_POLL
            finished = now if kind == "batch" else None  # a batch slot only counts, the call slot is in flight
            slot = conn.execute(qbo_call_slots.insert().values(
                realm_id=self.realm_id, kind=kind, started_ms=now, lease_until_ms=now + self.lease_ms,
                finished_ms=finished).returning(s.id)).scalar_one()
            if next(self._taken) % _PRUNE_EVERY == 0:
                conn.execute(qbo_call_slots.delete().where(s.realm_id == self.realm_id,
                                                           s.started_ms < now - 2 * 60_000))
            return int(slot), 0.0

    def _finish(self, slot: int) -> None:
        with self.ledger._write(self._lock_name) as conn:
            conn.execute(qbo_call_slots.update().where(qbo_call_slots.c.id == slot)
                         .values(finished_ms=self._now_ms(conn)))

    @contextmanager
    def acquire(self, kind: str = "call") -> Iterator[None]:
        while True:
            slot, wait = self._try_take(kind)
            if slot is not None:
                break
            self.waited += wait
            self._sleep(wait)
        try:
            yield
        finally:
            if kind == "call":
                self._finish(slot)

    def throttled(self, seconds: float) -> None:
        """QuickBooks answered 429: no process calls this company for `seconds` (the wait the
        caller chose from Retry-After or its back-off)."""
        p = qbo_call_pauses.c
        with self.ledger._write(self._lock_name) as conn:
            until = self._now_ms(conn) + int(seconds * 1000)
            current = conn.execute(sa.select(p.paused_until_ms).where(p.realm_id == self.realm_id)).scalar()
            if current is None:
                conn.execute(qbo_call_pauses.insert().values(realm_id=self.realm_id, paused_until_ms=until))
            elif until > current:
                conn.execute(qbo_call_pauses.update().where(p.realm_id == self.realm_id)
                             .values(paused_until_ms=until))

    def in_flight_now(self) -> int:
        """Calls to this company in flight right now, in every process (tests, ``qbo status``)."""
        s = qbo_call_slots.c
        with self.ledger._read() as conn:
            now = self._now_ms(conn)
            return int(conn.execute(sa.select(sa.func.count()).select_from(qbo_call_slots).where(
                s.realm_id == self.realm_id, s.kind == "call", s.finished_ms.is_(None),
                s.lease_until_ms > now)).scalar_one())


class _Gate:
    """One kind of slot of a :class:`CallBudget`, with the RateLimiter interface."""

    def __init__(self, budget: CallBudget, kind: str) -> None:
        self.budget, self.kind = budget, kind

    @property
    def waited(self) -> float:
        return self.budget.waited

    def acquire(self) -> Iterator[None]:  # a context manager, like RateLimiter.acquire
        return self.budget.acquire(self.kind)

    def throttled(self, seconds: float) -> None:
        self.budget.throttled(seconds)


def shared_call_budget(ledger: Ledger, realm_id: str, **kwargs: float) -> CallBudget:
    """The company's budget in `ledger`'s database (QuickBooks' published numbers by default)."""
    return CallBudget(ledger, realm_id, **kwargs)  # type: ignore[arg-type]
