"""The sandbox ASGI app: Harvest, HubSpot, QuickBooks and `/_sandbox/` admin on one server."""

from __future__ import annotations

import asyncio
import logging
import random
import re
import threading
import uuid
from collections import Counter
from pathlib import Path
from typing import Any, Callable

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sync_pipelines import money

from . import harvest_api, hubspot_api, qbo_api
from .fixture import FixtureError, validate_fixture
from .http import Req, Resp, iso_z, new_uuid, qbo_time
from .limits import APIS, FaultConfig, RateLimits, SlidingWindow, parse_latency, retry_after_s
from .state import SandboxState
from .webhooks import WebhookSender
from .limits import CallStats  # noqa: I001 - its own line: the import above is edited by other branches

log = logging.getLogger("sync_pipelines.sandbox")

Route_ = tuple[str, "re.Pattern[str]", Callable[..., Resp]]


def _compile(routes: list[tuple[str, str, Callable[..., Resp]]]) -> list[Route_]:
    return [(m, re.compile(p + r"/?$"), h) for m, p, h in routes]


HARVEST = _compile(harvest_api.ROUTES)
HUBSPOT = _compile(hubspot_api.ROUTES)
QBO = _compile(qbo_api.ROUTES)

QBO_THROTTLE_XML = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
    '<IntuitResponse xmlns="http://schema.intuit.com/finance/v3" time="{time}">'
    '<Fault type="SERVICE"><Error code="3001"><Message>message=ThrottleExceeded; errorCode=003001; statusCode=429</Message>'
    "<Detail>The request limit was reached.  Try again later</Detail></Error></Fault></IntuitResponse>"
)


