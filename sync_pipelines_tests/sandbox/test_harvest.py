from __future__ import annotations

from decimal import Decimal

import httpx

from .conftest import body, harvest_headers

INVALID_TOKEN = {
    "error": "invalid_token",
    "error_description": "The access token provided is expired, revoked, malformed or invalid for other reasons.",
}


def test_time_entries_envelope_and_order(sb):
    r = httpx.get(f"{sb.base_url}/v2/time_entries", headers=harvest_headers(sb))
    assert r.status_code == 200
    b = body(r)
    assert b["total_entries"] == 7 and b["per_page"] == 2000 and b["page"] == 1 and b["next_page"] is None
    assert b["links"]["next"] is None
    dates = [e["spent_date"] for e in b["time_entries"]]
    assert dates == sorted(dates, reverse=True)  # newest first
    e = next(e for e in b["time_entries"] if e["id"] == 1002)
    assert e["hours"] == Decimal("2.33") and isinstance(e["hours"], Decimal)
    assert e["client"] == {"id": 10, "name": "O'Brien & Sons", "currency": "USD"}
    assert e["project"]["code"] == "OBR-1"


def test_time_entries_cursor_paging_follows_links_next(sb):
    url = f"{sb.base_url}/v2/time_entries?per_page=3&from=2026-10-01&to=2026-10-31"
    seen, pages = [], []
    while url:
        r = httpx.get(url, headers=harvest_headers(sb))
        assert r.status_code == 200
        b = body(r)
        pages.append(b)
        seen += [e["id"] for e in b["time_entries"]]
        url = b["links"]["next"]
    assert len(pages) == 2
    assert pages[0]["page"] == 1 and pages[0]["next_page"] == 2
    assert "cursor=" in pages[0]["links"]["next"] and "ref=next_cursor" in pages[0]["links"]["next"]
    assert pages[1]["page"] is None and pages[1]["next_page"] is None and pages[1]["previous_page"] is None
    assert sorted(seen) == [1001, 1002, 1003, 1004, 1005]  # from/to inclusive, Sept 30 and Nov 1 excluded
    assert len(set(seen)) == len(seen)


def test_time_entries_filters(sb):
    h = harvest_headers(sb)
    get = lambda **p: body(httpx.get(f"{sb.base_url}/v2/time_entries", params=p, headers=h))["time_entries"]  # noqa: E731
    assert {e["id"] for e in get(client_id="11")} == {1006, 1007}
    assert {e["id"] for e in get(is_running="true")} == {1004}
    assert {e["id"] for e in get(user_id="2", project_id="100")} == {1002, 1004}
    assert {e["id"] for e in get(updated_since="2026-10-06T00:00:00Z")} == {1006, 1007}
    assert {e["id"] for e in get(**{"from": "2026-10-02", "to": "2026-10-02"})} == {1002, 1003}


def test_per_page_above_2000_is_422(sb):
    for bad in ("2001", "0", "x"):
        r = httpx.get(f"{sb.base_url}/v2/time_entries", params={"per_page": bad}, headers=harvest_headers(sb))
        assert r.status_code == 422, bad
    assert httpx.get(f"{sb.base_url}/v2/time_entries", params={"per_page": "2000"}, headers=harvest_headers(sb)).status_code == 200


def test_auth_failures_return_invalid_token_body(sb):
    good = harvest_headers(sb)
    for missing in ("Authorization", "Harvest-Account-Id", "User-Agent"):
        h = {k: v for k, v in good.items() if k != missing}
        if missing == "User-Agent":
            h["User-Agent"] = ""
        r = httpx.get(f"{sb.base_url}/v2/time_entries", headers=h)
        assert r.status_code == 401, missing
        assert r.json() == INVALID_TOKEN
    r = httpx.get(f"{sb.base_url}/v2/clients", headers={**good, "Authorization": "Bearer wrong"})
    assert r.status_code == 401 and r.json() == INVALID_TOKEN


def test_clients_projects_users_tasks_with_cursor_paging(sb):
    h = harvest_headers(sb)
    for path, key, n in (("clients", "clients", 2), ("projects", "projects", 2), ("users", "users", 2), ("tasks", "tasks", 1)):
        url, got = f"{sb.base_url}/v2/{path}?per_page=1", []
        while url:
            b = body(httpx.get(url, headers=h))
            got += b[key]
            url = b["links"]["next"]
        assert len(got) == n, path
    b = body(httpx.get(f"{sb.base_url}/v2/projects", params={"client_id": "11"}, headers=h))
    assert [p["code"] for p in b["projects"]] == ["CZ-1"]
