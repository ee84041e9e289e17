"""The webhook receiver, an ASGI app (DESIGN §7; contract in docs/architecture.md "Webhook inbox").

``POST /webhooks/hubspot``: HubSpot v3 signature, 300 s window, replays refused.
``POST /webhooks/quickbooks``: ``intuit-signature`` over the raw body, legacy and CloudEvents.
``GET /healthz``: which endpoints have a secret, counters; never a secret.

Each request is answered only after its events are committed to the ledger inbox (group commit,
:mod:`sync_pipelines.webhooks.inbox_writer`). Answers:

- 200 ``{"accepted": n, "duplicates": m}``: stored (a duplicate = an event id already in the inbox;
  HubSpot and Intuit both redeliver, so duplicates are normal and acknowledged).
- 401 ``{"error": "<reason>"}``: ``not_configured`` (no secret set), ``forged``, ``stale``,
  ``future``, ``replayed`` (HubSpot only: see below).
- 413 too large; 503 the inbox could not be written (the sender retries; nothing was acknowledged).
- A correctly signed body that is not a valid payload (or elements of it) is quarantined in the
  inbox under ``hubspot.quarantine`` / ``quickbooks.quarantine`` with the reason, so nothing is
  lost. HubSpot then gets 400 (its deliveries are independent, and the error shows in its webhook
  log); Intuit gets 200, because Intuit sends no later events until a failing one is acknowledged,
  and one bad element must not stall every invoice void and payment behind it.

Replays: a HubSpot signature covers a timestamp, and HubSpot re-signs every retry, so a repeated
signature inside the window can only be a replay: 401 ``replayed``. An Intuit signature covers the
body only and Intuit retries with the very same body: a "replay" is indistinguishable from the
retry Intuit requires us to acknowledge, so Intuit redeliveries are answered 200 and stored once
by event id (the attacker gains nothing: the event is already in the inbox).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from sync_pipelines.webhooks import events as ev
from sync_pipelines.webhooks.inbox_writer import InboxWriter
from sync_pipelines.webhooks.replay import ReplayGuard
from sync_pipelines.webhooks.settings import HUBSPOT_SECRET_ENV, INTUIT_VERIFIER_ENV, ReceiverSettings
from sync_pipelines.webhooks.signatures import HUBSPOT_WINDOW_S, Verdict, verify_hubspot_v3, verify_intuit

log = logging.getLogger("sync_pipelines.webhooks")

HUBSPOT_PATH = "/webhooks/hubspot"
QUICKBOOKS_PATH = "/webhooks/quickbooks"

class _TooLarge(Exception):
    pass


class EndpointCounters:
    """What one endpoint has seen, for ``/healthz`` and the benchmark."""

    def __init__(self) -> None:
        self.requests_ok = 0
        self.events_accepted = 0
        self.events_duplicate = 0
        self.events_quarantined = 0
        self.store_errors = 0
        self.rejected: Counter[str] = Counter()

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests_ok": self.requests_ok,
            "events_accepted": self.events_accepted,
            "events_duplicate": self.events_duplicate,
            "events_quarantined": self.events_quarantined,
            "store_errors": self.store_errors,
            "rejected": dict(sorted(self.rejected.items())),
        }


class Receiver:
    """State shared by the endpoints: settings, the inbox writer, counters, the replay guard."""

    def __init__(self, settings: ReceiverSettings, writer: InboxWriter, clock_ms: Callable[[], int]) -> None:
        self.settings = settings
        self.writer = writer
        self.clock_ms = clock_ms
        self.counters = {ev.HUBSPOT: EndpointCounters(), ev.QUICKBOOKS: EndpointCounters()}
        self.replays = ReplayGuard(HUBSPOT_WINDOW_S)

    # -- helpers -------------------------------------------------------------------------------

    def reject(self, source: str, status: int, reason: str, detail: str, request: Request) -> JSONResponse:
        counters = self.counters[source]
        counters.rejected[reason] += 1
        n = counters.rejected[reason]
        if n <= 20 or n % 1000 == 0:  # a flood of forgeries must not flood the log
            peer = request.client.host if request.client else "?"
            log.warning("%s webhook rejected (%s, #%d): %s [from %s]", source, reason, n, detail, peer)
        return JSONResponse({"error": reason, "detail": detail}, status_code=status)

    async def body(self, request: Request) -> bytes:
        limit = self.settings.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise _TooLarge
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise _TooLarge
            chunks.append(chunk)
        return b"".join(chunks)

    def signed_uri(self, request: Request) -> str:
        """The URL HubSpot called: WEBHOOK_PUBLIC_URL + path (+ query), else the request's own URL."""
        if self.settings.public_url is None:
            return str(request.url)
        qs = request.scope.get("query_string") or b""
        path = request.scope.get("root_path", "") + request.scope["path"]
        return self.settings.public_url + path + ("?" + qs.decode("latin-1") if qs else "")

    async def accept(self, source: str, request: Request, body: bytes,
                     parse: Callable[[bytes], ev.Parsed], bad_status: int) -> JSONResponse:
        """Parse a signed body, store its events (and quarantine what is malformed), answer."""
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        # A declared non-JSON type is refused; a missing one is not (the signature already proves
        # who sent the body, and refusing would only quarantine real events).
        if ctype and ctype != "application/json" and not ctype.endswith("+json"):
            parsed = ev.Parsed([], [ev.Rejected("body", f"Content-Type must be application/json, got {ctype!r}",
                                                body.decode("utf-8", "backslashreplace"))])
        else:
            try:
                parsed = parse(body)
            except ev.MalformedBody as exc:
                parsed = ev.Parsed([], [ev.Rejected("body", str(exc), body.decode("utf-8", "backslashreplace"))])
        quarantine = [r.quarantine_item(source) for r in parsed.rejected]
        counters = self.counters[source]
        try:
            new = await asyncio.wait_for(self.writer.store(parsed.items + quarantine),
                                         timeout=self.settings.store_timeout_s)
        except Exception as exc:  # noqa: BLE001 - not stored: never acknowledge
            counters.store_errors += 1
            log.error("%s webhook: events not stored (%s); answered 503 so the sender retries", source, type(exc).__name__)
            return JSONResponse({"error": "inbox_unavailable"}, status_code=503)
        n_items = len(parsed.items)
        accepted = sum(new[:n_items])
        counters.events_accepted += accepted
        counters.events_duplicate += n_items - accepted
        counters.events_quarantined += len(quarantine)
        result: dict[str, Any] = {"accepted": accepted, "duplicates": n_items - accepted}
        if parsed.rejected:
            counters.rejected["malformed"] += 1
            for r in parsed.rejected[:5]:
                log.warning("%s webhook: %s quarantined: %s", source, r.where, r.reason)
            result["quarantined"] = [{"where": r.where, "reason": r.reason} for r in parsed.rejected]
            if bad_status != 200:
                return JSONResponse({"error": "malformed", **result}, status_code=bad_status)
        counters.requests_ok += 1
        return JSONResponse(result, status_code=200)

    # -- endpoints -----------------------------------------------------------------------------

    async def secret_and_body(self, source: str, secret: str | None, env_name: str,
                              request: Request) -> tuple[str, bytes] | JSONResponse:
        """The endpoint's secret and the raw body, or the rejection when either is missing."""
        if not secret:
            return self.reject(source, 401, "not_configured", f"{env_name} is not set", request)
        try:
            return secret, await self.body(request)
        except _TooLarge:
            return self.reject(source, 413, "too_large", f"body over {self.settings.max_body_bytes} bytes", request)

    async def hubspot(self, request: Request) -> JSONResponse:
        got = await self.secret_and_body(ev.HUBSPOT, self.settings.hubspot_client_secret, HUBSPOT_SECRET_ENV, request)
        if isinstance(got, JSONResponse):
            return got
        secret, body = got
        h = request.headers
        signature, timestamp = h.get("x-hubspot-signature-v3"), h.get("x-hubspot-request-timestamp")
        now = self.clock_ms()
        verdict: Verdict = verify_hubspot_v3(secret, method=request.method, uri=self.signed_uri(request), body=body,
                                             signature=signature, timestamp=timestamp, now_ms=now)
        if not verdict.ok:
            return self.reject(ev.HUBSPOT, 401, verdict.reason or "forged", verdict.detail, request)
        assert signature is not None and timestamp is not None
        if not self.replays.first_use(signature, int(timestamp), now):
            return self.reject(ev.HUBSPOT, 401, "replayed", "this signature was already accepted", request)
        return await self.accept(ev.HUBSPOT, request, body, ev.parse_hubspot, bad_status=400)

    async def quickbooks(self, request: Request) -> JSONResponse:
        got = await self.secret_and_body(ev.QUICKBOOKS, self.settings.intuit_verifier_token, INTUIT_VERIFIER_ENV,
                                         request)
        if isinstance(got, JSONResponse):
            return got
        token, body = got
        verdict = verify_intuit(token, body=body, signature=request.headers.get("intuit-signature"))
        if not verdict.ok:
            return self.reject(ev.QUICKBOOKS, 401, verdict.reason or "forged", verdict.detail, request)
        return await self.accept(ev.QUICKBOOKS, request, body, ev.parse_quickbooks, bad_status=200)

    async def healthz(self, request: Request) -> JSONResponse:
        st = self.writer.stats
        return JSONResponse({
            "ok": self.writer.alive(),
            "endpoints": {
                ev.HUBSPOT: {"path": HUBSPOT_PATH, "secret_configured": bool(self.settings.hubspot_client_secret)},
                ev.QUICKBOOKS: {"path": QUICKBOOKS_PATH, "secret_configured": bool(self.settings.intuit_verifier_token)},
            },
            "public_url": self.settings.public_url,
            "counters": {source: c.as_dict() for source, c in self.counters.items()},
            "inbox_writer": {"batches": st.batches, "requests": st.requests, "events": st.events,
                             "largest_batch": st.largest_batch, "failures": st.failures, "last_error": st.last_error},
        })


