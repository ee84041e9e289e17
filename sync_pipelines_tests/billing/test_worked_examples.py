"""DESIGN §5 rule by rule, with totals computed by hand in the comments."""

from __future__ import annotations

from datetime import date
from decimal import Decimal as D

from sync_pipelines.billing import BillingHistory, PostedInvoice

from .helpers import ACME, catalog_frame, deal, entry, lines_of, only_invoice, run

FLAT150 = ACME + "    rates: [{rate: 150.00}]\n"


def test_1_1_hours_at_6_minutes_up_bills_1_1_hours():
    r = run(FLAT150, [entry(1, "2026-10-05", "1.10")])
    (line,) = lines_of(r)
    assert line["qty"] == D("1.10") and line["raw_hours"] == D("1.10")
    assert line["amount"] == D("165.00")  # 1.1 x 150
    assert line["rounding"] == "6 min up per entry"
    assert only_invoice(r)["total"] == D("165.00")


def _ten_minute_entries(scope: str):
    rules = ACME + f"    rates: [{{rate: 100.00}}]\n    rounding: {{increment_minutes: 15, mode: up, scope: {scope}}}\n"
    return run(rules, [entry(i, "2026-10-05", "0.17") for i in (1, 2, 3)])


def test_three_ten_minute_entries_per_entry_scope_bill_0_75_hours():
    (line,) = lines_of(_ten_minute_entries("entry"))
    assert line["qty"] == D("0.75") and line["amount"] == D("75.00")
    assert line["raw_hours"] == D("0.51") and line["entry_ids"] == [1, 2, 3]


def test_three_ten_minute_entries_per_line_scope_bill_0_5_hours():
    (line,) = lines_of(_ten_minute_entries("line"))
    assert line["qty"] == D("0.50") and line["amount"] == D("50.00")
    assert line["rounding"] == "15 min up per line"


def test_nearest_down_and_no_rounding():
    def qty(mode: str, inc: int, hours: str) -> D:
        rules = ACME + f"    rates: [{{rate: 100.00}}]\n    rounding: {{increment_minutes: {inc}, mode: {mode}, scope: entry}}\n"
        return lines_of(run(rules, [entry(1, "2026-10-05", hours)]))[0]["qty"]

    assert qty("nearest", 15, "0.38") == D("0.50")  # 23 min -> 30
    assert qty("nearest", 15, "0.37") == D("0.25")  # 22 min -> 15
    assert qty("down", 15, "0.49") == D("0.25")  # 29 min -> 15
    assert qty("up", 60, "1.01") == D("2.00")
    assert qty("up", 3, "0.01") == D("0.05")  # 1 min -> 3 min
    assert qty("up", 0, "1.23") == D("1.23")  # no rounding, 2 dp kept


SPEC_RATES = ACME + """\
    rates:
      - {rate: 150.00}
      - {rate: 160.00, from: 2026-07-01}
      - {rate: 175.00, task: "Design"}
      - {rate: 225.00, person: "Jane Doe", task: "Design"}
      - {rate: 180.00, project: "ACME-2", to: 2026-12-31}
    rounding: {increment_minutes: 0}
    invoice: {line_detail: entry}
"""


def _rate_of(r, entry_id: int) -> tuple[D, str]:
    for line in lines_of(r):
        if entry_id in line["entry_ids"]:
            return line["unit_price"], line["rate_rule"]
    raise AssertionError(entry_id)


