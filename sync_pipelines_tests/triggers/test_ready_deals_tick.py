"""The deal sensor's tick (`triggers/ready_deals_tick.py`) against the sandbox over real HTTP, with
the webhook inbox in a real SQLite ledger: what becomes a trigger, once, and how the cursor moves."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import httpx
import pytest

from sync_pipelines.connectors.factory import hubspot_from_env
from sync_pipelines.connectors.hubspot import HubSpotClient
from sync_pipelines.connectors.hubspot_stages import iso_ms, parse_hubspot_datetime
from sync_pipelines.connectors.http import RateLimiter, RetryPolicy
from sync_pipelines.ledger import Ledger
from sync_pipelines.sandbox import SandboxServer
from sync_pipelines.triggers import ready_deals_tick as tick
from sync_pipelines.triggers.ready_deals_tick import SensorCursor, evaluate
from sync_pipelines_tests.triggers.portal import (
    ENTERED_MS,
    LINE_ITEMS_DEAL,
    PROJECT_DEAL,
    STAGE,
    UNKNOWN_SKU_DEAL,
    WAITING_DEAL,
    hubspot_event,
    move_deal_stage,
    portal,
)

NOW = ENTERED_MS + 5 * 86_400_000  # five days after the deals entered the stage
READY = {LINE_ITEMS_DEAL, UNKNOWN_SKU_DEAL, PROJECT_DEAL}


def _client(env: dict[str, str], retry: RetryPolicy | None = None) -> HubSpotClient:
    # no client-side search throttle: the sandbox runs without rate limits here
    return hubspot_from_env(env, search_limiter=RateLimiter(), limiter=RateLimiter(),
                            retry=retry or RetryPolicy.fast())


@pytest.fixture
def sandbox() -> Iterator[SandboxServer]:
    fixture, _ = portal()
    with SandboxServer(fixture, rate_limits="off") as sb:
        yield sb


@pytest.fixture
def ledger(tmp_path) -> Ledger:
    led = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    led.migrate()
    return led


# ---------------------------------------------------------------------------- pure parts


def test_run_key_is_deal_and_stage_entry_not_last_modified() -> None:
    from sync_pipelines.triggers.stage_entry import stage_entry

    props = {"dealstage": STAGE, f"hs_v2_date_entered_{STAGE}": "2026-10-15T15:00:00.000Z",
             "hs_lastmodifieddate": "2026-10-20T09:00:00.000Z"}
    a = stage_entry("7", props, STAGE)
    b = stage_entry("7", {**props, "hs_lastmodifieddate": "2026-10-21T09:00:00.000Z"}, STAGE)
    assert a is not None and a == b and a.run_key == f"deal-7-entered-{ENTERED_MS}"
    # only the legacy property: same instant, same key
    legacy = stage_entry("7", {"dealstage": STAGE, f"hs_date_entered_{STAGE}": str(ENTERED_MS)}, STAGE)
    assert legacy == a
    assert stage_entry("7", {**props, "dealstage": "closedwon"}, STAGE) is None
    assert stage_entry("7", {"dealstage": STAGE}, STAGE) is None  # no date: never guessed
    assert a.trigger_date("America/New_York") == dt.date(2026, 10, 15)
    assert stage_entry("7", {"dealstage": STAGE, f"hs_v2_date_entered_{STAGE}": "2026-11-01T02:00:00.000Z"},
                       STAGE).period("America/New_York") == "2026-10"  # still October in New York


def test_cursor_round_trips_and_tolerates_unknown_fields() -> None:
    c = SensorCursor(poll_from_ms=5, poll_after=None, next_poll_ms=9, ack=[1, 2], failures=2)
    assert SensorCursor.parse(c.dumps()) == c
    assert SensorCursor.parse('{"poll_from_ms": 3, "future_field": 1}').poll_from_ms == 3
    assert SensorCursor.parse(None) == SensorCursor()


# ---------------------------------------------------------------------------- polling


def test_first_poll_finds_each_ready_deal_once_and_the_cursor_stops_at_now_minus_lag(sandbox, ledger) -> None:
    with _client(sandbox.env()) as hs:
        out = evaluate(hs, ledger, STAGE, None, now_ms=NOW)
    assert {t.deal_id for t in out.triggers} == READY  # the waiting deal is in another stage
    assert all(t.entered_ms == ENTERED_MS for t in out.triggers)
    assert out.poll_complete and out.cursor.poll_from_ms == NOW - tick.LAG_MS
    assert out.cursor.next_poll_ms == NOW + tick.POLL_SECONDS * 1000
    # the next tick before the poll is due does not search at all
    with _client(sandbox.env()) as hs:
        again = evaluate(hs, ledger, STAGE, out.cursor_text, now_ms=NOW + 5_000)
    assert not again.polled and again.triggers == []


def test_our_own_write_back_makes_the_deal_reappear_with_the_same_run_key(sandbox, ledger) -> None:
    with _client(sandbox.env()) as hs:
        first = evaluate(hs, ledger, STAGE, None, now_ms=NOW)
        key = {t.deal_id: t.run_key for t in first.triggers}[LINE_ITEMS_DEAL]
        hs.ensure_deal_property("billing_status")
        hs.update_deal(LINE_ITEMS_DEAL, {"billing_status": "invoiced"})  # moves hs_lastmodifieddate to now
        real_now = int(dt.datetime.now(dt.timezone.utc).timestamp() * 1000)
        cursor = SensorCursor.parse(first.cursor_text)
        cursor.poll_from_ms, cursor.next_poll_ms = real_now - 60_000, 0
        later = evaluate(hs, ledger, STAGE, cursor.dumps(), now_ms=real_now + tick.LAG_MS + 1_000)
    assert [t.run_key for t in later.triggers] == [key]


def test_more_than_10000_matching_deals_are_all_read_a_bounded_number_of_pages_per_tick(ledger) -> None:
    fixture, _ = portal()
    base = dt.datetime(2026, 10, 16, tzinfo=dt.timezone.utc)
    n = 10_450
    for i in range(n):
        stamp = iso_ms(int(base.timestamp() * 1000) + i * 7)
        fixture["hubspot"]["deals"].append({"id": str(60_000_000_000 + i), "properties": {
            "dealname": f"bulk {i}", "dealstage": STAGE, "hs_lastmodifieddate": stamp,
            f"hs_v2_date_entered_{STAGE}": stamp, "createdate": stamp}, "createdAt": stamp, "updatedAt": stamp,
            "archived": False})
    now = int(base.timestamp() * 1000) + 86_400_000
    seen: dict[str, str] = {}
    cursor = None
    ticks = 0
    with SandboxServer(fixture, rate_limits="off") as sb, _client(sb.env()) as hs:
        # the sandbox enforces HubSpot's cap: a deep page is a 400
        r = httpx.post(f"{sb.base_url}/crm/v3/objects/deals/search", json={"filterGroups": [], "limit": 200,
                       "after": "10000"}, headers={"Authorization": f"Bearer {sb.env()['HUBSPOT_ACCESS_TOKEN']}"})
        assert r.status_code == 400
        while True:
            out = evaluate(hs, ledger, STAGE, cursor, now_ms=now, max_pages=10)
            ticks += 1
            assert out.pages <= 10
            for t in out.triggers:
                assert seen.setdefault(t.deal_id, t.run_key) == t.run_key
            cursor = out.cursor_text
            if out.poll_complete:
                break
            assert ticks < 20
    assert len(seen) == n + len(READY)
    assert ticks >= 6  # 10,453 deals / (10 pages x 200) per tick


def test_a_fault_mid_window_keeps_what_was_read_and_moves_the_cursor_only_over_it(ledger) -> None:
    fixture, _ = portal()
    base = dt.datetime(2026, 10, 16, tzinfo=dt.timezone.utc)
    stamps = {}
    for i in range(900):
        ms = int(base.timestamp() * 1000) + i * 1000
        stamps[str(61_000_000_000 + i)] = ms
        fixture["hubspot"]["deals"].append({"id": str(61_000_000_000 + i), "properties": {
            "dealname": f"bulk {i}", "dealstage": STAGE, "hs_lastmodifieddate": iso_ms(ms),
            f"hs_v2_date_entered_{STAGE}": iso_ms(ms)}, "archived": False})
    now = int(base.timestamp() * 1000) + 86_400_000
    with SandboxServer(fixture, rate_limits="off") as sb, _client(sb.env(), RetryPolicy(max_attempts=1)) as hs:
        first = evaluate(hs, ledger, STAGE, None, now_ms=now, max_pages=2)
        assert not first.poll_complete and first.cursor.failures == 0
        read = {t.deal_id for t in first.triggers}
        # every deal modified before the cursor has been read: nothing below it is left behind
        cut = first.cursor.poll_from_ms
        assert all(d in read for d, ms in stamps.items() if ms < cut)
        assert cut < now - tick.LAG_MS

        httpx.post(f"{sb.base_url}/_sandbox/faults", json={"api": "hubspot", "rate_503": 1}).raise_for_status()
        failing = first.cursor_text
        for streak in (1, 2, 3):
            out = evaluate(hs, ledger, STAGE, failing, now_ms=now, max_pages=2)
            assert out.triggers == [] and out.cursor.poll_from_ms == cut  # did not move over unread deals
            assert out.cursor.failures == streak
            assert len(out.alerts) == (1 if streak == tick.ALERT_AFTER else 0)
            failing = out.cursor_text
        alert = out.alerts[0].text()
        assert "HubSpot failing for 3 ticks" in alert and sb.env()["HUBSPOT_ACCESS_TOKEN"] not in alert

        httpx.post(f"{sb.base_url}/_sandbox/faults", json={"api": "hubspot"}).raise_for_status()
        cursor = failing
        while True:
            out = evaluate(hs, ledger, STAGE, cursor, now_ms=now, max_pages=2)
            read |= {t.deal_id for t in out.triggers}
            cursor = out.cursor_text
            if out.poll_complete:
                break
        assert out.cursor.failures == 0
    assert set(stamps) <= read and READY <= read


# ---------------------------------------------------------------------------- the webhook inbox


def test_duplicate_out_of_order_and_redelivered_events_give_one_trigger_per_deal(sandbox, ledger) -> None:
    ledger.inbox_put("hubspot", "1", hubspot_event(1, LINE_ITEMS_DEAL))
    assert not ledger.inbox_put("hubspot", "1", hubspot_event(1, LINE_ITEMS_DEAL, attempt=1))  # redelivery
    ledger.inbox_put("hubspot", "2", hubspot_event(2, LINE_ITEMS_DEAL, attempt=0))  # a second event, same change
    # out of order: the older "contractsent" change arrives after the newer "ready" one
    ledger.inbox_put("hubspot", "3", hubspot_event(3, LINE_ITEMS_DEAL, "contractsent", occurred_ms=ENTERED_MS - 60_000))
    ledger.inbox_put("hubspot", "4", hubspot_event(4, WAITING_DEAL, STAGE))  # says ready, HubSpot says not
    ledger.inbox_put("hubspot", "5", hubspot_event(5, "99999999999"))  # forged: no such deal
    ledger.inbox_put("hubspot", "6", hubspot_event(6, PROJECT_DEAL, "x", prop="amount"))  # not a stage change
    ledger.inbox_put("quickbooks", "q1", {"eventNotifications": []})  # another source: not ours
    cursor = SensorCursor(poll_from_ms=NOW, next_poll_ms=NOW + 10**9).dumps()  # polling not due
    with _client(sandbox.env()) as hs:
        out = evaluate(hs, ledger, STAGE, cursor, now_ms=NOW)
        assert [t.deal_id for t in out.triggers] == [LINE_ITEMS_DEAL]
        assert out.triggers[0].run_key == f"deal-{LINE_ITEMS_DEAL}-entered-{ENTERED_MS}"
        # marked processed only on the next tick (after this tick's run requests are stored)
        assert len(ledger.inbox_pending(100, source="hubspot")) == 6
        nxt = evaluate(hs, ledger, STAGE, out.cursor_text, now_ms=NOW + 5_000)
    assert ledger.inbox_pending(100, source="hubspot") == []
    assert len(ledger.inbox_pending(100, source="quickbooks")) == 1
    assert nxt.triggers == []


def test_a_lost_tick_rereads_its_events_and_builds_the_same_run_keys(sandbox, ledger) -> None:
    ledger.inbox_put("hubspot", "11", hubspot_event(11, PROJECT_DEAL))
    cursor = SensorCursor(poll_from_ms=NOW, next_poll_ms=NOW + 10**9).dumps()
    with _client(sandbox.env()) as hs:
        a = evaluate(hs, ledger, STAGE, cursor, now_ms=NOW)
        b = evaluate(hs, ledger, STAGE, cursor, now_ms=NOW + 5_000)  # a's cursor was never stored
    assert [t.run_key for t in a.triggers] == [t.run_key for t in b.triggers] == [
        f"deal-{PROJECT_DEAL}-entered-{ENTERED_MS}"]


def test_webhook_and_poll_for_the_same_deal_in_one_tick_is_one_trigger(sandbox, ledger) -> None:
    ledger.inbox_put("hubspot", "21", hubspot_event(21, PROJECT_DEAL))
    with _client(sandbox.env()) as hs:
        out = evaluate(hs, ledger, STAGE, None, now_ms=NOW)
    assert sorted(t.deal_id for t in out.triggers) == sorted(READY)
    assert len({t.run_key for t in out.triggers}) == len(out.triggers)


def test_a_deal_that_left_the_stage_or_reentered_it(sandbox, ledger) -> None:
    env = sandbox.env()
    move_deal_stage(sandbox.base_url, PROJECT_DEAL, "closedwon")
    ledger.inbox_put("hubspot", "31", hubspot_event(31, PROJECT_DEAL))
    cursor = SensorCursor(poll_from_ms=NOW, next_poll_ms=NOW + 10**9).dumps()
    with _client(env) as hs:
        out = evaluate(hs, ledger, STAGE, cursor, now_ms=NOW)
        assert out.triggers == []  # left the stage: nothing is billed
        move_deal_stage(sandbox.base_url, PROJECT_DEAL, STAGE)
        back = hs.get_deal(PROJECT_DEAL, [f"hs_v2_date_entered_{STAGE}", f"hs_date_entered_{STAGE}"])
        ledger.inbox_put("hubspot", "32", hubspot_event(32, PROJECT_DEAL))
        again = evaluate(hs, ledger, STAGE, out.cursor_text, now_ms=NOW + 5_000)
    entered = parse_hubspot_datetime(back.properties.get(f"hs_v2_date_entered_{STAGE}"))
    assert back.properties.get(f"hs_date_entered_{STAGE}") == back.properties.get(f"hs_v2_date_entered_{STAGE}")
    assert entered is not None and entered > ENTERED_MS  # the sandbox set a new stage-entered date
    assert [t.run_key for t in again.triggers] == [f"deal-{PROJECT_DEAL}-entered-{entered}"]


def test_stage_entered_dates_are_read_only_in_the_sandbox_as_in_hubspot(sandbox) -> None:
    with _client(sandbox.env()) as hs:
        with pytest.raises(Exception) as err:
            hs.update_deal(PROJECT_DEAL, {f"hs_v2_date_entered_{STAGE}": "2020-01-01T00:00:00.000Z"})
    assert "400" in str(err.value) or "VALIDATION" in str(err.value)
