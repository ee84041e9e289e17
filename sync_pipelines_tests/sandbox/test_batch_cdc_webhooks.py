from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import threading
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from sync_pipelines.sandbox import credentials

from .conftest import Qbo, body, hubspot_headers
from .test_quickbooks import invoice_body


def test_batch_items_are_independent_and_http_200(sb):
    q = Qbo(sb)
    req = {"BatchItemRequest": [
        {"bId": "b1", "operation": "create", "Invoice": invoice_body()},
        {"bId": "b2", "operation": "create", "Invoice": invoice_body(CustomerRef={"value": "999"})},
        {"bId": "b3", "Query": "SELECT * FROM Item WHERE Name = 'Consulting'"},
        {"bId": "b4", "operation": "create", "Customer": {"DisplayName": "Old Client LLC"}},
    ]}
    r = q.post("batch", req)
    assert r.status_code == 200
    items = {i["bId"]: i for i in body(r)["BatchItemResponse"]}
    assert items["b1"]["Invoice"]["TotalAmt"] == Decimal("304.17")
    assert items["b2"]["Fault"]["Error"][0]["code"] == "2500"
    assert items["b3"]["QueryResponse"]["Item"][0]["Id"] == "2"
    assert items["b4"]["Fault"]["Error"][0]["code"] == "6240"
    too_many = {"BatchItemRequest": [{"bId": f"q{i}", "Query": "SELECT * FROM Item"} for i in range(31)]}
    assert q.post("batch", too_many).status_code == 400


def test_cdc_reports_changes_voids_and_deletes(sb):
    q = Qbo(sb)
    since = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=5)).isoformat()
    a = body(q.post("invoice", invoice_body()))["Invoice"]
    b = body(q.post("invoice", invoice_body()))["Invoice"]
    q.post("invoice", {"Id": a["Id"], "SyncToken": a["SyncToken"]}, operation="void")
    q.post("invoice", {"Id": b["Id"], "SyncToken": b["SyncToken"]}, operation="delete")
    r = httpx.get(f"{q.base}/cdc", params={"entities": "Invoice,Customer", "changedSince": since}, headers=q.headers())
    assert r.status_code == 200
    blocks = body(r)["CDCResponse"][0]["QueryResponse"]
    assert isinstance(blocks, list) and len(blocks) == 2
    inv = blocks[0]["Invoice"]
    assert inv[0]["Id"] == a["Id"] and inv[0]["PrivateNote"].startswith("Voided")
    assert inv[-1] == {"domain": "QBO", "status": "Deleted", "Id": b["Id"], "MetaData": inv[-1]["MetaData"]}
    old = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=31)).isoformat()
    r = httpx.get(f"{q.base}/cdc", params={"entities": "Invoice", "changedSince": old}, headers=q.headers())
    assert r.status_code == 400


class _Receiver:
    def __init__(self):
        self.requests: list[tuple[str, dict, bytes]] = []
        got = self.requests

        class H(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                n = int(self.headers["Content-Length"])
                got.append((self.path, {k.lower(): v for k, v in self.headers.items()}, self.rfile.read(n)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *a):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def receiver():
    r = _Receiver()
    yield r
    r.close()


def test_signed_webhooks_on_changes(sb, receiver):
    sb.set_webhooks(hubspot_url=receiver.url + "/hubspot", quickbooks_url=receiver.url + "/intuit")
    h = hubspot_headers(sb)
    httpx.patch(f"{sb.base_url}/crm/v3/objects/deals/8802", json={"properties": {"qbo_invoice_id": "61"}}, headers=h)
    httpx.post(f"{sb.base_url}/_sandbox/actions/move_deal_stage", json={"deal_id": "8803", "dealstage": "ready_for_billing"})
    q = Qbo(sb)
    inv = body(q.post("invoice", invoice_body()))["Invoice"]
    assert sb.wait_webhooks(10)
    hub = [r for r in receiver.requests if r[0] == "/hubspot"]
    intuit = [r for r in receiver.requests if r[0] == "/intuit"]
    assert len(hub) == 2 and len(intuit) == 1
    for path, headers, raw in hub:
        ts = headers["x-hubspot-request-timestamp"]
        msg = b"POST" + (receiver.url + path).encode() + raw + ts.encode()
        expected = base64.b64encode(hmac.new(credentials.HUBSPOT_CLIENT_SECRET.encode(), msg, hashlib.sha256).digest()).decode()
        assert headers["x-hubspot-signature-v3"] == expected
    events = [e for _, _, raw in hub for e in json.loads(raw)]
    assert {(e["objectId"], e["propertyName"], e["propertyValue"]) for e in events} == {
        (8802, "qbo_invoice_id", "61"), (8803, "dealstage", "ready_for_billing")}
    assert all(isinstance(e["eventId"], int) and e["subscriptionType"] == "deal.propertyChange" for e in events)
    _, headers, raw = intuit[0]
    sig = base64.b64encode(hmac.new(credentials.QBO_WEBHOOK_VERIFIER_TOKEN.encode(), raw, hashlib.sha256).digest()).decode()
    assert headers["intuit-signature"] == sig
    ce = json.loads(raw)
    assert ce[0]["type"] == "qbo.invoice.created.v1" and ce[0]["intuitentityid"] == inv["Id"]
    assert ce[0]["intuitaccountid"] == sb.realm_id
    log = httpx.get(f"{sb.base_url}/_sandbox/webhooks").json()
    assert all(d["status"] == 200 for d in log["deliveries"])
    sb.set_webhooks()  # off again for the other tests