def test_rate_resolution_scores_and_dates_from_the_design_example():
    r = run(SPEC_RATES, [
        entry(1, "2026-10-05", "1.00", user=2, task=12, project=4001),  # only default rows: latest from wins
        entry(2, "2026-10-05", "1.00", user=2, task=11, project=4001),  # task row, score 1
        entry(3, "2026-10-05", "1.00", user=1, task=11, project=4001),  # person+task, score 3
        entry(4, "2026-10-05", "1.00", user=1, task=11, project=4002),  # project, score 4 beats 3
    ])
    assert _rate_of(r, 1) == (D("160.00"), "clients.acme.rates[1]")
    assert _rate_of(r, 2) == (D("175.00"), "clients.acme.rates[2]")
    assert _rate_of(r, 3) == (D("225.00"), "clients.acme.rates[3]")
    assert _rate_of(r, 4) == (D("180.00"), "clients.acme.rates[4]")
    assert only_invoice(r)["total"] == D("740.00")  # 160 + 175 + 225 + 180


def test_dated_rows_from_and_to_are_inclusive():
    june = run(SPEC_RATES, [entry(1, "2026-06-30", "1.00", user=2, task=12)], period="2026-06")
    assert _rate_of(june, 1) == (D("150.00"), "clients.acme.rates[0]")
    july = run(SPEC_RATES, [entry(1, "2026-07-01", "1.00", user=2, task=12)], period="2026-07")
    assert _rate_of(july, 1)[0] == D("160.00")
    dec = run(SPEC_RATES, [entry(1, "2026-12-31", "1.00", project=4002)], period="2026-12")
    assert _rate_of(dec, 1)[0] == D("180.00")  # `to` inclusive
    jan = run(SPEC_RATES, [entry(1, "2027-01-01", "1.00", project=4002)], period="2027-01")
    assert _rate_of(jan, 1) == (D("225.00"), "clients.acme.rates[3]")  # project row expired


def test_filters_match_ids_too():
    rules = ACME + """\
    rates:
      - {rate: 100.00}
      - {rate: 110.00, person: 2}
      - {rate: 120.00, task: 13}
      - {rate: 130.00, project: 4003}
    invoice: {line_detail: entry}
"""
    r = run(rules, [entry(1, "2026-10-01", "1.00", user=2, task=12), entry(2, "2026-10-01", "1.00", task=13),
                    entry(3, "2026-10-01", "1.00", project=4003, user=2, task=13), entry(4, "2026-10-01", "1.00")])
    assert [_rate_of(r, i)[0] for i in (1, 2, 3, 4)] == [D("110.00"), D("120.00"), D("130.00"), D("100.00")]


def test_latest_from_wins_a_tie_of_equal_scores():
    rules = ACME + """\
    rates:
      - {rate: 100.00, task: Design, from: 2026-01-01}
      - {rate: 120.00, task: Design, from: 2026-10-10}
      - {rate: 90.00, task: Design}
    invoice: {line_detail: entry}
"""
    r = run(rules, [entry(1, "2026-10-09", "1.00"), entry(2, "2026-10-10", "1.00")])
    assert _rate_of(r, 1) == (D("100.00"), "clients.acme.rates[0]")
    assert _rate_of(r, 2) == (D("120.00"), "clients.acme.rates[1]")


def test_no_applicable_rate_holds_the_invoice_and_names_the_entry():
    rules = ACME + "    rates: [{rate: 175.00, task: Design}]\n"
    r = run(rules, [entry(1, "2026-10-01", "1.00"), entry(77, "2026-10-02", "2.00", task=12)])
    inv = only_invoice(r)
    assert inv["status"] == "held"
    assert any("no rate applies to entry 77" in h for h in inv["hold_reasons"])
    unpriced = [ln for ln in lines_of(r) if not ln["priced"]]
    assert len(unpriced) == 1 and unpriced[0]["entry_ids"] == [77] and unpriced[0]["amount"] == D("0.00")


def test_lines_group_by_detail_and_rate():
    rules = ACME + """\
    rates: [{rate: 100.00}, {rate: 200.00, from: 2026-10-16}]
    invoice: {line_detail: task}
"""
    r = run(rules, [entry(1, "2026-10-01", "1.00"), entry(2, "2026-10-20", "1.00"), entry(3, "2026-10-02", "0.50")])
    got = [(ln["unit_price"], ln["qty"], ln["entry_ids"]) for ln in lines_of(r)]
    assert got == [(D("100.00"), D("1.50"), [1, 3]), (D("200.00"), D("1.00"), [2])]
    assert only_invoice(r)["total"] == D("350.00")


