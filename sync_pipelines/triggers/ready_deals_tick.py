"""One tick of the ready-for-billing deal sensor (DESIGN §7 "Deal sensor"), without Dagster.

A tick does two bounded jobs and returns the deals to bill as :class:`StageEntry` triggers:

1. **Webhook inbox.** HubSpot events stored by the receiver (`source="hubspot"`) are read in
   id order, at most ``INBOX_BATCH`` a tick. An event names a deal and a property, nothing
   more trustworthy: the deal is batch-read from HubSpot, and only a deal *now* in the stage,
   with its stage-entered date, becomes a trigger. So duplicate, out-of-order, stale or forged
   events cost one read and bill nothing extra. The events read are marked processed at the
   start of the *next* tick: a tick's cursor is stored only after its run requests are, so by
   then their runs are requested (if this tick is lost, they are simply read again).
2. **Search polling, the catch-up.** Every ``POLL_SECONDS``, deals with `dealstage` = the stage
   and `hs_lastmodifieddate` in ``[poll_from, now - LAG_MS)`` (search is eventually consistent)
   are read sorted ascending, at most ``MAX_PAGES`` pages a tick. Each next page is a new query
   from the last `hs_lastmodifieddate` seen, never a deep `after` offset: the 10,000-result cap
   never bites and a deal edited meanwhile (it moves to the end) is not skipped. ``poll_from``
   only advances over what was fully read: to the window end when the search ran out, else to
   the last timestamp read (everything before it has been returned). A fault mid-window keeps
   what was read and the cursor where the reads got to.

Both paths key a trigger by (deal id, stage-entered time), so a deal seen by webhook and by
polling, twice, or re-polled after our own write-back moved `hs_lastmodifieddate`, is one run.

The cursor (JSON) also holds the failure streak: an alert goes out on the ``ALERT_AFTER``-th
failing tick in a row and then every ``REALERT_EVERY`` ticks, not on every tick.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Protocol

from sync_pipelines.alert_messages import trigger_failed
from sync_pipelines.alerts import Alert
from sync_pipelines.connectors.hubspot_stages import entered_properties, parse_hubspot_datetime
from sync_pipelines.connectors.http import ApiError
from sync_pipelines.triggers.stage_entry import StageEntry, stage_entry

INBOX_BATCH = 200
MAX_PAGES = 10  # x 200 deals: a tick reads at most 2,000 search results (2 s at HubSpot's 5 searches/s)
POLL_SECONDS = 30  # polling-only path: stage change -> run request within ~POLL_SECONDS + LAG + tick
LAG_MS = 10_000  # search results lag writes by seconds; never read a window that may still fill in
FIRST_LOOKBACK_MS = 31 * 86_400_000  # an empty cursor starts a month back, never at the portal's birth
ALERT_AFTER = 3
# ticks: about every 10 minutes. The sensor asks for 2 s, but Dagster's sensor daemon evaluates
# sensors at most every 5 s (dagster._daemon.sensor.MIN_INTERVAL_LOOP_TIME), so a tick is ~5 s apart.
REALERT_EVERY = 120
SEARCH_CAP = 10_000
DEAL_EVENT_TYPES = {"deal.propertyChange", "deal.creation", "object.propertyChange", "object.creation"}
WINDOW_PROPERTY = "hs_lastmodifieddate"
SENSOR_NAME = "ready_for_billing_deals"  # the Dagster sensor that runs these ticks (its alerts name it)


class DealReader(Protocol):  # HubSpotClient
    def search_deals_page(self, filter_groups: list[dict[str, Any]], properties: list[str], *,
                          after: str | None = None, sorts: list[dict[str, str]] | None = None) -> Any: ...

    def batch_read_deals(self, deal_ids: Any, properties: list[str]) -> Any: ...


class Inbox(Protocol):  # Ledger
    def inbox_pending(self, limit: int = 100, source: str | None = None) -> list[Any]: ...

    def inbox_mark_processed(self, ids: Any) -> int: ...


@dataclass
class SensorCursor:
    """What the sensor remembers between ticks (stored as JSON in Dagster's cursor)."""

    poll_from_ms: int | None = None  # everything modified before this was read
    poll_after: str | None = None  # only when > a page of deals share poll_from_ms exactly
    next_poll_ms: int = 0  # when the next search poll is due
    ack: list[int] = field(default_factory=list)  # inbox rows to mark processed next tick
    failures: int = 0  # failing ticks in a row

    @classmethod
    def parse(cls, text: str | None) -> "SensorCursor":
        if not text:
            return cls()
        data = json.loads(text)
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})

    def dumps(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))


@dataclass
class TickOutcome:
    triggers: list[StageEntry]
    cursor: SensorCursor
    alerts: list[Alert] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # for the tick's log
    polled: bool = False
    poll_complete: bool = False
    pages: int = 0
    events: int = 0

    @property
    def cursor_text(self) -> str:
        return self.cursor.dumps()


