"""QuickBooks' per-company call budget shared across processes through the ledger database
(SQLite file and PostgreSQL): the per-minute windows, the in-flight cap and the pause after a 429
hold for all processes together, not for each one."""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor

import sqlalchemy as sa

from sync_pipelines.ledger import Ledger
from sync_pipelines.ledger.call_budget import CallBudget
from sync_pipelines.ledger.schema import qbo_call_slots

from . import _workers

REALM = "9130357"
N_PROCS = _workers.N_PROCS




def _slots(url: str, kind: str = "call") -> list[tuple[int, int | None]]:
    engine = sa.create_engine(Ledger(url).engine.url)
    try:
        with engine.connect() as conn:
            c = qbo_call_slots.c
            return [(r.started_ms, r.finished_ms) for r in conn.execute(
                sa.select(c.started_ms, c.finished_ms).where(c.realm_id == REALM, c.kind == kind))]
    finally:
        engine.dispose()


def test_the_per_minute_budget_is_shared_by_every_process(migrated_url: str, pool: ProcessPoolExecutor) -> None:
    limits = {"per_minute": 7, "per_second": 1000}
    taken = _workers.together(pool, _workers.take_budget_slots, [(migrated_url, REALM, "call", 7, limits)] * N_PROCS)
    # Each process alone would have taken 7; together they share 7.
    assert sum(taken) == 7, taken
    assert len(_slots(migrated_url)) == 7
    # Another company's budget is its own.
    other = _workers.together(pool, _workers.take_budget_slots, [(migrated_url, "other-realm", "call", 3, limits)])
    assert other == [3]


def test_batch_calls_have_their_own_40_a_minute_on_top(migrated_url: str, pool: ProcessPoolExecutor) -> None:
    limits = {"batches_per_minute": 4, "per_minute": 1000, "per_second": 1000}
    taken = _workers.together(pool, _workers.take_budget_slots, [(migrated_url, REALM, "batch", 4, limits)] * 2)
    assert sum(taken) == 4, taken
    # Plain calls are not held by the spent batch budget.
    assert _workers.together(pool, _workers.take_budget_slots, [(migrated_url, REALM, "call", 3, limits)]) == [3]


def test_in_flight_cap_holds_across_processes(migrated_url: str, pool: ProcessPoolExecutor) -> None:
    limits = {"in_flight": 2, "per_minute": 1000, "per_second": 1000}
    seen = _workers.together(pool, _workers.hold_budget_slots, [(migrated_url, REALM, 4, 0.05, limits)] * N_PROCS)
    flat = [n for per in seen for n in per]
    assert len(flat) == 4 * N_PROCS
    assert max(flat) <= 2, seen
    # From the slots' own times: never more than 2 calls between start and finish at once.
    events = sorted([(s, 1) for s, _ in _slots(migrated_url)] + [(f, -1) for _, f in _slots(migrated_url)],
                    key=lambda e: (e[0], e[1]))
    depth = peak = 0
    for _, step in events:
        depth += step
        peak = max(peak, depth)
    assert all(f is not None for _, f in _slots(migrated_url)) and peak <= 2


def test_a_429_pauses_every_process(migrated_url: str, pool: ProcessPoolExecutor) -> None:
    _workers.together(pool, _workers.pause_budget, [(migrated_url, REALM, 30.0)])
    ledger = Ledger(migrated_url)
    try:
        slot, wait = CallBudget(ledger, REALM)._try_take("call")
        assert slot is None and 25.0 < wait <= 30.0
        slot, wait = CallBudget(ledger, "other-realm")._try_take("call")
        assert slot is not None and wait == 0.0
    finally:
        ledger.dispose()


def test_a_dead_process_slot_is_freed_after_its_lease(migrated_url: str) -> None:
    ledger = Ledger(migrated_url)
    try:
        dying = CallBudget(ledger, REALM, in_flight=1, lease=0.0)
        slot, _ = dying._try_take("call")  # taken, never finished: the process "died"
        assert slot is not None
        budget = CallBudget(ledger, REALM, in_flight=1)
        assert budget.in_flight_now() == 0
        slot2, wait = budget._try_take("call")
        assert slot2 is not None and wait == 0.0
        assert budget.in_flight_now() == 1
        third, wait = budget._try_take("call")
        assert third is None and wait > 0  # the live slot counts
    finally:
        ledger.dispose()


def test_a_429_seen_by_the_client_pauses_the_shared_budget(migrated_url: str) -> None:
    """Through the real transport: QuickBooks answers 429 once; while the client waits its
    Retry-After, another process's next call would wait too (the pause is in the ledger)."""
    import httpx

    from sync_pipelines.connectors.http import ApiTransport, RetryPolicy
    from sync_pipelines.ledger.schema import qbo_call_pauses

    answers = iter([httpx.Response(429, headers={"Retry-After": "7"}), httpx.Response(200, json={})])
    seen: list[tuple[float, float | None]] = []
    ledger = Ledger(migrated_url)
    try:
        budget = CallBudget(ledger, REALM)

        def waiting(seconds: float) -> None:
            slot, wait = CallBudget(ledger, REALM)._try_take("call")  # "another process"
            seen.append((seconds, None if slot is not None else wait))
            with ledger.engine.begin() as conn:  # ... and the 7 s go by
                conn.execute(qbo_call_pauses.delete())

        transport = ApiTransport("quickbooks", "http://qbo.test", limiter=budget.calls,
                                 retry=RetryPolicy(max_retry_after=60), sleep=waiting,
                                 transport=httpx.MockTransport(lambda request: next(answers)))
        assert transport.request("POST", "/v3/company/1/batch", extra_limiters=[budget.batches]).status_code == 200
        [(slept, other_wait)] = seen
        assert slept == 7.0 and other_wait is not None and 6.0 < other_wait <= 7.0
        assert len(_slots(migrated_url, "batch")) == 2  # the retry took a batch slot again
    finally:
        ledger.dispose()
