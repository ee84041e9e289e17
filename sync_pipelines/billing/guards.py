"""Sanity guards on a priced invoice: what QuickBooks can hold, and what looks like a mistake.

* QuickBooks stores amounts as "max 15 digits in 10.5 format" (Intuit's Invoice reference, e.g.
  ``Line.Amount``): at most 10 digits before the decimal point. A line or total beyond that would
  be refused by QuickBooks (or, worse, come from a typo such as a 10,000-hour entry), so the
  invoice is held before it is sent. The rules file is checked against the same limit.
* An invoice whose total jumps far beyond the client's history (``guards.total_jump``) is held
  for review with the numbers: a person confirms it before the client receives it.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal

#: The largest amount QuickBooks accepts (10 integer digits, 2 decimals for money).
QBO_MAX_AMOUNT = Decimal("9999999999.99")


def over_qbo_limit(value: Decimal) -> bool:
    return abs(value) > QBO_MAX_AMOUNT


def qbo_limit_message(value: Decimal) -> str:
    return (f"{value} is more than QuickBooks accepts for an amount (at most 10 digits before the decimal "
            f"point: {QBO_MAX_AMOUNT})")


def amount_limit_problems(line_amounts: Iterable[Decimal], total: Decimal, currency: str) -> list[str]:
    """Hold reasons for any line or total QuickBooks cannot store."""
    problems = []
    worst = max((abs(a) for a in line_amounts), default=Decimal(0))
    if over_qbo_limit(worst):
        problems.append(f"a line amount of {currency} {worst}: {qbo_limit_message(worst)}")
    if over_qbo_limit(total):
        problems.append(f"the total {currency} {total}: {qbo_limit_message(total)}")
    return problems


def total_jump_problem(total: Decimal, posted_totals: Iterable[Decimal], *, factor: Decimal, min_history: int,
                       currency: str, rule_path: str) -> str | None:
    """A hold reason when `total` exceeds `factor` x the largest posted total (with enough history)."""
    history = [t for t in posted_totals if t > 0]
    if len(history) < min_history:
        return None
    largest = max(history)
    if total <= largest * factor:
        return None
    return (f"total {currency} {total} is more than {factor} x the client's largest posted invoice "
            f"({currency} {largest}, over {len(history)} posted invoices); held for review ({rule_path}: "
            f"confirm the hours and rates, or raise the factor)")
