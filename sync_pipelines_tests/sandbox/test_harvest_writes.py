"""Harvest time entry edits (api-contracts §3.4, checklist §4.5): updatable fields only,
`is_billed` not writable, locked entries not editable, `updated_at` bumped for `updated_since`."""

from __future__ import annotations

from decimal import Decimal

import httpx

from sync_pipelines import money

from .conftest import body, harvest_headers, small_fixture


def patch(sb, entry_id: int, payload: dict, headers: dict | None = None) -> httpx.Response:
    h = {**harvest_headers(sb), "Content-Type": "application/json", **(headers or {})}
    return httpx.patch(f"{sb.base_url}/v2/time_entries/{entry_id}", content=money.dumps(payload), headers=h)


def get_entry(sb, entry_id: int) -> dict:
    return body(httpx.get(f"{sb.base_url}/v2/time_entries/{entry_id}", headers=harvest_headers(sb)))


def test_patch_updatable_fields_bumps_updated_at(sb):
    before = get_entry(sb, 1002)
    r = patch(sb, 1002, {"hours": Decimal("3.5"), "notes": "Reworked after review", "started_time": "9:00am",
                         "ended_time": "12:30pm", "task_id": 7, "external_reference": None})
    assert r.status_code == 200
    e = body(r)
    assert e["id"] == 1002 and e["hours"] == Decimal("3.5") and e["notes"] == "Reworked after review"
    assert e["started_time"] == "9:00am" and e["ended_time"] == "12:30pm"
    assert e["updated_at"] > before["updated_at"]
    assert e["is_billed"] is False and e["billable_rate"] == before["billable_rate"]  # untouched
    assert get_entry(sb, 1002)["hours"] == Decimal("3.5")


def test_edit_after_month_end_is_found_by_updated_since(sb):
    h = harvest_headers(sb)
    since = "2026-10-29T00:00:00Z"  # after every fixture updated_at
    q = {"from": "2026-10-01", "to": "2026-10-31", "updated_since": since}
    assert body(httpx.get(f"{sb.base_url}/v2/time_entries", params=q, headers=h))["time_entries"] == []
    assert patch(sb, 1001, {"hours": Decimal("1.5")}).status_code == 200
    found = body(httpx.get(f"{sb.base_url}/v2/time_entries", params=q, headers=h))["time_entries"]
    assert [e["id"] for e in found] == [1001] and found[0]["hours"] == Decimal("1.5")


def test_is_billed_and_other_read_only_fields_are_422(sb):
    for payload in ({"is_billed": True}, {"hours": Decimal("1"), "is_billed": True}, {"is_locked": False},
                    {"billable_rate": Decimal("99")}, {"id": 1}, {"user_id": 2}, {"rounded_hours": Decimal("2")}):
        r = patch(sb, 1003, payload)
        assert r.status_code == 422, payload
        msg = r.json()["message"]
        assert isinstance(msg, str) and next(iter(k for k in payload if k != "hours")) in msg
    assert get_entry(sb, 1003)["is_billed"] is False  # nothing changed
    assert get_entry(sb, 1003)["updated_at"] == "2026-10-03T12:00:00Z"


def test_locked_entry_is_not_editable(sb):
    locked = get_entry(sb, 1006)
    assert locked["is_locked"] is True
    r = patch(sb, 1006, {"notes": "late fix"})
    assert r.status_code == 422
    assert "locked" in r.json()["message"].lower()
    assert "Item Approved and Locked for this Time Period" in r.json()["message"]
    assert get_entry(sb, 1006) == locked


def test_patch_validation_auth_and_not_found(sb):
    assert patch(sb, 1002, {"hours": "lots"}).status_code == 422
    assert patch(sb, 1002, {"hours": Decimal("-1")}).status_code == 422
    assert patch(sb, 1002, {"spent_date": "2026/10/02"}).status_code == 422
    assert patch(sb, 1002, {"project_id": 999}).status_code == 422
    assert patch(sb, 1002, {"started_time": "25:99"}).status_code == 422
    assert patch(sb, 99999, {"notes": "x"}).status_code == 404
    r = patch(sb, 1002, {"notes": "x"}, headers={"Harvest-Account-Id": ""})
    assert r.status_code == 401 and r.json()["error"] == "invalid_token"


def test_moving_an_entry_keeps_order_filters_and_client(sb):
    h = harvest_headers(sb)
    r = patch(sb, 1007, {"spent_date": "2026-10-20", "project_id": 100})  # Nov 1, client 11 -> Oct 20, client 10
    assert r.status_code == 200
    e = body(r)
    assert e["client"] == {"id": 10, "name": "O'Brien & Sons", "currency": "USD"} and e["project"]["code"] == "OBR-1"
    got = body(httpx.get(f"{sb.base_url}/v2/time_entries", params={"from": "2026-10-01", "to": "2026-10-31"}, headers=h))
    dates = [x["spent_date"] for x in got["time_entries"]]
    assert 1007 in [x["id"] for x in got["time_entries"]] and dates == sorted(dates, reverse=True)
    assert {x["id"] for x in body(httpx.get(f"{sb.base_url}/v2/time_entries", params={"client_id": "11"},
                                             headers=h))["time_entries"]} == {1006}


def test_edits_are_in_the_state_and_reset_restores_the_fixture(sb):
    assert patch(sb, 1001, {"notes": "edited"}).status_code == 200
    state = sb.state()
    assert next(e for e in state["harvest"]["time_entries"] if e["id"] == 1001)["notes"] == "edited"
    sb.reset()
    assert get_entry(sb, 1001).get("notes") is None
    # the caller's fixture object is never modified (entries are copied on write)
    assert all("notes" not in e for e in sb.sandbox.st.initial_fixture["harvest"]["time_entries"])


def test_edits_survive_a_restart_with_a_state_file(tmp_path):
    from sync_pipelines.sandbox import SandboxServer

    path = tmp_path / "state.json"
    fixture = small_fixture()
    with SandboxServer(fixture, rate_limits=None, state_file=path) as sb:
        assert patch(sb, 1004, {"hours": Decimal("0.75")}).status_code == 200
    with SandboxServer(fixture, rate_limits=None, state_file=path) as sb:
        assert get_entry(sb, 1004)["hours"] == Decimal("0.75")
    assert fixture["harvest"]["time_entries"][3]["hours"] == Decimal("2.33")
