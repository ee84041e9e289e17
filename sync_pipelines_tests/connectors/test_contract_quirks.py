"""Connector quirk tests against the sandbox over loopback, one or more per api-contracts §4 item
that the other connector tests cover only with mocks (see the table in docs/sandbox.md).

Waits are never real: the clients get a fake `sleep` that records the wait and clears the
sandbox's rate-limit windows (as if the time had passed), and a no-op client-side limiter, so
the server's 429s are what the client meets.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

import httpx
import pytest

sandbox = pytest.importorskip("sync_pipelines.sandbox")

from sync_pipelines import money  # noqa: E402
from sync_pipelines.connectors.harvest import HarvestClient  # noqa: E402
from sync_pipelines.connectors.http import (  # noqa: E402
    ApiAuthError,
    ApiValidationError,
    InMemoryTokenStore,
    RateLimiter,
    RetryPolicy,
)
from sync_pipelines.connectors.hubspot import HubSpotClient  # noqa: E402
from sync_pipelines.connectors.quickbooks import (  # noqa: E402
    QBO_RATE_LIMIT_FIRST_WAIT,
    QboOAuth,
    QboReconnectRequired,
    QuickBooksClient,
    duplicate_txn_id,
)
from sync_pipelines.sandbox import hubspot_api  # noqa: E402

from .helpers import AuditRecorder  # noqa: E402

LOCK_REASON = "Item Approved and Locked for this Time Period"


def fixture() -> dict:
    clients = [{"id": 10, "name": "O'Brien & Sons", "currency": "USD", "is_active": True}]
    projects = [{"id": 100, "name": "Web", "code": "OBR-1", "client": {"id": 10, "name": "O'Brien & Sons"}}]
    entries = [{
        "id": 5000 + i, "spent_date": f"2026-10-{1 + i:02d}", "hours": Decimal("1.25"), "rounded_hours": Decimal("1.25"),
        "billable": True, "is_running": False, "is_billed": False, "is_closed": i == 0,
        "is_locked": i == 0, "locked_reason": LOCK_REASON if i == 0 else None, "billable_rate": Decimal("150.00"),
        "user": {"id": 1, "name": "Jane Doe"}, "client": {"id": 10, "name": "O'Brien & Sons", "currency": "USD"},
        "project": {"id": 100, "name": "Web", "code": "OBR-1"}, "task": {"id": 7, "name": "Design"},
        "created_at": "2026-10-01T18:00:00Z", "updated_at": "2026-10-05T18:00:00Z"} for i in range(25)]
    base = datetime(2026, 9, 1, tzinfo=timezone.utc)
    deals = [{"id": str(8800 + i), "properties": {
        "dealname": f"Deal {i}", "dealstage": "closedwon", "pipeline": "default", "amount": str(100 * i),
        "hs_lastmodifieddate": (base + timedelta(hours=i)).strftime("%Y-%m-%dT%H:%M:%S.000Z")}} for i in range(25)]
    return {
        "harvest": {"clients": clients, "projects": projects, "users": [{"id": 1, "first_name": "Jane", "last_name": "Doe"}],
                    "tasks": [{"id": 7, "name": "Design"}], "time_entries": entries},
        "hubspot": {"companies": [{"id": "7005", "properties": {"name": "O'Brien & Sons"}}], "deals": deals,
                    "associations": [{"from_type": "deals", "from_id": "8800", "to_type": "companies", "to_id": "7005",
                                      "type_id": 5}]},
        # custom numbers off (QuickBooks' default): QuickBooks numbers the invoices itself
        "quickbooks": {"realm_id": "4620816365", "preferences": {"SalesFormsPrefs": {"CustomTxnNumbers": False}}, "customers": [{"Id": "58", "DisplayName": "O'Brien & Sons", "Active": True}],
                       "items": [{"Id": "1", "Name": "Services", "Type": "Service"}]},
    }


@pytest.fixture(scope="module")
def server():
    with sandbox.SandboxServer(fixture(), rate_limits=None) as sb:
        yield sb


@pytest.fixture
def sb(server):
    server.reset()
    server.set_faults("all")
    server.set_rate_limits(None)
    yield server
    server.set_rate_limits(None)
    server.set_faults("all")


class WindowSleep:
    """A fake `sleep`: records the wait and lets the sandbox's rate-limit windows pass."""

    def __init__(self, sb) -> None:
        self.sb = sb
        self.sleeps: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.sb.sandbox.windows.clear()


