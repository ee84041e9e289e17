"""Per-invoice steps (DESIGN §5 "Order of operations"): retainer fee, subtotal, discount, minimum,
caps, holds, QuickBooks references. One Python iteration per invoice and per line, never per entry.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import numpy as np
import pandas as pd

from sync_pipelines import money
from sync_pipelines.billing import guards
from sync_pipelines.billing import keys as keymod
from sync_pipelines.billing.catalog import Catalog
from sync_pipelines.billing.deals import ProjectTerms
from sync_pipelines.billing.describe import MAX_DESCRIPTION, hours
from sync_pipelines.billing.history import BillingHistory
from sync_pipelines.billing.lines import KIND_INCLUDED, KIND_OVERAGE
from sync_pipelines.billing.rates import Rule
from sync_pipelines.billing.rules import ClientRules, RulesFile
from sync_pipelines.billing.selection import EPOCH

LINE_COLUMNS = [
    "invoice_key", "client_key", "group_key", "line_no", "kind", "detail_type", "description",
    "item_name", "item_id", "class_name", "class_id", "service_date", "qty", "unit_price", "amount",
    "currency", "rate_rule", "raw_centi", "billed_centi", "raw_hours", "billed_hours", "entry_ids",
    "entry_count", "rounding", "project_id", "task_id", "user_id", "discount_percent", "priced",
]

INVOICE_COLUMNS = [
    "invoice_key", "client_key", "period", "group_key", "generation", "currency", "subtotal", "discount",
    "discount_percent", "minimum_fee", "cap_adjustment", "write_down", "total", "status", "hold_reasons",
    "doc_number", "request_id", "customer_name", "customer_id", "customer_currency", "memo", "po_numbers",
    "terms_name", "terms_id", "class_name", "class_id", "txn_date", "service_start", "service_end",
    "raw_hours", "billed_hours", "entry_count", "line_count", "retainer_included_hours",
    "retainer_used_hours", "retainer_carry_forward_hours", "project_totals",
]


@dataclass
class InvoiceContext:
    rules: RulesFile
    period: str
    start: date
    end: date
    realm_id: str
    history: BillingHistory
    catalog: Catalog
    client_keys: list[str]
    effective: dict[str, ClientRules]
    invoices: list[tuple[str, str]]
    generations: list[int]
    invoice_keys: list[str]
    terms: dict[int, ProjectTerms]
    rule_list: list[Rule]
    item_names: list[str]
    problems: list[list[str]]
    inv_projects: list[list[int]]
    carry_c: np.ndarray
    available_c: np.ndarray
    included_used_c: np.ndarray


def _q(amount: Decimal, currency: str) -> Decimal:
    return money.quantize(amount, currency)


def _dec_minor(v: int, digits: int) -> Decimal:
    return Decimal(int(v)).scaleb(-digits)


def _time_line_rows(ctx: InvoiceContext, L: pd.DataFrame, ids_per_line: list[list[int]], names: Any) -> dict[str, list]:
    """Output columns of every time line, built column-wise (object-array operations, no per-entry work)."""
    n = len(L)
    cols: dict[str, list] = {c: [None] * n for c in LINE_COLUMNS}
    if n == 0:
        return {c: [] for c in LINE_COLUMNS}
    multi = L.attrs.get("multi_rules", {})
    a = {c: L[c].to_numpy() for c in ("inv", "client", "kind", "item", "ld_project", "ld_task", "ld_user",
                                      "ld_entry", "rate", "rule", "raw", "billed", "amount", "day_min", "first",
                                      "n_entries", "s_task", "s_user")}
    src = L.attrs["src"][a["first"]]
    client = a["client"]
    rules = ctx.rule_list

    # per client
    cur_c = np.array([ctx.effective[k].currency for k in ctx.client_keys], dtype=object)
    digits_c = np.array([money.minor_units(ctx.effective[k].currency) for k in ctx.client_keys], dtype=np.int64)  # type: ignore[arg-type]
    detail_c = np.array([ctx.effective[k].invoice.line_detail for k in ctx.client_keys], dtype=object)  # type: ignore[union-attr]
    rounding_c = np.array([ctx.effective[k].rounding.describe() for k in ctx.client_keys], dtype=object)  # type: ignore[union-attr]
    cur = cur_c[client]
    detail = detail_c[client]

    # per rule: unit price and path; unpriced lines (rate < 0) have no rule
    priced = a["rate"] >= 0
    rule_ids = a["rule"]
    unit_r = np.array([r.rate for r in rules] + [Decimal(0)], dtype=object)
    path_r = np.array([r.path for r in rules] + [None], dtype=object)
    rate_text_r = np.array([f"{r.rate}/h" for r in rules] + ["NO RATE"], dtype=object)
    rix = np.where(priced & (rule_ids >= 0), rule_ids, len(rules))
    unit = unit_r[rix]
    rule_text = path_r[np.where(rule_ids >= 0, rule_ids, len(rules))]
    for i, ids in multi.items():
        rule_text[i] = "; ".join(rules[r].path for r in ids if r >= 0)

    # hours, dates and amounts through small lookups of the distinct values
    billed_codes, billed_u = pd.factorize(a["billed"])
    raw_codes, raw_u = pd.factorize(a["raw"])
    billed_hours = _objects([hours(int(v)) for v in billed_u])
    raw_hours = _objects([hours(int(v)) for v in raw_u])
    qty = billed_hours[billed_codes]
    raw_h = raw_hours[raw_codes]
    billed_text = _objects([f"{h} h" for h in billed_hours])[billed_codes]
    raw_text = _objects([f"{h} h" for h in raw_hours])[raw_codes]
    is_entry = a["ld_entry"] >= 0
    day_codes, day_u = pd.factorize(np.where(is_entry, a["day_min"], 0))
    entry_day = _objects([_day(int(d)) for d in day_u])[day_codes]
    service_date = np.where(is_entry, entry_day, ctx.end)
    whole_period = f"{ctx.start.isoformat()} to {ctx.end.isoformat()}"
    period_text = np.where(is_entry, _objects([_day(int(d)).isoformat() for d in day_u])[day_codes], whole_period)
    amount = np.empty(n, dtype=object)
    line_digits = digits_c[client]
    for d in np.unique(line_digits).tolist():
        m = line_digits == d
        codes_, uniq = pd.factorize(a["amount"][m])
        amount[m] = _objects([Decimal(int(v)).scaleb(-d) for v in uniq])[codes_]

    # the description: label [project] — hours @ rate (worked), period. Task and person names
    # come from the line's own codes when it is split on them, else from its first entry.
    task = names.labels("task_name", a["s_task"])
    person = names.labels("user_name", a["s_user"])
    for values, codes, own in ((task, a["s_task"], ("summary", "project", "person")),
                               (person, a["s_user"], ("summary", "project", "task"))):
        need = (codes < 0) & ~np.isin(detail, own)
        if need.any():
            values[need] = names.labels_at("task_name" if values is task else "user_name", src[need])
    notes = np.full(n, None, dtype=object)
    if is_entry.any():
        notes[is_entry] = names.texts("notes", src[is_entry])
    show_project = a["ld_project"] >= 0
    project = np.full(n, None, dtype=object)
    if show_project.any():
        project[show_project] = names.project_labels(src[show_project])
    kind_prefix = {KIND_INCLUDED: "Included in retainer: ", KIND_OVERAGE: "Overage: "}
    rate_text = (cur + " " + rate_text_r[rix]).tolist()
    desc = []
    for d, t, p, sp, pr, nt, k, bt, rt, pc, raw_, billed_, rw, pt in zip(
            detail.tolist(), task.tolist(), person.tolist(), show_project.tolist(), project.tolist(), notes.tolist(),
            a["kind"].tolist(),
            billed_text.tolist(), rate_text, priced.tolist(), a["raw"].tolist(), a["billed"].tolist(),
            raw_text.tolist(), period_text.tolist()):
        if d == "summary":
            label = "Professional services"
        elif d == "project":
            label = pr if pr is not None else "Project"
        elif d == "task":
            label = t if t is not None else "Services"
        elif d == "person":
            label = p if p is not None else "Services"
        else:
            label = f"{t} — {p}"
        if nt is not None:
            label = f"{label}: {nt}"
        if sp and d != "project":
            label = f"{label} [{pr}]"
        text = (f"{kind_prefix.get(k, '')}{label} — {bt} @ {rt if pc else 'NO RATE'}"
                f"{f' ({rw} worked)' if raw_ != billed_ else ''}, {pt}")
        desc.append(text if len(text) <= MAX_DESCRIPTION else text[: MAX_DESCRIPTION - 1] + "…")

    keys = np.array(ctx.invoice_keys + [""], dtype=object)
    groups = np.array([g for _, g in ctx.invoices] + [""], dtype=object)
    ckeys = np.array(ctx.client_keys + [""], dtype=object)
    kind_names = np.array([None, "included", "overage", "time"], dtype=object)
    item_names = np.array(ctx.item_names + [None], dtype=object)
    cols["invoice_key"] = keys[a["inv"]].tolist()
    cols["client_key"] = ckeys[client].tolist()
    cols["group_key"] = groups[a["inv"]].tolist()
    cols["line_no"] = [0] * n
    cols["kind"] = kind_names[a["kind"]].tolist()
    cols["detail_type"] = ["SalesItemLineDetail"] * n
    cols["description"] = desc
    cols["item_name"] = item_names[a["item"]].tolist()
    cols["service_date"] = service_date.tolist()
    cols["qty"] = qty.tolist()
    cols["unit_price"] = unit.tolist()
    cols["amount"] = amount.tolist()
    cols["currency"] = cur.tolist()
    cols["rate_rule"] = rule_text.tolist()
    cols["raw_centi"] = a["raw"].tolist()
    cols["billed_centi"] = a["billed"].tolist()
    cols["raw_hours"] = raw_h.tolist()
    cols["billed_hours"] = cols["qty"]
    cols["entry_ids"] = ids_per_line
    cols["entry_count"] = a["n_entries"].tolist()
    cols["rounding"] = rounding_c[client].tolist()
    cols["project_id"] = _ids_or_none(a["ld_project"])
    cols["task_id"] = _ids_or_none(a["ld_task"])
    cols["user_id"] = _ids_or_none(a["ld_user"])
    cols["priced"] = priced.tolist()
    return cols


def _objects(values: list) -> np.ndarray:
    """A 1-d object array of `values` (numpy would unpack sequences into more dimensions)."""
    out = np.empty(len(values), dtype=object)
    out[:] = values if values else out
    return out


def _ids_or_none(ids: np.ndarray) -> list:
    out = ids.astype(object)
    out[ids < 0] = None
    return out.tolist()


@lru_cache(maxsize=4096)
def _day(day: int) -> date:
    return EPOCH + timedelta(days=day)


def _extra_line(ctx: InvoiceContext, inv: int, kind: str, description: str, amount: Decimal, *, item: str | None,
                detail_type: str = "SalesItemLineDetail", percent: Decimal | None = None,
                project_id: int | None = None) -> dict[str, Any]:
    ck, gk = ctx.invoices[inv]
    e = ctx.effective[ck]
    sales = detail_type == "SalesItemLineDetail"
    return {
        "invoice_key": ctx.invoice_keys[inv], "client_key": ck, "group_key": gk, "line_no": 0, "kind": kind,
        "detail_type": detail_type, "description": description, "item_name": item, "item_id": None,
        "class_name": None, "class_id": None, "service_date": ctx.end if sales else None,
        "qty": Decimal(1) if sales else None, "unit_price": amount if sales else None, "amount": amount,
        "currency": e.currency, "rate_rule": None, "raw_centi": 0, "billed_centi": 0, "raw_hours": Decimal("0.00"),
        "billed_hours": Decimal("0.00"), "entry_ids": [], "entry_count": 0, "rounding": None,
        "project_id": project_id, "task_id": None, "user_id": None, "discount_percent": percent, "priced": True,
    }


def finish_invoices(ctx: InvoiceContext, L: pd.DataFrame, ids_per_line: list[list[int]], names: Any
                    ) -> tuple[pd.DataFrame, pd.DataFrame, set[int], np.ndarray]:
    """Complete every invoice. Returns (lines, invoices, dropped invoice codes, line_no per time line)."""
    cols = _time_line_rows(ctx, L, ids_per_line, names)
    n_inv = len(ctx.invoices)
    inv_arr = L["inv"].to_numpy()
    bounds = np.searchsorted(inv_arr, np.arange(n_inv + 1))
    time_line_no = np.zeros(len(L), dtype=np.int64)
    extra_rows: list[dict[str, Any]] = []
    invoice_rows: list[dict[str, Any]] = []
    dropped: set[int] = set()
    used_in_run: dict[tuple[str, str | None], Decimal] = {}
    run_keys: dict[str, list[str]] = {}
    for k, (ck, _) in zip(ctx.invoice_keys, ctx.invoices):
        run_keys.setdefault(ck, []).append(k)

    client_code = {k: i for i, k in enumerate(ctx.client_keys)}
    inv_class: list[tuple[str | None, str | None]] = [(None, None)] * n_inv
    item_id_of: dict[str, str | None] = {}
    extra_inv: list[int] = []
    facts = _InvoiceLineFacts(ctx, L, bounds)
    for inv in range(n_inv):
        ck, gk = ctx.invoices[inv]
        e = ctx.effective[ck]
        cur: str = e.currency  # type: ignore[assignment]
        key = ctx.invoice_keys[inv]
        c = client_code[ck]
        b0, b1 = int(bounds[inv]), int(bounds[inv + 1])
        holds = list(ctx.problems[inv])
        pre: list[dict[str, Any]] = []
        post: list[dict[str, Any]] = []
        default_item = e.qbo.item  # type: ignore[union-attr]

        # retainer fee first
        fee = Decimal(0)
        retainer = e.retainer if e.billing_type == "retainer" else None
        if retainer is not None and retainer.fee > 0:
            fee = retainer.fee
            carried = int(ctx.carry_c[c])
            text = f"Retainer {ctx.period}: {hours(retainer.included_centi)} h included"
            if carried:
                text += f" (+{hours(carried)} h carried over)"
            pre.append(_extra_line(ctx, inv, "retainer_fee", text, fee, item=default_item))
        time_no0 = len(pre) + 1
        time_line_no[b0:b1] = np.arange(time_no0, time_no0 + (b1 - b0))

        subtotal = fee + facts.time_amount(inv)

        # discount: the client's, or per project the deal's percent
        client_pct = e.discount.percent if e.discount else None
        client_amt = e.discount.amount if e.discount else None
        deal_pct = {pid: ctx.terms[pid].discount_percent for pid in ctx.inv_projects[inv]
                    if pid in ctx.terms and ctx.terms[pid].discount_percent is not None}
        share_of_project: dict[int, Decimal] = {}
        project_amount = facts.project_amounts[inv]
        discount = Decimal(0)
        discount_percent: Decimal | None = None
        rest = subtotal - sum((project_amount.get(pid, Decimal(0)) for pid in deal_pct), Decimal(0))
        applied = set(deal_pct.values()) | ({client_pct} if (rest != 0 or client_pct is not None) and client_amt is None else set())
        if client_amt is None and len(applied) == 1 and None not in applied:
            # one percent for every line: a single percent-based discount on the subtotal
            discount_percent = next(iter(applied))
            discount = _q(subtotal * discount_percent / 100, cur)  # type: ignore[operator]
            for pid in deal_pct:
                share_of_project[pid] = _q(project_amount.get(pid, Decimal(0)) * discount_percent / 100, cur)  # type: ignore[operator]
        else:
            for pid, pct in sorted(deal_pct.items()):
                share_of_project[pid] = _q(project_amount.get(pid, Decimal(0)) * pct / 100, cur)  # type: ignore[operator]
                discount += share_of_project[pid]
            if client_pct is not None:
                discount += _q(rest * client_pct / 100, cur)
            elif client_amt is not None:
                discount += min(client_amt, rest)
        if client_pct is not None:  # the client's percent also discounts deal projects without their own
            for pid in project_amount:
                if pid not in deal_pct:
                    share_of_project[pid] = _q(project_amount[pid] * client_pct / 100, cur)
        after_discount = subtotal - discount

        # minimum
        minimum_fee = Decimal(0)
        if e.minimum is not None and Decimal(0) < after_discount < e.minimum:
            minimum_fee = e.minimum - after_discount
        total = after_discount + minimum_fee

        # caps: a deal's not-to-exceed per project (lifetime), then the client's cap
        cap_adjustment = Decimal(0)
        project_totals: dict[int, Decimal] = {}
        for pid in ctx.inv_projects[inv]:
            t = ctx.terms.get(pid)
            if t is None or not t.splits_lines:
                continue
            net = project_amount.get(pid, Decimal(0)) - share_of_project.get(pid, Decimal(0))
            if t.not_to_exceed is not None:
                before = ctx.history.posted_project_total(ck, pid, run_keys[ck])
                remaining = max(t.not_to_exceed - before, Decimal(0))
                excess = max(net - remaining, Decimal(0))
                if excess > 0:
                    net -= excess
                    total -= excess
                    cap_adjustment -= excess
                    post.append(_extra_line(
                        ctx, inv, "cap",
                        f"Not-to-exceed adjustment: deal {t.nte_deal} caps project {pid} at {cur} {t.not_to_exceed}"
                        f" ({cur} {before} billed before)", -excess, item=default_item, project_id=pid))
            project_totals[pid] = net
        if e.cap is not None:
            cap_period = ctx.period if e.cap.period == "month" else None
            before = ctx.history.posted_total(ck, cap_period, run_keys[ck]) + used_in_run.get((ck, cap_period), Decimal(0))
            remaining = max(e.cap.amount - before, Decimal(0))
            excess = max(total - remaining, Decimal(0))
            if excess > 0:
                total -= excess
                cap_adjustment -= excess
                which = "month" if e.cap.period == "month" else "lifetime"
                post.append(_extra_line(
                    ctx, inv, "cap",
                    f"Not-to-exceed adjustment: {which} cap {cur} {e.cap.amount} ({cur} {before} billed before)",
                    -excess, item=default_item))
            used_in_run[(ck, cap_period)] = used_in_run.get((ck, cap_period), Decimal(0)) + total

        if discount > 0:
            # QBO applies a percent discount to the lines above it; with lines after it we send the amount
            percent_based = discount_percent is not None and minimum_fee == 0 and cap_adjustment == 0
            text = f"Discount {discount_percent}%" if discount_percent is not None else "Discount"
            if deal_pct:
                text += " (" + ", ".join(f"project {pid}: {p}% per deal {ctx.terms[pid].discount_deal}"
                                         for pid, p in sorted(deal_pct.items())) + ")"
            disc_line = _extra_line(ctx, inv, "discount", text, discount, item=None, detail_type="DiscountLineDetail",
                                    percent=discount_percent if percent_based else None)
            post.insert(0, disc_line)
        if minimum_fee > 0:
            post.insert(1 if discount > 0 else 0, _extra_line(
                ctx, inv, "minimum", f"Minimum fee (minimum {cur} {e.minimum})", minimum_fee, item=default_item))

        # holds: references, currencies, deal problems
        for pid in ctx.inv_projects[inv]:
            if pid in ctx.terms:
                holds += ctx.terms[pid].problems
        item_ids: dict[str, str | None] = {}
        used_items = sorted(set(facts.items[inv]) | ({default_item} if (pre or post) else set()))
        for name in used_items:
            ref, problem = ctx.catalog.resolve("Item", name, "item")  # type: ignore[arg-type]
            item_ids[name] = ref.id if ref else None  # type: ignore[index]
            if problem:
                holds.append(problem)
        class_name = e.qbo.class_  # type: ignore[union-attr]
        class_id = None
        if class_name:
            ref, problem = ctx.catalog.resolve("Class", class_name, "class")
            class_id = ref.id if ref else None
            if problem:
                holds.append(problem)
        terms_name = e.qbo.terms  # type: ignore[union-attr]
        terms_id = None
        if terms_name:
            ref, problem = ctx.catalog.resolve("Term", terms_name, "term")
            terms_id = ref.id if ref else None
            if problem:
                holds.append(problem)
        customer = ctx.catalog.find("Customer", e.qbo_customer)
        customer_currency = None
        if customer is not None:
            customer_currency = customer.currency or ctx.rules.firm.home_currency
            if customer_currency != cur:
                holds.append(f"QuickBooks customer {e.qbo_customer!r} is in {customer_currency}, the rules say {cur}")

        # amounts QuickBooks cannot store, and a total far beyond the client's history
        holds += guards.amount_limit_problems(facts.largest_time_amount(inv) + [r["amount"] for r in pre + post],
                                              total, cur)
        jump = e.guards.total_jump if e.guards else None  # type: ignore[union-attr]
        if jump is not None and jump.enabled and total > 0:
            posted = [p.total for p in ctx.history.posted_invoices
                      if p.client_key == ck and p.invoice_key not in run_keys[ck]]
            problem = guards.total_jump_problem(total, posted, factor=jump.factor, min_history=jump.min_history,
                                                currency=cur, rule_path=f"clients.{ck}.guards.total_jump")
            if problem:
                holds.append(problem)

        if total == 0 and fee == 0 and not holds:
            dropped.add(inv)
            continue

        # line numbers, references
        inv_class[inv] = (class_name, class_id)
        item_id_of.update(item_ids)
        for n_, row in enumerate(pre, start=1):
            row["line_no"] = n_
        for n_, row in enumerate(post, start=time_no0 + (b1 - b0)):
            row["line_no"] = n_
        for row in pre + post:
            if row["detail_type"] == "SalesItemLineDetail":
                row["item_id"] = item_ids.get(row["item_name"])
                row["class_name"], row["class_id"] = class_name, class_id
        extra_rows += pre + post
        extra_inv += [inv] * (len(pre) + len(post))

        pos = sorted({ctx.terms[pid].po_number for pid in ctx.inv_projects[inv]
                      if pid in ctx.terms and ctx.terms[pid].po_number})
        memo = _memo(e.invoice.memo, pos, ck, e.qbo_customer, ctx)  # type: ignore[union-attr]
        raw = int(facts.raw[inv])
        billed = int(facts.billed[inv])
        used_inc = int(ctx.included_used_c[c]) if retainer is not None else 0
        carry_forward = Decimal("0.00")
        if retainer is not None and retainer.rollover:
            from_this_month = max(used_inc - int(ctx.carry_c[c]), 0)
            carry_forward = hours(max(retainer.included_centi - from_this_month, 0))
        invoice_rows.append({
            "invoice_key": key, "client_key": ck, "period": ctx.period, "group_key": gk,
            "generation": ctx.generations[inv], "currency": cur, "subtotal": subtotal, "discount": discount,
            "discount_percent": discount_percent, "minimum_fee": minimum_fee, "cap_adjustment": cap_adjustment,
            "write_down": -cap_adjustment, "total": total, "status": "held" if holds else "ready",
            "hold_reasons": list(dict.fromkeys(holds)), "doc_number": keymod.doc_number(key, ctx.period),
            "request_id": keymod.request_id(key), "customer_name": e.qbo_customer,
            "customer_id": customer.id if customer else None, "customer_currency": customer_currency,
            "memo": memo, "po_numbers": pos, "terms_name": terms_name, "terms_id": terms_id,
            "class_name": class_name, "class_id": class_id, "txn_date": ctx.end, "service_start": ctx.start,
            "service_end": ctx.end, "raw_hours": hours(raw), "billed_hours": hours(billed),
            "entry_count": int(facts.entries[inv]), "line_count": len(pre) + (b1 - b0) + len(post),
            "retainer_included_hours": hours(int(ctx.available_c[c])) if retainer is not None else None,
            "retainer_used_hours": hours(used_inc) if retainer is not None else None,
            "retainer_carry_forward_hours": carry_forward if retainer is not None else None,
            # {Harvest project id: amount billed here}, for deal not-to-exceed caps (the ledger keeps it)
            "project_totals": dict(sorted(project_totals.items())),
        })

    if len(L):
        cls = np.array(inv_class + [(None, None)], dtype=object)[inv_arr]
        cols["class_name"] = cls[:, 0]
        cols["class_id"] = cls[:, 1]
        item_id_arr = np.array([item_id_of.get(nm) for nm in ctx.item_names] + [None], dtype=object)
        cols["item_id"] = item_id_arr[L["item"].to_numpy()]
        cols["line_no"] = time_line_no
    lines = _lines_frame(cols, len(L), inv_arr, time_line_no, extra_rows, np.array(extra_inv, dtype=np.int64), dropped)
    invoices = pd.DataFrame(invoice_rows, columns=INVOICE_COLUMNS, dtype=object)
    for c_ in ("generation", "entry_count", "line_count"):
        invoices[c_] = invoices[c_].astype(np.int64)
    return lines, invoices, dropped, time_line_no


class _InvoiceLineFacts:
    """Sums and sets over each invoice's time lines, from the integer line columns in one pass
    (the time lines are in invoice order: invoice `i` has lines ``bounds[i]:bounds[i + 1]``).
    Amounts become Decimals here, per invoice, exactly as summing the lines' Decimals would."""

    def __init__(self, ctx: InvoiceContext, L: pd.DataFrame, bounds: np.ndarray) -> None:
        n_inv = len(ctx.invoices)
        self._digits = [money.minor_units(ctx.effective[ck].currency) for ck, _ in ctx.invoices]  # type: ignore[arg-type]
        self._n = np.diff(bounds)
        ints = {c: (L[c].to_numpy().astype(np.int64) if len(L) else np.zeros(0, dtype=np.int64))
                for c in ("inv", "amount", "raw", "billed", "n_entries", "ld_project", "item")}

        def per_invoice(values: np.ndarray) -> np.ndarray:
            # int64 prefix sums: differences are exact even if a prefix wraps (two's complement)
            with np.errstate(over="ignore"):
                cs = np.concatenate([np.zeros(1, dtype=np.int64), np.cumsum(values, dtype=np.int64)])
                return cs[bounds[1:]] - cs[bounds[:-1]]

        self.amount = per_invoice(ints["amount"])
        self.raw = per_invoice(ints["raw"])
        self.billed = per_invoice(ints["billed"])
        self.entries = per_invoice(ints["n_entries"])
        nonempty = np.flatnonzero(self._n > 0)
        self.largest = np.zeros(n_inv, dtype=np.int64)
        if len(nonempty):
            self.largest[nonempty] = np.maximum.reduceat(ints["amount"], bounds[nonempty])
        # {project id: amount} over the lines that show their project, per invoice
        self.project_amounts: list[dict[int, Decimal]] = [{} for _ in range(n_inv)]
        shown = ints["ld_project"] >= 0
        if shown.any():
            pair = ints["inv"][shown] * (2**36) + ints["ld_project"][shown]
            uniq, which = np.unique(pair, return_inverse=True)
            sums = np.zeros(len(uniq), dtype=np.int64)
            np.add.at(sums, which, ints["amount"][shown])
            for p, total in zip(uniq.tolist(), sums.tolist()):
                i, pid = divmod(p, 2**36)
                self.project_amounts[i][pid] = _dec_minor(total, self._digits[i])
        # the item names on each invoice's time lines
        self.items: list[list[str]] = [[] for _ in range(n_inv)]
        if len(L):
            pair = np.unique(ints["inv"] * (2**32) + ints["item"])
            for p in pair.tolist():
                i, item = divmod(p, 2**32)
                self.items[i].append(ctx.item_names[item])

    def time_amount(self, inv: int) -> Decimal:
        """The sum of the invoice's time line amounts (Decimal(0) without time lines)."""
        if self._n[inv] == 0:
            return Decimal(0)
        return _dec_minor(int(self.amount[inv]), self._digits[inv])

    def largest_time_amount(self, inv: int) -> list[Decimal]:
        """[the largest time line amount] (time amounts are never negative), or [] without time lines."""
        if self._n[inv] == 0:
            return []
        return [_dec_minor(int(self.largest[inv]), self._digits[inv])]