def test_line_detail_variants():
    rows = [entry(1, "2026-10-01", "1.00", user=1, task=11), entry(2, "2026-10-02", "2.00", user=2, task=11),
            entry(3, "2026-10-03", "3.00", user=1, task=12, project=4002)]

    def lines(detail: str):
        return lines_of(run(FLAT150 + f"    invoice: {{line_detail: {detail}}}\n", rows))

    assert [ln["entry_ids"] for ln in lines("summary")] == [[1, 2, 3]]
    assert [ln["entry_ids"] for ln in lines("project")] == [[3], [1, 2]]  # "Mobile app" sorts before "Website"
    assert [ln["entry_ids"] for ln in lines("task")] == [[1, 2], [3]]
    assert [ln["entry_ids"] for ln in lines("person")] == [[2], [1, 3]]  # Bob Smith, Jane Doe
    assert [ln["entry_ids"] for ln in lines("task_person")] == [[2], [1], [3]]
    ent = lines("entry")
    assert [ln["entry_ids"] for ln in ent] == [[1], [2], [3]]
    assert [ln["service_date"] for ln in ent] == [date(2026, 10, 1), date(2026, 10, 2), date(2026, 10, 3)]
    assert all(ln["service_date"] == date(2026, 10, 31) for ln in lines("task"))
    desc = lines("task_person")[1]["description"]
    assert "Design" in desc and "Jane Doe" in desc and "1.00 h" in desc and "150.00" in desc and "2026-10-01 to 2026-10-31" in desc


def test_group_by_project_and_po():
    rows = [entry(1, "2026-10-01", "1.00", project=4001), entry(2, "2026-10-01", "1.00", project=4002),
            entry(3, "2026-10-01", "1.00", project=4003)]
    r = run(FLAT150 + "    invoice: {group_by: project}\n", rows)
    assert list(r.invoices["group_key"]) == ["project-4001", "project-4002", "project-4003"]
    assert list(r.invoices["invoice_key"])[0] == "9130:acme:2026-10:project-4001:g1"
    deals = [deal("8801", 4001, po="4500-77"), deal("8802", 4002, po="4500-77"), deal("8803", 4003, po="PO 9/1")]
    r = run(FLAT150 + "    invoice: {group_by: po, memo: \"PO {po_number}\"}\n", rows, deals=deals)
    keys = list(r.invoices["group_key"])
    assert keys[0] == "po-4500-77" and keys[1].startswith("po-PO-9-1-") and ":" not in keys[1]
    assert list(r.invoices["total"]) == [D("300.00"), D("150.00")]
    assert list(r.invoices["memo"]) == ["PO 4500-77", "PO PO 9/1"]
    r = run(FLAT150 + "    invoice: {group_by: po}\n", rows, deals=[deal("8801", 4001, po="A1")])
    assert list(r.invoices["group_key"]) == ["no-po", "po-A1"]


def test_discount_percent_rounds_half_up():
    rules = ACME + "    rates: [{rate: 105.00}]\n    rounding: {increment_minutes: 0}\n    discount: {percent: 10}\n"
    inv = only_invoice(run(rules, [entry(1, "2026-10-01", "0.01")]))
    assert inv["subtotal"] == D("1.05") and inv["discount"] == D("0.11")  # 0.105 -> 0.11 (half up)
    assert inv["total"] == D("0.94")
    rules = ACME + "    rates: [{rate: 123.456}]\n    rounding: {increment_minutes: 0}\n    discount: {percent: 10}\n"
    r = run(rules, [entry(1, "2026-10-01", "10.00")])
    inv = only_invoice(r)
    assert (inv["subtotal"], inv["discount"], inv["total"]) == (D("1234.56"), D("123.46"), D("1111.10"))
    disc = lines_of(r)[-1]
    assert disc["detail_type"] == "DiscountLineDetail" and disc["discount_percent"] == D("10")


