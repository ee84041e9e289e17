"""Harvest months read page by page into the frame, and refreshed incrementally.

Unit tests over a mock transport for the paging; the refresh runs over loopback HTTP against the
sandbox (edits through PATCH, deletions through DELETE, as a Harvest user would make them) and
through the Dagster asset, whose materialisation metadata carries the refresh state.
"""

from __future__ import annotations

import json
from datetime import date, timedelta
from decimal import Decimal

import dagster as dg
import httpx
import pandas as pd
import pytest

from sync_pipelines import money
from sync_pipelines.connectors.harvest import HarvestClient
from sync_pipelines.connectors.http import RetryPolicy
from sync_pipelines.connectors.repeated_records import RepeatedRecords
from sync_pipelines.extract.frames import rejected_frame, time_entries_frame
from sync_pipelines.extract.harvest_month import extract_month, read_time_entries
from sync_pipelines.sandbox import SandboxServer

from .helpers import AuditRecorder, jresp
from .test_harvest import client as mock_client
from .test_harvest import entry, paged_server

OCT = ("2026-10-01", "2026-10-31")


def _sorted(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values("entry_id").reset_index(drop=True)


# -- paging into the frame -------------------------------------------------------------------


def test_pages_into_the_frame_give_what_the_models_gave_repeats_and_conflicts_included():
    entries = [entry(1), entry(2, hours=Decimal("1.00")), entry(3), entry(2, hours=Decimal("6.14")),
               entry(4), entry(4), {"id": 5, "hours": "x"}, entry(6, hours=Decimal("0.333"))]
    handler, requests = paged_server(entries, 2)
    c, _ = mock_client(handler, per_page=2)
    frame, rejected = read_time_entries(c.time_entry_pages(*OCT))
    assert len(requests) == 4 and c.requests_made == 4
    models = c.list_time_entries(date(2026, 10, 1), date(2026, 10, 31))
    pd.testing.assert_frame_equal(frame, time_entries_frame(models.records))
    pd.testing.assert_frame_equal(rejected.sort_values(["record_id", "raw_json"]).reset_index(drop=True),
                                  rejected_frame(models.rejected).sort_values(["record_id", "raw_json"])
                                  .reset_index(drop=True))
    assert frame["entry_id"].tolist() == [1, 3, 4, 6]
    assert frame.loc[frame["entry_id"] == 6, "hours_centi"].item() == 33
    two = rejected[rejected["record_id"] == "2"]
    assert sorted(Decimal(str(json.loads(r)["hours"])) for r in two["raw_json"]) == [Decimal("1.00"), Decimal("6.14")]
    assert all("2 different records with id 2" in r for r in two["reason"])
    assert rejected[rejected["record_id"] == "5"]["reason"].str.contains("spent_date").all()


def test_repeated_records_keep_only_a_digest_and_read_the_first_text_back_for_a_conflict():
    with RepeatedRecords() as repeats:
        first = [{"id": i, "n": "a" * 50} for i in range(1000)]
        assert repeats.fresh(first) == first
        assert repeats.fresh([{"id": 7, "n": "a" * 50}]) == []  # same content: read once
        assert repeats.fresh([{"id": 500, "n": "changed"}, {"id": "x", "n": 1}, {"id": {"o": 1}}]) == [
            {"id": "x", "n": 1}, {"id": {"o": 1}}]
        assert repeats.fresh([{"id": 500, "n": "changed"}, {"id": 500, "n": "third"}]) == []
        conflicts = repeats.conflicts()
    assert list(conflicts) == [500]
    assert [json.loads(t)["n"] for t in conflicts[500]] == ["a" * 50, "changed", "third"]
    assert all(len(t) < 200 for t in conflicts[500])


def test_count_is_one_call_with_per_page_1():
    def handler(request):
        assert request.url.params["per_page"] == "1" and request.url.params["from"] == "2026-10-01"
        return jresp(200, {"time_entries": [entry(1)], "total_entries": 4321, "links": {"next": "x"}})

    c, _ = mock_client(handler)
    assert c.count_time_entries(*OCT) == 4321 and c.requests_made == 1


# -- incremental refresh over HTTP against the sandbox ---------------------------------------


def _fixture(n: int = 45) -> dict:
    entries = []
    for i in range(n):
        entries.append({
            "id": 9000 + i, "spent_date": f"2026-10-{1 + i % 28:02d}", "hours": Decimal("1.25") + i,
            "rounded_hours": Decimal("1.25") + i,
            "user": {"id": 300, "name": "Ann Lee"}, "client": {"id": 100, "name": "Plain Co", "currency": "USD"},
            "project": {"id": 200, "name": "Site", "code": "P0"}, "task": {"id": 400, "name": "Development"},
            "billable": True, "is_running": False, "is_locked": i == 0, "is_closed": i == 0, "is_billed": False,
            "billable_rate": Decimal("150.00"), "cost_rate": None, "notes": "work",
            "created_at": "2026-10-01T00:00:00Z", "updated_at": f"2026-10-{1 + i % 28:02d}T18:00:00Z"})
    entries.append({**entries[1], "id": 9999, "spent_date": "2026-11-02"})  # next month
    return {
        "harvest": {"clients": [{"id": 100, "name": "Plain Co", "is_active": True, "currency": "USD"}],
                    "projects": [{"id": 200, "name": "Site", "code": "P0", "is_active": True,
                                  "client": {"id": 100, "name": "Plain Co", "currency": "USD"}}],
                    "users": [{"id": 300, "first_name": "Ann", "last_name": "Lee", "is_active": True}],
                    "tasks": [{"id": 400, "name": "Development", "is_active": True}],
                    "time_entries": entries},
    }


@pytest.fixture()
def sb():
    with SandboxServer(_fixture(), rate_limits="off") as server:
        yield server


def _harvest(sb, **kw) -> HarvestClient:
    env = sb.env()
    return HarvestClient(env["HARVEST_BASE_URL"], env["HARVEST_ACCOUNT_ID"], env["HARVEST_ACCESS_TOKEN"],
                         retry=RetryPolicy.fast(), **kw)


def _as_user(sb, method: str, entry_id: int, body: dict | None = None) -> httpx.Response:
    env = sb.env()
    headers = {"Authorization": f"Bearer {env['HARVEST_ACCESS_TOKEN']}", "Harvest-Account-Id": env["HARVEST_ACCOUNT_ID"],
               "User-Agent": "a Harvest user (user@example.com)", "Content-Type": "application/json"}
    return httpx.request(method, f"{sb.base_url}/v2/time_entries/{entry_id}", headers=headers,
                         content=money.dumps(body) if body is not None else None)


def _stored(extract):
    from sync_pipelines.extract.harvest_month import StoredMonth

    return StoredMonth(extract.frame, extract.rejected, extract.last_full_pull_at)


def test_quiet_refresh_makes_two_calls_and_changes_nothing(sb):
    audit = AuditRecorder()
    c = _harvest(sb, per_page=10, audit=audit)
    first = extract_month(c, "2026-10")
    assert first.mode == "full" and len(first.frame) == 45 and first.api_calls == 5  # 10+10+10+10+5
    again = extract_month(c, "2026-10", _stored(first))
    assert again.mode == "incremental", again.reason
    # the changes since the high-water mark (minus the margin) and the month's count
    assert again.api_calls == 2 and len(audit.rows) == 7
    pd.testing.assert_frame_equal(again.frame, first.frame)
    assert again.last_full_pull_at == first.last_full_pull_at
    assert again.high_water_mark == "2026-10-28T18:00:00Z" and again.entries_read == 1


def test_an_edit_is_merged_in_place_and_equals_a_full_read(sb):
    c = _harvest(sb)
    first = extract_month(c, "2026-10")
    assert _as_user(sb, "PATCH", 9007, {"hours": Decimal("2.5"), "notes": "fixed"}).status_code == 200
    assert _as_user(sb, "PATCH", 9999, {"spent_date": "2026-10-03"}).status_code == 200  # moved into October
    refreshed = extract_month(c, "2026-10", _stored(first))
    assert refreshed.mode == "incremental", refreshed.reason
    # the two edits, and the entry at the high-water mark (inside the safety margin)
    assert refreshed.api_calls == 2 and refreshed.entries_read == 3
    row = refreshed.frame[refreshed.frame["entry_id"] == 9007].iloc[0]
    assert row["hours_centi"] == 250 and row["notes"] == "fixed"
    # the edited entry keeps its place; the new one comes last
    assert refreshed.frame["entry_id"].tolist()[:-1] == first.frame["entry_id"].tolist()
    assert refreshed.frame["entry_id"].tolist()[-1] == 9999
    full = extract_month(c, "2026-10", full=True)
    pd.testing.assert_frame_equal(_sorted(refreshed.frame), _sorted(full.frame))


def test_a_deleted_entry_disappears_through_the_count_check(sb):
    c = _harvest(sb)
    first = extract_month(c, "2026-10")
    assert _as_user(sb, "DELETE", 9011).status_code == 200
    assert _as_user(sb, "DELETE", 9000).status_code == 422  # locked (approved): not deletable
    refreshed = extract_month(c, "2026-10", _stored(first))
    assert refreshed.mode == "full" and "deleted or moved" in refreshed.reason
    assert 9011 not in set(refreshed.frame["entry_id"]) and len(refreshed.frame) == 44
    assert refreshed.entries_removed == 1
    # changes (none), count (44 != 45), then the month again in one page
    assert refreshed.api_calls == 3
    # and a refresh after that is quiet again
    assert extract_month(c, "2026-10", _stored(refreshed)).mode == "incremental"


def test_an_entry_moved_to_another_month_leaves_this_one(sb):
    c = _harvest(sb)
    first = extract_month(c, "2026-10")
    assert _as_user(sb, "PATCH", 9012, {"spent_date": "2026-11-05"}).status_code == 200
    refreshed = extract_month(c, "2026-10", _stored(first))
    assert refreshed.mode == "full" and 9012 not in set(refreshed.frame["entry_id"])


def test_weekly_full_read_and_running_timers_are_reread(sb):
    c = _harvest(sb)
    first = extract_month(c, "2026-10")
    later = first.last_full_pull_at + timedelta(days=7)
    assert extract_month(c, "2026-10", _stored(first), now=later).mode == "full"
    running = first.frame.copy()
    running.loc[running["entry_id"] == 9003, "is_running"] = True
    stored = _stored(first).__class__(running, first.rejected, first.last_full_pull_at)
    refreshed = extract_month(c, "2026-10", stored)
    # changes, the running entries (none now: the timer was stopped), the count
    assert refreshed.mode == "incremental" and refreshed.api_calls == 3
    # the stored "running" row is what Harvest says now only if it changed; the count still matches
    assert len(refreshed.frame) == 45


def test_quarantined_records_survive_a_refresh_and_are_replaced_when_they_change(sb):
    c = _harvest(sb)
    first = extract_month(c, "2026-10")
    bad = pd.DataFrame([{"system": "harvest", "entity": "time_entry", "record_id": "9005",
                         "reason": "hours: bad", "raw_json": "{}"},
                        {"system": "harvest", "entity": "time_entry", "record_id": None,
                         "reason": "not an object", "raw_json": "[]"}]).astype(first.rejected.dtypes.to_dict())
    frame = first.frame[first.frame["entry_id"] != 9005].reset_index(drop=True)
    stored = _stored(first).__class__(frame, bad, first.last_full_pull_at)
    # 44 rows + 1 quarantined id + 1 without an id = 46 held, Harvest lists 45: read again in full
    assert extract_month(c, "2026-10", stored).mode == "full"
    stored = _stored(first).__class__(frame, bad.iloc[:1], first.last_full_pull_at)
    kept = extract_month(c, "2026-10", stored)
    assert kept.mode == "incremental" and kept.rejected["record_id"].tolist() == ["9005"]
    assert _as_user(sb, "PATCH", 9005, {"notes": "now readable"}).status_code == 200
    replaced = extract_month(c, "2026-10", stored)
    assert replaced.mode == "incremental" and replaced.rejected.empty
    assert replaced.frame.loc[replaced.frame["entry_id"] == 9005, "notes"].item() == "now readable"


# -- through the Dagster asset: the state lives in the materialisation metadata ----------------


def test_asset_refreshes_from_its_last_materialisation(sb, tmp_path, monkeypatch):
    from sync_pipelines.defs.harvest.assets import harvest_time_entries
    from sync_pipelines.defs.io_manager import BillingStoreIOManager
    from sync_pipelines.defs.resources import HarvestResource, LedgerResource

    monkeypatch.setenv("SYNC_OUTPUT_DIR", str(tmp_path / "out"))
    env = sb.env()
    ledger = LedgerResource(url=f"sqlite:///{tmp_path / 'ledger.db'}")
    resources = {
        "harvest": HarvestResource(base_url=env["HARVEST_BASE_URL"], account_id=env["HARVEST_ACCOUNT_ID"],
                                   access_token=env["HARVEST_ACCESS_TOKEN"], ledger=ledger),
        "io_manager": BillingStoreIOManager(base_dir=str(tmp_path / "store")),
    }

    def run(instance, config=None):
        result = dg.materialize([harvest_time_entries], partition_key="2026-10", instance=instance,
                                resources=resources, run_config=config)
        event = result.asset_materializations_for_node("harvest_time_entries")[0]
        return {k: v.value for k, v in event.metadata.items()}

    with dg.instance_for_test() as instance:
        first = run(instance)
        assert first["extraction"].startswith("full") and first["dagster/row_count"] == 45
        quiet = run(instance)
        assert quiet["extraction"].startswith("incremental") and quiet["api_calls"] == 2
        assert quiet["last_full_pull_at"] == first["last_full_pull_at"]
        assert _as_user(sb, "DELETE", 9020).status_code == 200
        after_delete = run(instance)
        assert after_delete["extraction"].startswith("full") and after_delete["dagster/row_count"] == 44
        forced = run(instance, {"ops": {"harvest_time_entries": {"config": {"full": True}}}})
        assert forced["extraction"] == "full: full extraction requested"
    stored = pd.read_parquet(first["path"])
    assert 9020 not in set(stored["entry_id"]) and len(stored) == 44
