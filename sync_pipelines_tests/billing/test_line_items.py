"""Deals invoiced from their line items (DESIGN §5 "Deals"; docs/rules.md "Deals invoiced from line items").

Every expected amount is computed by hand in the comments.
"""

from __future__ import annotations

from decimal import Decimal

import pandas as pd
import pytest

from sync_pipelines.billing import BillingHistory, PostedInvoice, RulesError, parse_rules, price_month
from sync_pipelines.billing.line_items import LINE_ITEM_COLUMNS
from sync_pipelines.posting.draft_checks import draft_problems
from sync_pipelines.posting.drafts import drafts_document

from .helpers import HEAD, catalog_frame, deal, deals_frame, entries_frame, entry

STAGE = "ready_for_billing"
HUBSPOT = f"hubspot: {{ready_for_billing_stage: {STAGE}}}\n"
CLIENTS = """\
  acme:
    harvest_client_id: 1001
    qbo_customer: "Acme Corp"
    hubspot_company_id: "5001"
    currency: USD
    rates: [{rate: 100}]
    discount: {percent: 10}
    minimum: 5000
    cap: {amount: 300, period: month}
    invoice: {memo: "PO {po_number}"}
  kaisha:
    harvest_client_id: 1003
    qbo_customer: "Kaisha KK"
    hubspot_company_id: "5003"
    currency: JPY
    rates: [{rate: 10000}]
"""


def rules(hubspot: bool = True):
    head = HEAD.replace("clients:\n", (HUBSPOT if hubspot else "") + "clients:\n")
    return parse_rules(head + CLIENTS, "test")


def ready_deal(deal_id: str, *, company: str = "5001", stage: str = STAGE,
               modified: str = "2026-10-20T15:00:00Z", po: str | None = None) -> dict:
    d = deal(deal_id, None, po=po)
    d.update(dealstage=stage, hs_lastmodifieddate=modified, company_id=company)
    return d


def items_frame(rows: list[tuple]) -> pd.DataFrame:
    return pd.DataFrame([dict(zip(LINE_ITEM_COLUMNS, r)) for r in rows], columns=LINE_ITEM_COLUMNS, dtype=object)


TWO_ITEMS = [
    # 2.5 x 150.00 = 375.00; item by name == hs_sku "Consulting"
    ("8805", "123", "Strategy workshop", "Consulting", "150.00", "2.5"),
    # 3 x 99.995 = 299.985 -> 299.99 (half up); hs_sku "DS-9" names no item: item by line item name
    ("8805", "124", "Design Services", "DS-9", "99.995", "3"),
]


def price(deals: list[dict], items: list[tuple] | None, *, rows: list[dict] | None = None, hubspot: bool = True,
          history: BillingHistory | None = None, catalog: pd.DataFrame | None = None, clients=None):
    return price_month(rules(hubspot), "2026-10", entries_frame(rows or []), deals_frame(deals),
                       catalog if catalog is not None else catalog_frame(), history or BillingHistory(), "9130",
                       clients=clients, line_items=None if items is None else items_frame(items))


def test_two_line_items_make_one_invoice_of_their_own():
    # acme also has 2 h of time at 100/h: 200.00, 10 % discount = 180.00, minimum 5000 lifts it
    # to 5000.00, the month cap writes it down to 300.00; the deal invoice (674.99, above the cap)
    # gets none of these.
    r = price([ready_deal("8805", po="PO-7")], TWO_ITEMS, rows=[entry(1, "2026-10-05", "2.00")])
    assert list(r.invoices["group_key"]) == ["all", "deal-8805"]
    time_inv = r.invoice("9130:acme:2026-10:all:g1")
    assert time_inv["total"] == Decimal("300.00")
    inv = r.invoice("9130:acme:2026-10:deal-8805:g1")
    assert inv["status"] == "ready", inv["hold_reasons"]
    assert inv["subtotal"] == inv["total"] == Decimal("674.99")  # 375.00 + 299.99
    assert inv["discount"] == inv["minimum_fee"] == inv["cap_adjustment"] == Decimal("0.00")
    assert inv["memo"] == "PO PO-7" and inv["po_numbers"] == ["PO-7"]
    assert inv["terms_name"] == "Net 30" and inv["terms_id"] == "20"
    assert inv["customer_id"] == "58" and inv["line_count"] == 2
    lines = r.invoice_lines(inv["invoice_key"]).to_dict("records")
    assert [(l["line_no"], l["kind"], l["description"], l["item_name"], l["item_id"], l["qty"], l["unit_price"],
             l["amount"], l["rate_rule"]) for l in lines] == [
        (1, "line_item", "Strategy workshop", "Consulting", "2", Decimal("2.5"), Decimal("150.00"),
         Decimal("375.00"), "deal 8805 line item 123"),
        (2, "line_item", "Design Services", "Design Services", "3", Decimal("3"), Decimal("99.995"),
         Decimal("299.99"), "deal 8805 line item 124"),
    ]
    report = r.extras["line_item_deals"]
    assert report.to_dict("records")[0]["status"] == "ready"
    assert report.to_dict("records")[0]["invoice_key"] == inv["invoice_key"]


