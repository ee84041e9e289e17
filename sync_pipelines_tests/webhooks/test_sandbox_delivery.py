"""The sandbox's own signed webhooks (the same code path as HubSpot's and Intuit's) land in the
inbox exactly once; and the inbox on PostgreSQL."""

from __future__ import annotations

import time

import httpx
import pytest

from sync_pipelines.ledger import Ledger
from sync_pipelines.sandbox import SandboxServer, credentials
from sync_pipelines_tests.webhooks.conftest import Client, cloudevent, hubspot_event, inbox, start_receiver

FIXTURE = {
    "hubspot": {"deals": [{"id": "8805", "properties": {"dealname": "Acme - Q4", "dealstage": "appointmentscheduled"},
                           "createdAt": "2026-10-01T00:00:00Z", "updatedAt": "2026-10-01T00:00:00Z", "archived": False}]},
    "quickbooks": {
        "realm_id": "9341452581046783",
        "customers": [{"Id": "1", "DisplayName": "Acme Corp", "SyncToken": "0", "Active": True}],
        "invoices": [{"Id": "145", "SyncToken": "0", "CustomerRef": {"value": "1"}, "TotalAmt": 100, "Balance": 100,
                      "Line": [{"Amount": 100, "DetailType": "SalesItemLineDetail",
                                "SalesItemLineDetail": {"ItemRef": {"value": "1"}, "Qty": 1, "UnitPrice": 100}}],
                      "MetaData": {"CreateTime": "2026-10-01T00:00:00-07:00",
                                   "LastUpdatedTime": "2026-10-01T00:00:00-07:00"}}],
    },
}


def _wait_for(predicate, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("qbo_format", ["cloudevents", "legacy"])
def test_sandbox_webhooks_reach_the_inbox_exactly_once(ledger, qbo_format):
    server = start_receiver(ledger, hubspot_client_secret=credentials.HUBSPOT_CLIENT_SECRET,
                            intuit_verifier_token=credentials.QBO_WEBHOOK_VERIFIER_TOKEN)
    try:
        with SandboxServer(FIXTURE, rate_limits=None) as sb, httpx.Client(base_url=sb.base_url, timeout=10) as admin:
            assert admin.post("/_sandbox/webhooks", json={
                "hubspot_url": server.base_url + "/webhooks/hubspot",
                "quickbooks_url": server.base_url + "/webhooks/quickbooks", "quickbooks_format": qbo_format,
            }).status_code == 200
            assert admin.post("/_sandbox/actions/move_deal_stage",
                              json={"deal_id": "8805", "dealstage": "ready_for_billing"}).status_code == 200
            assert admin.post("/_sandbox/actions/void_invoice", json={"invoice_id": "145"}).status_code == 200
            assert _wait_for(lambda: len(inbox(ledger)) >= 2)
            assert sb.sandbox.webhook_sender.wait_idle(10)
            deliveries = admin.get("/_sandbox/webhooks").json()["deliveries"]
        assert {d["api"]: d.get("status") for d in deliveries} == {"hubspot": 200, "quickbooks": 200}
        rows = inbox(ledger)
        (deal,) = [p for s, _, p in rows if s == "hubspot"]
        assert (deal["objectId"], deal["propertyName"], deal["propertyValue"]) == (8805, "dealstage", "ready_for_billing")
        (void,) = [p for s, _, p in rows if s == "quickbooks"]
        assert (void["entity"], void["entity_id"], void["operation"], void["format"]) == ("Invoice", "145", "Void", qbo_format)
        assert void["realm_id"] == "9341452581046783"
        assert len(rows) == 2
    finally:
        server.stop()


def test_sandbox_retry_after_a_failed_delivery_is_stored_once(ledger):
    """The sandbox retries a delivery that failed; the inbox still holds each event once."""
    server = start_receiver(ledger, hubspot_client_secret=credentials.HUBSPOT_CLIENT_SECRET,
                            intuit_verifier_token=credentials.QBO_WEBHOOK_VERIFIER_TOKEN)
    real_put = ledger.inbox_put_many
    calls = {"n": 0}

    def flaky(events):
        # store, then fail to answer on the first call: the sender sees an error and retries
        result = real_put(events)
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("connection lost after commit")
        return result

    server.receiver.writer.ledger = type("L", (), {"inbox_put_many": staticmethod(flaky)})()
    try:
        with SandboxServer(FIXTURE, rate_limits=None) as sb, httpx.Client(base_url=sb.base_url, timeout=10) as admin:
            sb.sandbox.webhook_sender.backoff_s = 0.05
            admin.post("/_sandbox/webhooks", json={"hubspot_url": server.base_url + "/webhooks/hubspot"})
            admin.post("/_sandbox/actions/move_deal_stage", json={"deal_id": "8805", "dealstage": "closedwon"})
            assert _wait_for(lambda: calls["n"] >= 2)
            assert sb.sandbox.webhook_sender.wait_idle(10)
            statuses = [d.get("status") for d in admin.get("/_sandbox/webhooks").json()["deliveries"]]
        assert statuses == [503, 200]
        rows = inbox(ledger, "hubspot")
        assert len(rows) == 1 and rows[0][2]["attemptNumber"] == 0
    finally:
        server.stop()


@pytest.mark.postgres
def test_inbox_on_postgresql(postgres_url):
    led = Ledger(postgres_url)
    led.migrate()
    try:
        assert led.inbox_put_many([("hubspot", "1", {"a": 1}), ("hubspot", "2", {"a": 2}), ("hubspot", "1", {"a": 9}),
                                   ("quickbooks", "1", {"b": 1})]) == [True, True, False, True]
        assert led.inbox_put_many([("hubspot", "2", {}), ("hubspot", "3", {})]) == [False, True]
        server = start_receiver(led)
        try:
            c = Client(server.base_url)
            assert c.post_hubspot([hubspot_event(4), hubspot_event(1)]).json() == {"accepted": 1, "duplicates": 1}
            assert c.post_quickbooks([cloudevent("pg-ce")]).json() == {"accepted": 1, "duplicates": 0}
        finally:
            server.stop()
        rows = inbox(led)
        assert [(s, e) for s, e, _ in rows] == [("hubspot", "1"), ("hubspot", "2"), ("quickbooks", "1"),
                                                ("hubspot", "3"), ("hubspot", "4"), ("quickbooks", "pg-ce")]
        assert rows[0][2] == {"a": 1}
        assert led.inbox_mark_processed([e.id for e in led.inbox_pending(source="hubspot")]) == 4
        assert [e.event_id for e in led.inbox_pending()] == ["1", "pg-ce"]
    finally:
        led.dispose()


def test_inbox_put_many_on_sqlite(ledger):
    assert ledger.inbox_put_many([]) == []
    assert ledger.inbox_put_many([("hubspot", "1", {"a": 1}), ("hubspot", "1", {"a": 2})]) == [True, False]
    assert ledger.inbox_put("hubspot", "1", {}) is False
    many = [("quickbooks", str(i), {"i": i}) for i in range(1200)]  # more than one statement's chunk
    assert all(ledger.inbox_put_many(many))
    assert not any(ledger.inbox_put_many(many))
    assert len(ledger.inbox_pending(limit=5000)) == 1201
