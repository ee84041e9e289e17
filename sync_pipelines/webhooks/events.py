"""Webhook bodies -> inbox events (the contract in docs/architecture.md, "Webhook inbox").

- HubSpot: a JSON array of event objects; one inbox event per element, ``event_id`` =
  ``str(eventId)``, payload = the element exactly as received.
- QuickBooks: legacy ``{"eventNotifications": [{"realmId", "dataChangeEvent": {"entities": [...]}}]}``
  or a CloudEvents JSON array; one inbox event per entity change, payload normalised to
  ``realm_id, entity, entity_id, operation, occurred_at, format, raw``.

An element that cannot be keyed or understood is not dropped: it becomes a :class:`Rejected`
with its raw text and the reason, which the receiver stores under the ``<source>.quarantine``
inbox source (consumers of ``hubspot`` / ``quickbooks`` never see it).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sync_pipelines import money

HUBSPOT = "hubspot"
QUICKBOOKS = "quickbooks"
QUARANTINE_SUFFIX = ".quarantine"
MAX_EVENT_ID = 255  # the inbox's event_id column

OPERATIONS = ("Create", "Update", "Delete", "Void", "Merge", "Emailed")
_CE_OPERATIONS = {"created": "Create", "updated": "Update", "deleted": "Delete", "voided": "Void",
                  "merged": "Merge", "emailed": "Emailed"}
# CloudEvents types carry the entity in lower case (``qbo.salesreceipt.created.v1``); the legacy
# format and the Accounting API spell it in CamelCase. The entities Intuit lists for webhooks:
_ENTITIES = {name.lower(): name for name in (
    "Account", "Bill", "BillPayment", "Budget", "Class", "CreditMemo", "Currency", "Customer", "Department",
    "Deposit", "Employee", "Estimate", "Invoice", "Item", "JournalCode", "JournalEntry", "Payment",
    "PaymentMethod", "Preferences", "Purchase", "PurchaseOrder", "RefundReceipt", "SalesReceipt", "TaxAgency",
    "Term", "TimeActivity", "Transfer", "Vendor", "VendorCredit",
)}
_CE_TYPE = re.compile(r"^qbo\.([a-z]+)\.([a-z]+)\.v\d+$")


@dataclass(frozen=True)
class InboxItem:
    source: str
    event_id: str
    payload: Any


@dataclass(frozen=True)
class Rejected:
    """An element (or a whole body) that could not become an inbox event."""

    where: str  # "body", "[3]", "eventNotifications[0].dataChangeEvent.entities[2]"
    reason: str
    raw: str

    def quarantine_item(self, source: str) -> InboxItem:
        # Keyed by the raw text, so a redelivery of the same bad element is stored once.
        digest = hashlib.sha256(f"{self.where}\n{self.raw}".encode()).hexdigest()
        return InboxItem(source + QUARANTINE_SUFFIX, digest,
                         {"where": self.where, "reason": self.reason, "raw": self.raw})


@dataclass
class Parsed:
    items: list[InboxItem]
    rejected: list[Rejected]


class MalformedBody(ValueError):
    """The body as a whole is not a payload of this source (not JSON, wrong shape)."""


def _raw(value: Any) -> str:
    return money.dumps(value, ensure_ascii=False)


def load_json(body: bytes) -> Any:
    """Parse a webhook body; numbers stay exact (Decimal), never binary floats."""
    try:
        return money.loads(body.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise MalformedBody(f"body is not UTF-8 (byte {exc.start})") from None
    except ValueError as exc:
        raise MalformedBody(f"body is not JSON: {exc}") from None


# -- HubSpot ----------------------------------------------------------------------------------

def parse_hubspot(body: bytes) -> Parsed:
    data = load_json(body)
    if not isinstance(data, list):
        raise MalformedBody(f"HubSpot sends a JSON array of events, got a JSON {type(data).__name__}")
    out = Parsed([], [])
    for i, event in enumerate(data):
        where = f"[{i}]"
        problem = _hubspot_problem(event)
        if problem:
            out.rejected.append(Rejected(where, problem, _raw(event)))
            continue
        out.items.append(InboxItem(HUBSPOT, str(event["eventId"]), event))
    return out


def _hubspot_problem(event: Any) -> str | None:
    if not isinstance(event, dict):
        return f"an event must be a JSON object, got {type(event).__name__}"
    event_id = event.get("eventId")
    if isinstance(event_id, bool) or not (isinstance(event_id, int) or (isinstance(event_id, str) and event_id.isdigit())):
        return f"eventId must be an integer, got {event_id!r}"
    if not isinstance(event.get("subscriptionType"), str) or not event["subscriptionType"]:
        return "subscriptionType (string) is missing"
    return None


# -- QuickBooks -------------------------------------------------------------------------------

def parse_quickbooks(body: bytes) -> Parsed:
    data = load_json(body)
    if isinstance(data, list):
        return _parse_cloudevents(data)
    if isinstance(data, dict) and "eventNotifications" in data:
        return _parse_legacy(data)
    raise MalformedBody("expected a CloudEvents JSON array or an object with eventNotifications")


def _id_text(value: Any) -> str | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str) and value.strip():
        return value.strip()
    return None


def _iso(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    try:
        datetime.fromisoformat(value)
    except ValueError:
        return None
    return value


def _parse_cloudevents(data: list[Any]) -> Parsed:
    out = Parsed([], [])
    for i, ev in enumerate(data):
        where = f"[{i}]"
        try:
            out.items.append(_cloudevent(ev))
        except ValueError as exc:
            out.rejected.append(Rejected(where, str(exc), _raw(ev)))
    return out


def _cloudevent(ev: Any) -> InboxItem:
    if not isinstance(ev, dict):
        raise ValueError(f"a CloudEvent must be a JSON object, got {type(ev).__name__}")
    if ev.get("specversion") != "1.0":
        raise ValueError(f"specversion must be '1.0', got {ev.get('specversion')!r}")
    event_id = _id_text(ev.get("id"))
    if event_id is None or len(event_id) > MAX_EVENT_ID:
        raise ValueError(f"id must be a string of 1-{MAX_EVENT_ID} characters")
    m = _CE_TYPE.match(ev.get("type") or "") if isinstance(ev.get("type"), str) else None
    if m is None:
        raise ValueError(f"type must look like 'qbo.<entity>.<operation>.v1', got {ev.get('type')!r}")
    operation = _CE_OPERATIONS.get(m.group(2))
    if operation is None:
        raise ValueError(f"unknown operation {m.group(2)!r} in type {ev['type']!r}")
    realm = _id_text(ev.get("intuitaccountid"))
    entity_id = _id_text(ev.get("intuitentityid"))
    if realm is None or entity_id is None:
        raise ValueError("intuitaccountid and intuitentityid (strings) are required")
    occurred = _iso(ev.get("time"))
    if occurred is None:
        raise ValueError(f"time must be an ISO-8601 timestamp, got {ev.get('time')!r}")
    entity = _ENTITIES.get(m.group(1), m.group(1)[:1].upper() + m.group(1)[1:])
    return InboxItem(QUICKBOOKS, event_id, {
        "realm_id": realm, "entity": entity, "entity_id": entity_id, "operation": operation,
        "occurred_at": occurred, "format": "cloudevents", "raw": ev,
    })


def _parse_legacy(data: dict[str, Any]) -> Parsed:
    notifications = data["eventNotifications"]
    if not isinstance(notifications, list):
        raise MalformedBody("eventNotifications must be a JSON array")
    out = Parsed([], [])
    for n, note in enumerate(notifications):
        base = f"eventNotifications[{n}]"
        realm = _id_text(note.get("realmId")) if isinstance(note, dict) else None
        entities = ((note.get("dataChangeEvent") or {}).get("entities")) if isinstance(note, dict) else None
        if realm is None or not isinstance(entities, list):
            out.rejected.append(Rejected(base, "realmId and dataChangeEvent.entities (array) are required", _raw(note)))
            continue
        for e, ent in enumerate(entities):
            where = f"{base}.dataChangeEvent.entities[{e}]"
            try:
                out.items.append(_legacy_entity(realm, ent))
            except ValueError as exc:
                out.rejected.append(Rejected(where, str(exc), _raw({"realmId": realm, "entity": ent})))
    return out


def _legacy_entity(realm: str, ent: Any) -> InboxItem:
    if not isinstance(ent, dict):
        raise ValueError(f"an entity change must be a JSON object, got {type(ent).__name__}")
    name, entity_id = ent.get("name"), _id_text(ent.get("id"))
    if not isinstance(name, str) or not name or entity_id is None:
        raise ValueError("name and id are required")
    operation = ent.get("operation")
    if operation not in OPERATIONS:
        raise ValueError(f"operation must be one of {', '.join(OPERATIONS)}, got {operation!r}")
    occurred = _iso(ent.get("lastUpdated"))
    if occurred is None:
        raise ValueError(f"lastUpdated must be an ISO-8601 timestamp, got {ent.get('lastUpdated')!r}")
    # Legacy events have no id of their own; this tuple names one change of one entity, and a
    # redelivery carries the same one.
    event_id = f"{realm}:{name}:{entity_id}:{operation}:{occurred}"
    if len(event_id) > MAX_EVENT_ID:
        raise ValueError(f"realmId, name, id and lastUpdated together exceed {MAX_EVENT_ID} characters")
    return InboxItem(QUICKBOOKS, event_id, {
        "realm_id": realm, "entity": name, "entity_id": entity_id, "operation": operation,
        "occurred_at": occurred, "format": "legacy", "raw": ent,
    })
