"""The receiver over a real uvicorn socket: what it answers, what it stores, what it counts."""

from __future__ import annotations

import json
import logging

import pytest

from sync_pipelines.webhooks.signatures import intuit_signature
from sync_pipelines_tests.webhooks.conftest import (
    HUBSPOT_SECRET,
    INTUIT_TOKEN,
    Client,
    cloudevent,
    hubspot_event,
    inbox,
    now_ms,
    start_receiver,
)


def test_valid_hubspot_delivery_is_stored_then_acknowledged(client, ledger):
    events = [hubspot_event(101), hubspot_event(102, deal=8806, stage="ready_for_billing")]
    r = client.post_hubspot(events)
    assert r.status_code == 200 and r.json() == {"accepted": 2, "duplicates": 0}
    rows = inbox(ledger, "hubspot")
    assert [(s, e) for s, e, _ in rows] == [("hubspot", "101"), ("hubspot", "102")]
    assert rows[1][2] == events[1]  # the event object exactly as received
    assert client.health()["counters"]["hubspot"]["events_accepted"] == 2


def test_forged_stale_future_and_replayed_get_401_and_are_counted(client, ledger):
    ok_body, ok_headers = client.hubspot_request([hubspot_event(200)])
    forged = Client(client.base_url, hubspot_secret="not-the-secret")
    assert forged.post_hubspot([hubspot_event(201)]).json()["error"] == "forged"
    tampered = dict(ok_headers)
    assert client.http.post("/webhooks/hubspot", content=ok_body.replace(b"200", b"209"),
                            headers=tampered).json()["error"] == "forged"
    assert client.post_hubspot([hubspot_event(202)], ts=now_ms() - 301_000).json()["error"] == "stale"
    assert client.post_hubspot([hubspot_event(203)], ts=now_ms() + 301_000).json()["error"] == "future"
    first = client.http.post("/webhooks/hubspot", content=ok_body, headers=ok_headers)
    again = client.http.post("/webhooks/hubspot", content=ok_body, headers=ok_headers)
    assert (first.status_code, again.status_code) == (200, 401)
    assert again.json()["error"] == "replayed"
    assert [e for _, e, _ in inbox(ledger)] == ["200"]
    rejected = client.health()["counters"]["hubspot"]["rejected"]
    assert rejected == {"forged": 2, "stale": 1, "future": 1, "replayed": 1}


def test_hubspot_retry_of_a_stored_event_is_acknowledged_and_stored_once(client, ledger):
    assert client.post_hubspot([hubspot_event(300, attempt=0)]).json() == {"accepted": 1, "duplicates": 0}
    # HubSpot's retry: same eventId, new attemptNumber, new timestamp and so a new signature
    r = client.post_hubspot([hubspot_event(300, attempt=1), hubspot_event(301)])
    assert r.status_code == 200 and r.json() == {"accepted": 1, "duplicates": 1}
    rows = inbox(ledger)
    assert [e for _, e, _ in rows] == ["300", "301"]
    assert rows[0][2]["attemptNumber"] == 0  # the first delivery is what is kept
    assert client.health()["counters"]["hubspot"]["events_duplicate"] == 1


def test_out_of_order_events_are_all_stored(client, ledger):
    t = now_ms()
    assert client.post_hubspot([hubspot_event(402, occurred=t)]).status_code == 200
    assert client.post_hubspot([hubspot_event(401, occurred=t - 60_000), hubspot_event(400, occurred=t - 120_000)]).status_code == 200
    assert sorted(e for _, e, _ in inbox(ledger)) == ["400", "401", "402"]


def test_signed_malformed_json_is_quarantined_and_refused(client, ledger):
    r = client.post_hubspot(body=b'[{"eventId": 5, ')
    assert r.status_code == 400 and r.json()["error"] == "malformed"
    assert "not JSON" in r.json()["quarantined"][0]["reason"]
    assert inbox(ledger, "hubspot") == []
    (row,) = inbox(ledger, "hubspot.quarantine")
    assert row[2]["raw"] == '[{"eventId": 5, ' and row[2]["where"] == "body"
    # unsigned garbage is not stored at all: it is a forgery
    r = client.http.post("/webhooks/hubspot", content=b"garbage", headers={"Content-Type": "application/json"})
    assert r.status_code == 401
    assert len(inbox(ledger)) == 1
    assert client.health()["counters"]["hubspot"]["rejected"] == {"forged": 1, "malformed": 1}


