"""The vectorised engine against the per-entry reference, on random entries and rules; invariants."""

from __future__ import annotations

import os
from datetime import date, timedelta
from decimal import Decimal as D

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sync_pipelines import money
from sync_pipelines.billing import BillingHistory, PostedInvoice, invoice_payload, price_month
from sync_pipelines.billing.reference import reference_price

from .helpers import catalog_frame, deal, deals_frame, entries_frame, entry, rules_for

RATE_POOL = [
    "{rate: 150.00}",
    "{rate: 160.00, from: 2026-10-10}",
    "{rate: 175.50, task: Design}",
    "{rate: 190.00, task: 12, from: 2026-10-05}",
    "{rate: 225.25, person: \"Jane Doe\", task: Design}",
    "{rate: 180.00, project: ACME-2, to: 2026-10-20}",
    "{rate: 130.00, person: 2}",
    "{rate: 99.9999, project: 4003, from: 2026-09-01}",
    "{rate: 0.0001, person: \"Ann Lee\", task: Meetings, from: 2026-10-03}",
]

# BILLING_PROPERTY_EXAMPLES=1000 for a deeper search than the suite's quick one
PROPS = settings(max_examples=int(os.environ.get("BILLING_PROPERTY_EXAMPLES", "40")), deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def client_yaml(draw, key: str, harvest_id: int, currency: str) -> str:
    big = 100 if currency == "JPY" else 1
    lines = [f"  {key}:", f"    harvest_client_id: {harvest_id}", f"    qbo_customer: \"{key.title()} Inc\"",
             f"    currency: {currency}"]
    rates = draw(st.lists(st.sampled_from(RATE_POOL), unique=True, max_size=len(RATE_POOL)))
    if rates:
        lines.append("    rates: [" + ", ".join(rates) + "]")
    inc = draw(st.sampled_from([0, 3, 6, 12, 15, 30, 60]))
    mode = draw(st.sampled_from(["up", "nearest", "down"]))
    scope = draw(st.sampled_from(["entry", "line"]))
    lines.append(f"    rounding: {{increment_minutes: {inc}, mode: {mode}, scope: {scope}}}")
    retainer = draw(st.booleans()) and draw(st.booleans())
    detail = draw(st.sampled_from(["summary", "project", "task", "person", "task_person", "entry"]))
    group = "client" if retainer else draw(st.sampled_from(["client", "project"]))
    lines.append(f"    invoice: {{group_by: {group}, line_detail: {detail}}}")
    if retainer:
        fee = draw(st.sampled_from(["6000", "0"])) if currency == "JPY" else draw(st.sampled_from(["6000.00", "0.00"]))
        hours = draw(st.sampled_from(["0", "5", "12.5", "40"]))
        over = draw(st.sampled_from(["", ", overage_rate: 165.00"]))
        roll = draw(st.booleans())
        lines.append("    billing_type: retainer")
        lines.append(f"    retainer: {{fee: {fee}, included_hours: {hours}{over}, rollover: {str(roll).lower()}}}")
    discount = draw(st.sampled_from([None, "{percent: 10}", "{percent: 12.5}", f"{{amount: {250 * big}}}"]))
    if discount:
        lines.append(f"    discount: {discount}")
    if draw(st.booleans()):
        lines.append(f"    minimum: {500 * big}")
    cap = draw(st.sampled_from([None, f"{{amount: {1000 * big}, period: month}}", f"{{amount: {3000 * big}, period: lifetime}}"]))
    if cap:
        lines.append(f"    cap: {cap}")
    return "\n".join(lines) + "\n"


@st.composite
def scenario(draw):
    yaml_text = draw(client_yaml("acme", 1001, "USD")) + draw(client_yaml("kaisha", 1003, "JPY"))
    n = draw(st.integers(0, 30))
    rows = []
    for i in range(n):
        day = date(2026, 9, 29) + timedelta(days=draw(st.integers(0, 34)))
        centi = draw(st.one_of(st.integers(0, 800), st.sampled_from([17, 110, 25, 1])))
        rows.append(entry(
            1000 - 7 * i, day, str(D(centi) / 100), user=draw(st.sampled_from([1, 2, 3])),
            task=draw(st.sampled_from([11, 12, 13])), project=draw(st.sampled_from([4001, 4002, 4003])),
            client=draw(st.sampled_from([1001, 1001, 1003, 1009])), billable=draw(st.sampled_from([True] * 9 + [False])),
            running=draw(st.sampled_from([False] * 19 + [True])),
        ))
    deals = []
    if draw(st.booleans()):
        deals.append(deal("8801", 4001, rate="205.00", closedate=draw(st.sampled_from(["2026-10-12", "2026-09-01"]))))
    if draw(st.booleans()):
        deals.append(deal("8802", 4001, rate="210.50", closedate=draw(st.sampled_from(["2026-10-12", "2026-10-25"]))))
    posted = []
    if draw(st.booleans()):
        posted.append(PostedInvoice("9130:acme:2026-10:po-old:g1", "acme", "2026-10", D(draw(st.sampled_from(["400.00", "1500.00"])))))
    if draw(st.booleans()):
        posted.append(PostedInvoice("9130:acme:2026-08:all:g1", "acme", "2026-08", D("2000.00")))
    carry = {"acme": D(draw(st.sampled_from(["0", "3.5"]))), "kaisha": D("2")}
    history = BillingHistory(posted_invoices=tuple(posted), carryover_hours=carry)
    return yaml_text, rows, deals, history


def _engine(yaml_text, rows, deals, history):
    rules = rules_for(yaml_text)
    cat = catalog_frame()
    return rules, price_month(rules, "2026-10", entries_frame(rows), deals_frame(deals), cat, history, "9130")


def _norm_line(kind, qty, price, amount, ids):
    return (kind, str(D(qty).quantize(D("0.01"))), str(D(price).normalize()), str(amount), tuple(ids))


@PROPS
@given(scenario())
def test_engine_matches_the_reference(sc):
    yaml_text, rows, deals, history = sc
    rules, result = _engine(yaml_text, rows, deals, history)
    deal_rates: dict = {}
    for d in sorted(deals, key=lambda d: (d["closedate"], d["deal_id"])):
        deal_rates.setdefault(d["harvest_project_id"], []).append(
            (date.fromisoformat(d["closedate"]), D(d["billing_hourly_rate"]), f"deal {d['deal_id']} billing_hourly_rate"))
    ref = reference_price(rules, "2026-10", rows, history, "9130", deal_rates)

    got_excluded = {r["entry_id"]: r["reason"] for r in result.entries.to_dict("records") if r["status"] == "excluded"}
    assert got_excluded == ref["excluded"]
    assert set(result.invoices["invoice_key"]) == set(ref["invoices"])
    for inv in result.invoices.to_dict("records"):
        want = ref["invoices"][inv["invoice_key"]]
        for f in ("subtotal", "discount", "minimum_fee", "cap_adjustment", "total"):
            assert inv[f] == want[f], (f, inv["invoice_key"])
        assert (inv["status"] == "held") == want["held"]
        lines = result.lines[(result.lines["invoice_key"] == inv["invoice_key"])
                             & result.lines["kind"].isin(["time", "included", "overage", "retainer_fee"])]
        got = sorted(_norm_line(r["kind"], r["qty"], r["unit_price"], r["amount"], r["entry_ids"])
                     for r in lines.to_dict("records"))
        assert got == sorted(_norm_line(*ln) for ln in want["lines"])


@PROPS
@given(scenario())
def test_invariants(sc):
    yaml_text, rows, deals, history = sc
    _, result = _engine(yaml_text, rows, deals, history)
    # every input entry is reported exactly once: billed on a line, or excluded with a reason
    assert sorted(result.entries["entry_id"]) == sorted(r["entry_id"] for r in rows)
    on_lines = [i for ids in result.lines["entry_ids"] for i in ids]
    for r in result.entries.to_dict("records"):
        if r["status"] == "billed":
            assert r["entry_id"] in on_lines and r["invoice_key"] is not None and r["reason"] is None
        else:
            assert r["status"] == "excluded" and r["reason"] and r["entry_id"] not in on_lines
    # a retainer boundary entry may sit on an included and an overage line; nothing else repeats
    assert len(on_lines) - len(set(on_lines)) <= len(result.invoices)
    # Amount = Qty x UnitPrice half up, and totals add up
    for ln in result.lines.to_dict("records"):
        if ln["detail_type"] == "SalesItemLineDetail":
            assert ln["amount"] == money.quantize(ln["qty"] * ln["unit_price"], ln["currency"])
    for inv in result.invoices.to_dict("records"):
        lines = result.lines[result.lines["invoice_key"] == inv["invoice_key"]]
        sales = sum((a for a, t in zip(lines["amount"], lines["detail_type"]) if t == "SalesItemLineDetail"), D(0))
        disc = sum((a for a, t in zip(lines["amount"], lines["detail_type"]) if t == "DiscountLineDetail"), D(0))
        assert sales - disc == inv["total"] >= 0
        assert list(lines["line_no"]) == list(range(1, len(lines) + 1))
    # reproducible run to run
    _, again = _engine(yaml_text, list(reversed(rows)), deals, history)
    for key in result.invoices["invoice_key"]:
        a = money.dumps(invoice_payload(result, key, {"value": "1"}), sort_keys=True)
        b = money.dumps(invoice_payload(again, key, {"value": "1"}), sort_keys=True)
        assert a == b
