"""Deals invoiced from their line items (DESIGN §5 "Deals"; docs/rules.md "Deals invoiced from line items").

A deal qualifies for period P when its `dealstage` is the rules' `hubspot.ready_for_billing_stage`,
it has at least one line item, the day it entered that stage (`stage_entered_at`, HubSpot's
`hs_v2_date_entered_<stage>`; `hs_lastmodifieddate` when the portal has none) falls in P in the
firm's time zone, and its company id is a rules client's
`hubspot_company_id`. Each qualifying deal is one invoice of its own (group key `deal-<id>`), one
SalesItemLine per line item; the client's discount, minimum and cap do not apply (the line items
are the agreed price). Per-deal work is a Python loop: a month has few such deals.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import date
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd

from sync_pipelines import money
from sync_pipelines.billing import keys as keymod
from sync_pipelines.billing.catalog import Catalog
from sync_pipelines.billing.deals import cell_decimal, cell_text, deal_date
from sync_pipelines.billing.describe import MAX_DESCRIPTION, hours
from sync_pipelines.billing.history import BillingHistory
from sync_pipelines.billing.line_item_net import NetLine, net_line
from sync_pipelines.billing.rules import ClientRules, RulesFile

#: Columns of the `deal_line_items` frame (docs/architecture.md "Frames").
LINE_ITEM_COLUMNS = ["deal_id", "line_item_id", "name", "sku", "price", "quantity", "amount", "hs_discount_percentage",
                     "discount"]

#: Columns of `BillingResult.extras["line_item_deals"]`.
REPORT_COLUMNS = ["deal_id", "dealname", "company_id", "stage_date", "client_key", "status", "reason", "invoice_key"]

GROUP_PREFIX = "deal-"


def deal_group_key(deal_id: str) -> str:
    return f"{GROUP_PREFIX}{deal_id}"


def _dec(v: object) -> Decimal | None:
    # A line item's price or quantity that is not a number holds the deal's invoice (caller).
    try:
        return cell_decimal(v)
    except ValueError:
        return None


def _group_of(invoice_key: str) -> str | None:
    parts = invoice_key.split(":")
    return parts[3] if len(parts) >= 5 else None


def without_deal_invoices(history: BillingHistory) -> BillingHistory:
    """The history the time path sees: posted line-item invoices never count towards a client's
    cap (the caps do not apply to them, in either direction). A deal invoice that billed Harvest
    time (a triggered deal linked to a project) does count: it holds entries."""
    time_keys = set(history.posted_entries.values())
    keep = tuple(p for p in history.posted_invoices
                 if not (_group_of(p.invoice_key) or "").startswith(GROUP_PREFIX) or p.invoice_key in time_keys)
    if len(keep) == len(history.posted_invoices):
        return history
    return replace(history, posted_invoices=keep)


def empty_report() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series([], dtype=object) for c in REPORT_COLUMNS})


def price_line_items(
    rules: RulesFile,
    period: str,
    start: date,
    end: date,
    deals: pd.DataFrame | None,
    line_items: pd.DataFrame,
    catalog: Catalog,
    history: BillingHistory,
    realm_id: str,
    client_keys: list[str],
    effective: dict[str, ClientRules],
    report_unmapped: bool,
    line_columns: list[str],
    invoice_columns: list[str],
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(lines, invoices, report) of the line-item invoices of `period` (columns as the time path's)."""
    lines_rows: list[dict[str, Any]] = []
    invoice_rows: list[dict[str, Any]] = []
    report: list[dict[str, Any]] = []
    settings = rules.hubspot
    if settings is None or deals is None or len(deals) == 0 or line_items is None or len(line_items) == 0:
        return _lines(lines_rows, line_columns), _invoices(invoice_rows, invoice_columns), empty_report()
    stage = settings.ready_for_billing_stage
    tz = ZoneInfo(rules.firm.timezone)

    items_of: dict[str, list[dict[str, Any]]] = {}
    for rec in line_items.to_dict("records"):
        did = cell_text(rec.get("deal_id"))
        if did is not None:
            items_of.setdefault(did, []).append(rec)

    by_company: dict[str, list[str]] = {}
    for ck in sorted(rules.clients):
        cid = rules.clients[ck].hubspot_company_id
        if cid:
            by_company.setdefault(str(cid), []).append(ck)
    selected = set(client_keys)
    # a deal already invoiced from its line items in another period (any later edit moves
    # hs_lastmodifieddate, e.g. our own write-back) is never invoiced again
    posted_deal: dict[str, str] = {}
    for p in history.posted_invoices:
        g = _group_of(p.invoice_key) or ""
        if g.startswith(GROUP_PREFIX):
            posted_deal.setdefault(g[len(GROUP_PREFIX):], p.invoice_key)

    qualifying: list[tuple[str, str, dict[str, Any], date]] = []
    for rec in deals.to_dict("records"):
        did = cell_text(rec.get("deal_id"))
        if did is None or cell_text(rec.get("dealstage")) != stage or did not in items_of:
            continue
        # HubSpot's stage-entered date is the stage change; hs_lastmodifieddate (any edit, our
        # write-back included) only stands in when the portal has none
        when = deal_date(rec.get("stage_entered_at"), tz) or deal_date(rec.get("hs_lastmodifieddate"), tz)
        if when is None or not (start <= when <= end):
            continue
        company = cell_text(rec.get("company_id"))
        row = {"deal_id": did, "dealname": cell_text(rec.get("dealname")), "company_id": company,
               "stage_date": when, "client_key": None, "status": None, "reason": None, "invoice_key": None}
        owners = by_company.get(company or "", [])
        if len(owners) != 1:
            if report_unmapped:
                row["status"] = "unmapped"
                row["reason"] = (f"deal {did} is ready for billing but its company {company} is the "
                                 f"hubspot_company_id of no rules client" if not owners and company else
                                 f"deal {did} is ready for billing but has no company" if not owners else
                                 f"deal {did}: company {company} is the hubspot_company_id of several clients "
                                 f"({', '.join(owners)})")
                report.append(row)
            continue
        ck = owners[0]
        if ck not in selected:
            continue
        row["client_key"] = ck
        gk = deal_group_key(did)
        key = keymod.invoice_key(realm_id, ck, period, gk, history.generation(ck, period, gk))
        if did in posted_deal and _period_of(posted_deal[did]) != period:
            row["status"] = "already_invoiced"
            row["reason"] = f"deal {did} was already invoiced from its line items on {posted_deal[did]}"
            report.append(row)
            continue
        row["invoice_key"] = key
        report.append(row)
        qualifying.append((ck, did, rec, when))

    qualifying.sort(key=lambda q: (q[0], deal_group_key(q[1])))
    status_of = {r["deal_id"]: r for r in report}
    for ck, did, rec, _ in qualifying:
        e = effective[ck]
        gk = deal_group_key(did)
        generation = history.generation(ck, period, gk)
        key = keymod.invoice_key(realm_id, ck, period, gk, generation)
        lines, inv = _invoice(rules, period, start, end, catalog, ck, e, did, rec, items_of[did], key, gk, generation)
        if inv is None:
            status_of[did].update(status="not_issued", reason=f"deal {did}: line items total zero", invoice_key=None)
            continue
        status_of[did].update(status=inv["status"], reason="; ".join(inv["hold_reasons"]) or None)
        lines_rows += lines
        invoice_rows.append(inv)
    rep = pd.DataFrame(report, columns=REPORT_COLUMNS, dtype=object) if report else empty_report()
    return _lines(lines_rows, line_columns), _invoices(invoice_rows, invoice_columns), rep


