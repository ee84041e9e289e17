"""HubSpot deals refreshed incrementally over HTTP against the sandbox (search windows, batch
associations, the deal count for archived deals)."""

from __future__ import annotations

from datetime import timedelta

import httpx
import pandas as pd
import pytest

from sync_pipelines.connectors.http import RetryPolicy
from sync_pipelines.connectors.hubspot import HubSpotClient
from sync_pipelines.extract.hubspot_deals_refresh import StoredDeals, extract_deals
from sync_pipelines.extract.sources import hubspot_deals
from sync_pipelines.sandbox import SandboxServer

from .helpers import AuditRecorder
from .test_sandbox_loopback import hand_fixture


@pytest.fixture()
def sb():
    fixture = hand_fixture()
    fixture["hubspot"]["deals"].append({"id": "8810", "properties": {
        "dealname": "Bad link", "dealstage": "closedwon", "pipeline": "default",
        "hs_lastmodifieddate": "2026-10-04T10:00:00.000Z", "harvest_project_id": "P-1"}})
    with SandboxServer(fixture, rate_limits="off") as server:
        yield server


def _client(sb, audit) -> HubSpotClient:
    env = sb.env()
    return HubSpotClient(env["HUBSPOT_BASE_URL"], env["HUBSPOT_ACCESS_TOKEN"], retry=RetryPolicy.fast(), audit=audit)


def _stored(extract) -> StoredDeals:
    return StoredDeals(extract.frame, extract.rejected, extract.extracted_at, extract.last_full_pull_at, None)


def _by_id(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values("deal_id").reset_index(drop=True)


def test_quiet_refresh_is_one_search_and_one_count_and_keeps_the_unlinkable_deal_reported(sb):
    audit = AuditRecorder()
    client = _client(sb, audit)
    first = extract_deals(client)
    assert first.mode == "full" and len(first.frame) == 4
    assert first.rejected["record_id"].tolist() == ["8810"]  # harvest_project_id "P-1"
    frame, rejected = hubspot_deals(client)
    pd.testing.assert_frame_equal(first.frame, frame)
    pd.testing.assert_frame_equal(first.rejected, rejected)
    calls = len(audit.rows)
    again = extract_deals(client, _stored(first))
    assert again.mode == "incremental", again.reason
    assert [r["path"] for r in audit.rows[calls:]] == ["/crm/v3/objects/deals/search"] * 2
    pd.testing.assert_frame_equal(again.frame, first.frame)
    pd.testing.assert_frame_equal(again.rejected, first.rejected)


def test_an_edited_deal_is_merged_and_an_archived_one_forces_a_full_read(sb):
    client = _client(sb, AuditRecorder())
    first = extract_deals(client)
    client.update_deal("8801", {"billing_hourly_rate": "175.00"})
    client.update_deal("8810", {"harvest_project_id": "201"})  # fixed: no longer rejected
    refreshed = extract_deals(client, _stored(first))
    assert refreshed.mode == "incremental" and refreshed.deals_read == 2
    assert refreshed.frame.loc[refreshed.frame["deal_id"] == "8801", "billing_hourly_rate"].item() == "175.00"
    assert refreshed.rejected.empty
    pd.testing.assert_frame_equal(_by_id(refreshed.frame), _by_id(extract_deals(client, full=True).frame))

    env = sb.env()
    r = httpx.delete(f"{sb.base_url}/crm/v3/objects/deals/8802",
                     headers={"Authorization": f"Bearer {env['HUBSPOT_ACCESS_TOKEN']}"})
    assert r.status_code == 204
    after = extract_deals(client, _stored(refreshed))
    assert after.mode == "full" and "archived" in after.reason
    assert "8802" not in set(after.frame["deal_id"]) and len(after.frame) == 3


def test_weekly_and_stage_change_full_reads(sb):
    client = _client(sb, AuditRecorder())
    first = extract_deals(client)
    stored = _stored(first)
    later = first.last_full_pull_at + timedelta(days=7)
    assert extract_deals(client, stored, now=later).mode == "full"
    assert extract_deals(client, stored, stage="closedwon").mode == "full"