def test_discount_amount_is_capped_at_the_subtotal():
    rules = FLAT150 + "    discount: {amount: 250.00}\n"
    inv = only_invoice(run(rules, [entry(1, "2026-10-01", "10.00")]))
    assert (inv["subtotal"], inv["discount"], inv["total"]) == (D("1500.00"), D("250.00"), D("1250.00"))
    r = run(rules, [entry(1, "2026-10-01", "1.00")])  # 150 - min(250, 150) = 0: no invoice
    assert len(r.invoices) == 0 and len(r.lines) == 0
    (row,) = r.entries.to_dict("records")
    assert row["status"] == "excluded" and "total is zero" in row["reason"]


def test_minimum_fee_after_discount():
    rules = FLAT150 + "    discount: {percent: 10}\n    minimum: 500.00\n"
    r = run(rules, [entry(1, "2026-10-01", "2.00")])
    inv = only_invoice(r)
    # 300.00 - 30.00 = 270.00 < 500.00: minimum fee 230.00
    assert (inv["subtotal"], inv["discount"], inv["minimum_fee"], inv["total"]) == (D("300.00"), D("30.00"), D("230.00"), D("500.00"))
    kinds = [(ln["kind"], ln["amount"]) for ln in lines_of(r)]
    assert kinds == [("time", D("300.00")), ("discount", D("30.00")), ("minimum", D("230.00"))]
    assert lines_of(r)[1]["discount_percent"] is None  # amount-based: a line follows the discount
    assert only_invoice(run(rules, [entry(1, "2026-10-01", "4.00")]))["minimum_fee"] == D("0")


def test_month_cap_counts_what_is_posted_in_the_month_for_other_keys():
    rules = FLAT150 + "    cap: {amount: 1000.00, period: month}\n"
    history = BillingHistory(posted_invoices=(
        PostedInvoice("9130:acme:2026-10:po-X:g1", "acme", "2026-10", D("600.00")),
        PostedInvoice("9130:acme:2026-09:all:g1", "acme", "2026-09", D("999.00")),  # other month
        PostedInvoice("9130:acme:2026-10:all:g1", "acme", "2026-10", D("123.00")),  # this key: a re-run
    ))
    r = run(rules, [entry(1, "2026-10-01", "4.00")], history=history)
    inv = only_invoice(r)
    # 600.00 of the 1000.00 used: 400.00 remain, so 600.00 is written down
    assert (inv["subtotal"], inv["cap_adjustment"], inv["write_down"], inv["total"]) == (
        D("600.00"), D("-200.00"), D("200.00"), D("400.00"))
    cap = lines_of(r)[-1]
    assert cap["kind"] == "cap" and cap["amount"] == D("-200.00") and cap["description"].startswith("Not-to-exceed adjustment")


def test_lifetime_cap_counts_every_period():
    rules = FLAT150 + "    cap: {amount: 1000.00, period: lifetime}\n"
    history = BillingHistory(posted_invoices=(PostedInvoice("9130:acme:2026-08:all:g1", "acme", "2026-08", D("700.00")),
                                              PostedInvoice("9130:acme:2026-09:all:g1", "acme", "2026-09", D("250.00"))))
    inv = only_invoice(run(rules, [entry(1, "2026-10-01", "1.00")], history=history))
    assert (inv["cap_adjustment"], inv["total"]) == (D("-100.00"), D("50.00"))


def test_cap_spreads_over_this_runs_invoices_in_group_order():
    rules = FLAT150 + "    cap: {amount: 400.00, period: month}\n    invoice: {group_by: project}\n"
    r = run(rules, [entry(1, "2026-10-01", "2.00", project=4001), entry(2, "2026-10-01", "2.00", project=4002)])
    assert list(r.invoices["total"]) == [D("300.00"), D("100.00")]


