"""Drift: a posted invoice whose inputs changed afterwards (time edited, rules changed).

The ledger never re-posts such an invoice (DESIGN §6): the client already has it. This module
says by how much the new draft differs from what was posted -- billed hours and money -- and
proposes the adjustment an operator can review and post:

* the new draft bills **more**: a true-up line for the client's next invoice (one line whose
  Amount is exactly the difference, dated the drifted period's last day);
* it bills **less**: a QuickBooks ``CreditMemo`` create body for the difference against the same
  customer;
* the same amount (descriptions or line split changed only): nothing to adjust.

Nothing here posts anything. Billed hours are the Qty of the time lines; the fixed-amount lines
the billing engine adds (retainer fee, minimum fee, not-to-exceed adjustment, Qty 1) do not count.
"""

from __future__ import annotations

import calendar
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from sync_pipelines import money

# Descriptions of the fixed-amount lines (sync_pipelines.billing.invoices._extra_line callers).
_FIXED_LINE_PREFIXES = ("Retainer ", "Minimum fee", "Not-to-exceed adjustment")
TRUE_UP = "true_up_line"
CREDIT_MEMO = "credit_memo"
NONE = "none"


@dataclass(frozen=True)
class Adjustment:
    kind: str  # true_up_line | credit_memo | none
    amount: Decimal  # positive: what the adjustment bills (true-up) or credits (credit memo)
    payload: dict[str, Any] | None  # a QBO Line (true-up) or CreditMemo create body; None for none
    text: str


@dataclass(frozen=True)
class Drift:
    key: str
    period: str
    currency: str
    posted_total: Decimal
    new_total: Decimal
    posted_hours: Decimal
    new_hours: Decimal
    adjustment: Adjustment
    entries_added: tuple[int, ...] = field(default=())
    entries_removed: tuple[int, ...] = field(default=())
    entries_changed: tuple[int, ...] = field(default=())

    @property
    def delta_amount(self) -> Decimal:
        return self.new_total - self.posted_total

    @property
    def delta_hours(self) -> Decimal:
        return self.new_hours - self.posted_hours

    def summary(self) -> str:
        parts = [
            f"posted {self.posted_total} {self.currency} for {self.posted_hours} h; the new draft is "
            f"{self.new_total} for {self.new_hours} h (delta {_signed(self.delta_hours)} h, "
            f"{_signed(self.delta_amount)} {self.currency})"
        ]
        changes = [f"{n} {what}" for n, what in ((len(self.entries_added), "entries added"),
                                                  (len(self.entries_removed), "entries removed"),
                                                  (len(self.entries_changed), "entries with changed hours")) if n]
        if changes:
            parts.append(", ".join(changes))
        parts.append(f"proposed: {self.adjustment.text}; not re-posted")
        return "; ".join(parts)


def _signed(value: Decimal) -> str:
    return f"+{value}" if value > 0 else str(value)