def _period_of(invoice_key: str) -> str | None:
    parts = invoice_key.split(":")
    return parts[2] if len(parts) >= 5 else None


def _invoice(rules: RulesFile, period: str, start: date, end: date, catalog: Catalog, ck: str, e: ClientRules,
             did: str, deal: dict[str, Any], items: list[dict[str, Any]], key: str, gk: str, generation: int
             ) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    cur: str = e.currency  # type: ignore[assignment]
    holds: list[str] = []
    deal_currency = cell_text(deal.get("deal_currency_code"))
    if deal_currency is not None and deal_currency.upper() != cur:
        holds.append(f"deal {did} is in {deal_currency} (deal_currency_code), the client's currency is {cur}")
    class_name = e.qbo.class_  # type: ignore[union-attr]
    class_id = None
    if class_name:
        ref, problem = catalog.resolve("Class", class_name, "class")
        class_id = ref.id if ref else None
        if problem:
            holds.append(problem)

    rows: list[dict[str, Any]] = []
    items = sorted(items, key=lambda r: (_sort_id(cell_text(r.get("line_item_id"))), cell_text(r.get("line_item_id")) or ""))
    for n, li in enumerate(items, start=1):
        li_id = cell_text(li.get("line_item_id")) or "?"
        name = cell_text(li.get("name"))
        sku = cell_text(li.get("sku"))
        qty, price = _dec(li.get("quantity")), _dec(li.get("price"))
        priced = True
        unreadable = name is None and sku is None and cell_text(li.get("price")) is None and cell_text(li.get("quantity")) is None
        if unreadable:
            holds.append(f"deal {did} line item {li_id} could not be read from HubSpot (see the rejected records)")
            priced = False
            qty, price = Decimal(0), Decimal(0)
        elif qty is None or price is None or qty < 0 or price < 0:
            holds.append(f"deal {did} line item {li_id}: quantity {cell_text(li.get('quantity'))!r} / price "
                         f"{cell_text(li.get('price'))!r} is not a non-negative number")
            priced = False
            qty, price = qty if qty is not None else Decimal(0), price if price is not None else Decimal(0)
        amount = money.quantize(qty * price, cur) if priced else Decimal(0).quantize(money.quantum(cur))
        explanation = None
        if priced:
            net = _net(li, price, qty, cur, f"deal {did} line item {li_id}")
            if net.problem:
                holds.append(net.problem)
            qty, price, amount, explanation = net.qty, net.unit_price, net.amount, net.explanation
        ref = (catalog.find("Item", sku) if sku else None) or (catalog.find("Item", name) if name else None) \
            or (catalog.find_by_sku(sku) if sku else None)
        if ref is None and not unreadable:
            holds.append(f"deal {did} line item {li_id}: unknown SKU {sku!r} (no QuickBooks item with that name"
                         f"{'' if name is None else f' or named {name!r}'} or SKU)")
        elif ref is not None and not ref.active:
            holds.append(f"QuickBooks item {ref.name!r} is inactive (deal {did} line item {li_id})")
        desc = name or sku or f"Line item {li_id}"
        if explanation:
            desc = f"{desc} ({explanation})"
        rows.append({
            "invoice_key": key, "client_key": ck, "group_key": gk, "line_no": n, "kind": "line_item",
            "detail_type": "SalesItemLineDetail",
            "description": desc if len(desc) <= MAX_DESCRIPTION else desc[: MAX_DESCRIPTION - 1] + "…",
            "item_name": ref.name if ref else (sku or name), "item_id": ref.id if ref else None,
            "class_name": class_name, "class_id": class_id, "service_date": end, "qty": qty, "unit_price": price,
            "amount": amount, "currency": cur, "rate_rule": f"deal {did} line item {li_id}", "raw_centi": 0,
            "billed_centi": 0, "raw_hours": hours(0), "billed_hours": hours(0), "entry_ids": [], "entry_count": 0,
            "rounding": None, "project_id": None, "task_id": None, "user_id": None, "discount_percent": None,
            "priced": priced,
        })
    total = sum((r["amount"] for r in rows), Decimal(0))

    terms_name = e.qbo.terms  # type: ignore[union-attr]
    terms_id = None
    if terms_name:
        ref_t, problem = catalog.resolve("Term", terms_name, "term")
        terms_id = ref_t.id if ref_t else None
        if problem:
            holds.append(problem)
    customer = catalog.find("Customer", e.qbo_customer)
    customer_currency = None
    if customer is not None:
        customer_currency = customer.currency or rules.firm.home_currency
        if customer_currency != cur:
            holds.append(f"QuickBooks customer {e.qbo_customer!r} is in {customer_currency}, the rules say {cur}")
    if total == 0 and not holds:
        return [], None

    po = cell_text(deal.get("po_number"))
    pos = [po] if po else []
    memo = _memo(e.invoice.memo, pos, ck, e.qbo_customer, period, start, end)  # type: ignore[union-attr]
    zero = Decimal(0).quantize(money.quantum(cur))
    inv = {
        "invoice_key": key, "client_key": ck, "period": period, "group_key": gk, "generation": generation,
        "currency": cur, "subtotal": total, "discount": zero, "discount_percent": None, "minimum_fee": zero,
        "cap_adjustment": zero, "write_down": zero, "total": total, "status": "held" if holds else "ready",
        "hold_reasons": list(dict.fromkeys(holds)), "doc_number": keymod.doc_number(key, period),
        "request_id": keymod.request_id(key), "customer_name": e.qbo_customer,
        "customer_id": customer.id if customer else None, "customer_currency": customer_currency, "memo": memo,
        "po_numbers": pos, "terms_name": terms_name, "terms_id": terms_id, "class_name": class_name,
        "class_id": class_id, "txn_date": end, "service_start": start, "service_end": end, "raw_hours": hours(0),
        "billed_hours": hours(0), "entry_count": 0, "line_count": len(rows), "retainer_included_hours": None,
        "retainer_used_hours": None, "retainer_carry_forward_hours": None, "project_totals": {},
    }
    return rows, inv


