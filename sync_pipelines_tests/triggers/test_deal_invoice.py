"""What a triggered deal bills (`triggers/deal_invoice.py`): pure functions over frames."""

from __future__ import annotations

from decimal import Decimal

import pandas as pd

from sync_pipelines.billing import BillingHistory
from sync_pipelines.billing.history import PostedInvoice
from sync_pipelines.billing.rules import parse_rules
from sync_pipelines.triggers.deal_invoice import LINE_ITEMS, PROJECT_TIME, DealInvoiceRecord, plan_deal, price_deal
from sync_pipelines.triggers.stage_entry import StageEntry
from sync_pipelines_tests.billing.helpers import entries_frame, entry

RULES = """
version: 1
firm: {timezone: America/New_York, home_currency: USD}
hubspot: {ready_for_billing_stage: ready}
defaults: {qbo: {item: "Services"}}
clients:
  acme:
    harvest_client_id: 1001
    qbo_customer: "Acme Corp"
    hubspot_company_id: "5001"
    rates: [{rate: 100.00}]
    discount: {percent: 10}
    minimum: 5000.00
    cap: {amount: 1000.00, period: month}
  retainer_co:
    harvest_client_id: 1002
    qbo_customer: "Retainer Co"
    hubspot_company_id: "5002"
    billing_type: retainer
    retainer: {fee: 1000.00, included_hours: 10}
    rates: [{rate: 100.00}]
"""
ENTERED = 1792076400000  # 2026-10-15 15:00 UTC = 11:00 in New York
TRIGGER = StageEntry("77", ENTERED)
REALM = "9130"


def _deal(**kw) -> dict:
    row = {"deal_id": "77", "dealname": "Milestone", "dealstage": "ready", "pipeline": "default",
           "closedate": None, "createdate": "2026-09-01T00:00:00Z", "hs_lastmodifieddate": "2026-10-20T00:00:00Z",
           "harvest_project_id": 4001, "billing_hourly_rate": None, "billing_discount_percent": None,
           "billing_not_to_exceed": None, "po_number": None, "company_id": "5001",
           "stage_entered_at": "2026-10-15T15:00:00.000Z"}
    row.update(kw)
    return row


def _frame(row: dict) -> pd.DataFrame:
    df = pd.DataFrame([row])
    df["harvest_project_id"] = df["harvest_project_id"].astype("Int64")
    return df


CATALOG = pd.DataFrame([
    {"entity": "Customer", "id": "1", "name": "Acme Corp", "active": True, "currency": "USD", "sku": None, "sync_token": "0"},
    {"entity": "Item", "id": "2", "name": "Services", "active": True, "currency": None, "sku": None, "sync_token": "0"},
])


def test_plan_project_time_up_to_the_trigger_day_in_the_firms_time_zone() -> None:
    plan = plan_deal(parse_rules(RULES), TRIGGER, _deal(), has_line_items=False)
    assert (plan.basis, plan.client_key, plan.period, plan.through) == (PROJECT_TIME, "acme", "2026-10", "2026-10-15")
    assert plan.harvest_project_id == 4001 and plan.reason is None
    assert plan_deal(parse_rules(RULES), TRIGGER, _deal(), has_line_items=True).basis == LINE_ITEMS


def test_plan_refuses_what_it_must_not_bill_and_says_why() -> None:
    rules = parse_rules(RULES)
    left = plan_deal(rules, TRIGGER, _deal(dealstage="closedwon"), False)
    assert left.basis is None and "left the ready stage" in left.reason and not left.needs_attention
    newer = plan_deal(rules, TRIGGER, _deal(stage_entered_at="2026-10-20T10:00:00.000Z"), False)
    assert newer.basis is None and "re-entered" in newer.reason
    stranger = plan_deal(rules, TRIGGER, _deal(company_id="9999"), False)
    assert stranger.basis is None and stranger.needs_attention and "9999" in stranger.reason
    nothing = plan_deal(rules, TRIGGER, _deal(harvest_project_id=None), False)
    assert nothing.basis is None and nothing.needs_attention and "nothing to bill" in nothing.reason
    retainer = plan_deal(rules, TRIGGER, _deal(company_id="5002"), False)
    assert retainer.basis is None and "retainer" in retainer.reason
    assert plan_deal(rules, TRIGGER, None, False).reason.endswith("no longer exists in HubSpot")


