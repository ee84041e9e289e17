"""Consistency checks on a client-month's drafts, run before anything is posted.

They check the payloads exactly as they will be sent, so a pricing bug cannot reach a client:
QuickBooks itself rejects a line whose Amount is not Qty x UnitPrice, and our own total must be
what QuickBooks will compute from the lines.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sync_pipelines import money


def draft_problems(document: dict[str, Any]) -> list[str]:
    """Every inconsistency found in the drafts document (empty when all is well)."""
    problems: list[str] = []
    seen_entries: dict[int, str] = {}
    for inv in document["invoices"]:
        key, currency = inv["invoice_key"], inv["currency"]
        for entry_id, _ in inv["entries"]:
            if entry_id in seen_entries and seen_entries[entry_id] != key:
                problems.append(f"entry {entry_id} is on both {seen_entries[entry_id]} and {key}")
            seen_entries[entry_id] = key
        if inv["status"] != "ready":
            continue
        sales = Decimal(0)
        discount = Decimal(0)
        for n, line in enumerate(inv["payload"].get("Line", []), start=1):
            amount = Decimal(str(line["Amount"]))
            if line.get("DetailType") == "SalesItemLineDetail":
                detail = line["SalesItemLineDetail"]
                if "Qty" in detail and "UnitPrice" in detail:
                    expected = money.quantize(Decimal(str(detail["Qty"])) * Decimal(str(detail["UnitPrice"])), currency)
                    if expected != amount:
                        problems.append(f"{key} line {n}: Amount {amount} != Qty x UnitPrice = {expected}")
                if amount != money.quantize(amount, currency):
                    problems.append(f"{key} line {n}: Amount {amount} has more digits than {currency} allows")
                sales += amount
            elif line.get("DetailType") == "DiscountLineDetail":
                discount += amount
        total = Decimal(str(inv["total"]))
        if sales - discount != total:
            problems.append(f"{key}: lines add up to {sales - discount}, draft total is {total}")
        if total < 0:
            problems.append(f"{key}: negative total {total}")
    return problems