def test_one_bad_element_does_not_lose_the_good_ones(client, ledger):
    r = client.post_hubspot([hubspot_event(500), {"objectId": 1, "subscriptionType": "deal.creation"}])
    assert r.status_code == 400
    assert r.json()["accepted"] == 1 and r.json()["quarantined"][0]["where"] == "[1]"
    assert [e for _, e, _ in inbox(ledger, "hubspot")] == ["500"]
    assert len(inbox(ledger, "hubspot.quarantine")) == 1


def test_wrong_content_type(client, ledger):
    r = client.post_hubspot([hubspot_event(600)], content_type="text/plain")
    assert r.status_code == 400 and "Content-Type" in r.json()["quarantined"][0]["reason"]
    assert inbox(ledger, "hubspot") == []
    # Intuit: acknowledged (Intuit would hold back every later event), quarantined, nothing lost
    r = client.post_quickbooks([cloudevent("ce-ct")], content_type="text/plain")
    assert r.status_code == 200 and r.json()["accepted"] == 0
    assert len(inbox(ledger, "quickbooks.quarantine")) == 1
    # no Content-Type at all, or a +json one: the signed body is parsed as usual
    body = json.dumps([cloudevent("ce-none")]).encode()
    r = client.http.post("/webhooks/quickbooks", content=body, headers={"intuit-signature": intuit_signature(INTUIT_TOKEN, body)})
    assert r.status_code == 200 and r.json()["accepted"] == 1
    r = client.post_quickbooks([cloudevent("ce-batch")], content_type="application/cloudevents-batch+json")
    assert r.json()["accepted"] == 1
    assert [e for _, e, _ in inbox(ledger, "quickbooks")] == ["ce-none", "ce-batch"]


def test_quickbooks_cloudevents_and_redelivery(client, ledger):
    payload = [cloudevent("ce-1"), cloudevent("ce-2", entity="payment", op="created", entity_id="77")]
    r = client.post_quickbooks(payload)
    assert r.status_code == 200 and r.json() == {"accepted": 2, "duplicates": 0}
    # Intuit retries with the very same signed body: acknowledged (never 401) and stored once
    again = client.post_quickbooks(payload)
    assert again.status_code == 200 and again.json() == {"accepted": 0, "duplicates": 2}
    rows = inbox(ledger, "quickbooks")
    assert [(e, p["entity"], p["operation"]) for _, e, p in rows] == [("ce-1", "Invoice", "Void"), ("ce-2", "Payment", "Create")]
    assert rows[0][2]["raw"] == payload[0] and rows[0][2]["format"] == "cloudevents"


def test_quickbooks_legacy_multi_realm_delivery(client, ledger):
    body = {"eventNotifications": [
        {"realmId": "310687", "dataChangeEvent": {"entities": [
            {"name": "Invoice", "id": "1234", "operation": "Void", "lastUpdated": "2025-09-08T20:52:31.657Z"}]}},
        {"realmId": "420000", "dataChangeEvent": {"entities": [
            {"name": "Payment", "id": "9", "operation": "Create", "lastUpdated": "2025-09-08T20:53:00.000Z"},
            {"name": "Invoice", "id": "5", "operation": "Update", "lastUpdated": "2025-09-08T20:53:00.000Z"}]}},
    ]}
    r = client.post_quickbooks(body)
    assert r.status_code == 200 and r.json() == {"accepted": 3, "duplicates": 0}
    rows = inbox(ledger, "quickbooks")
    assert [(p["realm_id"], p["entity"], p["entity_id"], p["format"]) for _, _, p in rows] == [
        ("310687", "Invoice", "1234", "legacy"), ("420000", "Payment", "9", "legacy"), ("420000", "Invoice", "5", "legacy")]
    assert rows[0][1] == "310687:Invoice:1234:Void:2025-09-08T20:52:31.657Z"


def test_quickbooks_forged_is_401(client, ledger):
    forged = Client(client.base_url, intuit_token="wrong")
    r = forged.post_quickbooks([cloudevent("ce-x")])
    assert r.status_code == 401 and r.json()["error"] == "forged"
    assert inbox(ledger) == []
    assert client.health()["counters"]["quickbooks"]["rejected"] == {"forged": 1}


def test_too_large_is_413(ledger):
    server = start_receiver(ledger)
    server.app.state.receiver.settings = type(server.app.state.receiver.settings)(
        hubspot_client_secret=HUBSPOT_SECRET, intuit_verifier_token=INTUIT_TOKEN, max_body_bytes=1000)
    try:
        c = Client(server.base_url)
        r = c.post_hubspot([hubspot_event(i) for i in range(50)])
        assert r.status_code == 413
        assert inbox(ledger) == []
    finally:
        server.stop()