class Sandbox:
    """State + behaviour, independent of the HTTP server (the ASGI app wraps it)."""

    def __init__(
        self,
        fixture: dict,
        *,
        state_file: str | Path | None = None,
        rate_limits: RateLimits | dict | str | None = "real",
        rotate_refresh_tokens: str | int = "always",
        qbo_latency: str | tuple[int, int] | None = None,
    ):
        self.state_file = Path(state_file) if state_file else None
        initial = validate_fixture(fixture)
        if self.state_file is not None and self.state_file.exists():
            try:
                saved = validate_fixture(money.loads(self.state_file.read_bytes()))
            except FixtureError as exc:
                raise FixtureError([f"{self.state_file}: {p}" for p in exc.problems]) from exc
            self.st = SandboxState(saved, validated=True)
            self.st.initial_fixture = initial
        else:
            self.st = SandboxState(initial, validated=True)
        self.rate_limits = RateLimits.coerce(rate_limits)
        self.rotate = rotate_refresh_tokens
        # Added to every QuickBooks API call, drawn uniformly from (low, high) ms: what a real
        # company answers in (150-400 ms is typical), so throughput is measured with real waits.
        self.qbo_latency = parse_latency(qbo_latency)
        self._latency_rng = random.Random(0)
        self.windows = SlidingWindow()
        self.in_flight: dict[str, int] = {}
        self.in_flight_lock = threading.Lock()
        self.faults: dict[str, FaultConfig] = {a: FaultConfig() for a in APIS}
        # (api, fault kind) -> how many were injected: what a chaos run reports
        self.faults_injected: Counter[tuple[str, str]] = Counter()
        # What `GET /_sandbox/stats` reports: calls per API and endpoint, by status, and the most
        # QuickBooks requests seen in flight at once per realm (benchmarks/month_end.py reads it).
        self.stats = CallStats()
        self.webhook_sender = WebhookSender()
        self.persist()

    # ------------------------------------------------------------------ persistence
    def persist(self) -> None:
        if self.state_file is not None:
            with self.st.lock:
                self.st.save(self.state_file)

    # ------------------------------------------------------------------ dispatch
    @staticmethod
    def classify(path: str) -> str | None:
        if path.startswith("/v2/"):
            return "harvest"
        if path.startswith("/crm/"):
            return "hubspot"
        if path.startswith("/v3/company/") or path.startswith("/oauth2/") or path.rstrip("/") == "/connect/oauth2":
            return "quickbooks"
        if path.startswith("/_sandbox/") or path == "/_sandbox":
            return "admin"
        return None

    def handle(self, api: str, req: Req) -> Resp:
        """Serve one request synchronously (auth, routing, replay); no limits or faults here."""
        with self.st.lock:
            if api == "harvest":
                denied = harvest_api.check_auth(req)
                if denied:
                    return denied
                return self._route(HARVEST, req) or Resp(404, {"status": 404, "error": "Not Found"})
            if api == "hubspot":
                denied = hubspot_api.check_auth(req)
                if denied:
                    return denied
                return self._route(HUBSPOT, req) or hubspot_api.error(404, "OBJECT_NOT_FOUND", f"No route for {req.method} {req.path}")
            if api == "quickbooks":
                return self._handle_qbo(req)
            return Resp(404, {"error": "not found"})

    def flush_events(self) -> None:
        """Send the webhooks for the changes made by the last request(s)."""
        with self.st.lock:
            events, self.st.pending_events = self.st.pending_events, []
            config = dict(self.st.webhooks)
            primary = self.st.realm_id
        if not events:
            return
        hubspot = [e[1] for e in events if e[0] == "hubspot"]
        if hubspot:
            self.webhook_sender.submit("hubspot", hubspot, config, primary)
        # Intuit notifies each company's changes under its own realmId
        by_realm: dict[str, list[dict]] = {}
        for e in events:
            if e[0] == "quickbooks":
                by_realm.setdefault(e[2] if len(e) > 2 else primary, []).append(e[1])
        for realm, batch in by_realm.items():
            self.webhook_sender.submit("quickbooks", batch, config, realm)

    def _route(self, table: list[Route_], req: Req, st: Any = None) -> Resp | None:
        allowed = False
        for method, pattern, handler in table:
            m = pattern.match(req.path)
            if m:
                if method != req.method:
                    allowed = True
                    continue
                return handler(self.st if st is None else st, req, **m.groupdict())
        if allowed:
            return Resp(405, {"status": "error", "message": f"Method {req.method} not allowed on {req.path}"})
        return None

    def _handle_qbo(self, req: Req) -> Resp:
        if req.path.rstrip("/") == "/oauth2/v1/tokens/bearer":
            if req.method != "POST":
                return Resp(405, {"error": "invalid_request"})
            return qbo_api.token_endpoint(self.st, req, rotate=self.rotate)
        if req.path.rstrip("/") == "/connect/oauth2":
            if req.method != "GET":
                return Resp(405, {"error": "invalid_request"})
            return qbo_api.authorize_endpoint(self.st, req)
        if req.path.startswith("/oauth2/"):
            return Resp(404, {"error": "not_found"})
        denied = qbo_api.check_auth(self.st, req)
        if denied:
            return denied
        m = re.match(r"/v3/company/([^/]+)(/|$)", req.path)
        realm = m.group(1) if m else ""
        view = self.st.for_realm(realm)
        # Intuit binds an access token to the company the user connected: another realm's
        # token (or a realm the sandbox does not serve) is refused, never served cross-company
        if view is None or qbo_api.token_realm(self.st, req) != realm:
            return qbo_api.fault_resp(
                403, [("message=ApplicationAuthorizationFailed; errorCode=003100; statusCode=403",
                       f"The access token is not authorised for realm {realm}", "3100", "")], "AUTHENTICATION")
        rid = req.q("requestid")
        if rid is not None:
            # Intuit: a requestid is at most 50 characters, and at most 36 on a batch call.
            most = 36 if req.path.rstrip("/").endswith("/batch") else 50
            if len(rid) > most or not rid:
                return qbo_api.fault_resp(400, [("String length is either shorter or longer than supported by specification",
                                                 f"requestid: at most {most} characters", "2050", "requestid")])
            key = f"{realm}|{rid}"
            hit = self.st.replays.get(key)
            if hit is not None:
                return Resp(int(hit[0]), hit[1].encode(), replayable=False)
        try:
            resp = self._route(QBO, req, view)
            if resp is None:
                resp = qbo_api.fault_resp(400, [("Unsupported Operation", f"Operation Could not find resource for relative : {req.path}", "500", "")])
        except qbo_api.Fault as f:
            resp = f.resp()
        if rid is not None:
            raw = resp.body_bytes()
            self.st.replays[f"{realm}|{rid}"] = [resp.status, raw.decode("utf-8")]
            self.st.touch("sandbox")
            resp = Resp(resp.status, raw, resp.headers, resp.content_type, mutated=True)
        return resp

    # ------------------------------------------------------------------ limits and faults
    def check_rate(self, api: str, req: Req) -> tuple[Resp | None, dict[str, str]]:
        rl = self.rate_limits
        headers: dict[str, str] = {}
        if api == "harvest":
            ok, _, wait = self.windows.take("harvest", rl.harvest_per_15s, 15.0)
            if not ok:
                return Resp(429, {"message": "Too many requests: the limit is 100 requests per 15 seconds. Retry later."},
                            headers={"Retry-After": retry_after_s(wait)}), headers
        elif api == "hubspot":
            if req.path.endswith("/search"):
                ok, _, _ = self.windows.take("hubspot-search", rl.hubspot_search_per_s, 1.0)
                if not ok:
                    return Resp(429, {"status": "error", "message": "You have reached your secondly limit.", "errorType": "RATE_LIMIT",
                                      "correlationId": new_uuid(), "policyName": "SECONDLY", "groupName": "publicapi:search",
                                      "requestId": new_uuid()}), headers
            else:
                ok, remaining, _ = self.windows.take("hubspot", rl.hubspot_per_10s, 10.0)
                if rl.hubspot_per_10s is not None:
                    headers = {"X-HubSpot-RateLimit-Max": str(rl.hubspot_per_10s),
                               "X-HubSpot-RateLimit-Remaining": str(max(remaining, 0)),
                               "X-HubSpot-RateLimit-Interval-Milliseconds": "10000",
                               "X-HubSpot-RateLimit-Daily": "250000", "X-HubSpot-RateLimit-Daily-Remaining": "249999"}
                if not ok:
                    return Resp(429, {"status": "error", "message": "You have reached your ten_secondly_rolling limit.",
                                      "errorType": "RATE_LIMIT", "correlationId": new_uuid(), "policyName": "TEN_SECONDLY_ROLLING",
                                      "groupName": "publicapi:private-app:sandbox", "requestId": new_uuid()}, headers=headers), headers
        elif api == "quickbooks" and req.path.startswith("/v3/company/"):
            realm = req.path.split("/")[3]
            if req.path.rstrip("/").endswith("/batch"):
                ok, _, _ = self.windows.take(f"qbo-batch:{realm}", rl.qbo_batch_per_minute, 60.0)
                if not ok:
                    return self.qbo_throttled(), headers
            ok, _, _ = self.windows.take(f"qbo:{realm}", rl.qbo_per_minute, 60.0)
            if not ok:
                return self.qbo_throttled(), headers
            ok, _, _ = self.windows.take(f"qbo-second:{realm}", rl.qbo_per_second, 1.0)
            if not ok:
                return self.qbo_throttled(), headers
        return None, headers

    @staticmethod
    def qbo_throttled() -> Resp:
        return Resp(429, QBO_THROTTLE_XML.format(time=qbo_time()).encode(), content_type="application/xml")

    def fault_response(self, api: str, kind: str) -> Resp:
        if api == "quickbooks":
            if kind == "429":
                return self.qbo_throttled()
            if kind == "500":
                return qbo_api.fault_resp(500, [("An application error has occurred while processing your request",
                                                 "System Failure Error: An unexpected error occurred (sandbox fault injection)", "10000", "")], "SystemFault")
            if kind == "503":
                return Resp(503, b"<html><body><h1>503 Service Unavailable</h1></body></html>", content_type="text/html")
            if kind == "lost_response":
                return Resp(502, b"<html><body><h1>502 Bad Gateway</h1></body></html>", content_type="text/html")
            return Resp(504, b"<html><body><h1>504 Gateway Time-out</h1></body></html>", content_type="text/html")
        if api == "hubspot":
            if kind == "429":
                return Resp(429, {"status": "error", "message": "You have reached your ten_secondly_rolling limit.", "errorType": "RATE_LIMIT",
                                  "correlationId": new_uuid(), "policyName": "TEN_SECONDLY_ROLLING", "groupName": "publicapi:private-app:sandbox"})
            status = {"500": 500, "503": 503, "lost_response": 502, "timeout": 504}[kind]
            return hubspot_api.error(status, "INTERNAL_ERROR" if status == 500 else "SERVICE_UNAVAILABLE", "internal error (sandbox fault injection)")
        if kind == "429":
            return Resp(429, {"message": "Too many requests (sandbox fault injection). Retry later."}, headers={"Retry-After": "1"})
        status = {"500": 500, "503": 503, "lost_response": 502, "timeout": 504}[kind]
        return Resp(status, {"status": status, "error": "Internal Server Error" if status == 500 else "Service Unavailable"})

    # ------------------------------------------------------------------ admin
    def admin(self, req: Req) -> Resp:
        path = req.path.rstrip("/")
        try:
            body = money.loads(req.body) if req.body.strip() else {}
        except ValueError:
            return Resp(400, {"error": "body must be JSON"})
        if not isinstance(body, dict):
            return Resp(400, {"error": "body must be a JSON object"})
        try:
            if path == "/_sandbox/stats":
                if req.method == "DELETE":
                    self.stats.clear()
                return Resp(200, self.stats.as_dict())
            if path == "/_sandbox/state" and req.method == "GET":
                return Resp(200, self.st.dump_json().encode())
            if path == "/_sandbox/reset" and req.method == "POST":
                with self.st.lock:
                    self.st.reset()
                self.windows.clear()
                self.stats.clear()
                return Resp(200, {"reset": True}, mutated=True)
            if path == "/_sandbox/faults":
                if req.method == "GET":
                    return Resp(200, {a: f.as_dict() for a, f in self.faults.items()})
                if req.method == "POST":
                    apis = self._apis(body.get("api"))
                    for a in apis:
                        self.faults[a] = FaultConfig.from_dict(body)
                    return Resp(200, {a: self.faults[a].as_dict() for a in apis})
                if req.method == "DELETE":
                    self.faults = {a: FaultConfig() for a in APIS}
                    return Resp(200, {"cleared": True})
            if path == "/_sandbox/consent" and req.method == "POST":
                # which company the sandbox's user picks on the next Intuit consent screen
                realm = body.get("realm_id")
                with self.st.lock:
                    if realm is not None and str(realm) not in self.st.books:
                        raise ValueError(f"no company with realm_id {realm!r} (served: {', '.join(self.st.books)})")
                    self.st.consent_realm = None if realm is None else str(realm)
                    self.st.touch("sandbox")
                return Resp(200, {"consent_realm": self.st.consent_realm or self.st.realm_id}, mutated=True)
            if path == "/_sandbox/rate_limits":
                if req.method == "POST":
                    self.rate_limits = RateLimits.coerce({**self.rate_limits.as_dict(), **body})
                    self.windows.clear()
                return Resp(200, self.rate_limits.as_dict())
            if path == "/_sandbox/webhooks":
                if req.method == "POST":
                    allowed = {"hubspot_url", "quickbooks_url", "quickbooks_format"}
                    bad = [k for k in body if k not in allowed]
                    if bad:
                        raise ValueError(f"unknown webhook setting(s) {bad}; known: {sorted(allowed)}")
                    if body.get("quickbooks_format", "cloudevents") not in ("cloudevents", "legacy"):
                        raise ValueError("quickbooks_format must be 'cloudevents' or 'legacy'")
                    with self.st.lock:
                        self.st.webhooks.update({k: v for k, v in body.items()})
                        self.st.webhooks = {k: v for k, v in self.st.webhooks.items() if v is not None}
                        self.st.touch("sandbox")
                    return Resp(200, {"config": dict(self.st.webhooks)}, mutated=True)
                if req.method == "GET":
                    return Resp(200, {"config": dict(self.st.webhooks), "deliveries": list(self.webhook_sender.log)[-200:]})
            if path == "/_sandbox/expire_tokens" and req.method == "POST":
                with self.st.lock:
                    # {"realm_id": R}: only that company's connection (the other companies keep theirs)
                    realm = body.get("realm_id")
                    if realm is not None and str(realm) not in self.st.books:
                        raise ValueError(f"no company with realm_id {realm!r} (served: {', '.join(self.st.books)})")
                    mine = [t for t in self.st.access_tokens
                            if realm is None or self.st.access_token_realms.get(t, self.st.realm_id) == str(realm)]
                    n = len(mine)
                    self.st.access_tokens.update({t: 0 for t in mine})
                    revoked = bool(body.get("refresh_token", False))
                    if revoked:  # the app must be reconnected: every refresh now gets invalid_grant
                        for r, book in self.st.books.items():
                            if realm is None or r == str(realm):
                                book.refresh_token = "sbx-rt-revoked-" + new_uuid()
                    self.st.touch("sandbox")
                return Resp(200, {"expired_access_tokens": n, "refresh_token_revoked": revoked}, mutated=True)
            if path.startswith("/_sandbox/actions/") and req.method == "POST":
                return self.action(path.rsplit("/", 1)[1], body)
        except ValueError as exc:
            return Resp(400, {"error": str(exc)})
        return Resp(404, {"error": f"no admin endpoint {req.method} {req.path}"})

    @staticmethod
    def _apis(api: Any) -> list[str]:
        if api in (None, "all", "*"):
            return list(APIS)
        if api not in APIS:
            raise ValueError(f"api must be one of {', '.join(APIS)} or 'all', got {api!r}")
        return [api]

    def action(self, name: str, body: dict) -> Resp:
        st = self.st
        with st.lock:
            if name == "move_deal_stage":
                deal = st.hubspot["deals"].get(str(body.get("deal_id")))
                if deal is None:
                    return Resp(404, {"error": f"no deal {body.get('deal_id')!r}"})
                stage = body.get("dealstage") or body.get("stage")
                if not isinstance(stage, str):
                    return Resp(400, {"error": "dealstage (string) is required"})
                now = iso_z()
                if deal["properties"].get("dealstage") != stage:
                    st.hubspot_event("deals", deal["id"], "dealstage", stage)
                    hubspot_api.enter_stage(deal, stage, now)
                deal["properties"]["hs_lastmodifieddate"] = now
                deal["updatedAt"] = now
                st.touch("hubspot")
                return Resp(200, hubspot_api.render("deals", deal, None), mutated=True)
            if name in ("void_invoice", "record_payment"):
                inv = st.qbo["invoices"].get(str(body.get("invoice_id")))
                if inv is None:
                    return Resp(404, {"error": f"no invoice {body.get('invoice_id')!r}"})
                if name == "void_invoice":
                    qbo_api.void_invoice(st, inv)
                    return Resp(200, {"Invoice": inv}, mutated=True)
                cur = (inv.get("CurrencyRef") or {}).get("value") or st.home_currency
                amount = money.quantize(money.to_decimal(body.get("amount", inv["Balance"]), what="amount"), cur)
                bal = money.to_decimal(inv["Balance"])
                if amount <= 0 or amount > bal:
                    return Resp(400, {"error": f"amount must be in (0, {bal}]"})
                inv["Balance"] = money.quantize(bal - amount, cur)
                inv["SyncToken"] = str(int(inv["SyncToken"]) + 1)
                inv["MetaData"]["LastUpdatedTime"] = qbo_api.meta_now()
                payment = qbo_api.payment_for(st, inv, amount)
                st.qbo["payments"][payment["Id"]] = payment
                st.qbo_event("Payment", payment["Id"], "Create")
                st.qbo_event("Invoice", inv["Id"], "Update")
                st.touch("quickbooks")
                return Resp(200, {"Invoice": inv, "Payment": payment, "payment": {"amount": amount}}, mutated=True)
        return Resp(404, {"error": f"unknown action {name!r}"})


