"""Functions run in spawned worker processes by the concurrency tests (must be importable).

Workers start together at the wall-clock instant `start_at` (a barrier that survives pickling,
so one warm process pool serves every test).
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from typing import Any

#: Worker processes of the pool the concurrency tests share (the `pool` fixture, ledger/conftest.py).
N_PROCS = 3


def together(pool: Any, fn: Any, args_list: list[tuple]) -> list:
    """Run ``fn(*args, start_at)`` for each args in the pool, all starting at one instant."""
    start_at = time.time() + 0.5
    futures = [pool.submit(fn, *args, start_at) for args in args_list]
    return [f.result(timeout=120) for f in futures]


def warm_up() -> None:
    import sync_pipelines.ledger  # noqa: F401  (pay the import once per worker)


def _wait(start_at: float) -> None:
    delay = start_at - time.time()
    if delay > 0:
        time.sleep(delay)


def race_begin(url: str, drafts: list[dict[str, Any]], start_at: float) -> list[tuple[str, str]]:
    from sync_pipelines.ledger import Ledger

    ledger = Ledger(url)
    try:
        ledger.current_revision()  # connect before the start line
        _wait(start_at)
        out = []
        for d in drafts:
            d = dict(d)
            key = d.pop("key")
            out.append((key, ledger.begin_posting(key, **d).action))
        return out
    finally:
        ledger.dispose()


def refresh_once(url: str, realm: str, name: str, start_at: float) -> tuple[str, str, str]:
    """The QBO client's refresh path: lock, re-read, refresh only if still stale, save, use."""
    from sync_pipelines.ledger import Ledger, TokenSet

    ledger = Ledger(url)
    try:
        ledger.current_revision()
        _wait(start_at)
        with ledger.tokens.refresh_lock(realm):
            now = datetime.now(timezone.utc)
            ts = ledger.tokens.get(realm)
            assert ts is not None
            if ts.access_valid(now):
                return (name, "reused", ts.refresh_token.get_secret_value())
            time.sleep(0.4)  # the HTTP call to Intuit
            new = TokenSet(
                refresh_token=f"RT-rotated-by-{name}",
                access_token=f"AT-from-{name}",
                access_expires_at=now + timedelta(hours=1),
            )
            ledger.tokens.save(realm, new)
            return (name, "refreshed", new.refresh_token.get_secret_value())
    finally:
        ledger.dispose()


def migrate_worker(url: str, start_at: float) -> str | None:
    from sync_pipelines.ledger import Ledger

    ledger = Ledger(url)
    try:
        _wait(start_at)
        ledger.migrate()
        return ledger.current_revision()
    finally:
        ledger.dispose()


class _WouldWait(Exception):
    pass


def _refuse_to_wait(seconds: float) -> None:
    raise _WouldWait(seconds)


def take_budget_slots(url: str, realm: str, kind: str, n: int, limits: dict[str, Any], start_at: float) -> int:
    """Take up to `n` slots of QuickBooks' shared call budget without ever waiting; how many."""
    from sync_pipelines.ledger import Ledger
    from sync_pipelines.ledger.call_budget import CallBudget

    ledger = Ledger(url)
    try:
        budget = CallBudget(ledger, realm, sleep=_refuse_to_wait, **limits)
        ledger.current_revision()
        _wait(start_at)
        taken = 0
        for _ in range(n):
            try:
                with budget.acquire(kind):
                    taken += 1
            except _WouldWait:
                break
        return taken
    finally:
        ledger.dispose()


def hold_budget_slots(url: str, realm: str, n: int, hold_s: float, limits: dict[str, Any], start_at: float) -> list[int]:
    """Make `n` calls through the shared budget, each holding its slot `hold_s`; the number of
    calls in flight (all processes) seen from inside each."""
    from sync_pipelines.ledger import Ledger
    from sync_pipelines.ledger.call_budget import CallBudget

    ledger = Ledger(url)
    try:
        budget = CallBudget(ledger, realm, **limits)
        ledger.current_revision()
        _wait(start_at)
        seen = []
        for _ in range(n):
            with budget.calls.acquire():
                seen.append(budget.in_flight_now())
                time.sleep(hold_s)
        return seen
    finally:
        ledger.dispose()


def pause_budget(url: str, realm: str, seconds: float, start_at: float) -> None:
    from sync_pipelines.ledger import Ledger
    from sync_pipelines.ledger.call_budget import CallBudget

    ledger = Ledger(url)
    try:
        _wait(start_at)
        CallBudget(ledger, realm).throttled(seconds)
    finally:
        ledger.dispose()