def test_one_invoice_per_deal_and_generation() -> None:
    rules = parse_rules(RULES)
    key = f"{REALM}:acme:2026-09:deal-77:g1"
    live = plan_deal(rules, TRIGGER, _deal(), False, [DealInvoiceRecord(key, "2026-09", "posted", 1)])
    assert live.basis is None and live.already_invoiced == key and live.period == "2026-09"
    # the same trigger re-executed: priced again under the live invoice's key (already_posted)
    again = plan_deal(rules, TRIGGER, _deal(), False, [DealInvoiceRecord(key, "2026-10", "posted", 1)], retry=True)
    assert again.basis == PROJECT_TIME and again.period == "2026-10"
    # held or voided: billed again in the same period (a fixed hold posts; a void -> next generation)
    for status in ("held", "voided", "pending"):
        p = plan_deal(rules, TRIGGER, _deal(), False, [DealInvoiceRecord(key, "2026-09", status, 1)])
        assert p.basis == PROJECT_TIME and p.period == "2026-09" and p.through == "2026-09-30"
    # another deal's invoice does not count
    other = plan_deal(rules, TRIGGER, _deal(), False, [DealInvoiceRecord(f"{REALM}:acme:2026-10:deal-78:g1", "2026-10", "posted", 1)])
    assert other.basis == PROJECT_TIME


def test_project_time_bills_to_the_trigger_day_with_discount_and_cap_but_no_minimum() -> None:
    rules = parse_rules(RULES)
    plan = plan_deal(rules, TRIGGER, _deal(), False)
    entries = entries_frame([
        entry(1, "2026-10-02", "2.00"), entry(2, "2026-10-15", "3.00"),
        entry(3, "2026-10-16", "4.00"),  # after the trigger day: the month-end's
        entry(4, "2026-10-05", "1.00", project=4002),  # another project
        entry(5, "2026-10-06", "1.00", billable=False),
    ])
    result = price_deal(rules, plan, _frame(_deal()), None, entries, CATALOG, BillingHistory(), REALM)
    [inv] = result.invoices.to_dict("records")
    assert inv["group_key"] == "deal-77" and inv["invoice_key"] == f"{REALM}:acme:2026-10:deal-77:g1"
    assert inv["subtotal"] == Decimal("500.00") and inv["discount"] == Decimal("50.00")
    assert inv["minimum_fee"] == Decimal("0.00") or inv["minimum_fee"] == 0  # a monthly floor: month-end only
    assert inv["total"] == Decimal("450.00")
    billed = result.entries[result.entries["status"] == "billed"]
    assert sorted(billed["entry_id"]) == [1, 2]
    # the month cap counts what was already posted this month
    history = BillingHistory(posted_invoices=(PostedInvoice(f"{REALM}:acme:2026-10:all:g1", "acme", "2026-10",
                                                            Decimal("800.00")),))
    capped = price_deal(rules, plan, _frame(_deal()), None, entries, CATALOG, history, REALM)
    assert capped.invoices.iloc[0]["total"] == Decimal("200.00")


def test_entries_already_billed_elsewhere_are_not_billed_again() -> None:
    rules = parse_rules(RULES)
    plan = plan_deal(rules, TRIGGER, _deal(), False)
    entries = entries_frame([entry(1, "2026-10-02", "2.00"), entry(2, "2026-10-03", "1.00")])
    history = BillingHistory(posted_entries={1: f"{REALM}:acme:2026-10:all:g1"})
    result = price_deal(rules, plan, _frame(_deal()), None, entries, CATALOG, history, REALM)
    reasons = dict(zip(result.entries["entry_id"], result.entries["reason"]))
    assert reasons[1].startswith("already billed on") and reasons[2] is None
    assert result.invoices.iloc[0]["subtotal"] == Decimal("100.00")


def test_the_month_end_counts_a_project_deal_invoice_towards_the_cap_but_not_a_line_items_one() -> None:
    from sync_pipelines.billing.line_items import without_deal_invoices

    time_key, items_key = f"{REALM}:acme:2026-10:deal-77:g1", f"{REALM}:acme:2026-10:deal-78:g1"
    history = BillingHistory(posted_entries={1: time_key}, posted_invoices=(
        PostedInvoice(time_key, "acme", "2026-10", Decimal("450.00")),
        PostedInvoice(items_key, "acme", "2026-10", Decimal("300.00"))))
    kept = without_deal_invoices(history)
    assert [p.invoice_key for p in kept.posted_invoices] == [time_key]
