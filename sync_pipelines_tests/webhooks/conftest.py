"""Receiver fixtures: a migrated ledger and the receiver on a real loopback uvicorn socket, with
sentinel secrets that the tests grep for in logs, answers and the health page."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from sync_pipelines.ledger import Ledger
from sync_pipelines.webhooks.server import ReceiverServer
from sync_pipelines.webhooks.settings import ReceiverSettings
from sync_pipelines.webhooks.signatures import hubspot_v3_signature, intuit_signature

HUBSPOT_SECRET = "SENTINEL-hubspot-client-secret-7f3a"
INTUIT_TOKEN = "SENTINEL-intuit-verifier-token-91c2"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def hubspot_event(event_id: int, *, deal: int = 8805, stage: str = "closedwon", attempt: int = 0,
                  occurred: int | None = None) -> dict[str, Any]:
    return {"objectId": deal, "propertyName": "dealstage", "propertyValue": stage, "changeSource": "CRM",
            "eventId": event_id, "subscriptionId": 92894, "portalId": 62515, "appId": 186886,
            "occurredAt": occurred or now_ms(), "subscriptionType": "deal.propertyChange", "attemptNumber": attempt}


def cloudevent(event_id: str | None = None, *, entity: str = "invoice", op: str = "voided", entity_id: str = "145",
               realm: str = "9341452581046783") -> dict[str, Any]:
    return {"specversion": "1.0", "id": event_id or str(uuid.uuid4()), "source": "intuit.test",
            "type": f"qbo.{entity}.{op}.v1", "datacontenttype": "application/json", "time": "2026-11-02T10:00:00.000Z",
            "intuitentityid": entity_id, "intuitaccountid": realm, "data": {}}


class Client:
    """Signs like HubSpot and Intuit do and posts over real HTTP."""

    def __init__(self, base_url: str, *, hubspot_secret: str = HUBSPOT_SECRET, intuit_token: str = INTUIT_TOKEN):
        self.base_url = base_url
        self.http = httpx.Client(base_url=base_url, timeout=10)
        self.hubspot_secret = hubspot_secret
        self.intuit_token = intuit_token

    def hubspot_request(self, events: Any, *, ts: int | None = None, url: str | None = None,
                        body: bytes | None = None, content_type: str = "application/json") -> tuple[bytes, dict[str, str]]:
        body = json.dumps(events).encode() if body is None else body
        stamp = str(ts if ts is not None else now_ms())
        signed_url = url or self.base_url + "/webhooks/hubspot"
        return body, {"Content-Type": content_type, "X-HubSpot-Request-Timestamp": stamp,
                      "X-HubSpot-Signature-v3": hubspot_v3_signature(self.hubspot_secret, "POST", signed_url, body, stamp)}

    def post_hubspot(self, events: Any = None, **kw: Any) -> httpx.Response:
        body, headers = self.hubspot_request(events, **kw)
        return self.http.post("/webhooks/hubspot", content=body, headers=headers)

    def post_quickbooks(self, payload: Any = None, *, body: bytes | None = None,
                        content_type: str = "application/json") -> httpx.Response:
        body = json.dumps(payload).encode() if body is None else body
        return self.http.post("/webhooks/quickbooks", content=body, headers={
            "Content-Type": content_type, "intuit-signature": intuit_signature(self.intuit_token, body)})

    def health(self) -> dict[str, Any]:
        r = self.http.get("/healthz")
        assert r.status_code == 200
        return r.json()


@pytest.fixture
def ledger(tmp_path) -> Iterator[Ledger]:
    led = Ledger(f"sqlite:///{tmp_path}/ledger.db")
    led.migrate()
    yield led
    led.dispose()


def start_receiver(ledger: Any, **settings: Any) -> ReceiverServer:
    base = {"hubspot_client_secret": HUBSPOT_SECRET, "intuit_verifier_token": INTUIT_TOKEN}
    base.update(settings)
    return ReceiverServer(ReceiverSettings(**base), ledger).start()


@pytest.fixture
def receiver(ledger) -> Iterator[ReceiverServer]:
    server = start_receiver(ledger)
    yield server
    server.stop()


@pytest.fixture
def client(receiver) -> Iterator[Client]:
    c = Client(receiver.base_url)
    yield c
    c.http.close()


def inbox(ledger: Ledger, source: str | None = None) -> list[tuple[str, str, Any]]:
    return [(e.source, e.event_id, e.payload()) for e in ledger.inbox_pending(limit=10_000, source=source)]