RETAINER = ACME + """\
    billing_type: retainer
    rates: [{rate: 150.00}]
    rounding: {increment_minutes: 0}
    retainer: {fee: 6000.00, included_hours: 40, overage_rate: 165.00, rollover: false}
"""


def _retainer_rows():
    # consumption order is (spent_date, entry id), whatever the frame order
    return [entry(4, "2026-10-03", "5.00"), entry(3, "2026-10-03", "10.00"), entry(2, "2026-10-02", "15.00"),
            entry(1, "2026-10-01", "20.00")]


def test_retainer_fee_included_hours_boundary_split_and_overage():
    r = run(RETAINER, _retainer_rows())
    got = [(ln["kind"], ln["qty"], ln["unit_price"], ln["amount"], ln["entry_ids"]) for ln in lines_of(r)]
    assert got == [
        ("retainer_fee", D("1"), D("6000.00"), D("6000.00"), []),
        ("included", D("40.00"), D("0"), D("0.00"), [1, 2, 3]),  # 20 + 15 + 5 of entry 3
        ("overage", D("10.00"), D("165.00"), D("1650.00"), [3, 4]),  # 5 of entry 3 + 5
    ]
    inv = only_invoice(r)
    assert inv["total"] == D("7650.00") and inv["retainer_used_hours"] == D("40.00")
    assert lines_of(r)[2]["rate_rule"] == "clients.acme.retainer.overage_rate"


def test_retainer_overage_without_overage_rate_uses_the_resolved_rate():
    rules = RETAINER.replace(", overage_rate: 165.00", "")
    inv = only_invoice(run(rules, _retainer_rows()))
    assert inv["total"] == D("7500.00")  # 6000 + 10 h x 150


def test_retainer_rollover_from_history_and_carry_forward():
    rules = RETAINER.replace("rollover: false", "rollover: true")
    r = run(rules, _retainer_rows(), history=BillingHistory(carryover_hours={"acme": D("5")}))
    inv = only_invoice(r)
    assert inv["retainer_included_hours"] == D("45.00")
    assert inv["total"] == D("6825.00")  # 45 of 50 h included, 5 h x 165
    assert inv["retainer_carry_forward_hours"] == D("0.00")
    # 30 h over two days (one entry over 24 h would be excluded as not credible)
    r = run(rules, [entry(1, "2026-10-01", "15.00"), entry(2, "2026-10-02", "15.00")],
            history=BillingHistory(carryover_hours={"acme": D("5")}))
    inv = only_invoice(r)
    assert inv["total"] == D("6000.00") and inv["retainer_carry_forward_hours"] == D("15.00")  # 40 - (30 - 5)


def test_retainer_without_entries_still_bills_the_fee():
    inv = only_invoice(run(RETAINER, []))
    assert inv["total"] == D("6000.00") and inv["status"] == "ready" and inv["group_key"] == "all"


JPY = """\
  kaisha:
    harvest_client_id: 1003
    qbo_customer: "Kaisha KK"
    currency: JPY
    rates: [{rate: 12345}]
"""


def test_jpy_has_no_minor_unit():
    cat = catalog_frame(extra=[("Customer", "77", "Kaisha KK", True, "JPY")])
    r = run(JPY, [entry(1, "2026-10-01", "1.10", client=1003)], catalog=cat)
    inv = only_invoice(r)
    assert inv["total"] == D("13580") and inv["currency"] == "JPY"  # 12345 x 1.1 = 13579.5 -> 13580
    assert inv["status"] == "ready" and inv["customer_id"] == "77"


