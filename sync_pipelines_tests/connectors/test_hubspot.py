from __future__ import annotations

from datetime import datetime, timedelta, timezone

import httpx
import pytest

from sync_pipelines.connectors.hubspot import HubSpotClient, pick_company
from sync_pipelines.connectors.http import ApiRateLimited, ApiValidationError, RetryPolicy

from .helpers import AuditRecorder, FakeTime, body_of, jresp

TOKEN = "pat-na1-secret-hubspot"


def deal(i: int, stamp: datetime) -> dict:
    return {"id": str(i), "properties": {
        "dealname": f"Deal {i}", "dealstage": "closedwon", "pipeline": "default",
        "hs_lastmodifieddate": stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z",
        "hs_object_id": str(i)}, "archived": False}


def make(handler, **kw):
    ft = FakeTime()
    c = HubSpotClient("https://api.hubapi.com", TOKEN, transport=httpx.MockTransport(handler),
                      sleep=ft.sleep, clock=ft.clock, retry=kw.pop("retry", RetryPolicy.fast()), **kw)
    return c, ft


def test_list_follows_cursor_through_short_and_empty_pages():
    pages = {
        None: ([deal(1, datetime(2026, 1, 1))], "c1"),  # short page, cursor present
        "c1": ([], "c2"),  # empty page, cursor present
        "c2": ([deal(2, datetime(2026, 1, 2)), deal(3, datetime(2026, 1, 3))], None),
    }
    seen = []

    def handler(request):
        after = request.url.params.get("after")
        seen.append(request)
        results, nxt = pages[after]
        body = {"results": results}
        if nxt:
            body["paging"] = {"next": {"after": nxt, "link": "?after=" + nxt}}
        return jresp(200, body)

    c, _ = make(handler)
    out = c.list_deals(["dealname", "dealstage"])
    assert [d.id for d in out.records] == ["1", "2", "3"]
    assert len(seen) == 3
    assert seen[0].url.params["limit"] == "100"
    assert seen[0].url.params["properties"] == "dealname,dealstage"
    assert seen[0].headers["Authorization"] == f"Bearer {TOKEN}"


def test_list_quarantines_non_string_property():
    bad = {"id": "9", "properties": {"amount": 100}}

    def handler(request):
        return jresp(200, {"results": [deal(1, datetime(2026, 1, 1)), bad]})

    c, _ = make(handler)
    out = c.list_deals(["amount"])
    assert [d.id for d in out.records] == ["1"]
    assert out.rejected[0].record_id == "9" and "amount" in out.rejected[0].reason


