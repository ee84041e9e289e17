"""Deal line items bill their net (DESIGN §5): HubSpot's `hs_discount_percentage`, per-unit
`discount` and `amount`; every expected amount is worked out by hand in the comments."""

from __future__ import annotations

from decimal import Decimal as D

from sync_pipelines.billing.line_item_net import net_line

from .test_line_items import price, ready_deal


def _net(price_: str, qty: str, *, pct: str | None = None, unit: str | None = None, amount: str | None = None,
         currency: str = "USD"):
    return net_line(D(price_), D(qty), percent=None if pct is None else D(pct),
                    unit_discount=None if unit is None else D(unit), amount=None if amount is None else D(amount),
                    currency=currency, where="deal 1 line item 2")


def test_percentage_discount_keeps_qty_when_the_net_unit_price_is_exact():
    # 4 x 250.00 less 10 % = 4 x 225.00 = 900.00
    n = _net("250.00", "4", pct="10", amount="900.00")
    assert (n.qty, n.unit_price, n.amount, n.problem) == (D("4"), D("225.00"), D("900.00"), None)
    assert n.explanation == "4 × 250.00 less 10 %"


def test_an_inexact_net_unit_price_bills_qty_one_at_the_net():
    # 15.17 less 15 % = 12.8945 per unit (not a cent amount); 3 x 12.8945 = 38.6835 -> 38.68
    n = _net("15.17", "3", pct="15", amount="38.68")
    assert (n.qty, n.unit_price, n.amount, n.problem) == (D("1"), D("38.68"), D("38.68"), None)
    assert n.explanation == "3 × 15.17 less 15 % = 38.68"


def test_per_unit_discount_and_disagreeing_amounts_hold():
    # 2 x (100.00 - 12.50) = 175.00
    n = _net("100.00", "2", unit="12.50", amount="175.00")
    assert (n.qty, n.unit_price, n.amount, n.problem) == (D("2"), D("87.50"), D("175.00"), None)
    bad = _net("100.00", "2", unit="12.50", amount="200.00")
    assert bad.problem == "deal 1 line item 2: amount 200.00 disagrees with price 100.00 × quantity 2 less the discount (= 175.00)"
    assert _net("100.00", "2", amount="199.00").problem.endswith("(= 200.00)")
    assert "both hs_discount_percentage" in _net("100.00", "2", pct="5", unit="1.00").problem
    assert "not between 0 and 100" in _net("100.00", "2", pct="120").problem
    assert _net("100.00", "2", pct="0", amount="200.00").problem is None  # "0" is HubSpot's no discount


def test_engine_bills_the_net_and_holds_a_deal_in_another_currency():
    items = [("8805", "123", "Strategy workshop", "Consulting", "250.00", "4", "900.00", "10", None),
             ("8805", "124", "Design Services", "DS-9", "100.00", "2", "175.00", None, "12.50")]
    r = price([ready_deal("8805")], items)
    inv = r.invoice("9130:acme:2026-10:deal-8805:g1")
    assert inv["status"] == "ready" and inv["total"] == D("1075.00")  # 900.00 + 175.00
    lines = r.invoice_lines(inv["invoice_key"]).to_dict("records")
    assert [(x["qty"], x["unit_price"], x["amount"]) for x in lines] == [
        (D("4"), D("225.00"), D("900.00")), (D("2"), D("87.50"), D("175.00"))]
    assert lines[0]["description"] == "Strategy workshop (4 × 250.00 less 10 %)"
    wrong = [("8805", "123", "Strategy workshop", "Consulting", "250.00", "4", "1000.00", "10", None)]
    held = price([ready_deal("8805")], wrong).invoice("9130:acme:2026-10:deal-8805:g1")
    assert held["status"] == "held" and "amount 1000.00 disagrees" in held["hold_reasons"][0]
    eur = ready_deal("8805")
    eur["deal_currency_code"] = "EUR"
    held = price([eur], items).invoice("9130:acme:2026-10:deal-8805:g1")
    assert held["hold_reasons"] == ["deal 8805 is in EUR (deal_currency_code), the client's currency is USD"]
