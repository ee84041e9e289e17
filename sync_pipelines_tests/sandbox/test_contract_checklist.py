"""Contract tests for the checklist items of api-contracts §4 not covered by the per-API files:
HubSpot rate-limit headers and short pages with a cursor, `intuit_tid` on every QBO response."""

from __future__ import annotations

import httpx

from sync_pipelines.sandbox import SandboxServer

from .conftest import Qbo, hubspot_headers, small_fixture

RATE_HEADERS = ("X-HubSpot-RateLimit-Max", "X-HubSpot-RateLimit-Remaining", "X-HubSpot-RateLimit-Interval-Milliseconds",
                "X-HubSpot-RateLimit-Daily", "X-HubSpot-RateLimit-Daily-Remaining")


def test_hubspot_rate_limit_headers_on_normal_calls_none_on_search():
    with SandboxServer(small_fixture(), rate_limits={"hubspot_per_10s": 100}) as sb:
        h = hubspot_headers(sb)
        base = f"{sb.base_url}/crm"
        calls = [httpx.get(f"{base}/v3/objects/deals?limit=2", headers=h),
                 httpx.get(f"{base}/v3/objects/deals/8801", headers=h),
                 httpx.patch(f"{base}/v3/objects/deals/8801", json={"properties": {"po_number": "PO-1"}}, headers=h),
                 httpx.get(f"{base}/v4/objects/deals/8801/associations/companies", headers=h),
                 httpx.post(f"{base}/v3/objects/deals/batch/read", json={"inputs": [{"id": "8801"}]}, headers=h)]
        for r in calls:
            assert r.status_code == 200, r.request.url
            assert all(name in r.headers for name in RATE_HEADERS), (r.request.url, dict(r.headers))
            assert r.headers["X-HubSpot-RateLimit-Max"] == "100"
            assert r.headers["X-HubSpot-RateLimit-Interval-Milliseconds"] == "10000"
        remaining = [int(r.headers["X-HubSpot-RateLimit-Remaining"]) for r in calls]
        assert remaining == sorted(remaining, reverse=True) and remaining[0] == 99
        s = httpx.post(f"{base}/v3/objects/deals/search", json={"limit": 2}, headers=h)
        assert s.status_code == 200 and not any(name.lower().startswith("x-hubspot-ratelimit") for name in s.headers)


def _follow_list(sb, h, limit):
    url, pages = f"{sb.base_url}/crm/v3/objects/deals?limit={limit}", []
    while url:
        b = httpx.get(url, headers=h).json()
        pages.append(b)
        nxt = b.get("paging", {}).get("next")
        url = nxt["link"] if nxt else None
    return pages


def _follow_search(sb, h, limit):
    req, pages = {"limit": limit, "sorts": [{"propertyName": "amount", "direction": "ASCENDING"}]}, []
    while True:
        b = httpx.post(f"{sb.base_url}/crm/v3/objects/deals/search", json=req, headers=h).json()
        pages.append(b)
        after = b.get("paging", {}).get("next", {}).get("after")
        if not after:
            return pages
        req["after"] = after


def test_hubspot_short_and_empty_pages_still_carry_paging_next(sb):
    h = hubspot_headers(sb)
    sb.set_faults("hubspot", rate_short_page=1.0, seed=3)
    for follow, limit in ((_follow_list, 3), (_follow_search, 3)):
        pages = follow(sb, h, limit)
        ids = [d["id"] for p in pages for d in p["results"]]
        assert sorted(ids) == [str(8800 + i) for i in range(1, 8)], follow.__name__  # each deal once, none lost
        short_with_cursor = [p for p in pages if len(p["results"]) < limit and p.get("paging", {}).get("next")]
        assert short_with_cursor, follow.__name__
        assert pages[-1]["results"] == [] and "paging" not in pages[-1]  # the last full page pointed on
        cursors = [p["paging"]["next"]["after"] for p in pages[:-1]]
        assert len(set(cursors)) == len(cursors)  # the cursor always moves on
    sb.set_faults("hubspot")
    assert all(len(p["results"]) == 3 for p in _follow_list(sb, h, 3)[:-1])  # normal again


def test_intuit_tid_on_every_qbo_response(sb):
    q = Qbo(sb)
    responses = [
        q.query("select * from Item"),                                   # 200 QueryResponse
        q.query("select * from Nope"),                                   # 400 Fault
        q.post("invoice", {"CustomerRef": {"value": "58"}}),             # 400 validation
        httpx.get(f"{q.base}/invoice/1", headers={"Accept": "application/json"}),  # 401 lowercase fault
        httpx.get(f"{sb.base_url}/v3/company/999/query", params={"query": "select * from Item"}, headers=q.headers()),  # 403
        httpx.post(f"{sb.base_url}/oauth2/v1/tokens/bearer", data={"grant_type": "refresh_token", "refresh_token": "x"}),  # 401
    ]
    assert [r.status_code for r in responses] == [200, 400, 400, 401, 403, 401]
    for r in responses:
        assert r.headers.get("intuit_tid"), r.request.url
    assert len({r.headers["intuit_tid"] for r in responses}) == len(responses)  # one per request