def create_app(sb: Sandbox) -> Starlette:
    async def endpoint(request: Request) -> Response:
        body = await request.body()
        req = Req(
            method=request.method,
            path=request.url.path,
            query=list(request.query_params.multi_items()),
            headers={k.lower(): v for k, v in request.headers.items()},
            body=body,
            base_url=str(request.base_url).rstrip("/"),
        )
        api = sb.classify(req.path)
        extra_headers: dict[str, str] = {}
        try:
            if api is None:
                resp = Resp(404, {"error": f"no such API path {req.path}"})
            elif api == "admin":
                resp = sb.admin(req)
            else:
                resp = await _serve_api(sb, api, req, extra_headers)
                sb.stats.count(api, req.method, req.path, resp.status)
            payload = resp.body_bytes()
        except Exception:  # noqa: BLE001 - a sandbox bug must still answer in the API's own shape
            log.exception("sandbox: unhandled error on %s %s", req.method, req.path)
            resp = sb.fault_response(api, "500") if api in ("quickbooks", "harvest", "hubspot") else Resp(500, {"error": "internal error"})
            payload = resp.body_bytes()
        if resp.mutated:
            await asyncio.get_running_loop().run_in_executor(None, sb.persist)
        sb.flush_events()
        headers = dict(extra_headers)
        headers.update(resp.headers)
        if api == "quickbooks":
            headers["intuit_tid"] = "1-" + uuid.uuid4().hex[:8] + "-" + uuid.uuid4().hex[:24]
            headers.setdefault("Qbo-Version", "1.4.83")
        return Response(payload, status_code=resp.status, headers=headers,
                        media_type=resp.content_type + ("; charset=utf-8" if resp.content_type == "application/json" else ""))

    return Starlette(routes=[Route("/{path:path}", endpoint, methods=["GET", "POST", "PATCH", "PUT", "DELETE"])])