def test_item_found_by_its_sku_field():
    cat = catalog_frame()
    cat.loc[cat["name"] == "Design Services", "sku"] = "DS-9"
    r = price([ready_deal("8805")], [("8805", "124", "Drawings", "DS-9", "10.00", "1")], catalog=cat)
    (line,) = r.invoice_lines("9130:acme:2026-10:deal-8805:g1").to_dict("records")
    assert (line["item_name"], line["item_id"], line["amount"]) == ("Design Services", "3", Decimal("10.00"))


def test_unknown_sku_holds_the_whole_invoice():
    items = TWO_ITEMS + [("8805", "125", "Mystery box", "NOPE-1", "5.00", "1")]
    r = price([ready_deal("8805")], items)
    inv = r.invoice("9130:acme:2026-10:deal-8805:g1")
    assert inv["status"] == "held"
    assert inv["total"] == Decimal("679.99")  # 375.00 + 299.99 + 5.00: the whole invoice, held
    assert len(inv["hold_reasons"]) == 1
    reason = inv["hold_reasons"][0]
    assert "NOPE-1" in reason and "deal 8805" in reason and "unknown SKU" in reason
    assert r.extras["line_item_deals"].iloc[0]["status"] == "held"


@pytest.mark.parametrize("d", [
    ready_deal("8805", stage="closedwon"),
    ready_deal("8805", modified="2026-09-30T12:00:00Z"),
    ready_deal("8805", modified="2026-11-01T05:00:00Z"),  # 01:00 on Nov 1 in New York
])
def test_other_stage_or_other_period_gives_no_invoice(d):
    r = price([d], TWO_ITEMS)
    assert len(r.invoices) == 0 and len(r.lines) == 0
    assert len(r.extras["line_item_deals"]) == 0


def test_stage_date_is_taken_in_the_firm_time_zone():
    # 2026-11-01T03:00Z is 2026-10-31 23:00 in New York: October
    r = price([ready_deal("8805", modified="2026-11-01T03:00:00Z")], TWO_ITEMS)
    assert list(r.invoices["invoice_key"]) == ["9130:acme:2026-10:deal-8805:g1"]


def test_deal_without_line_items_or_feature_off_gives_no_invoice():
    assert len(price([ready_deal("8805")], []).invoices) == 0
    assert len(price([ready_deal("9000")], TWO_ITEMS).invoices) == 0  # the items are another deal's
    off = price([ready_deal("8805")], TWO_ITEMS, hubspot=False)
    assert len(off.invoices) == 0 and "line_item_deals" not in off.extras
    no_frame = price([ready_deal("8805")], None)
    assert len(no_frame.invoices) == 0 and "line_item_deals" not in no_frame.extras


def test_deal_of_an_unmapped_company_is_reported():
    r = price([ready_deal("8805", company="9999")], TWO_ITEMS)
    assert len(r.invoices) == 0
    (row,) = r.extras["line_item_deals"].to_dict("records")
    assert row["deal_id"] == "8805" and row["status"] == "unmapped" and row["client_key"] is None
    assert "9999" in row["reason"]
    # a run for named clients does not report other companies' deals (as unmapped time)
    assert len(price([ready_deal("8805", company="9999")], TWO_ITEMS, clients=["acme"]).extras["line_item_deals"]) == 0


def test_jpy_line_items_round_half_up_to_whole_yen():
    items = [
        ("8806", "201", "Consulting", "Consulting", "333.5", "3"),  # 1000.5 -> 1001
        ("8806", "202", "Design Services", "Design Services", "999", "1.5"),  # 1498.5 -> 1499
    ]
    r = price([ready_deal("8806", company="5003")], items)
    inv = r.invoice("9130:kaisha:2026-10:deal-8806:g1")
    assert inv["currency"] == "JPY" and inv["total"] == Decimal("2500")
    assert [l["amount"] for l in r.invoice_lines(inv["invoice_key"]).to_dict("records")] == [Decimal("1001"), Decimal("1499")]


def test_generation_and_already_invoiced_deals():
    hist = BillingHistory(generations={("acme", "2026-10", "deal-8805"): 2})
    r = price([ready_deal("8805")], TWO_ITEMS, history=hist)
    assert list(r.invoices["invoice_key"]) == ["9130:acme:2026-10:deal-8805:g2"]
    # invoiced in September already (a later edit moved hs_lastmodifieddate): not again
    posted = PostedInvoice("9130:acme:2026-09:deal-8805:g1", "acme", "2026-09", Decimal("674.99"))
    r = price([ready_deal("8805")], TWO_ITEMS, history=BillingHistory(posted_invoices=(posted,)))
    assert len(r.invoices) == 0
    assert r.extras["line_item_deals"].iloc[0]["status"] == "already_invoiced"


