"""`GET /_sandbox/stats`: what benchmarks/month_end.py reports as API calls per system."""

from __future__ import annotations


import httpx

from sync_pipelines.sandbox import SandboxServer

from .conftest import Qbo, harvest_headers, hubspot_headers, small_fixture


def test_stats_count_calls_per_api_endpoint_and_status_without_ids_or_realm():
    with SandboxServer(small_fixture(), rate_limits={"harvest_per_15s": 2}) as sb:
        q = Qbo(sb)  # one token call
        for _ in range(3):
            httpx.get(f"{sb.base_url}/v2/tasks", headers=harvest_headers(sb))  # the third is a 429
        httpx.get(f"{sb.base_url}/crm/v3/objects/deals/123", headers=hubspot_headers(sb))
        q.query("select * from Item")
        q.query("select * from Customer")
        stats = httpx.get(f"{sb.base_url}/_sandbox/stats").json()
        apis = stats["apis"]
        assert apis["harvest"]["calls"] == 3 and apis["harvest"]["throttled"] == 1
        assert apis["harvest"]["by_endpoint"] == {"GET tasks": {"2xx": 2, "throttled": 1}}
        assert list(apis["hubspot"]["by_endpoint"]) == ["GET crm/v3/objects/deals"]  # the id left out
        assert apis["quickbooks"]["by_endpoint"] == {"POST query": {"2xx": 2}, "POST token": {"2xx": 1}}
        first, last = apis["quickbooks"]["span"]["POST query"]
        assert 0 <= last - first < 30
        assert sb.realm_id not in str(apis)  # endpoints name no realm (the in-flight peak is per realm)

        assert httpx.delete(f"{sb.base_url}/_sandbox/stats").json()["apis"] == {}
        assert httpx.get(f"{sb.base_url}/_sandbox/stats").json()["apis"] == {}


def test_stats_report_the_quickbooks_in_flight_peak():
    with SandboxServer(small_fixture()) as sb:
        q = Qbo(sb)
        sb.set_faults("quickbooks", latency_ms=300)

        assert [r.status_code for r in q.burst(4)] == [200] * 4
        stats = httpx.get(f"{sb.base_url}/_sandbox/stats").json()
        assert stats["qbo_in_flight_peak"] == {sb.realm_id: 4}