class FakeSearch:
    """HubSpot search with the 10,000 cap: sorted by hs_lastmodifieddate, 400 past the cap."""

    def __init__(self, n: int, cap: int = 10_000, same_stamp_every: int = 7):
        base = datetime(2026, 1, 1, tzinfo=timezone.utc)
        # several deals share a timestamp, so windows overlap at their boundary
        self.deals = [deal(i, base + timedelta(seconds=i // same_stamp_every)) for i in range(1, n + 1)]
        self.cap = cap
        self.requests: list[dict] = []
        self._ms = {d["id"]: self._parse_ms(d) for d in self.deals}

    @staticmethod
    def _parse_ms(d: dict) -> int:
        s = d["properties"]["hs_lastmodifieddate"]
        return int(datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp() * 1000)

    def ms(self, d: dict) -> int:
        return self._ms[d["id"]]

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = body_of(request)
        self.requests.append(body)
        after = int(body.get("after") or 0)
        limit = body["limit"]
        if after >= self.cap or after + limit > self.cap or limit > 200:
            return jresp(400, {"status": "error", "category": "VALIDATION_ERROR",
                               "message": "after exceeds 10000"})
        rows = self.deals
        for group in body["filterGroups"]:
            for f in group["filters"]:
                if f["propertyName"] == "hs_lastmodifieddate" and f["operator"] == "GTE":
                    rows = [d for d in rows if self.ms(d) >= int(f["value"])]
        rows = sorted(rows, key=lambda d: (self.ms(d), int(d["id"])))
        page = rows[after:after + limit]
        out = {"total": len(rows), "results": page}
        if after + limit < len(rows):
            out["paging"] = {"next": {"after": str(after + limit)}}
        return jresp(200, out)


def test_search_windows_past_the_10k_cap():
    server = FakeSearch(10_450)
    c, ft = make(server)
    out = c.search_deals([{"filters": [{"propertyName": "dealstage", "operator": "EQ", "value": "closedwon"}]}],
                         ["dealname"])
    ids = [d.id for d in out.records]
    assert len(ids) == 10_450 and len(set(ids)) == 10_450
    assert all(int(r.get("after") or 0) < 10_000 for r in server.requests)
    # the second window carries the GTE filter in the caller's group
    windowed = [r for r in server.requests if len(r["filterGroups"][0]["filters"]) == 2]
    assert windowed and windowed[0]["filterGroups"][0]["filters"][0]["propertyName"] == "dealstage"
    assert server.requests[0]["limit"] == 200
    assert server.requests[0]["sorts"] == [{"propertyName": "hs_lastmodifieddate", "direction": "ASCENDING"}]
    assert "hs_lastmodifieddate" in server.requests[0]["properties"]


def test_search_windowing_small_cap():
    server = FakeSearch(137, cap=50)
    c, _ = make(server, search_limit=10, search_cap=50)
    out = c.search_deals([], ["dealname"])
    assert sorted(int(d.id) for d in out.records) == list(range(1, 138))


def test_search_respects_search_rate_limit():
    server = FakeSearch(30)
    c, ft = make(server, search_limit=1)
    c.search_deals([], ["dealname"])
    assert len(server.requests) == 30
    assert sum(ft.sleeps) >= 5.0  # 5 searches per second


def test_search_stuck_window_raises():
    server = FakeSearch(60, cap=20, same_stamp_every=1000)  # all 60 deals share one timestamp
    c, _ = make(server, search_limit=10, search_cap=20)
    with pytest.raises(ApiValidationError, match="share"):
        c.search_deals([], ["dealname"])


def test_update_deal_patches_string_properties_and_retries_423():
    calls = []

    def handler(request):
        calls.append(request)
        if len(calls) == 1:
            return jresp(423, {"status": "error", "message": "locked"})
        return jresp(200, {"id": "77", "properties": {"qbo_invoice_id": "266"}})

    c, ft = make(handler, retry=RetryPolicy.fast(locked_min_wait=2.0))
    d = c.update_deal("77", {"qbo_invoice_id": "266"})
    assert d.properties["qbo_invoice_id"] == "266"
    assert calls[1].method == "PATCH" and calls[1].url.path == "/crm/v3/objects/deals/77"
    assert body_of(calls[1]) == {"properties": {"qbo_invoice_id": "266"}}
    assert ft.sleeps and ft.sleeps[0] >= 2.0
    with pytest.raises(TypeError):
        c.update_deal("77", {"qbo_invoice_id": 266})


def test_update_deal_unknown_property_not_retried():
    calls = []

    def handler(request):
        calls.append(1)
        return jresp(400, {"status": "error", "message": "Property values were not valid",
                           "category": "VALIDATION_ERROR", "correlationId": "abc",
                           "errors": [{"message": "Property \"x\" does not exist", "code": "PROPERTY_DOESNT_EXIST"}]})

    c, _ = make(handler)
    with pytest.raises(ApiValidationError) as ei:
        c.update_deal("1", {"x": "y"})
    assert len(calls) == 1 and "PROPERTY_DOESNT_EXIST" in str(ei.value)


def test_daily_limit_not_retried_ten_secondly_is():
    calls = []

    def daily(request):
        calls.append(1)
        return jresp(429, {"status": "error", "errorType": "RATE_LIMIT", "policyName": "DAILY",
                           "message": "You have reached your daily limit."})

    c, _ = make(daily)
    with pytest.raises(ApiRateLimited):
        c.list_companies()
    assert len(calls) == 1

    calls2 = []

    def rolling(request):
        calls2.append(1)
        if len(calls2) == 1:
            return jresp(429, {"status": "error", "policyName": "TEN_SECONDLY_ROLLING"})
        return jresp(200, {"results": [{"id": "5", "properties": {"name": "Acme"}}]})

    c, _ = make(rolling)
    assert c.list_companies().records[0].name == "Acme"


def test_deal_company_ids_prefers_primary_and_stringifies():
    def handler(request):
        deal_id = request.url.path.split("/")[5]
        if deal_id == "1":
            return jresp(200, {"results": [
                {"toObjectId": 111, "associationTypes": [{"category": "HUBSPOT_DEFINED", "typeId": 341}]},
                {"toObjectId": 222, "associationTypes": [{"category": "HUBSPOT_DEFINED", "typeId": 341},
                                                         {"category": "HUBSPOT_DEFINED", "typeId": 5,
                                                          "label": "Primary"}]}]})
        if deal_id == "2":
            return jresp(200, {"results": [
                {"toObjectId": 333, "associationTypes": [{"category": "USER_DEFINED", "typeId": 99}]},
                {"toObjectId": 444, "associationTypes": [{"category": "HUBSPOT_DEFINED", "typeId": 341}]}]})
        return jresp(200, {"results": []})

    c, _ = make(handler)
    assert c.deal_company_ids(["1", "2", "3"]) == {"1": "222", "2": "444"}
    assert pick_company([]) is None


def test_secrets_absent_from_errors_and_audit():
    audit = AuditRecorder()

    def handler(request):
        return jresp(401, {"status": "error", "category": "INVALID_AUTHENTICATION",
                           "message": f"Authentication credentials not found. token={TOKEN}"})

    c, _ = make(handler, audit=audit)
    with pytest.raises(Exception) as ei:
        c.list_deals(["dealname"])
    assert TOKEN not in str(ei.value) and TOKEN not in repr(audit.rows) and TOKEN not in repr(c)
    assert "INVALID_AUTHENTICATION" in str(ei.value)


def test_ten_secondly_429_waits_policy_time_capped_by_max_delay():
    calls = []

    def handler(request):
        calls.append(1)
        if len(calls) == 1:
            return jresp(429, {"status": "error", "policyName": "TEN_SECONDLY_ROLLING"})
        return jresp(200, {"results": []})

    c, ft = make(handler, retry=RetryPolicy(max_delay=30.0))
    c.list_deals(["dealname"])
    assert ft.sleeps == [10.0]


def test_deal_company_ids_batch_read():
    seen = []

    def handler(request):
        seen.append(request)
        assert request.url.path == "/crm/v4/associations/deals/companies/batch/read"
        ids = [i["id"] for i in body_of(request)["inputs"]]
        results = [{"from": {"id": i}, "to": [
            {"toObjectId": 900 + int(i), "associationTypes": [{"category": "HUBSPOT_DEFINED", "typeId": 341}]},
            {"toObjectId": 100 + int(i), "associationTypes": [{"category": "HUBSPOT_DEFINED", "typeId": 5}]}]}
            for i in ids if i != "7"]
        return jresp(207, {"status": "COMPLETE", "results": results, "errors": [
            {"status": "error", "category": "OBJECT_NOT_FOUND", "message": "No associations",
             "context": {"fromObjectId": ["7"]}}] if "7" in ids else []})

    c, _ = make(handler)
    out = c.deal_company_ids([str(i) for i in range(1, 151)])
    assert len(seen) == 2  # 100 + 50
    assert out["1"] == "101" and out["150"] == "250" and "7" not in out and len(out) == 149


def test_deal_company_ids_falls_back_when_batch_missing():
    seen = []

    def handler(request):
        seen.append(request.url.path)
        if request.url.path.endswith("/batch/read"):
            return jresp(404, {"status": "error", "category": "OBJECT_NOT_FOUND", "message": "No route"})
        return jresp(200, {"results": [{"toObjectId": 5, "associationTypes": [{"typeId": 341}]}]})

    c, _ = make(handler)
    assert c.deal_company_ids(["1", "2"]) == {"1": "5", "2": "5"}
    assert c.deal_company_ids(["3"]) == {"3": "5"}
    assert sum(p.endswith("/batch/read") for p in seen) == 1  # remembered as unavailable


def test_search_modified_between_adds_window_filters():
    server = FakeSearch(40)
    c, _ = make(server)
    start = datetime(2026, 1, 1, 0, 0, 2, tzinfo=timezone.utc)
    end = datetime(2026, 1, 1, 0, 0, 4, tzinfo=timezone.utc)
    out = c.search_deals_modified_between(start, end, ["dealname"],
                                          [{"propertyName": "dealstage", "operator": "EQ", "value": "closedwon"}])
    filters = server.requests[0]["filterGroups"][0]["filters"]
    assert [f["operator"] for f in filters] == ["EQ", "GTE", "LT"]
    assert filters[1]["value"] == str(int(start.timestamp() * 1000))
    # FakeSearch only applies GTE; the LT bound is HubSpot's job: everything from the start on comes back
    assert min(int(d.id) for d in out.records) == 14


def test_date_based_api_version_paths():
    seen = []

    def handler(request):
        seen.append(request.url.path)
        return jresp(200, {"results": []})

    c, _ = make(handler, api_version="2026-03")
    c.list_deals(["dealname"])
    assert seen == ["/crm/objects/2026-03/deals"]