def test_posted_line_item_invoices_do_not_count_towards_the_cap():
    # cap 300/month; a posted deal invoice of 674.99 this month must not write the time down:
    # 2 h x 100 = 200.00, -10 % = 180.00, minimum 5000 -> 5000.00, capped at 300.00
    posted = PostedInvoice("9130:acme:2026-10:deal-8800:g1", "acme", "2026-10", Decimal("674.99"))
    hist = BillingHistory(posted_invoices=(posted,))
    r = price([], [], rows=[entry(1, "2026-10-05", "2.00")], history=hist)
    assert r.invoice("9130:acme:2026-10:all:g1")["total"] == Decimal("300.00")


def test_line_item_payload_passes_the_draft_checks():
    entries = entries_frame([entry(1, "2026-10-05", "2.00")])
    r = price_month(rules(), "2026-10", entries, deals_frame([ready_deal("8805", po="PO-7")]), catalog_frame(),
                    BillingHistory(), "9130", line_items=items_frame(TWO_ITEMS))
    doc = drafts_document(r, entries)
    assert draft_problems(doc) == []
    (inv,) = [i for i in doc["invoices"] if i["group_key"] == "deal-8805"]
    assert inv["entries"] == [] and inv["total"] == Decimal("674.99")
    body = inv["payload"]
    assert body["CustomerMemo"] == {"value": "PO PO-7"}
    assert [(l["Amount"], l["SalesItemLineDetail"]["ItemRef"], l["SalesItemLineDetail"]["Qty"],
             l["SalesItemLineDetail"]["UnitPrice"]) for l in body["Line"]] == [
        (Decimal("375.00"), {"value": "2", "name": "Consulting"}, Decimal("2.5"), Decimal("150.00")),
        (Decimal("299.99"), {"value": "3", "name": "Design Services"}, Decimal("3"), Decimal("99.995")),
    ]


def test_hubspot_section_is_validated_by_path():
    base = HEAD.replace("clients:\n", "hubspot: {ready_for_billing_stage: x, stage: y}\nclients:\n")
    with pytest.raises(RulesError) as exc:
        parse_rules(base + CLIENTS)
    assert "hubspot.stage: unknown key" in exc.value.problems
    with pytest.raises(RulesError) as exc:
        parse_rules(HEAD.replace("clients:\n", "hubspot: {}\nclients:\n") + CLIENTS)
    assert "hubspot.ready_for_billing_stage: required" in exc.value.problems
    numeric = parse_rules(HEAD.replace("clients:\n", "hubspot: {ready_for_billing_stage: 12345}\nclients:\n") + CLIENTS)
    assert numeric.hubspot.ready_for_billing_stage == "12345"
    assert parse_rules(HEAD + CLIENTS).hubspot is None


def test_a_line_item_that_could_not_be_read_holds_the_invoice():
    # the extract keeps a rejected line item as a row without name, sku, price or quantity
    items = TWO_ITEMS + [("8805", "126", None, None, None, None)]
    r = price([ready_deal("8805")], items)
    inv = r.invoice("9130:acme:2026-10:deal-8805:g1")
    assert inv["status"] == "held" and inv["total"] == Decimal("674.99")
    assert inv["hold_reasons"] == ["deal 8805 line item 126 could not be read from HubSpot (see the rejected records)"]
    assert not r.invoice_lines(inv["invoice_key"]).iloc[2]["priced"]


def test_an_inactive_item_holds_the_invoice():
    cat = catalog_frame(extra=[])
    cat.loc[cat["name"] == "Consulting", "active"] = False
    inv = price([ready_deal("8805")], TWO_ITEMS, catalog=cat).invoice("9130:acme:2026-10:deal-8805:g1")
    assert inv["status"] == "held"
    assert inv["hold_reasons"] == ["QuickBooks item 'Consulting' is inactive (deal 8805 line item 123)"]


def test_the_stage_entered_date_decides_the_month_not_the_last_edit():
    # entered the stage on Oct 20, edited (e.g. our write-back) on Nov 3: an October invoice,
    # and none in November
    d = ready_deal("8805", modified="2026-11-03T15:00:00Z")
    frame = deals_frame([d]).assign(stage_entered_at=["2026-10-20T15:00:00.000Z"])
    october = price_month(rules(), "2026-10", entries_frame([]), frame, catalog_frame(), BillingHistory(), "9130",
                          line_items=items_frame(TWO_ITEMS))
    assert list(october.invoices["invoice_key"]) == ["9130:acme:2026-10:deal-8805:g1"]
    november = price_month(rules(), "2026-11", entries_frame([]), frame, catalog_frame(), BillingHistory(), "9130",
                           line_items=items_frame(TWO_ITEMS))
    assert len(november.invoices) == 0
    # without the property (a portal that has none), the last edit stands in
    legacy = price_month(rules(), "2026-11", entries_frame([]), deals_frame([d]), catalog_frame(), BillingHistory(),
                         "9130", line_items=items_frame(TWO_ITEMS))
    assert list(legacy.invoices["invoice_key"]) == ["9130:acme:2026-11:deal-8805:g1"]