def deal_ids_of_events(events: list[Any]) -> tuple[dict[int, str | None], list[str]]:
    """inbox row id -> deal id (None: not a deal event, nothing to do) and notes on odd rows."""
    out: dict[int, str | None] = {}
    notes: list[str] = []
    for ev in events:
        try:
            payload = json.loads(ev.payload_json)
        except (TypeError, ValueError):
            out[ev.id] = None
            notes.append(f"inbox event {ev.event_id}: payload is not JSON; ignored")
            continue
        kind = payload.get("subscriptionType") if isinstance(payload, dict) else None
        object_type = payload.get("objectTypeId") if isinstance(payload, dict) else None
        is_deal = kind in DEAL_EVENT_TYPES and (not kind.startswith("object.") or object_type == "0-3")
        oid = payload.get("objectId") if isinstance(payload, dict) else None
        if not is_deal or oid is None or not str(oid).isdigit():
            out[ev.id] = None
            continue
        prop = payload.get("propertyName")
        # only a stage change (or a new deal, which may be created in the stage) can start a trigger
        out[ev.id] = str(oid) if prop in (None, "dealstage") else None
    return out, notes


def evaluate(
    hubspot: DealReader,
    inbox: Inbox,
    stage: str,
    cursor_text: str | None,
    *,
    now_ms: int | None = None,
    clock: Callable[[], float] = time.time,
    max_pages: int = MAX_PAGES,
    poll_seconds: int = POLL_SECONDS,
) -> TickOutcome:
    """Run one tick (module docs). Never raises for a HubSpot fault: it is counted in the cursor's
    failure streak and the tick returns what it did read."""
    now = now_ms if now_ms is not None else int(clock() * 1000)
    state = SensorCursor.parse(cursor_text)
    props = ["dealstage", WINDOW_PROPERTY, *entered_properties(stage)]
    found: dict[str, StageEntry] = {}
    out = TickOutcome(triggers=[], cursor=state)
    failed: list[str] = []

    if state.ack:
        inbox.inbox_mark_processed(state.ack)
    state.ack = []

    # 1. the webhook inbox
    events = inbox.inbox_pending(limit=INBOX_BATCH, source="hubspot")
    out.events = len(events)
    if events:
        deal_of, notes = deal_ids_of_events(events)
        out.notes += notes
        ids = sorted({d for d in deal_of.values() if d is not None})
        try:
            deals = hubspot.batch_read_deals(ids, props).records if ids else []
        except ApiError as exc:
            failed.append(f"reading {len(ids)} deal(s) named by webhooks: {exc}")
            # only the events that need no read are done; the others stay pending for the next tick
            state.ack = [i for i, d in deal_of.items() if d is None]
        else:
            for deal in deals:
                entry = stage_entry(deal.id, deal.properties, stage)
                if entry is not None:
                    found[entry.run_key] = entry
                elif deal.properties.get("dealstage") == stage:
                    out.notes.append(f"deal {deal.id} is in {stage} but HubSpot gives no stage-entered date")
            state.ack = sorted(deal_of)

    # 2. search polling
    if now >= state.next_poll_ms:
        out.polled = True
        lower = state.poll_from_ms if state.poll_from_ms is not None else now - FIRST_LOOKBACK_MS
        end = now - LAG_MS
        after = state.poll_after
        try:
            while lower < end and out.pages < max_pages:
                filters = [
                    {"propertyName": "dealstage", "operator": "EQ", "value": stage},
                    {"propertyName": WINDOW_PROPERTY, "operator": "GTE", "value": str(lower)},
                    {"propertyName": WINDOW_PROPERTY, "operator": "LT", "value": str(end)},
                ]
                page, nxt = hubspot.search_deals_page([{"filters": filters}], props, after=after)
                out.pages += 1
                last = lower
                for deal in page.records:
                    stamp = parse_hubspot_datetime(deal.properties.get(WINDOW_PROPERTY))
                    if stamp is not None:
                        last = max(last, stamp)
                    entry = stage_entry(deal.id, deal.properties, stage)
                    if entry is not None:
                        found[entry.run_key] = entry
                if nxt is None:
                    lower, after = end, None
                    break
                if last > lower:
                    # all deals modified before `last` were returned (ascending sort): re-window there
                    lower, after = last, None
                else:
                    # a full page on one millisecond: page on within it (rare), below the cap
                    if int(nxt) + 200 > SEARCH_CAP:
                        raise ApiError("hubspot", "POST", "/crm/v3/objects/deals/search", None,
                                       api_message=f"more than {SEARCH_CAP} deals share {WINDOW_PROPERTY}={lower}")
                    after = nxt
        except ApiError as exc:
            failed.append(f"searching deals modified from {lower}: {exc}")
        state.poll_from_ms, state.poll_after = lower, after
        out.poll_complete = lower >= end
        # caught up: wait for the next poll; behind (bounded pages or a fault): go on next tick
        state.next_poll_ms = now + poll_seconds * 1000 if out.poll_complete else 0

    if failed:
        state.failures += 1
        if state.failures == ALERT_AFTER or (state.failures > ALERT_AFTER and state.failures % REALERT_EVERY == 0):
            alert = trigger_failed(SENSOR_NAME, "; ".join(failed), system="HubSpot")
            out.alerts.append(replace(alert, lines=(
                f"HubSpot failing for {state.failures} ticks in a row: ready-for-billing deals are not being "
                "picked up; they will be once HubSpot answers (nothing is lost: the cursor did not move past "
                "unread deals)", *alert.lines)))
        out.notes += failed
    else:
        state.failures = 0
    out.triggers = sorted(found.values(), key=lambda e: (e.entered_ms, e.deal_id))
    return out


__all__ = ["SensorCursor", "TickOutcome", "evaluate", "deal_ids_of_events"]