def test_currency_mismatch_holds():
    r = run(FLAT150, [entry(1, "2026-10-01", "1.00", currency="EUR")])
    assert only_invoice(r)["status"] == "held"
    assert "Harvest client currency EUR" in only_invoice(r)["hold_reasons"][0]
    cat = catalog_frame(extra=[("Customer", "77", "Kaisha KK", True, "USD")])
    inv = only_invoice(run(JPY, [entry(1, "2026-10-01", "1.00", client=1003)], catalog=cat))
    assert inv["status"] == "held" and "QuickBooks customer 'Kaisha KK' is in USD" in inv["hold_reasons"][0]
    inv = only_invoice(run(JPY, [entry(1, "2026-10-01", "1.00", client=1003)]))  # customer to be created
    assert inv["status"] == "ready" and inv["customer_id"] is None


def test_unknown_or_inactive_item_class_term_hold():
    rules = FLAT150 + '    qbo: {items_by_task: {"Design": "Design Work"}, class: "Consulting", terms: "Net 45"}\n'
    inv = only_invoice(run(rules, [entry(1, "2026-10-01", "1.00")]))
    assert inv["status"] == "held"
    assert set(inv["hold_reasons"]) == {"unknown QuickBooks item 'Design Work'", "unknown QuickBooks term 'Net 45'"}
    cat = catalog_frame(extra=[("Class", "11", "Retired", False)])
    inv = only_invoice(run(FLAT150 + "    qbo: {class: Retired}\n", [entry(1, "2026-10-01", "1.00")], catalog=cat))
    assert inv["hold_reasons"] == ["QuickBooks class 'Retired' is inactive"]


def test_items_by_task_and_references():
    rules = FLAT150 + '    qbo: {item: Consulting, items_by_task: {"Design": "Design Services"}, class: Consulting, terms: "Net 15"}\n'
    r = run(rules, [entry(1, "2026-10-01", "1.00", task=11), entry(2, "2026-10-01", "1.00", task=12)])
    got = [(ln["item_name"], ln["item_id"], ln["class_id"]) for ln in lines_of(r)]
    assert got == [("Design Services", "3", "10"), ("Consulting", "2", "10")]
    inv = only_invoice(r)
    assert (inv["terms_name"], inv["terms_id"], inv["status"]) == ("Net 15", "21", "ready")


def test_deal_rate_is_a_project_row_dated_from_closedate():
    rules = ACME + """\
    rates: [{rate: 150.00}, {rate: 225.00, person: "Jane Doe", task: Design}]
    invoice: {line_detail: entry}
"""
    deals = [deal("8805", 4001, rate="200.00", closedate="2026-10-15T02:00:00Z")]  # Oct 14 in New York
    r = run(rules, [entry(1, "2026-10-13", "1.00"), entry(2, "2026-10-14", "1.00"), entry(3, "2026-10-20", "1.00", project=4002)],
            deals=deals)
    assert _rate_of(r, 1) == (D("225.00"), "clients.acme.rates[1]")
    assert _rate_of(r, 2) == (D("200.00"), "deal 8805 billing_hourly_rate")  # project (4) beats person+task (3)
    assert _rate_of(r, 3)[0] == D("225.00")
    no_close = [deal("8806", 4001, rate="190.00", closedate=None, createdate="2026-10-18T12:00:00Z")]
    r = run(rules, [entry(1, "2026-10-17", "1.00"), entry(2, "2026-10-18", "1.00")], deals=no_close)
    assert [_rate_of(r, 1)[0], _rate_of(r, 2)[0]] == [D("225.00"), D("190.00")]


