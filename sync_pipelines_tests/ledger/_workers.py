"""Functions run in spawned worker processes by the concurrency tests (must be importable).

Workers start together at the wall-clock instant `start_at` (a barrier that survives pickling,
so one warm process pool serves every test).
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from typing import Any


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
