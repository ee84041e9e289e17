"""Signed webhooks sent by the sandbox when data changes (api-contracts §1.11, §2.8).

Configure with `POST /_sandbox/webhooks`:
`{"hubspot_url": "http://.../hubspot", "quickbooks_url": "http://.../intuit", "quickbooks_format": "cloudevents"|"legacy"}`.

- HubSpot: a JSON array of events, headers `X-HubSpot-Signature-v3` = base64(HMAC-SHA256(client
  secret, method + uri + body + timestamp)) and `X-HubSpot-Request-Timestamp` (epoch ms), plus the
  legacy `X-HubSpot-Signature` (v1: sha256 hex of secret + body) with `X-HubSpot-Signature-Version: v1`.
- QuickBooks: `intuit-signature` = base64(HMAC-SHA256(verifier token, raw body)); body in the
  CloudEvents array format (default) or the legacy `eventNotifications` format.

Deliveries run on a background thread; each is attempted up to `attempts` times (HubSpot's
`attemptNumber` counts from 0); every attempt is logged and visible at `GET /_sandbox/webhooks`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import queue
import threading
import time
import uuid
from typing import Any

import httpx

from . import credentials


def hubspot_v3_signature(secret: str, method: str, uri: str, body: bytes, timestamp_ms: str) -> str:
    msg = method.encode() + uri.encode() + body + timestamp_ms.encode()
    return base64.b64encode(hmac.new(secret.encode(), msg, hashlib.sha256).digest()).decode()


def intuit_signature(verifier: str, body: bytes) -> str:
    return base64.b64encode(hmac.new(verifier.encode(), body, hashlib.sha256).digest()).decode()


class WebhookSender:
    def __init__(self, attempts: int = 3, backoff_s: float = 0.5, timeout_s: float = 5.0):
        self.attempts = attempts
        self.backoff_s = backoff_s
        self.timeout_s = timeout_s
        self.log: list[dict[str, Any]] = []
        self._q: queue.Queue = queue.Queue()
        self._idle = threading.Event()
        self._idle.set()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ building requests
    def build(self, api: str, events: list[dict], config: dict, realm_id: str) -> tuple[str, bytes, dict[str, str]] | None:
        if api == "hubspot":
            url = config.get("hubspot_url")
            if not url:
                return None
            body = json.dumps([{"portalId": 62515, "appId": 186886, "subscriptionId": 92894, "attemptNumber": 0, **e}
                               for e in events]).encode()
            ts = str(int(time.time() * 1000))
            headers = {
                "Content-Type": "application/json",
                "X-HubSpot-Request-Timestamp": ts,
                "X-HubSpot-Signature-v3": hubspot_v3_signature(credentials.HUBSPOT_CLIENT_SECRET, "POST", url, body, ts),
                "X-HubSpot-Signature": hashlib.sha256(credentials.HUBSPOT_CLIENT_SECRET.encode() + body).hexdigest(),
                "X-HubSpot-Signature-Version": "v1",
                "User-Agent": "HubSpot Connect 2.0 (http://dev.hubspot.com/) (sandbox)",
            }
            return url, body, headers
        url = config.get("quickbooks_url")
        if not url:
            return None
        if config.get("quickbooks_format", "cloudevents") == "legacy":
            payload: Any = {"eventNotifications": [{"realmId": realm_id, "dataChangeEvent": {"entities": events}}]}
        else:
            payload = [{"specversion": "1.0", "id": str(uuid.uuid4()), "source": "intuit.sandbox",
                        "type": f"qbo.{e['name'].lower()}.{_ce_op(e['operation'])}.v1", "datacontenttype": "application/json",
                        "time": e["lastUpdated"], "intuitentityid": e["id"], "intuitaccountid": realm_id, "data": {}}
                       for e in events]
        body = json.dumps(payload).encode()
        headers = {"Content-Type": "application/json",
                   "intuit-signature": intuit_signature(credentials.QBO_WEBHOOK_VERIFIER_TOKEN, body),
                   "intuit-t-id": str(uuid.uuid4())}
        return url, body, headers

    # ------------------------------------------------------------------ delivery
    def submit(self, api: str, events: list[dict], config: dict, realm_id: str) -> None:
        if not events:
            return
        for i in range(0, len(events), 100):  # HubSpot batches up to 100 events per request
            built = self.build(api, events[i : i + 100], config, realm_id)
            if built is None:
                return
            self._idle.clear()
            self._q.put((api, built, events[i : i + 100], config, realm_id))
        self._ensure_thread()

    def _ensure_thread(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="sandbox-webhooks", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        with httpx.Client(timeout=self.timeout_s) as client:
            while True:
                try:
                    api, built, events, config, realm = self._q.get(timeout=1.0)
                except queue.Empty:
                    if self._q.empty():
                        self._idle.set()
                    continue
                for attempt in range(self.attempts):
                    if attempt and api == "hubspot":  # re-sign: attemptNumber and timestamp change
                        built = self.build(api, [{**e, "attemptNumber": attempt} for e in events], config, realm) or built
                    url, body, headers = built
                    entry: dict[str, Any] = {"api": api, "url": url, "attempt": attempt, "events": len(events), "time": time.time()}
                    try:
                        r = client.post(url, content=body, headers=headers)
                        entry["status"] = r.status_code
                    except httpx.HTTPError as exc:
                        entry["error"] = type(exc).__name__
                    self.log.append(entry)
                    if 200 <= entry.get("status", 0) < 300:
                        break
                    time.sleep(self.backoff_s * (attempt + 1))
                if self._q.empty():
                    self._idle.set()

    def wait_idle(self, timeout: float = 10.0) -> bool:
        return self._idle.wait(timeout)


def _ce_op(op: str) -> str:
    return {"Create": "created", "Update": "updated", "Delete": "deleted", "Void": "voided", "Merge": "merged",
            "Emailed": "emailed"}.get(op, op.lower())
