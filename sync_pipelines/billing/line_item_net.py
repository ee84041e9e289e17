"""What a HubSpot deal line item bills: its net (DESIGN §5 "Deal line items bill their net").

HubSpot's line item carries `price` (unit), `quantity`, a discount as either
`hs_discount_percentage` (percent) or `discount` (per unit), and `amount`, its net total after
the discount. The invoice bills that net: Qty × net unit price when the net unit price is exact
in the currency and reproduces the net, else Qty 1 at the net amount (the description says how
it was reached). An `amount` that disagrees with price, quantity and discount is a problem that
holds the deal's invoice: one of the numbers is wrong and we cannot tell which.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from sync_pipelines import money


@dataclass(frozen=True)
class NetLine:
    qty: Decimal
    unit_price: Decimal
    amount: Decimal
    explanation: str | None  # how a discount was applied, for the line description
    problem: str | None  # holds the invoice


def net_line(price: Decimal, qty: Decimal, *, percent: Decimal | None, unit_discount: Decimal | None,
             amount: Decimal | None, currency: str, where: str) -> NetLine:
    """The line for one line item (``price`` and ``qty`` already validated as non-negative)."""
    gross = money.quantize(qty * price, currency)
    percent = percent or None  # "0" is HubSpot's "no discount"
    unit_discount = unit_discount or None
    problem = None
    if percent is not None and unit_discount is not None:
        return NetLine(qty, price, gross, None, f"{where}: both hs_discount_percentage {percent} and discount "
                       f"{unit_discount} are set; HubSpot applies one")
    if percent is not None and not (Decimal(0) <= percent <= 100):
        return NetLine(qty, price, gross, None, f"{where}: hs_discount_percentage {percent} is not between 0 and 100")
    if unit_discount is not None and not (Decimal(0) <= unit_discount <= price):
        return NetLine(qty, price, gross, None, f"{where}: discount {unit_discount} per unit is not between 0 and "
                       f"the price {price}")
    if percent is not None:
        unit = price * (100 - percent) / 100
        explanation = f"{qty} × {price} less {percent.normalize():f} %"
    elif unit_discount is not None:
        unit = price - unit_discount
        explanation = f"{qty} × {price} less {unit_discount} per unit"
    else:
        unit, explanation = price, None
    net = money.quantize(qty * unit, currency)
    if amount is not None and money.quantize(amount, currency) != net:
        problem = (f"{where}: amount {amount} disagrees with price {price} × quantity {qty}"
                   + (f" less the discount (= {net})" if explanation else f" (= {net})"))
    if explanation is None:
        return NetLine(qty, price, net, None, problem)
    if unit == money.quantize(unit, currency) and money.quantize(qty * unit, currency) == net:
        return NetLine(qty, money.quantize(unit, currency), net, explanation, problem)
    return NetLine(Decimal(1), net, net, f"{explanation} = {net}", problem)