def create_app(settings: ReceiverSettings, ledger: Any, *, clock_ms: Callable[[], int] | None = None,
               max_batch: int = 2000) -> Starlette:
    """The receiver app over ``ledger`` (anything with ``inbox_put_many``). The inbox writer thread
    starts now and stops at the app's shutdown."""
    writer = InboxWriter(ledger, max_batch=max_batch).start()
    receiver = Receiver(settings, writer, clock_ms or (lambda: time.time_ns() // 1_000_000))
    for name, secret, env in ((ev.HUBSPOT, settings.hubspot_client_secret, HUBSPOT_SECRET_ENV),
                              (ev.QUICKBOOKS, settings.intuit_verifier_token, INTUIT_VERIFIER_ENV)):
        if not secret:
            log.warning("%s webhooks: %s is not set, so every request to /webhooks/%s is rejected (401) "
                        "instead of accepting unsigned data", name, env, name)
    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await asyncio.to_thread(writer.stop)

    app = Starlette(
        routes=[
            Route(HUBSPOT_PATH, receiver.hubspot, methods=["POST"]),
            Route(QUICKBOOKS_PATH, receiver.quickbooks, methods=["POST"]),
            Route("/healthz", receiver.healthz, methods=["GET"]),
        ],
        lifespan=lifespan,
    )
    app.state.receiver = receiver
    return app