def test_endpoint_without_its_secret_rejects_everything(ledger, caplog):
    caplog.set_level(logging.WARNING, logger="sync_pipelines.webhooks")
    server = start_receiver(ledger, hubspot_client_secret=None)
    try:
        c = Client(server.base_url)
        r = c.post_hubspot([hubspot_event(700)])
        assert r.status_code == 401 and r.json()["error"] == "not_configured"
        assert c.post_quickbooks([cloudevent("ce-ok")]).status_code == 200
        health = c.health()
        assert health["endpoints"]["hubspot"]["secret_configured"] is False
        assert health["endpoints"]["quickbooks"]["secret_configured"] is True
        assert [e for _, e, _ in inbox(ledger)] == ["ce-ok"]
        assert any("HUBSPOT_CLIENT_SECRET is not set" in m for m in caplog.messages)
    finally:
        server.stop()


def test_public_url_is_what_is_signed(ledger):
    server = start_receiver(ledger, public_url="https://hooks.firm.example/sync")
    try:
        c = Client(server.base_url)
        public = "https://hooks.firm.example/sync/webhooks/hubspot"
        assert c.post_hubspot([hubspot_event(800)], url=public).status_code == 200
        # signed for the address the proxy forwards to, not the one HubSpot called: forged
        assert c.post_hubspot([hubspot_event(801)]).json()["error"] == "forged"
        assert [e for _, e, _ in inbox(ledger)] == ["800"]
    finally:
        server.stop()


def test_query_string_and_escapes_in_the_signed_url(client, ledger):
    # HubSpot called .../hubspot?app=a%40b; the signature is over the URL with %40 decoded
    url = client.base_url + "/webhooks/hubspot?app=a@b"
    body, headers = client.hubspot_request([hubspot_event(900)], url=url)
    r = client.http.post("/webhooks/hubspot?app=a%40b", content=body, headers=headers)
    assert r.status_code == 200, r.text


def test_storage_failure_is_503_and_never_acknowledged():
    class BrokenLedger:
        def inbox_put_many(self, events):
            raise RuntimeError(f"database is down (secret {HUBSPOT_SECRET} must not leak)")

    server = start_receiver(BrokenLedger())
    try:
        c = Client(server.base_url)
        r = c.post_hubspot([hubspot_event(1000)])
        assert r.status_code == 503 and r.json() == {"error": "inbox_unavailable"}
        assert HUBSPOT_SECRET not in r.text
        h = c.health()
        assert h["counters"]["hubspot"]["store_errors"] == 1 and h["inbox_writer"]["last_error"] == "RuntimeError"
    finally:
        server.stop()


def test_secrets_never_in_logs_answers_or_health(client, ledger, caplog, capfd):
    caplog.set_level(logging.DEBUG)
    sent_body, sent_headers = client.hubspot_request([hubspot_event(1100)])
    replay = [client.http.post("/webhooks/hubspot", content=sent_body, headers=sent_headers) for _ in range(2)]
    answers = replay + [
        Client(client.base_url, hubspot_secret="wrong").post_hubspot([hubspot_event(1101)]),
        client.post_hubspot([hubspot_event(1102)], ts=now_ms() - 999_000),
        client.post_hubspot(body=b"{oops"),
        client.post_quickbooks([cloudevent("ce-s")]),
        Client(client.base_url, intuit_token="wrong").post_quickbooks([cloudevent("ce-t")]),
    ]
    health = json.dumps(client.health())
    out, err = capfd.readouterr()
    everything = "\n".join([r.text for r in answers] + [health, out, err] + caplog.messages
                           + [repr(client.http), repr(ledger)])
    assert any("rejected (forged" in m for m in caplog.messages)  # the log did record the rejections
    for secret in (HUBSPOT_SECRET, INTUIT_TOKEN):
        assert secret not in everything
    assert [r.status_code for r in replay] == [200, 401]
    # nor the signature values themselves (also not in the replay's log line)
    assert sent_headers["X-HubSpot-Signature-v3"] not in everything
    from sync_pipelines.webhooks.settings import ReceiverSettings

    assert HUBSPOT_SECRET not in repr(ReceiverSettings(hubspot_client_secret=HUBSPOT_SECRET))


@pytest.mark.parametrize("path", ["/webhooks/hubspot", "/webhooks/quickbooks"])
def test_get_is_not_allowed(client, path):
    assert client.http.get(path).status_code == 405