_TYPED_LINE_COLUMNS = {"line_no": np.int64, "raw_centi": np.int64, "billed_centi": np.int64, "entry_count": np.int64,
                       "priced": bool}
_NULLABLE_ID_COLUMNS = ("project_id", "task_id", "user_id")


def _lines_frame(cols: dict[str, Any], n_time: int, inv_arr: np.ndarray, time_line_no: np.ndarray,
                 extra_rows: list[dict[str, Any]], extra_inv: np.ndarray, dropped: set[int]) -> pd.DataFrame:
    """Time lines (columns) and the other lines (rows) as one frame in invoice, then line order,
    without the lines of dropped invoices."""
    n_extra = len(extra_rows)
    line_inv = np.concatenate([inv_arr.astype(np.int64), extra_inv])
    line_no = np.concatenate([time_line_no, np.array([r["line_no"] for r in extra_rows], dtype=np.int64)])
    keep = ~np.isin(line_inv, np.array(sorted(dropped), dtype=np.int64)) if dropped else np.ones(len(line_inv), bool)
    kept = np.flatnonzero(keep)
    order = kept[np.lexsort((line_no[kept], line_inv[kept]))]
    data: dict[str, Any] = {}
    for c in LINE_COLUMNS:
        values = np.empty(n_time + n_extra, dtype=object)
        if n_time:
            col = cols[c]
            values[:n_time] = col if isinstance(col, np.ndarray) else np.fromiter(col, dtype=object, count=n_time)
        if n_extra:
            values[n_time:] = np.fromiter((r[c] for r in extra_rows), dtype=object, count=n_extra)
        values = values[order]
        if c in _TYPED_LINE_COLUMNS:
            data[c] = values.astype(_TYPED_LINE_COLUMNS[c])
        elif c in _NULLABLE_ID_COLUMNS:
            missing = np.array([v is None for v in values.tolist()], dtype=bool)
            ids = np.where(missing, 0, values).astype(np.int64)
            data[c] = pd.arrays.IntegerArray(ids, missing)
        else:
            data[c] = pd.Series(values, dtype=object, copy=False)
    return pd.DataFrame(data, columns=LINE_COLUMNS)


def _memo(template: str | None, pos: list[str], ck: str, customer: str, ctx: InvoiceContext) -> str | None:
    if not template:
        return None
    values = {"po_number": ", ".join(pos), "client_key": ck, "customer": customer, "period": ctx.period,
              "period_start": ctx.start.isoformat(), "period_end": ctx.end.isoformat()}
    if "{po_number}" in template and not pos:
        return None
    return template.format(**values)


__all__ = ["INVOICE_COLUMNS", "LINE_COLUMNS", "InvoiceContext", "finish_invoices"]
