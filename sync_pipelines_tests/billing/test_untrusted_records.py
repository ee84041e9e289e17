"""Issue 13: records that cannot be trusted are excluded or held with a reason naming the numbers,
never billed silently (a 10,000-hour entry, a future date, amounts QuickBooks cannot hold, a total
far beyond the client's history, an empty deal override)."""

from __future__ import annotations

from datetime import date
from decimal import Decimal as D

import pytest

from sync_pipelines.billing import BillingHistory, PostedInvoice, price_month
from sync_pipelines.billing.rules import RulesError

from .helpers import ACME, catalog_frame, deal, deals_frame, entries_frame, entry, only_invoice, rules_for, run

FLAT225 = ACME + "    rates: [{rate: 225.00}]\n"


def _entry_reason(result, entry_id: int) -> tuple[str, str | None]:
    row = result.entries[result.entries["entry_id"] == entry_id].iloc[0]
    return row["status"], row["reason"]


def test_a_10000_hour_entry_is_excluded_with_a_reason_not_billed():
    # Before: billed as 2,260,860.00 USD with no warning.
    r = run(FLAT225, [entry(1, "2026-10-05", "10000.00"), entry(2, "2026-10-06", "2.00")])
    status, reason = _entry_reason(r, 1)
    assert status != "billed" and "10000.00 h in one entry is more than 24 h" in reason
    assert only_invoice(r)["total"] == D("450.00")  # only entry 2


def test_exactly_24_hours_is_still_billed():
    r = run(FLAT225, [entry(1, "2026-10-05", "24.00")])
    assert _entry_reason(r, 1)[0] == "billed"
    assert only_invoice(r)["total"] == D("5400.00")


def test_an_entry_dated_after_today_is_excluded_when_the_run_knows_today():
    rows = [entry(1, "2026-10-20", "1.00"), entry(2, "2026-10-21", "1.00")]
    r = price_month(rules_for(FLAT225), "2026-10", entries_frame(rows), deals_frame(), catalog_frame(),
                    BillingHistory(), "9130", today=date(2026, 10, 20))
    assert _entry_reason(r, 1)[0] == "billed"
    status, reason = _entry_reason(r, 2)
    assert status != "billed" and "dated after today (2026-10-20" in reason
    assert only_invoice(r)["total"] == D("225.00")


@pytest.mark.parametrize("where, yaml", [
    ("clients.acme.rates[0].rate", ACME + "    rates: [{rate: 9999999999999999.99}]\n"),
    ("clients.acme.minimum", ACME + "    rates: [{rate: 100}]\n    minimum: 10000000000.00\n"),
    ("clients.acme.cap.amount", ACME + "    rates: [{rate: 100}]\n    cap: {amount: 99999999999, period: month}\n"),
])
def test_rules_check_refuses_amounts_quickbooks_cannot_hold_by_path(where, yaml):
    # Before: the rate passed `rules check`, then pricing died with OverflowError.
    with pytest.raises(RulesError) as ei:
        rules_for(yaml)
    [problem] = [p for p in ei.value.problems if p.startswith(where)]
    assert "at most 10 digits before the decimal point" in problem


def test_the_largest_amount_quickbooks_accepts_is_a_valid_rate():
    rules_for(ACME + "    rates: [{rate: 9999999999.99}]\n")


def test_a_line_beyond_quickbooks_limit_is_held_not_an_overflow():
    # 20 days x 24 h at the largest valid rate: 4.8e12 on one line, far past QuickBooks' limit
    rows = [entry(i, f"2026-10-{i:02d}", "24.00") for i in range(1, 21)]
    r = run(ACME + "    rates: [{rate: 9999999999.99}]\n", rows)
    inv = only_invoice(r)
    assert inv["status"] == "held"
    assert any("more than QuickBooks accepts" in h for h in inv["hold_reasons"])


def _posted(*totals: str) -> BillingHistory:
    return BillingHistory(posted_invoices=tuple(
        PostedInvoice(f"9130:acme:2026-0{i + 1}:all:g1", "acme", f"2026-0{i + 1}", D(t)) for i, t in enumerate(totals)))


def test_a_total_far_beyond_the_clients_history_is_held_with_the_numbers():
    rows = [entry(i, f"2026-10-{i:02d}", "10.00") for i in range(1, 11)]  # 100 h x 225 = 22,500
    inv = only_invoice(run(FLAT225, rows, history=_posted("1800.00", "2000.00", "1900.00")))
    assert inv["status"] == "held"
    [reason] = [h for h in inv["hold_reasons"] if "largest posted invoice" in h]
    assert "USD 22500.00" in reason and "10 x" in reason and "USD 2000.00" in reason and "3 posted" in reason


def test_the_total_jump_guard_needs_history_and_is_configurable():
    rows = [entry(i, f"2026-10-{i:02d}", "10.00") for i in range(1, 11)]
    assert only_invoice(run(FLAT225, rows, history=_posted("1800.00", "2000.00")))["status"] == "ready"
    relaxed = FLAT225 + "    guards: {total_jump: {factor: 20}}\n"
    assert only_invoice(run(relaxed, rows, history=_posted("1800.00", "2000.00", "1900.00")))["status"] == "ready"
    off = FLAT225 + "    guards: {total_jump: {enabled: false}}\n"
    assert only_invoice(run(off, rows, history=_posted("100.00", "100.00", "100.00")))["status"] == "ready"


def test_an_empty_deal_rate_holds_the_invoice_instead_of_using_the_clients_rate():
    # Before: "" was taken as unset and the client's 225 applied with no notice.
    inv = only_invoice(run(FLAT225, [entry(1, "2026-10-05", "2.00")], deals=[deal("8805", 4001, rate="")]))
    assert inv["status"] == "held"
    assert any('deal 8805 billing_hourly_rate is empty ("")' in h for h in inv["hold_reasons"])


def test_a_missing_deal_rate_is_not_an_empty_one():
    inv = only_invoice(run(FLAT225, [entry(1, "2026-10-05", "2.00")], deals=[deal("8805", 4001, rate=None)]))
    assert inv["status"] == "ready" and inv["total"] == D("450.00")