def _sales_lines(payload: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [line for line in payload.get("Line", []) if line.get("DetailType") == "SalesItemLineDetail"]


def _is_fixed(line: Mapping[str, Any]) -> bool:
    return str(line.get("Description", "")).startswith(_FIXED_LINE_PREFIXES)


def billed_hours(payload: Mapping[str, Any]) -> Decimal:
    """Sum of Qty over the payload's time lines."""
    total = Decimal(0)
    for line in _sales_lines(payload):
        qty = line.get("SalesItemLineDetail", {}).get("Qty")
        if qty is not None and not _is_fixed(line):
            total += money.to_decimal(qty, what="Qty")
    return total


def payload_total(payload: Mapping[str, Any]) -> Decimal:
    """What QuickBooks computes as TotalAmt: sales lines minus discount lines."""
    total = Decimal(0)
    for line in payload.get("Line", []):
        amount = money.to_decimal(line.get("Amount", 0), what="Amount")
        if line.get("DetailType") == "SalesItemLineDetail":
            total += amount
        elif line.get("DetailType") == "DiscountLineDetail":
            total -= amount
    return total


def _period_end(period: str) -> str:
    year, month = int(period[:4]), int(period[5:7])
    return f"{period}-{calendar.monthrange(year, month)[1]:02d}"


def _first_time_detail(*payloads: Mapping[str, Any]) -> dict[str, Any]:
    for payload in payloads:
        for line in _sales_lines(payload):
            if not _is_fixed(line):
                return dict(line.get("SalesItemLineDetail", {}))
    return {}


def propose_adjustment(
    key: str,
    period: str,
    posted: Mapping[str, Any],
    new: Mapping[str, Any],
    delta_amount: Decimal,
    delta_hours: Decimal,
) -> Adjustment:
    """The adjustment for a drift of `delta_amount` (module docs)."""
    doc = str(posted.get("DocNumber") or key)
    if delta_amount == 0:
        return Adjustment(NONE, Decimal(0), None, "no adjustment (the amount is unchanged)")
    amount = abs(delta_amount)
    template = _first_time_detail(new, posted)
    detail: dict[str, Any] = {"Qty": Decimal(1), "UnitPrice": amount, "ServiceDate": _period_end(period)}
    for ref in ("ItemRef", "ClassRef"):
        if template.get(ref):
            detail[ref] = dict(template[ref])
    hours = f", {_signed(delta_hours)} h" if delta_hours else ""
    if delta_amount > 0:
        line = {
            "DetailType": "SalesItemLineDetail", "Amount": amount,
            "Description": f"True-up for invoice {doc} ({period}): time changed after invoicing{hours}",
            "SalesItemLineDetail": detail,
        }
        return Adjustment(TRUE_UP, amount, line, f"a true-up line of {amount} on the next invoice")
    memo: dict[str, Any] = {
        "CustomerRef": dict(posted.get("CustomerRef") or new.get("CustomerRef") or {}),
        # <= 21 characters (QuickBooks' DocNumber limit): ours are 15.
        "DocNumber": f"{doc}-C"[:21],
        "PrivateNote": f"credit for {key}: inputs changed after invoicing",
        "Line": [{
            "DetailType": "SalesItemLineDetail", "Amount": amount,
            "Description": f"Credit for invoice {doc} ({period}): time changed after invoicing{hours}",
            "SalesItemLineDetail": detail,
        }],
    }
    if posted.get("CurrencyRef"):
        memo["CurrencyRef"] = dict(posted["CurrencyRef"])
    return Adjustment(CREDIT_MEMO, amount, memo, f"a credit memo of {amount} ({memo['DocNumber']})")


def compare(
    key: str,
    period: str,
    currency: str,
    posted: Mapping[str, Any],
    new: Mapping[str, Any],
    *,
    posted_total: Decimal | None = None,
    new_total: Decimal | None = None,
    posted_entries: Iterable[tuple[int, int]] | None = None,
    new_entries: Iterable[tuple[int, int]] | None = None,
) -> Drift:
    """The drift between the posted payload and a new draft's payload.

    Totals default to the payloads' own (sales - discount). Entries, as (entry id, centihours)
    pairs, add which time entries were added, removed or changed when both are given.
    """
    old_total = posted_total if posted_total is not None else payload_total(posted)
    cur_total = new_total if new_total is not None else payload_total(new)
    old_hours, cur_hours = billed_hours(posted), billed_hours(new)
    added: tuple[int, ...] = ()
    removed: tuple[int, ...] = ()
    changed: tuple[int, ...] = ()
    if posted_entries is not None and new_entries is not None:
        before, after = dict(posted_entries), dict(new_entries)
        added = tuple(sorted(set(after) - set(before)))
        removed = tuple(sorted(set(before) - set(after)))
        changed = tuple(sorted(e for e in set(before) & set(after) if before[e] != after[e]))
    delta = cur_total - old_total
    adjustment = propose_adjustment(key, period, posted, new, delta, cur_hours - old_hours)
    return Drift(key, period, currency, old_total, cur_total, old_hours, cur_hours, adjustment, added, removed, changed)


def drift_of_record(record: Any, new_entries: Iterable[tuple[int, int]] | None = None) -> Drift | None:
    """The drift recorded on a ledger row (status ``drift``), or None. `record` is an
    ``InvoiceRecord``; its entries (from ``get_invoice``) are the posted ones."""
    if record.status != "drift" or not record.drift_payload_json:
        return None
    posted = money.loads(record.payload_json)
    new = money.loads(record.drift_payload_json)
    posted_entries = [(e, c) for e, c, _ in record.entries] if record.entries else None
    return compare(
        record.key, record.period, record.currency or "", posted, new,
        posted_total=record.expected_total, new_total=record.drift_expected_total,
        posted_entries=posted_entries if new_entries is not None else None, new_entries=new_entries,
    )
