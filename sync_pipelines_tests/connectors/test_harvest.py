from __future__ import annotations

import json
from datetime import date, datetime, timezone
from decimal import Decimal

import httpx
import pytest

from sync_pipelines.connectors.harvest import HarvestClient
from sync_pipelines.connectors.http import ApiAuthError, ApiRateLimited, ApiValidationError, RetryPolicy

from .helpers import AuditRecorder, FakeTime, jresp

TOKEN = "harvest-secret-token-xyz"


def entry(i: int, **over):
    e = {
        "id": i, "spent_date": "2026-10-0%d" % (1 + i % 9), "hours": Decimal("1.25"),
        "rounded_hours": Decimal("1.25"),
        "user": {"id": 1, "name": "Ann"}, "client": {"id": 10, "name": "Acme", "currency": "USD"},
        "project": {"id": 20, "name": "Site", "code": "S1"}, "task": {"id": 30, "name": "Dev"},
        "billable": True, "is_running": False, "is_locked": False, "notes": None,
        "billable_rate": Decimal("150.00"), "updated_at": "2026-10-05T10:00:00Z",
    }
    e.update(over)
    return e


def paged_server(entries, per_page, base="https://api.harvestapp.com"):
    requests = []

    def handler(request: httpx.Request):
        requests.append(request)
        cursor = request.url.params.get("cursor")
        start = int(cursor[1:]) if cursor else 0
        chunk = entries[start:start + per_page]
        nxt = start + per_page
        links = {"next": f"{base}/v2/time_entries?cursor=c{nxt}&per_page={per_page}&ref=next_cursor"
                 if nxt < len(entries) else None}
        return jresp(200, {"time_entries": chunk, "per_page": per_page, "page": None, "next_page": None,
                           "links": links})

    return handler, requests


def client(handler, **kw):
    ft = FakeTime()
    return HarvestClient("https://api.harvestapp.com", "12345", TOKEN, transport=httpx.MockTransport(handler),
                         sleep=ft.sleep, clock=ft.clock, retry=RetryPolicy.fast(), **kw), ft


def test_follows_links_next_and_sends_required_headers():
    entries = [entry(i) for i in range(1, 8)]
    handler, requests = paged_server(entries, 3)
    c, _ = client(handler, per_page=3)
    result = c.list_time_entries(date(2026, 10, 1), date(2026, 10, 31), client_id=10,
                                 updated_since=datetime(2026, 10, 1, tzinfo=timezone.utc))
    assert [e.id for e in result.records] == list(range(1, 8))
    assert result.rejected == []
    assert len(requests) == 3
    first = requests[0]
    assert first.url.params["from"] == "2026-10-01" and first.url.params["to"] == "2026-10-31"
    assert first.url.params["per_page"] == "3" and first.url.params["client_id"] == "10"
    assert first.url.params["updated_since"] == "2026-10-01T00:00:00Z"
    # later pages: the links.next URL verbatim (no page URLs built)
    assert requests[1].url.params["cursor"] == "c3" and "from" not in requests[1].url.params
    for r in requests:
        assert r.headers["Authorization"] == f"Bearer {TOKEN}"
        assert r.headers["Harvest-Account-Id"] == "12345"
        assert r.headers["User-Agent"] == "sync_pipelines (ops@example.com)"
    assert result.records[0].hours == Decimal("1.25")


def test_default_per_page_is_2000_and_bounds_checked():
    handler, requests = paged_server([entry(1)], 2000)
    c, _ = client(handler)
    c.list_time_entries(date(2026, 10, 1), date(2026, 10, 31))
    assert requests[0].url.params["per_page"] == "2000"
    with pytest.raises(ValueError):
        HarvestClient("https://x", "1", "t", per_page=2001)


def test_malformed_record_quarantined_rest_goes_on():
    bad = entry(2)
    del bad["project"]
    also_bad = entry(3, hours="lots")
    handler, _ = paged_server([entry(1), bad, also_bad, entry(4)], 10)
    c, _ = client(handler)
    result = c.list_time_entries(date(2026, 10, 1), date(2026, 10, 31))
    assert [e.id for e in result.records] == [1, 4]
    assert [(r.system, r.entity, r.record_id) for r in result.rejected] == [
        ("harvest", "time_entry", "2"), ("harvest", "time_entry", "3")]
    assert "project" in result.rejected[0].reason
    assert '"id": 2' in result.rejected[0].raw_json and "1.25" in result.rejected[0].raw_json


def test_missing_client_currency_and_project_code_tolerated():
    e = entry(1)
    e["client"] = {"id": 10, "name": "Acme"}
    e["project"] = {"id": 20, "name": "Site"}
    e["billable_rate"] = None
    handler, _ = paged_server([e], 10)
    c, _ = client(handler)
    rec = c.list_time_entries(date(2026, 10, 1), date(2026, 10, 31)).records[0]
    assert rec.client.currency is None and rec.project.code is None and rec.billable_rate is None