def harvest(sb, **kw) -> HarvestClient:
    env = sb.env()
    kw.setdefault("retry", RetryPolicy.fast())
    return HarvestClient(env["HARVEST_BASE_URL"], kw.pop("account_id", env["HARVEST_ACCOUNT_ID"]),
                         env["HARVEST_ACCESS_TOKEN"], limiter=RateLimiter([]), **kw)


def hubspot(sb, **kw) -> HubSpotClient:
    env = sb.env()
    kw.setdefault("retry", RetryPolicy.fast())
    return HubSpotClient(env["HUBSPOT_BASE_URL"], env["HUBSPOT_ACCESS_TOKEN"], limiter=RateLimiter([]),
                         search_limiter=RateLimiter([]), **kw)


def qbo(sb, store=None, **kw) -> QuickBooksClient:
    env = sb.env()
    kw.setdefault("retry", RetryPolicy.fast())
    oauth = QboOAuth(env["QBO_TOKEN_URL"], env["QBO_CLIENT_ID"], env["QBO_CLIENT_SECRET"],
                     store if store is not None else InMemoryTokenStore(), env["QBO_REALM_ID"],
                     env["QBO_REFRESH_TOKEN"], retry=RetryPolicy.fast())
    return QuickBooksClient(env["QBO_BASE_URL"], env["QBO_REALM_ID"], oauth, limiter=RateLimiter([]), **kw)


def line(amount: str, qty: str, price: str) -> dict:
    return {"Amount": Decimal(amount), "DetailType": "SalesItemLineDetail",
            "SalesItemLineDetail": {"ItemRef": {"value": "1"}, "Qty": Decimal(qty), "UnitPrice": Decimal(price)}}


# ------------------------------------------------------------------ Harvest (§4 item 5)


def test_harvest_headers_required_wrong_account_is_auth_error_not_retried(sb):
    audit = AuditRecorder()
    assert len(harvest(sb).list_clients().records) == 1  # Bearer + Harvest-Account-Id + User-Agent sent
    with pytest.raises(ApiAuthError) as ei:
        harvest(sb, account_id="999", audit=audit).list_clients()
    assert ei.value.status == 401 and ei.value.code == "invalid_token" and ei.value.attempts == 1
    assert [r["status"] for r in audit.rows] == [401]
    assert sb.env()["HARVEST_ACCESS_TOKEN"] not in str(ei.value)


def test_harvest_per_page_above_2000_refused_client_side_and_422_is_not_retried(sb):
    with pytest.raises(ValueError):
        harvest(sb, per_page=2001)
    c = harvest(sb, per_page=2000)
    with pytest.raises(ApiValidationError) as ei:  # what the API says if a caller builds it by hand
        c._http.request("GET", "/v2/time_entries", params={"per_page": 2001}, headers=c._headers())
    assert ei.value.status == 422 and ei.value.attempts == 1 and "per_page" in str(ei.value)


def test_harvest_429_retry_after_honoured(sb):
    sb.set_rate_limits({"harvest_per_15s": 2})
    sleep, audit = WindowSleep(sb), AuditRecorder()
    c = harvest(sb, per_page=5, audit=audit, sleep=sleep, retry=RetryPolicy(max_attempts=3, max_retry_after=30))
    res = c.list_time_entries(date(2026, 10, 1), date(2026, 10, 31))
    assert sorted(e.id for e in res.records) == list(range(5000, 5025))  # 5 cursor pages, none lost
    throttled = [r for r in audit.rows if r["status"] == 429]
    assert throttled and len(sleep.sleeps) == len(throttled)
    # the waits are the server's Retry-After (whole seconds, ≤ the 15 s window), not backoff
    assert all(s == int(s) and 1 <= s <= 15 for s in sleep.sleeps), sleep.sleeps