def test_deal_discount_and_not_to_exceed_apply_to_their_project():
    rules = FLAT150 + "    discount: {percent: 10}\n"
    deals = [deal("8805", 4001, discount="20", nte="1000.00", po="PO-1")]
    history = BillingHistory(posted_invoices=(
        PostedInvoice("9130:acme:2026-09:all:g1", "acme", "2026-09", D("800.00"), {4001: D("800.00")}),))
    r = run(rules, [entry(1, "2026-10-01", "4.00", project=4001), entry(2, "2026-10-01", "2.00", project=4002)],
            deals=deals, history=history)
    inv = only_invoice(r)
    # project 4001: 600.00 - 20% 120.00 = 480.00, but only 200.00 of the 1000.00 remain: -280.00
    # project 4002: 300.00 - 10% 30.00 = 270.00
    assert (inv["subtotal"], inv["discount"], inv["cap_adjustment"], inv["total"]) == (
        D("900.00"), D("150.00"), D("-280.00"), D("470.00"))
    assert inv["project_totals"] == {4001: D("200.00")}
    assert inv["po_numbers"] == ["PO-1"]
    kinds = [(ln["kind"], ln["project_id"], ln["amount"]) for ln in lines_of(r)]
    assert kinds[0] == ("time", None, D("300.00")) and kinds[1] == ("time", 4001, D("600.00"))
    assert kinds[2][0] == "discount" and kinds[3] == ("cap", 4001, D("-280.00"))


def test_invalid_deal_values_hold_the_projects_invoice():
    r = run(FLAT150, [entry(1, "2026-10-01", "1.00")], deals=[deal("8805", 4001, rate="abc")])
    inv = only_invoice(r)
    assert inv["status"] == "held" and inv["hold_reasons"] == ["deal 8805 billing_hourly_rate 'abc' is not a valid rate"]


def test_selection_reasons():
    history = BillingHistory(posted_entries={5: "9130:acme:2026-10:all:g1", 6: "9130:acme:2026-10:po-OLD:g1"})
    r = run(FLAT150, [
        entry(1, "2026-10-01", "1.00"),
        entry(2, "2026-10-01", "1.00", billable=False),
        entry(3, "2026-10-01", "1.00", running=True),
        entry(4, "2026-09-30", "1.00"),
        entry(5, "2026-10-01", "1.00"),  # on this invoice's own key: stays
        entry(6, "2026-10-01", "1.00"),
        entry(7, "2026-10-01", "1.00", client=1009),
    ], history=history)
    got = {row["entry_id"]: (row["status"], row["reason"]) for row in r.entries.to_dict("records")}
    assert got == {
        1: ("billed", None),
        2: ("excluded", "not billable in Harvest"),
        3: ("excluded", "timer still running"),
        4: ("excluded", "spent_date outside 2026-10"),
        5: ("billed", None),
        6: ("excluded", "already billed on 9130:acme:2026-10:po-OLD:g1"),
        7: ("excluded", "Harvest client 1009 'Unknown Co' has no billing rules"),
    }
    assert lines_of(r)[0]["entry_ids"] == [1, 5]
    # a run for one client leaves the other clients' and unmapped entries out
    only = run(FLAT150, [entry(1, "2026-10-01", "1.00"), entry(7, "2026-10-01", "1.00", client=1009)], clients=["acme"])
    assert list(only.entries["entry_id"]) == [1]


def test_generation_from_history_changes_the_key():
    history = BillingHistory(generations={("acme", "2026-10", "all"): 2})
    inv = only_invoice(run(FLAT150, [entry(1, "2026-10-01", "1.00")], history=history))
    assert inv["invoice_key"] == "9130:acme:2026-10:all:g2" and inv["generation"] == 2
    assert inv["doc_number"].startswith("SP2610-") and len(inv["doc_number"]) <= 21


def test_deal_not_to_exceed_is_compared_after_the_clients_percent():
    rules = FLAT150 + "    discount: {percent: 10}\n"
    r = run(rules, [entry(1, "2026-10-01", "10.00")], deals=[deal("8805", 4001, nte="1000.00")])
    inv = only_invoice(r)
    # 1500.00 - 10% = 1350.00 on the project, 1000.00 allowed: -350.00
    assert (inv["discount"], inv["cap_adjustment"], inv["total"]) == (D("150.00"), D("-350.00"), D("1000.00"))
    assert inv["project_totals"] == {4001: D("1000.00")}
    assert lines_of(r)[1]["discount_percent"] is None  # a cap line follows: the discount goes as an amount
