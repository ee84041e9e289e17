"""Edges: empty inputs, input dtypes as they come from Parquet, held payloads, entry detail, filters."""

from __future__ import annotations

from datetime import date
from decimal import Decimal as D

import numpy as np
import pandas as pd
import pytest

from sync_pipelines import money
from sync_pipelines.billing import BillingHistory, invoice_payload, price_month

from .helpers import ACME, catalog_frame, deal, deals_frame, entries_frame, entry, lines_of, only_invoice, rules_for, run

FLAT150 = ACME + "    rates: [{rate: 150.00}]\n"


def test_empty_entries_and_no_deals():
    r = price_month(rules_for(FLAT150), "2026-10", entries_frame([]), None, None, None, "9130")
    assert len(r.entries) == 0 and len(r.lines) == 0 and len(r.invoices) == 0
    assert list(r.invoices.columns)[:6] == ["invoice_key", "client_key", "period", "group_key", "generation", "currency"]


def test_bad_period_and_unknown_client_filter():
    with pytest.raises(ValueError):
        run(FLAT150, [], period="2026-13")
    with pytest.raises(KeyError):
        run(FLAT150, [], clients=["nobody"])


def test_datetime64_dates_and_string_dtypes_from_parquet():
    frame = entries_frame([entry(1, "2026-10-01", "1.00"), entry(2, "2026-10-31", "0.50", notes="Kick-off")])
    frame["spent_date"] = pd.to_datetime(frame["spent_date"])  # datetime64 after a Parquet round trip
    for c in ("user_name", "task_name", "project_name", "client_name"):
        frame[c] = frame[c].astype("string")
    r = price_month(rules_for(FLAT150 + "    invoice: {line_detail: entry}\n"), "2026-10", frame, deals_frame([]),
                    catalog_frame(), BillingHistory(), "9130")
    got = [(ln["service_date"], ln["amount"]) for ln in lines_of(r)]
    assert got == [(date(2026, 10, 1), D("150.00")), (date(2026, 10, 31), D("75.00"))]
    assert "Kick-off" in lines_of(r)[1]["description"]


def test_held_invoice_still_builds_a_payload_without_unknown_ids():
    rules = FLAT150 + "    qbo: {item: Nonexistent}\n"
    r = run(rules, [entry(1, "2026-10-01", "1.00")])
    inv = only_invoice(r)
    assert inv["status"] == "held"
    body = invoice_payload(r, inv["invoice_key"], {"value": "58"})
    assert body["Line"][0]["SalesItemLineDetail"]["ItemRef"] == {"name": "Nonexistent"}


def test_retainer_payload_and_line_scope_split():
    rules = ACME + """\
    billing_type: retainer
    rates: [{rate: 150.00}]
    rounding: {increment_minutes: 15, mode: up, scope: line}
    retainer: {fee: 1000.00, included_hours: 1, overage_rate: 200.00}
"""
    r = run(rules, [entry(1, "2026-10-01", "0.17"), entry(2, "2026-10-02", "0.17"), entry(3, "2026-10-03", "0.83")])
    # 10 + 10 min included, entry 3 (50 min) split: 40 min included, 10 min overage -> 15 min at 200
    got = [(ln["kind"], ln["qty"], ln["amount"]) for ln in lines_of(r)]
    assert got == [("retainer_fee", D("1"), D("1000.00")), ("included", D("1.00"), D("0.00")),
                   ("overage", D("0.25"), D("50.00"))]
    body = invoice_payload(r, only_invoice(r)["invoice_key"], {"value": "58"})
    assert [ln["LineNum"] for ln in body["Line"]] == [1, 2, 3]
    assert body["Line"][0]["SalesItemLineDetail"]["Qty"] == D("1")
    assert money.dumps(body).count("Retainer 2026-10") == 1


def test_po_grouping_of_a_posted_entry_moved_to_another_key():
    history = BillingHistory(posted_entries={1: "9130:acme:2026-10:po-A:g1"})
    r = run(FLAT150 + "    invoice: {group_by: po}\n", [entry(1, "2026-10-01", "1.00"), entry(2, "2026-10-01", "1.00")],
            deals=[deal("1", 4001, po="A")], history=history)
    assert only_invoice(r)["group_key"] == "po-A"
    assert list(r.entries["status"]) == ["billed", "billed"]  # entry 1 stays on its own key


def test_int64_columns_and_nullable_project_code():
    frame = entries_frame([entry(1, "2026-10-01", "1.00", project=4003)])  # project_code None
    frame["project_code"] = frame["project_code"].astype(object)
    rules = ACME + "    rates: [{rate: 100.00}, {rate: 120.00, project: 4003}]\n    invoice: {line_detail: project}\n"
    r = price_month(rules_for(rules), "2026-10", frame, deals_frame([]), catalog_frame(), BillingHistory(), "9130")
    (line,) = lines_of(r)
    assert line["unit_price"] == D("120.00") and line["description"].startswith("Support")
    assert r.lines["raw_centi"].dtype == np.int64


def test_every_line_explains_itself():
    rules = ACME + "    rates: [{rate: 150.00}, {rate: 175.00, task: Design}]\n    rounding: {increment_minutes: 15}\n"
    r = run(rules, [entry(1, "2026-10-01", "0.17"), entry(2, "2026-10-01", "1.00", task=12)])
    for ln in lines_of(r):
        assert ln["rate_rule"].startswith("clients.acme.rates[")
        assert ln["rounding"] == "15 min up per entry"
        assert ln["entry_ids"] and ln["raw_hours"] <= ln["billed_hours"]
    assert lines_of(r)[0]["description"] == "Design — 0.25 h @ USD 175.00/h (0.17 h worked), 2026-10-01 to 2026-10-31"