def _net(li: dict[str, Any], price: Decimal, qty: Decimal, cur: str, where: str) -> NetLine:
    """The line item's net line; a discount or amount that is not a number holds the invoice."""
    values: dict[str, Decimal | None] = {}
    for key in ("hs_discount_percentage", "discount", "amount"):
        try:
            values[key] = cell_decimal(li.get(key))
        except ValueError:
            return NetLine(qty, price, money.quantize(qty * price, cur), None,
                           f"{where}: {key} {cell_text(li.get(key))!r} is not a number")
    return net_line(price, qty, percent=values["hs_discount_percentage"], unit_discount=values["discount"],
                    amount=values["amount"], currency=cur, where=where)


def _sort_id(v: str | None) -> int:
    return int(v) if v is not None and v.isdigit() else -1


def _memo(template: str | None, pos: list[str], ck: str, customer: str, period: str, start: date, end: date) -> str | None:
    # as invoices._memo: a template naming {po_number} gives no memo when the deal has no PO
    if not template:
        return None
    if "{po_number}" in template and not pos:
        return None
    return template.format(po_number=", ".join(pos), client_key=ck, customer=customer, period=period,
                           period_start=start.isoformat(), period_end=end.isoformat())


def _lines(rows: list[dict[str, Any]], columns: list[str]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=columns, dtype=object)
    for c in ("line_no", "raw_centi", "billed_centi", "entry_count"):
        df[c] = df[c].astype(np.int64)
    df["priced"] = df["priced"].astype(bool)
    for c in ("project_id", "task_id", "user_id"):
        df[c] = pd.array(df[c].tolist(), dtype="Int64")
    return df


def _invoices(rows: list[dict[str, Any]], columns: list[str]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=columns, dtype=object)
    for c in ("generation", "entry_count", "line_count"):
        df[c] = df[c].astype(np.int64)
    return df


__all__ = ["GROUP_PREFIX", "LINE_ITEM_COLUMNS", "REPORT_COLUMNS", "deal_group_key", "price_line_items",
           "without_deal_invoices"]
