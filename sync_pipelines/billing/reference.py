"""A small, obviously-correct per-entry implementation of DESIGN §5, used as a test oracle.

Plain Python loops over entries and Decimal arithmetic throughout; no pandas tricks, no
performance concerns. It covers time & materials and retainer clients, rounding, rate rows
(rules and deal hourly rates), line detail, group_by client|project, discount, minimum and the
client cap. It does not do catalog lookups, holds other than "no rate", deal discounts or
not-to-exceed (the engine's own tests cover those by hand).
"""

from __future__ import annotations

from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from sync_pipelines import money
from sync_pipelines.billing.history import BillingHistory
from sync_pipelines.billing.keys import invoice_key
from sync_pipelines.billing.rules import ClientRules, RateRow, RulesFile
from sync_pipelines.billing.selection import period_bounds


def _minutes(hours: Decimal) -> Decimal:
    return (hours * 60).quantize(Decimal(1), rounding=ROUND_HALF_UP)


def round_hours(minutes: Decimal, hours: Decimal, increment: int, mode: str) -> Decimal:
    """Billed hours for `minutes` worked (`hours` when there is no increment)."""
    if increment == 0:
        return hours
    steps = minutes / increment
    if mode == "up":
        n = steps.to_integral_value(rounding="ROUND_CEILING")
    elif mode == "down":
        n = steps.to_integral_value(rounding="ROUND_FLOOR")
    else:
        n = steps.to_integral_value(rounding=ROUND_HALF_UP)
    return (n * increment / Decimal(60)).quantize(Decimal("0.01"))


def _matches(row: RateRow, e: dict[str, Any]) -> bool:
    def ok(value: Any, id_: int, name: Any) -> bool:
        if value is None:
            return True
        return value == id_ if isinstance(value, int) else value == name

    return (ok(row.project, e["project_id"], e["project_code"]) and ok(row.person, e["user_id"], e["user_name"])
            and ok(row.task, e["task_id"], e["task_name"])
            and (row.from_ is None or row.from_ <= e["spent_date"]) and (row.to is None or e["spent_date"] <= row.to))


def resolve_rate(key: str, c: ClientRules, e: dict[str, Any], deal_rates: dict[int, list[tuple[date | None, Decimal, str]]]
                 ) -> tuple[Decimal, str] | None:
    best: tuple[tuple[int, date, int], Decimal, str] | None = None
    for i, row in enumerate(c.rates):
        if _matches(row, e):
            rank = (row.score, row.from_ or date.min, 0)
            if best is None or rank > best[0]:
                best = (rank, row.rate, f"clients.{key}.rates[{i}]")
    for n, (when, rate, rule) in enumerate(deal_rates.get(e["project_id"], [])):
        if when is None or when <= e["spent_date"]:
            rank = (4, when or date.min, 1 + n)
            if best is None or rank > best[0]:
                best = (rank, rate, rule)
    return None if best is None else (best[1], best[2])