async def _serve_api(sb: Sandbox, api: str, req: Req, extra_headers: dict[str, str]) -> Resp:
    fc = sb.faults[api]
    kind = fc.draw() if fc.applies_to(req.path) else None
    if kind is not None:
        sb.faults_injected[(api, kind)] += 1
    limited, headers = sb.check_rate(api, req)
    extra_headers.update(headers)
    if limited is not None:
        return limited
    realm_key = None
    if api == "quickbooks" and req.path.startswith("/v3/company/"):
        realm_key = req.path.split("/")[3]
        limit = sb.rate_limits.qbo_in_flight
        with sb.in_flight_lock:
            n = sb.in_flight.get(realm_key, 0)
            if limit is not None and n >= limit:
                return sb.qbo_throttled()
            sb.in_flight[realm_key] = n + 1
            sb.stats.in_flight(realm_key, n + 1)
    try:
        if realm_key is not None and sb.qbo_latency is not None:
            low, high = sb.qbo_latency
            await asyncio.sleep(sb._latency_rng.uniform(low, high) / 1000)
        if fc.latency_ms:
            await asyncio.sleep(fc.latency_ms / 1000)
        if kind in ("429", "500", "503"):
            return sb.fault_response(api, kind)
        if kind == "timeout":
            await asyncio.sleep(fc.timeout_ms / 1000)
            return sb.fault_response(api, kind)
        if kind == "short_page":
            req.short_page = fc.rng.random()
        # In a worker thread: the event loop keeps accepting (and counting in flight, and
        # throttling) other requests while this one is served; the state lock orders the writes.
        resp = await asyncio.get_running_loop().run_in_executor(None, sb.handle, api, req)
        if kind == "lost_response" and (resp.mutated or req.method != "GET"):
            lost = sb.fault_response(api, kind)
            lost.mutated = resp.mutated  # the change happened; only the answer is lost
            return lost
        return resp
    finally:
        if realm_key is not None:
            with sb.in_flight_lock:
                sb.in_flight[realm_key] -= 1


__all__ = ["Sandbox", "create_app"]
