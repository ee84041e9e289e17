"""A small firm with deals ready for billing, for the deal-trigger tests (served by the sandbox).

Clients (from the generator, seed 5): `o_brien_sons` (company 31000000000, flat-ish rates, 15-min
rounding, no discount) and `cafe_zurich_gmbh` (company 31000000001, 10 % discount). Added deals:

- LINE_ITEMS_DEAL: Café Zürich, two line items (SKUs "Consulting", "Design Services");
- UNKNOWN_SKU_DEAL: Café Zürich, one known and one unknown SKU (holds the whole invoice);
- PROJECT_DEAL: O'Brien & Sons, linked to Harvest project 6300000, no line items;
- WAITING_DEAL: O'Brien & Sons, line items, still in `contractsent`.

The three ready ones entered the stage on 2026-10-15 15:00 UTC (11:00 in New York).
"""

from __future__ import annotations

import copy
import json
from decimal import Decimal
from typing import Any

import httpx

from sync_pipelines.sandbox import generate_fixture

MONTH = "2026-10"
STAGE = "ready_for_billing"
ENTERED = "2026-10-15T15:00:00.000Z"
ENTERED_MS = 1792076400000
LINE_ITEMS_DEAL = "49000000001"
UNKNOWN_SKU_DEAL = "49000000002"
PROJECT_DEAL = "49000000003"
WAITING_DEAL = "49000000004"
PROJECT_ID = 6300000
OBRIEN_COMPANY = "31000000000"
CAFE_COMPANY = "31000000001"

_BASE: tuple[dict, str] | None = None


def _deal(did: str, name: str, stage: str, modified: str, *, project: int | None = None) -> dict:
    props: dict[str, Any] = {
        "dealname": name, "amount": None, "dealstage": stage, "pipeline": "default",
        "createdate": "2026-09-01T00:00:00.000Z", "closedate": None, "hs_lastmodifieddate": modified,
        "hs_object_id": did, "deal_currency_code": "USD", "harvest_project_id": None if project is None else str(project),
        "billing_hourly_rate": None, "po_number": None,
        f"hs_v2_date_entered_{stage}": modified, f"hs_date_entered_{stage}": modified,
    }
    return {"id": did, "properties": props, "createdAt": props["createdate"], "updatedAt": modified, "archived": False}


def portal() -> tuple[dict, str]:
    """(fixture, rules YAML); a fresh deep copy each call."""
    global _BASE
    if _BASE is None:
        fixture, rules = generate_fixture(clients=3, entries=150, seed=5, month=MONTH)
        hs = fixture["hubspot"]
        for did, name, company, stage, items, project in (
            (LINE_ITEMS_DEAL, "Café Zürich - workshop package", CAFE_COMPANY, STAGE,
             [("Consulting", "Consulting", "150.00", "2"), ("Design Services", "Design Services", "95.50", "1")], None),
            (UNKNOWN_SKU_DEAL, "Café Zürich - hardware", CAFE_COMPANY, STAGE,
             [("Consulting", "Consulting", "150.00", "1"), ("Tablet stand", "HW-STAND-9", "80.00", "3")], None),
            (PROJECT_DEAL, "O'Brien & Sons - website milestone", OBRIEN_COMPANY, STAGE, [], PROJECT_ID),
            (WAITING_DEAL, "O'Brien & Sons - retainer top-up", OBRIEN_COMPANY, "contractsent",
             [("Consulting", "Consulting", "200.00", "1")], None),
        ):
            hs["deals"].append(_deal(did, name, stage, ENTERED, project=project))
            for type_id in (5, 341):
                hs["associations"].append({"from_type": "deals", "from_id": did, "to_type": "companies",
                                           "to_id": company, "type_id": type_id})
            for n, (item, sku, price, qty) in enumerate(items):
                lid = f"{did}{n}"
                amount = str((Decimal(price) * Decimal(qty)).quantize(Decimal("0.01")))
                hs["line_items"].append({"id": lid, "properties": {
                    "name": item, "hs_sku": sku, "price": price, "quantity": qty, "amount": amount,
                    "hs_product_id": None, "createdate": ENTERED, "hs_lastmodifieddate": ENTERED, "hs_object_id": lid},
                    "createdAt": ENTERED, "updatedAt": ENTERED, "archived": False})
                hs["associations"].append({"from_type": "deals", "from_id": did, "to_type": "line_items",
                                           "to_id": lid, "type_id": 19})
                hs["associations"].append({"from_type": "line_items", "from_id": lid, "to_type": "deals",
                                           "to_id": did, "type_id": 20})
        rules += f"hubspot: {{ready_for_billing_stage: {STAGE}}}\n"
        _BASE = (fixture, rules)
    return copy.deepcopy(_BASE[0]), _BASE[1]


def hubspot_event(event_id: int, deal_id: str, value: str = STAGE, *, occurred_ms: int = ENTERED_MS,
                  attempt: int = 0, prop: str = "dealstage") -> dict:
    """A webhook event as HubSpot sends it (api-contracts §2.8), as the receiver stores it."""
    return {"objectId": int(deal_id), "propertyName": prop, "propertyValue": value, "changeSource": "CRM",
            "eventId": event_id, "subscriptionId": 92894, "portalId": 5799819, "appId": 186886,
            "occurredAt": occurred_ms, "subscriptionType": "deal.propertyChange", "attemptNumber": attempt}


def move_deal_stage(base_url: str, deal_id: str, stage: str) -> dict:
    r = httpx.post(f"{base_url}/_sandbox/actions/move_deal_stage", json={"deal_id": deal_id, "dealstage": stage})
    r.raise_for_status()
    return json.loads(r.content)


def qbo_invoices_for(env: dict[str, str]) -> list[dict]:
    from sync_pipelines_tests._sandbox_month import qbo_invoices

    return qbo_invoices(env)