def reference_price(rules: RulesFile, period: str, entries: list[dict[str, Any]], history: BillingHistory,
                    realm_id: str, deal_rates: dict[int, list[tuple[date | None, Decimal, str]]] | None = None
                    ) -> dict[str, Any]:
    """{"excluded": {entry_id: reason}, "invoices": {key: {...}}} computed entry by entry."""
    deal_rates = deal_rates or {}
    start, end = period_bounds(period)
    by_harvest = {c.harvest_client_id: k for k, c in rules.clients.items()}
    excluded: dict[int, str] = {}
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for e in entries:
        key = by_harvest.get(e["client_id"])
        if key is None:
            excluded[e["entry_id"]] = f"Harvest client {e['client_id']} {e['client_name']!r} has no billing rules"
        elif not (start <= e["spent_date"] <= end):
            excluded[e["entry_id"]] = f"spent_date outside {period}"
        elif e["is_running"]:
            excluded[e["entry_id"]] = "timer still running"
        elif not e["billable"]:
            excluded[e["entry_id"]] = "not billable in Harvest"
        else:
            c = rules.effective(key)
            gk = "all" if c.invoice.group_by == "client" else f"project-{e['project_id']}"  # type: ignore[union-attr]
            ik = invoice_key(realm_id, key, period, gk, history.generation(key, period, gk))
            posted = history.posted_entries.get(e["entry_id"])
            if posted is not None and posted != ik:
                excluded[e["entry_id"]] = f"already billed on {posted}"
            else:
                groups.setdefault((key, gk), []).append(e)
    for key, c in rules.clients.items():
        if c.billing_type == "retainer":
            groups.setdefault((key, "all"), [])

    invoices: dict[str, Any] = {}
    used_in_run: dict[tuple[str, str | None], Decimal] = {}
    for (key, gk) in sorted(groups):
        c = rules.effective(key)
        cur: str = c.currency  # type: ignore[assignment]
        rnd = c.rounding
        detail = c.invoice.line_detail  # type: ignore[union-attr]
        ik = invoice_key(realm_id, key, period, gk, history.generation(key, period, gk))
        lines: dict[tuple, dict[str, Any]] = {}
        held = False
        # retainer consumption order; plain T&M order does not matter
        ordered = sorted(groups[(key, gk)], key=lambda e: (e["spent_date"], e["entry_id"]))
        available = Decimal(0)
        if c.billing_type == "retainer":
            carry = Decimal(history.carryover_hours.get(key, 0)) if c.retainer.rollover else Decimal(0)  # type: ignore[union-attr]
            available = c.retainer.included_hours + carry  # type: ignore[union-attr]
        consumed = Decimal(0)
        for e in ordered:
            hours = Decimal(int(e["hours_centi"])).scaleb(-2)
            per_entry = rnd.scope == "entry"  # type: ignore[union-attr]
            billed = round_hours(_minutes(hours), hours, rnd.increment_minutes, rnd.mode) if per_entry else hours  # type: ignore[union-attr]
            parts = [("time", billed, hours)]
            if c.billing_type == "retainer":
                before = consumed
                consumed += billed
                inc = min(max(available - before, Decimal(0)), billed)
                ov = billed - inc
                to_inc = inc > 0 or (billed == 0 and before < available)
                to_ov = ov > 0 or (billed == 0 and before >= available)
                raw_inc = hours if not to_ov else (min(hours, inc) if to_inc else Decimal(0))
                parts = []
                if to_inc:
                    parts.append(("included", inc, raw_inc))
                if to_ov:
                    parts.append(("overage", ov, hours - raw_inc))
            for kind, b, raw in parts:
                if kind == "included":
                    rate, rule = Decimal(0), "included"
                elif kind == "overage" and c.retainer.overage_rate is not None:  # type: ignore[union-attr]
                    rate, rule = c.retainer.overage_rate, "overage"  # type: ignore[union-attr]
                else:
                    found = resolve_rate(key, c, e, deal_rates)
                    if found is None:
                        held = True
                        rate, rule = Decimal(-1), "none"
                    else:
                        rate, rule = found
                item = (c.qbo.items_by_task or {}).get(e["task_name"], c.qbo.item)  # type: ignore[union-attr]
                lk = (
                    kind, item,
                    e["project_id"] if detail == "project" else None,
                    e["task_id"] if detail in ("task", "task_person") else None,
                    e["user_id"] if detail in ("person", "task_person") else None,
                    e["entry_id"] if detail == "entry" else None,
                    rate * 10000,
                )
                line = lines.setdefault(lk, {"kind": kind, "rate": rate, "raw": Decimal(0), "billed": Decimal(0),
                                             "minutes": Decimal(0), "entry_ids": []})
                line["raw"] += raw
                line["billed"] += b
                line["minutes"] += _minutes(raw)
                line["entry_ids"].append(e["entry_id"])
        out_lines = []
        subtotal = Decimal(0)
        fee = c.retainer.fee if c.billing_type == "retainer" else Decimal(0)  # type: ignore[union-attr]
        if fee > 0:
            out_lines.append(("retainer_fee", Decimal(1), fee, fee, ()))
            subtotal += fee
        for line in lines.values():
            qty = line["billed"]
            if rnd.scope == "line":  # type: ignore[union-attr]
                qty = round_hours(line["minutes"], line["raw"], rnd.increment_minutes, rnd.mode)  # type: ignore[union-attr]
            price = line["rate"] if line["rate"] >= 0 else Decimal(0)
            amount = money.quantize(qty * price, cur)
            subtotal += amount
            out_lines.append((line["kind"], qty, price, amount, tuple(sorted(line["entry_ids"]))))
        discount = Decimal(0)
        if c.discount is not None:
            if c.discount.percent is not None:
                discount = money.quantize(subtotal * c.discount.percent / 100, cur)
            else:
                discount = min(c.discount.amount, subtotal)  # type: ignore[type-var]
        total = subtotal - discount
        minimum_fee = Decimal(0)
        if c.minimum is not None and 0 < total < c.minimum:
            minimum_fee = c.minimum - total
            total = c.minimum
        cap_adj = Decimal(0)
        if c.cap is not None:
            cap_period = period if c.cap.period == "month" else None
            run_keys = [invoice_key(realm_id, key, period, g, history.generation(key, period, g)) for (k2, g) in groups if k2 == key]
            before = history.posted_total(key, cap_period, run_keys) + used_in_run.get((key, cap_period), Decimal(0))
            remaining = max(c.cap.amount - before, Decimal(0))
            if total > remaining:
                cap_adj = remaining - total
                total = remaining
            used_in_run[(key, cap_period)] = used_in_run.get((key, cap_period), Decimal(0)) + total
        if total == 0 and fee == 0 and not held:
            for ln in out_lines:
                for eid in ln[4]:
                    excluded[eid] = f"invoice {ik} not issued: its total is zero"
            continue
        invoices[ik] = {"subtotal": subtotal, "discount": discount, "minimum_fee": minimum_fee,
                        "cap_adjustment": cap_adj, "total": total, "held": held, "lines": sorted(out_lines, key=repr)}
    return {"excluded": excluded, "invoices": invoices}