def test_harvest_edits_after_month_end_reach_us_via_updated_since(sb):
    """Harvest is read-only for us (`is_billed` is not writable, locked entries not editable):
    invoiced state lives in our ledger, and a user's later edit shows up through `updated_since`."""
    mark = "2026-10-06T00:00:00Z"  # after every fixture updated_at
    c = harvest(sb)
    oct1, oct31 = date(2026, 10, 1), date(2026, 10, 31)
    assert c.list_time_entries(oct1, oct31, updated_since=mark).records == []
    env = sb.env()
    h = {"Authorization": f"Bearer {env['HARVEST_ACCESS_TOKEN']}", "Harvest-Account-Id": env["HARVEST_ACCOUNT_ID"],
         "User-Agent": "a Harvest user (user@example.com)", "Content-Type": "application/json"}
    r = httpx.patch(f"{sb.base_url}/v2/time_entries/5007", content=money.dumps({"hours": Decimal("2.5")}), headers=h)
    assert r.status_code == 200
    assert httpx.patch(f"{sb.base_url}/v2/time_entries/5000", json={"notes": "x"}, headers=h).status_code == 422  # locked
    assert httpx.patch(f"{sb.base_url}/v2/time_entries/5007", json={"is_billed": True}, headers=h).status_code == 422
    changed = c.list_time_entries(oct1, oct31, updated_since=datetime(2026, 10, 6, tzinfo=timezone.utc))
    assert [(e.id, e.hours, e.is_billed) for e in changed.records] == [(5007, Decimal("2.5"), False)]
    locked = next(e for e in c.list_time_entries(oct1, oct1).records if e.id == 5000)
    assert locked.is_locked and locked.locked_reason == LOCK_REASON and locked.is_closed
    # the client has no write path at all (nothing could try to set is_billed)
    public = {n for n in dir(HarvestClient) if not n.startswith("_")}
    assert public <= {"close", "list_time_entries", "time_entry_pages", "count_time_entries", "list_clients",
                      "list_projects"}, public


# ------------------------------------------------------------------ HubSpot (§4 item 4)


