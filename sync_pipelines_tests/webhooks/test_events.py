"""Webhook bodies -> inbox events: the contract the inbox consumers rely on."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from sync_pipelines.webhooks.events import MalformedBody, parse_hubspot, parse_quickbooks


def test_hubspot_one_event_per_element_payload_as_received():
    body = json.dumps([
        {"objectId": 697680835, "propertyName": "dealstage", "propertyValue": "closedwon", "changeSource": "CRM",
         "eventId": 1228532628, "subscriptionId": 92894, "portalId": 5799819, "appId": 186886,
         "occurredAt": 1556105815815, "subscriptionType": "deal.propertyChange", "attemptNumber": 0},
        {"objectId": 1, "eventId": "77", "subscriptionType": "deal.creation", "changeFlag": "NEW", "score": 1.5},
    ]).encode()
    parsed = parse_hubspot(body)
    assert parsed.rejected == []
    assert [(i.source, i.event_id) for i in parsed.items] == [("hubspot", "1228532628"), ("hubspot", "77")]
    assert parsed.items[0].payload["objectId"] == 697680835 and parsed.items[0].payload["attemptNumber"] == 0
    assert parsed.items[1].payload["score"] == Decimal("1.5")  # never a binary float


def test_hubspot_bad_elements_are_rejected_with_where_and_why():
    parsed = parse_hubspot(b'[{"eventId": 5, "subscriptionType": "deal.creation"}, {"subscriptionType": "x"}, 3]')
    assert [i.event_id for i in parsed.items] == ["5"]
    assert [(r.where, r.reason.split(" ")[0]) for r in parsed.rejected] == [("[1]", "eventId"), ("[2]", "an")]
    q = parsed.rejected[0].quarantine_item("hubspot")
    assert q.source == "hubspot.quarantine" and q.payload["raw"] == '{"subscriptionType": "x"}'


@pytest.mark.parametrize("body, words", [(b"{not json", "not JSON"), (b'{"eventId": 1}', "JSON array"),
                                         (b"\xff\xfe", "not UTF-8")])
def test_hubspot_malformed_bodies(body, words):
    with pytest.raises(MalformedBody, match=words):
        parse_hubspot(body)


def test_quickbooks_cloudevents_normalised():
    ev = {"specversion": "1.0", "id": "c0ffee-1", "source": "intuit.abc", "type": "qbo.invoice.voided.v1",
          "datacontenttype": "application/json", "time": "2026-11-02T10:00:00.000Z", "intuitentityid": "145",
          "intuitaccountid": "9341452581046783", "data": {}}
    other = {**ev, "id": "c0ffee-2", "type": "qbo.salesreceipt.created.v1", "intuitaccountid": "111"}
    parsed = parse_quickbooks(json.dumps([ev, other]).encode())
    assert parsed.rejected == []
    first, second = parsed.items
    assert (first.source, first.event_id) == ("quickbooks", "c0ffee-1")
    assert first.payload == {"realm_id": "9341452581046783", "entity": "Invoice", "entity_id": "145",
                             "operation": "Void", "occurred_at": "2026-11-02T10:00:00.000Z",
                             "format": "cloudevents", "raw": ev}
    assert (second.payload["entity"], second.payload["operation"], second.payload["realm_id"]) == (
        "SalesReceipt", "Create", "111")


def test_quickbooks_legacy_multi_realm_one_row_per_entity_change():
    body = {"eventNotifications": [
        {"realmId": "310687", "dataChangeEvent": {"entities": [
            {"name": "Invoice", "id": "1234", "operation": "Void", "lastUpdated": "2025-09-08T20:52:31.657Z"},
            {"name": "Payment", "id": "99", "operation": "Create", "lastUpdated": "2025-09-08T20:53:00.000Z"}]}},
        {"realmId": "420000", "dataChangeEvent": {"entities": [
            {"name": "Invoice", "id": "1234", "operation": "Update", "lastUpdated": "2025-09-08T21:00:00Z"}]}},
    ]}
    parsed = parse_quickbooks(json.dumps(body).encode())
    assert [i.event_id for i in parsed.items] == [
        "310687:Invoice:1234:Void:2025-09-08T20:52:31.657Z",
        "310687:Payment:99:Create:2025-09-08T20:53:00.000Z",
        "420000:Invoice:1234:Update:2025-09-08T21:00:00Z",
    ]
    assert parsed.items[2].payload["realm_id"] == "420000" and parsed.items[2].payload["format"] == "legacy"
    assert parsed.items[0].payload["raw"] == body["eventNotifications"][0]["dataChangeEvent"]["entities"][0]


def test_quickbooks_bad_elements_rejected_others_kept():
    ce = [{"specversion": "1.0", "id": "a", "type": "qbo.invoice.exploded.v1", "time": "2026-01-01T00:00:00Z",
           "intuitentityid": "1", "intuitaccountid": "2"},
          {"specversion": "1.0", "id": "b", "type": "qbo.invoice.updated.v1", "time": "yesterday",
           "intuitentityid": "1", "intuitaccountid": "2"},
          {"specversion": "1.0", "id": "c", "type": "qbo.payment.created.v1", "time": "2026-01-01T00:00:00Z",
           "intuitentityid": "1", "intuitaccountid": "2"}]
    parsed = parse_quickbooks(json.dumps(ce).encode())
    assert [i.event_id for i in parsed.items] == ["c"]
    assert [r.where for r in parsed.rejected] == ["[0]", "[1]"]
    assert "unknown operation 'exploded'" in parsed.rejected[0].reason and "ISO-8601" in parsed.rejected[1].reason
    with pytest.raises(MalformedBody, match="CloudEvents JSON array or an object with eventNotifications"):
        parse_quickbooks(b'{"events": []}')