def test_429_retry_after_honoured():
    calls = []

    def handler(request):
        calls.append(1)
        if len(calls) == 1:
            return jresp(429, {"message": "Too many"}, {"Retry-After": "3"})
        return jresp(200, {"time_entries": [], "links": {"next": None}})

    ft = FakeTime()
    c = HarvestClient("https://api.harvestapp.com", "1", TOKEN, transport=httpx.MockTransport(handler),
                      sleep=ft.sleep, clock=ft.clock)
    c.list_time_entries(date(2026, 10, 1), date(2026, 10, 2))
    assert ft.sleeps == [3.0]


def test_429_exhausted_raises_rate_limited():
    c, _ = client(lambda r: jresp(429, {}, {"Retry-After": "0"}))
    with pytest.raises(ApiRateLimited):
        c.list_clients()


def test_401_is_auth_error_without_token_in_message():
    audit = AuditRecorder()
    c, _ = client(lambda r: jresp(401, {"error": "invalid_token",
                                        "error_description": "The access token provided is expired"}),
                  audit=audit)
    with pytest.raises(ApiAuthError) as ei:
        c.list_projects()
    assert "invalid_token" in str(ei.value) and "/v2/projects" in str(ei.value)
    assert TOKEN not in str(ei.value) and TOKEN not in repr(audit.rows) and TOKEN not in repr(c)


def test_next_link_to_another_host_refused():
    def handler(request):
        return jresp(200, {"clients": [], "links": {"next": "https://evil.example.com/v2/clients?cursor=x"}})

    c, _ = client(handler)
    with pytest.raises(ApiValidationError, match="another origin"):
        c.list_clients()


def test_clients_and_projects_parse():
    def handler(request):
        if request.url.path == "/v2/clients":
            return jresp(200, {"clients": [{"id": 1, "name": "A", "currency": "EUR", "is_active": True},
                                           {"id": "x"}], "links": {"next": None}})
        return jresp(200, {"projects": [{"id": 2, "name": "P", "hourly_rate": Decimal("99.50"),
                                         "client": {"id": 1, "name": "A"}}], "links": {"next": None}})

    c, _ = client(handler)
    clients = c.list_clients()
    assert clients.records[0].currency == "EUR" and len(clients.rejected) == 1
    projects = c.list_projects()
    assert projects.records[0].hourly_rate == Decimal("99.50") and projects.records[0].code is None


def test_base_url_with_v2_suffix_tolerated():
    handler, requests = paged_server([entry(1)], 10)
    c = HarvestClient("https://api.harvestapp.com/v2/", "1", TOKEN, transport=httpx.MockTransport(handler))
    c.list_time_entries(date(2026, 10, 1), date(2026, 10, 2))
    assert requests[0].url.path == "/v2/time_entries"


def test_paging_loop_detected():
    def handler(request):
        return jresp(200, {"clients": [], "links": {"next": "https://api.harvestapp.com/v2/clients?cursor=same"}})

    c, _ = client(handler)
    with pytest.raises(ApiValidationError, match="loop"):
        c.list_clients()


def test_string_dates_accepted_and_range_checked():
    handler, requests = paged_server([entry(1)], 10)
    c, _ = client(handler)
    c.list_time_entries("2026-10-01", "2026-10-31")
    assert requests[0].url.params["from"] == "2026-10-01"
    with pytest.raises(ValueError):
        c.list_time_entries(date(2026, 10, 31), date(2026, 10, 1))


# -- issue 13: two different records under one id -------------------------------------------


def test_two_different_entries_with_one_id_are_both_quarantined_not_one_dropped():
    # Before: `_collect` kept the first record per id and dropped the second (6.14 h lost silently).
    entries = [entry(1), entry(2, hours=Decimal("1.00")), entry(3), entry(2, hours=Decimal("6.14"))]
    handler, _ = paged_server(entries, 2)
    c, _ = client(handler, per_page=2)
    result = c.list_time_entries(date(2026, 10, 1), date(2026, 10, 31))
    assert [e.id for e in result.records] == [1, 3]
    rejected = [r for r in result.rejected if r.record_id == "2"]
    assert len(rejected) == 2
    assert all("2 different records with id 2" in r.reason for r in rejected)
    assert sorted(Decimal(str(json.loads(r.raw_json)["hours"])) for r in rejected) == [
        Decimal("1.00"), Decimal("6.14")]


def test_the_same_entry_repeated_on_overlapping_pages_is_read_once():
    entries = [entry(1), entry(2), entry(2), entry(3)]
    handler, _ = paged_server(entries, 2)
    c, _ = client(handler, per_page=2)
    result = c.list_time_entries(date(2026, 10, 1), date(2026, 10, 31))
    assert [e.id for e in result.records] == [1, 2, 3]
    assert result.rejected == []
