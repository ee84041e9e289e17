from __future__ import annotations


import httpx

from sync_pipelines.sandbox import RateLimits, SandboxServer

from .conftest import Qbo, harvest_headers, hubspot_headers, small_fixture
from .test_quickbooks import invoice_body


def test_real_rate_limits_by_default():
    assert RateLimits() == RateLimits(qbo_per_minute=500, qbo_in_flight=10, qbo_per_second=None, qbo_batch_per_minute=40, harvest_per_15s=100, hubspot_per_10s=100, hubspot_search_per_s=5)


def test_harvest_429_with_retry_after():
    with SandboxServer(small_fixture(), rate_limits={"harvest_per_15s": 3}) as sb:
        codes = [httpx.get(f"{sb.base_url}/v2/tasks", headers=harvest_headers(sb)) for _ in range(4)]
        assert [r.status_code for r in codes] == [200, 200, 200, 429]
        assert 1 <= int(codes[-1].headers["Retry-After"]) <= 15


def test_hubspot_ten_secondly_and_search_secondly_limits():
    with SandboxServer(small_fixture(), rate_limits={"hubspot_per_10s": 2}) as sb:
        h = hubspot_headers(sb)
        rs = [httpx.get(f"{sb.base_url}/crm/v3/objects/deals", headers=h) for _ in range(3)]
        assert rs[0].headers["X-HubSpot-RateLimit-Max"] == "2"
        assert rs[2].status_code == 429 and rs[2].json()["policyName"] == "TEN_SECONDLY_ROLLING"
        rs = [httpx.post(f"{sb.base_url}/crm/v3/objects/deals/search", json={}, headers=h) for _ in range(6)]
        assert rs[-1].status_code == 429 and rs[-1].json()["policyName"] == "SECONDLY"
        assert "X-HubSpot-RateLimit-Max" not in rs[0].headers


def test_qbo_throttle_is_xml_without_retry_after():
    with SandboxServer(small_fixture(), rate_limits={"qbo_per_minute": 2}) as sb:
        q = Qbo(sb)
        rs = [q.query("select * from Item") for _ in range(3)]
        assert [r.status_code for r in rs] == [200, 200, 429]
        assert "ThrottleExceeded" in rs[2].text and "<IntuitResponse" in rs[2].text
        assert "Retry-After" not in rs[2].headers and rs[2].headers.get("intuit_tid")


def test_qbo_in_flight_limit_with_latency():
    with SandboxServer(small_fixture(), rate_limits={"qbo_in_flight": 2}) as sb:
        q = Qbo(sb)
        sb.set_faults("quickbooks", latency_ms=300)

        codes = sorted(r.status_code for r in q.burst(4))
        assert codes.count(429) >= 1 and codes.count(200) >= 2


def test_fault_injection_is_seeded_and_configurable_over_http(sb):
    r = httpx.post(f"{sb.base_url}/_sandbox/faults", json={"api": "harvest", "rate_500": 0.5, "rate_503": 0.5, "seed": 1})
    assert r.status_code == 200
    codes = [httpx.get(f"{sb.base_url}/v2/tasks", headers=harvest_headers(sb)).status_code for _ in range(10)]
    assert set(codes) <= {500, 503} and len(set(codes)) == 2
    httpx.post(f"{sb.base_url}/_sandbox/faults", json={"api": "harvest", "seed": 1})
    assert httpx.get(f"{sb.base_url}/v2/tasks", headers=harvest_headers(sb)).status_code == 200
    assert httpx.post(f"{sb.base_url}/_sandbox/faults", json={"api": "nope"}).status_code == 400


def test_lost_response_fault_commits_then_answers_502(sb):
    q = Qbo(sb)
    sb.set_faults("quickbooks", rate_lost_response=1.0)
    r = q.post("invoice", invoice_body(), requestid="lost-1")
    assert r.status_code == 502
    sb.set_faults("quickbooks")
    again = q.post("invoice", invoice_body(), requestid="lost-1")
    assert again.status_code == 200
    assert len(sb.state()["quickbooks"]["invoices"]) == 1


def test_rate_limits_admin_endpoint(sb):
    r = httpx.post(f"{sb.base_url}/_sandbox/rate_limits", json={"harvest_per_15s": 1})
    assert r.json()["harvest_per_15s"] == 1
    codes = [httpx.get(f"{sb.base_url}/v2/tasks", headers=harvest_headers(sb)).status_code for _ in range(2)]
    assert codes == [200, 429]
    httpx.post(f"{sb.base_url}/_sandbox/rate_limits", json={"harvest_per_15s": None})


def test_timeout_fault_answers_504_without_executing(sb):
    q = Qbo(sb)
    sb.set_faults("quickbooks", rate_timeout=1.0, timeout_ms=200)
    r = q.post("invoice", invoice_body())
    assert r.status_code == 504
    sb.set_faults("quickbooks")
    assert sb.state()["quickbooks"]["invoices"] == []