def test_hubspot_short_and_empty_pages_with_cursor_are_followed(sb):
    sb.set_faults("hubspot", rate_short_page=1.0, seed=5)
    audit = AuditRecorder()
    c = hubspot(sb, list_limit=4, search_limit=4, audit=audit)
    deals = c.list_deals(["dealname"])
    assert sorted(d.id for d in deals.records) == [str(8800 + i) for i in range(25)]
    list_calls = len(audit.rows)
    assert list_calls > -(-25 // 4) + 1  # more requests than full pages would need: short pages were followed
    found = c.search_deals([{"filters": [{"propertyName": "dealstage", "operator": "EQ", "value": "closedwon"}]}],
                           ["dealname"])
    assert sorted(d.id for d in found.records) == [str(8800 + i) for i in range(25)]
    assert len(audit.rows) - list_calls > -(-25 // 4) + 1


def test_hubspot_429_ten_secondly_and_search_secondly_waits(sb):
    sb.set_rate_limits({"hubspot_per_10s": 2, "hubspot_search_per_s": 1})
    sleep, audit = WindowSleep(sb), AuditRecorder()
    c = hubspot(sb, list_limit=5, search_limit=5, audit=audit, sleep=sleep, retry=RetryPolicy(max_attempts=4))
    assert len(c.list_deals(["dealname"]).records) == 25
    assert 10.0 in sleep.sleeps  # TEN_SECONDLY_ROLLING: wait out the 10 s window
    n = len(sleep.sleeps)
    assert len(c.search_deals([], ["dealname"]).records) == 25  # search responses carry no rate-limit headers
    assert 1.0 in sleep.sleeps[n:]  # SECONDLY (search): 1 s
    assert {r["status"] for r in audit.rows} == {200, 429}


def test_hubspot_search_cap_windowing(sb, monkeypatch):
    monkeypatch.setattr(hubspot_api, "SEARCH_CAP", 10)  # the sandbox's 10,000-result cap, scaled down
    audit = AuditRecorder()
    c = hubspot(sb, search_limit=3, search_cap=10, audit=audit)
    found = c.search_deals([{"filters": [{"propertyName": "dealstage", "operator": "EQ", "value": "closedwon"}]}],
                           ["dealname"])
    assert sorted(d.id for d in found.records) == [str(8800 + i) for i in range(25)]
    assert all(r["status"] == 200 for r in audit.rows)  # never asked past the cap (that is a 400)
    raw = httpx.post(f"{sb.base_url}/crm/v3/objects/deals/search", json={"limit": 3, "after": "9"},
                     headers={"Authorization": f"Bearer {sb.env()['HUBSPOT_ACCESS_TOKEN']}"})
    assert raw.status_code == 400  # what the client avoided


# ------------------------------------------------------------------ QuickBooks (§4 items 1-3)


def test_qbo_xml_429_without_retry_after_starts_the_adaptive_schedule(sb):
    sb.set_rate_limits({"qbo_per_minute": 2})
    sleep, audit = WindowSleep(sb), AuditRecorder()
    c = qbo(sb, sleep=sleep, audit=audit, retry=None)  # the production policy
    for _ in range(4):
        assert c.query("SELECT * FROM Item")[0]["Name"] == "Services"
    throttled = [r for r in audit.rows if r["status"] == 429]
    assert throttled and all(r["trace_id"] for r in throttled)  # intuit_tid even on the XML 429
    # the window had passed after the first wait: 5 s each, not the flat minute of before
    assert sleep.sleeps == [QBO_RATE_LIMIT_FIRST_WAIT] * len(throttled)


def test_qbo_validation_faults_keep_code_and_trace_and_are_not_retried(sb):
    audit = AuditRecorder()
    c = qbo(sb, audit=audit)
    first = c.create_invoice({"CustomerRef": {"value": "58"}, "DocNumber": "DUP-1", "Line": [line("300.00", "2", "150.00")]},
                             "rid-" + uuid.uuid4().hex)
    with pytest.raises(ApiValidationError) as ei:  # same DocNumber, new requestid: 6140
        c.create_invoice({"CustomerRef": {"value": "58"}, "DocNumber": "DUP-1", "Line": [line("300.00", "2", "150.00")]},
                         "rid-" + uuid.uuid4().hex)
    assert ei.value.code == "6140" and duplicate_txn_id(ei.value) == first["Id"]
    assert ei.value.attempts == 1 and ei.value.trace_id
    with pytest.raises(ApiValidationError) as ei:  # Amount != Qty x UnitPrice
        c.create_invoice({"CustomerRef": {"value": "58"}, "Line": [line("300.01", "2", "150.00")]}, "rid-" + uuid.uuid4().hex)
    assert ei.value.code == "6070" and ei.value.attempts == 1
    with pytest.raises(ApiValidationError) as ei:  # MAXRESULTS above 1000
        c.query("SELECT * FROM Item MAXRESULTS 1001")
    assert ei.value.status == 400
    with pytest.raises(ValueError):
        qbo(sb, page_size=1001)
    assert [r["status"] for r in audit.rows].count(400) == 3


def test_qbo_created_invoice_has_docnumber_and_subtotal_line(sb):
    c = qbo(sb)
    inv = c.create_invoice({"CustomerRef": {"value": "58"}, "Line": [line("187.50", "1.25", "150.00"), line("300.00", "2", "150.00")]},
                           "rid-" + uuid.uuid4().hex)
    assert inv["DocNumber"] and inv["DueDate"]  # auto-assigned
    got = c.get_invoice(inv["Id"])
    kinds = [x["DetailType"] for x in got["Line"]]
    assert kinds.count("SubTotalLineDetail") == 1
    sales = [x for x in got["Line"] if x["DetailType"] == "SalesItemLineDetail"]  # how posting compares lines
    assert sum(x["Amount"] for x in sales) == got["TotalAmt"] == Decimal("487.50")


def test_qbo_cdc_envelope_parsed(sb):
    c = qbo(sb)
    since = datetime.now(timezone.utc) - timedelta(minutes=5)
    inv = c.create_invoice({"CustomerRef": {"value": "58"}, "Line": [line("150.00", "1", "150.00")]}, "rid-" + uuid.uuid4().hex)
    cust = c.create_customer("CDC Customer " + uuid.uuid4().hex[:6])
    c.void_invoice(inv["Id"], c.get_invoice(inv["Id"])["SyncToken"])
    changed = c.cdc(["Invoice", "Customer"], since)
    assert [x["Id"] for x in changed["Invoice"]] == [inv["Id"]]
    assert cust["Id"] in [x["Id"] for x in changed["Customer"]]


def test_qbo_revoked_refresh_token_means_reconnect(sb):
    store = InMemoryTokenStore()
    c = qbo(sb, store=store)
    c.query("SELECT * FROM Item")
    httpx.post(f"{sb.base_url}/_sandbox/expire_tokens", json={"refresh_token": True}).raise_for_status()
    with pytest.raises(QboReconnectRequired) as ei:  # 401 -> refresh -> invalid_grant
        c.query("SELECT * FROM Item")
    assert "reconnect" in str(ei.value).lower()
    assert store.get(sb.realm_id).refresh_token.get_secret_value() not in str(ei.value)
