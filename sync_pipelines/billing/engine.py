"""`price_month`: entries + deals + catalog + history -> priced, explained invoice drafts.

The per-entry work (selection, rate resolution, rounding, retainer consumption, grouping into
lines) is vectorised over int64 columns; only per-line and per-invoice steps loop in Python.
Hours are centihours (int64), rates 1e-4 fixed point, amounts minor units until they become
Decimals in the output frames. No binary float touches any of them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal

import numpy as np
import pandas as pd

from sync_pipelines import money
from sync_pipelines.billing import keys as keymod
from sync_pipelines.billing.catalog import Catalog
from sync_pipelines.billing.company import QboCompany
from sync_pipelines.billing.company_fit import fit_to_company
from sync_pipelines.billing.deals import ProjectTerms, project_terms
from sync_pipelines.billing.gc_pause import collection_paused
from sync_pipelines.billing.grouping import group_key
from sync_pipelines.billing.history import BillingHistory
from sync_pipelines.billing.invoices import INVOICE_COLUMNS, LINE_COLUMNS, InvoiceContext, finish_invoices
from sync_pipelines.billing.line_items import price_line_items, without_deal_invoices
from sync_pipelines.billing.lines import KIND_INCLUDED, KIND_OVERAGE, KIND_TIME, aggregate
from sync_pipelines.billing.rates import EntryKeys, Rule, rate_fixed, resolve_rates
from sync_pipelines.billing.rounding import MODE_CODES, round_centi
from sync_pipelines.billing.rules import ClientRules, RulesFile
from sync_pipelines.billing.selection import EPOCH, base_reasons, day_numbers, period_bounds

ENTRY_COLUMNS = ["entry_id", "client_key", "status", "reason", "invoice_key", "line_no"]


@dataclass
class BillingResult:
    """Output of `price_month` (see docs/architecture.md "Billing engine").

    `entries`: the input columns of every entry of the run (the selected clients' entries, plus
    unmapped ones when no client filter is given), then `client_key` (None when unmapped),
    `status` ("billed" = on a line of a draft, which may be held; "excluded"), `reason` (None
    when billed), `invoice_key`, `line_no` (Int64; a retainer boundary entry split over two
    lines gives its first).

    `lines`: one row per QBO line, in invoice then line order: invoice_key, client_key,
    group_key, line_no (1..n per invoice), kind (retainer_fee | included | overage | time |
    discount | minimum | cap), detail_type (SalesItemLineDetail | DiscountLineDetail),
    description, item_name, item_id, class_name, class_id, service_date, qty, unit_price,
    amount (Decimals; a discount line's amount is positive and is subtracted, a cap line's is
    negative), currency, rate_rule, raw_centi, billed_centi, raw_hours, billed_hours,
    entry_ids (list[int]), entry_count, rounding, project_id / task_id / user_id (Int64, set
    when the line is split on them), discount_percent (percent-based discount line only),
    priced (False: no rate applied; the invoice is held).

    `invoices`: invoice_key, client_key, period, group_key, generation, currency, subtotal,
    discount, discount_percent, minimum_fee, cap_adjustment (<= 0), write_down (= -cap_adjustment),
    total, status ("ready" | "held"), hold_reasons (list[str]), doc_number, request_id,
    customer_name, customer_id (None: to be created), customer_currency, memo, po_numbers,
    terms_name, terms_id, class_name, class_id, txn_date, service_start, service_end, raw_hours,
    billed_hours, entry_count, line_count, retainer_included_hours, retainer_used_hours,
    retainer_carry_forward_hours (None unless retainer), project_totals ({project id: amount}
    for projects with deal terms).

    `extras["timings"]`: seconds per phase of the run. `extras["line_item_deals"]` (only when
    `line_items` is given and the rules have a `hubspot` section): one row per deal in the ready
    for billing stage, with line items, whose stage date is in the period: deal_id, dealname,
    company_id, stage_date, client_key, status (ready | held | unmapped | already_invoiced |
    not_issued), reason, invoice_key. Line-item invoices have lines of kind `line_item`.
    """

    period: str
    realm_id: str
    home_currency: str
    entries: pd.DataFrame
    lines: pd.DataFrame
    invoices: pd.DataFrame
    rules_source: str = "<rules>"
    extras: dict = field(default_factory=dict)
    # The QuickBooks company the drafts were fitted to (None: priced without reading it, the
    # payload then assumes a US company with every setting on; tests of pricing only).
    company: QboCompany | None = None

    def invoice(self, invoice_key: str) -> dict:
        rows = self.invoices[self.invoices["invoice_key"] == invoice_key]
        if len(rows) != 1:
            raise KeyError(invoice_key)
        return rows.iloc[0].to_dict()

    def invoice_lines(self, invoice_key: str) -> pd.DataFrame:
        return self.lines[self.lines["invoice_key"] == invoice_key].sort_values("line_no")


def _codes(values: pd.Series, sort: bool = True) -> tuple[np.ndarray, pd.Index]:
    codes, uniques = pd.factorize(values, sort=sort, use_na_sentinel=True)
    return codes.astype(np.int64), pd.Index(uniques)


def _int_col(df: pd.DataFrame, name: str) -> np.ndarray:
    """An integer column as int64, missing values as -1; never through float64 (ids and
    centihours must stay exact): a float column is refused."""
    col = df[name]
    if pd.api.types.is_float_dtype(col.dtype):
        raise TypeError(f"column {name!r} is {col.dtype}: integers expected (no binary floats)")
    if col.dtype == object or isinstance(col.dtype, pd.api.extensions.ExtensionDtype):
        return pd.array(col.tolist(), dtype="Int64").fillna(-1).to_numpy(dtype=np.int64)
    return col.to_numpy().astype(np.int64)


def price_month(
    rules: RulesFile,
    period: str,
    entries: pd.DataFrame,
    deals: pd.DataFrame | None,
    catalog: pd.DataFrame | None,
    history: BillingHistory | None = None,
    realm_id: str = "",
    clients: list[str] | None = None,
    line_items: pd.DataFrame | None = None,
    company: QboCompany | None = None,
    today: date | None = None,
    group_override: str | None = None,
) -> BillingResult:
    """Price one month (DESIGN §5) for every rules client, or only `clients`.

    `today` (the run's date in the firm's timezone) excludes entries dated after it; None (pure
    tests of past months) skips that rule.

    `line_items` (the `deal_line_items` frame): with the rules' `hubspot.ready_for_billing_stage`
    set, each qualifying deal of `deals` is also invoiced from its line items (one invoice per
    deal, group key ``deal-<id>``; see billing/line_items.py). None: no line-item invoices.

    `group_override`: every time invoice gets this group key instead of the rules' `group_by`
    (a triggered deal bills its project's time on one invoice, ``deal-<id>``).
    """
    with collection_paused():
        return _price_month(rules, period, entries, deals, catalog, history, realm_id, clients, line_items,
                            company, today, group_override)


def _price_month(
    rules: RulesFile,
    period: str,
    entries: pd.DataFrame,
    deals: pd.DataFrame | None,
    catalog: pd.DataFrame | None,
    history: BillingHistory | None,
    realm_id: str,
    clients: list[str] | None,
    line_items: pd.DataFrame | None,
    company: QboCompany | None,
    today: date | None,
    group_override: str | None,
) -> BillingResult:
    history = history or BillingHistory()
    deal_history = history
    if line_items is not None and rules.hubspot is not None:
        history = without_deal_invoices(history)
    start, end = period_bounds(period)
    if clients is None:
        client_keys = sorted(rules.clients)
    else:
        unknown = [c for c in clients if c not in rules.clients]
        if unknown:
            raise KeyError(f"no billing rules for client(s) {', '.join(unknown)}")
        client_keys = sorted(set(clients))
    eff: dict[str, ClientRules] = {k: rules.effective(k) for k in client_keys}
    n_clients = len(client_keys)

    clock = _Clock()
    # ---- which rows belong to this run -----------------------------------------------------
    harvest_ids = _int_col(entries, "client_id") if len(entries) else np.zeros(0, dtype=np.int64)
    sel_index = pd.Index([eff[k].harvest_client_id for k in client_keys])
    code_all = sel_index.get_indexer(harvest_ids).astype(np.int64) if n_clients else np.full(len(harvest_ids), -1, np.int64)
    in_rules = pd.Index([c.harvest_client_id for c in rules.clients.values()]).get_indexer(harvest_ids) >= 0 \
        if rules.clients else np.zeros(len(harvest_ids), dtype=bool)
    keep = (code_all >= 0) | (~in_rules if clients is None else np.zeros(len(harvest_ids), dtype=bool))
    E = entries if keep.all() else entries[keep]
    E = E.reset_index(drop=True)
    code = code_all[keep]
    n = len(E)

    days = day_numbers(E["spent_date"]) if n else np.zeros(0, dtype=np.int64)
    if n:
        reasons, candidate = base_reasons(E, code, days, period, today)
    else:
        reasons, candidate = np.zeros(0, dtype=object), np.zeros(0, dtype=bool)

    clock.mark("selection")
    # ---- deals, groups and invoice keys ----------------------------------------------------
    terms: dict[int, ProjectTerms] = project_terms(deals, rules.firm.timezone)
    project_id = _int_col(E, "project_id") if n else np.zeros(0, dtype=np.int64)
    entry_id = _int_col(E, "entry_id") if n else np.zeros(0, dtype=np.int64)

    pair = code * (2**36) + np.where(project_id >= 0, project_id, 2**35)
    pair_codes, pair_uniques = pd.factorize(np.where(candidate, pair, -1))
    # per (client, project): group key -> invoice code
    invoices: list[tuple[str, str]] = []
    inv_of_group: dict[tuple[str, str], int] = {}
    pair_inv = np.full(len(pair_uniques), -1, dtype=np.int64)
    for i, pv in enumerate(pair_uniques):
        if pv < 0:
            continue
        c, pid = divmod(int(pv), 2**36)
        ck = client_keys[c]
        po = terms[pid].po_number if pid in terms else None
        gk = group_override or group_key(eff[ck].invoice.group_by, pid, po)  # type: ignore[union-attr]
        inv_of_group.setdefault((ck, gk), len(invoices))
        if inv_of_group[(ck, gk)] == len(invoices):
            invoices.append((ck, gk))
        pair_inv[i] = inv_of_group[(ck, gk)]
    # a retainer client is invoiced every month, entries or not
    for ck in client_keys:
        if eff[ck].billing_type == "retainer" and (ck, "all") not in inv_of_group:
            inv_of_group[(ck, "all")] = len(invoices)
            invoices.append((ck, "all"))
    # stable invoice order: client key, then group key
    order = sorted(range(len(invoices)), key=lambda i: invoices[i])
    rank = np.empty(len(invoices), dtype=np.int64)
    rank[order] = np.arange(len(invoices))
    invoices = [invoices[i] for i in order]
    pair_inv = np.where(pair_inv >= 0, rank[np.maximum(pair_inv, 0)] if len(invoices) else pair_inv, -1)
    inv = np.where(pair_codes >= 0, pair_inv[np.maximum(pair_codes, 0)] if len(pair_inv) else -1, -1).astype(np.int64)

    generations = [history.generation(ck, period, gk) for ck, gk in invoices]
    inv_keys = [keymod.invoice_key(realm_id, ck, period, gk, g) for (ck, gk), g in zip(invoices, generations)]
    inv_keys_arr = np.array(inv_keys + [None], dtype=object)

    # ---- entries already on a posted invoice of another key --------------------------------
    if history.posted_entries and n:
        posted = pd.Series(history.posted_entries)
        pos = pd.Index(posted.index.astype(np.int64)).get_indexer(entry_id)
        hit = candidate & (pos >= 0)
        if hit.any():
            idx = np.flatnonzero(hit)
            posted_keys = posted.to_numpy()[pos[idx]]
            own = inv_keys_arr[inv[idx]]
            other = posted_keys != own
            reasons[idx[other]] = "already billed on " + posted_keys[other].astype(object)
            candidate[idx[other]] = False
            inv[idx[other]] = -1

    clock.mark("groups_keys")
    # ---- the billable entries --------------------------------------------------------------
    S_idx = np.flatnonzero(candidate)
    S = _Billable(E, S_idx)
    s_code = code[S_idx]
    s_day = days[S_idx]
    s_inv = inv[S_idx]
    s_entry = entry_id[S_idx]
    s_project = project_id[S_idx]
    s_user = S.ints("user_id")
    s_task = S.ints("task_id")
    s_hours = S.ints("hours_centi")

    user_codes, user_names = S.codes("user_name")
    task_codes, task_names = S.codes("task_name")
    pcode_codes, project_codes = S.codes("project_code")
    pname_codes, _ = S.codes("project_name")

    # rates
    keys = EntryKeys(group=s_code, day=s_day, project_id=s_project, project_code=pcode_codes, user_id=s_user,
                     user_name=user_codes, task_id=s_task, task_name=task_codes, project_codes=project_codes,
                     user_names=user_names, task_names=task_names)
    clock.mark("prep")
    rate, rule, ambiguous, rule_list = resolve_rates(client_keys, eff, terms, keys)

    # rounding per client
    inc_c = np.array([eff[k].rounding.increment_centi for k in client_keys] or [0], dtype=np.int64)  # type: ignore[union-attr]
    mode_c = np.array([MODE_CODES[eff[k].rounding.mode] for k in client_keys] or [0], dtype=np.int64)  # type: ignore[union-attr]
    line_scope_c = np.array([eff[k].rounding.scope == "line" for k in client_keys] or [False], dtype=bool)  # type: ignore[union-attr]
    minor_c = np.array([money.minor_units(eff[k].currency) for k in client_keys] or [2], dtype=np.int64)  # type: ignore[arg-type]
    entry_scope = ~line_scope_c[s_code]
    billed = np.where(entry_scope, round_centi(s_hours, inc_c[s_code], mode_c[s_code]), s_hours)

    # line detail dimensions per client
    detail_c = [eff[k].invoice.line_detail for k in client_keys]  # type: ignore[union-attr]
    det_project = np.array([d == "project" for d in detail_c] or [False])[s_code]
    det_task = np.array([d in ("task", "task_person") for d in detail_c] or [False])[s_code]
    det_user = np.array([d in ("person", "task_person") for d in detail_c] or [False])[s_code]
    det_entry = np.array([d == "entry" for d in detail_c] or [False])[s_code]
    split_projects = np.array(sorted(pid for pid, t in terms.items() if t.splits_lines), dtype=np.int64)
    forced = np.isin(s_project, split_projects)
    show_project = det_project | forced

    # items: items_by_task by task name, else the client's item
    item_names: list[str] = []
    item_code_of: dict[str, int] = {}

    def item_code(name: str) -> int:
        if name not in item_code_of:
            item_code_of[name] = len(item_names)
            item_names.append(name)
        return item_code_of[name]

    default_item = np.array([item_code(eff[k].qbo.item) for k in client_keys] or [0], dtype=np.int64)  # type: ignore[union-attr,arg-type]
    s_item = default_item[s_code] if len(S) else np.zeros(0, dtype=np.int64)
    by_task_keys, by_task_items = [], []
    task_pos = dict(zip(task_names, range(len(task_names))))
    for c, k in enumerate(client_keys):
        for task_name, item in (eff[k].qbo.items_by_task or {}).items():  # type: ignore[union-attr]
            pos = task_pos.get(task_name, -1)
            if pos >= 0:
                by_task_keys.append(c * (2**32) + int(pos))
                by_task_items.append(item_code(item))
    if by_task_keys and len(S):
        hit = pd.Index(by_task_keys).get_indexer(s_code * (2**32) + task_codes)
        s_item = np.where(hit >= 0, np.array(by_task_items, dtype=np.int64)[np.maximum(hit, 0)], s_item)

    clock.mark("rates_items")
    # ---- retainer: fee, included hours in (spent_date, entry id) order, boundary split -------
    retainer_c = np.array([eff[k].billing_type == "retainer" for k in client_keys] or [False])
    available_c = np.zeros(max(n_clients, 1), dtype=np.int64)
    carry_c = np.zeros(max(n_clients, 1), dtype=np.int64)
    overage_rate_c = np.full(max(n_clients, 1), -1, dtype=np.int64)
    overage_rule: dict[int, int] = {}
    included_rule: dict[int, int] = {}
    for c, k in enumerate(client_keys):
        r = eff[k].retainer
        if eff[k].billing_type != "retainer" or r is None:
            continue
        carry = Decimal(history.carryover_hours.get(k, 0)) if r.rollover else Decimal(0)
        carry_c[c] = int((carry * 100).to_integral_value())
        available_c[c] = r.included_centi + carry_c[c]
        rule_list.append(Rule(f"clients.{k}.retainer.included_hours", Decimal(0)))
        included_rule[c] = len(rule_list) - 1
        if r.overage_rate is not None:
            rule_list.append(Rule(f"clients.{k}.retainer.overage_rate", r.overage_rate))
            overage_rule[c] = len(rule_list) - 1
            overage_rate_c[c] = rate_fixed(r.overage_rate)

    is_ret = retainer_c[s_code] if len(S) else np.zeros(0, dtype=bool)
    kind = np.full(len(S), KIND_TIME, dtype=np.int64)
    part_src = np.arange(len(S), dtype=np.int64)
    raw_p, billed_p = s_hours.copy(), billed.copy()
    included_used_c = np.zeros(max(n_clients, 1), dtype=np.int64)
    if is_ret.any():
        ridx = np.flatnonzero(is_ret)
        o = np.lexsort((s_entry[ridx], s_day[ridx], s_code[ridx]))
        ridx = ridx[o]
        own = billed[ridx]
        cum = pd.Series(own).groupby(s_code[ridx]).cumsum().to_numpy()
        before = cum - own
        avail = available_c[s_code[ridx]]
        inc_part = np.clip(avail - before, 0, own)
        ov_part = own - inc_part
        zero_in = (own == 0) & (before < avail)
        to_inc = (inc_part > 0) | zero_in
        to_ov = (ov_part > 0) | ((own == 0) & ~zero_in)
        # raw hours follow the billed split; a part alone takes all of the entry's raw hours
        raw_e = s_hours[ridx]
        raw_inc = np.where(~to_ov, raw_e, np.where(to_inc, np.minimum(raw_e, inc_part), 0))
        raw_ov = raw_e - raw_inc
        np.add.at(included_used_c, s_code[ridx], inc_part)
        # non-retainer parts stay as they are; retainer entries become 1 or 2 parts
        keep_t = np.flatnonzero(~is_ret)
        # each kind of part in entry order, as the line grouping expects (billing/lines.py)
        ia, ib = np.flatnonzero(to_inc), np.flatnonzero(to_ov)
        ia = ia[np.argsort(s_entry[ridx[ia]], kind="stable")]
        ib = ib[np.argsort(s_entry[ridx[ib]], kind="stable")]
        a, b = ridx[ia], ridx[ib]
        part_src = np.concatenate([keep_t, a, b])
        kind = np.concatenate([np.full(len(keep_t), KIND_TIME), np.full(len(a), KIND_INCLUDED), np.full(len(b), KIND_OVERAGE)])
        raw_p = np.concatenate([s_hours[keep_t], raw_inc[ia], raw_ov[ib]])
        billed_p = np.concatenate([billed[keep_t], inc_part[ia], ov_part[ib]])

    p_code = s_code[part_src]
    p_rate = rate[part_src].copy()
    p_rule = rule[part_src].copy()
    if is_ret.any():
        inc_mask = kind == KIND_INCLUDED
        p_rate[inc_mask] = 0
        p_rule[inc_mask] = np.array([included_rule.get(int(c), -1) for c in range(max(n_clients, 1))])[p_code[inc_mask]]
        ov_mask = (kind == KIND_OVERAGE) & (overage_rate_c[p_code] >= 0)
        p_rate[ov_mask] = overage_rate_c[p_code[ov_mask]]
        p_rule[ov_mask] = np.array([overage_rule.get(int(c), -1) for c in range(max(n_clients, 1))])[p_code[ov_mask]]
    p_ambiguous = ambiguous[part_src] & (p_rate >= 0) & (kind != KIND_INCLUDED)
    if is_ret.any():
        p_ambiguous &= ~((kind == KIND_OVERAGE) & (overage_rate_c[p_code] >= 0))

    sp = part_src
    clock.mark("retainer")
    parts = {
        "inv": s_inv[sp], "client": p_code, "kind": kind, "item": s_item[sp],
        "ld_project": np.where(show_project[sp], s_project[sp], -1),
        "ld_task": np.where(det_task[sp], s_task[sp], -1),
        "ld_user": np.where(det_user[sp], s_user[sp], -1),
        "ld_entry": np.where(det_entry[sp], s_entry[sp], -1),
        "rate": p_rate, "rule": p_rule, "raw": raw_p, "billed": billed_p,
        "s_project": np.where(show_project[sp], pname_codes[sp], -1),
        "s_task": np.where(det_task[sp], task_codes[sp], -1),
        "s_user": np.where(det_user[sp], user_codes[sp], -1),
        "s_day": np.where(det_entry[sp], s_day[sp], -1),
        "day": s_day[sp], "entry_id": s_entry[sp], "src": sp,
    }
    lines, part_line, ids_per_line = aggregate(parts, line_scope_c, inc_c, mode_c, minor_c)
    lines.attrs["src"] = parts["src"]

    clock.mark("lines")
    # ---- per-invoice facts gathered vectorised ----------------------------------------------
    n_inv = len(invoices)
    problems: list[list[str]] = [[] for _ in range(n_inv)]
    unpriced = p_rate < 0
    if unpriced.any():
        # listed by entry id, so the reason reads the same whatever order the entries came in
        bad = pd.DataFrame({"inv": s_inv[sp][unpriced], "entry": s_entry[sp][unpriced], "src": sp[unpriced]}
                           ).drop_duplicates().sort_values(["inv", "entry", "src"])
        for i, grp in bad.groupby("inv"):
            srcs = grp["src"].to_numpy()
            described = [_entry_ref(S, int(s)) for s in srcs[:5]]
            more = f" and {len(srcs) - 5} more" if len(srcs) > 5 else ""
            problems[int(i)].append(f"no rate applies to entry {'; entry '.join(described)}{more}")
    if p_ambiguous.any():
        bad = np.unique(np.stack([s_inv[sp][p_ambiguous], s_entry[sp][p_ambiguous]], axis=1), axis=0)
        for i in np.unique(bad[:, 0]):
            ids = bad[bad[:, 0] == i, 1]
            problems[int(i)].append(f"two rate rows tie for entries {', '.join(map(str, ids[:5]))}" + (" ..." if len(ids) > 5 else ""))
    if "client_currency" in S and len(S):
        cur_codes, cur_names = S.codes("client_currency")
        want = cur_names.get_indexer(pd.Index([eff[k].currency for k in client_keys] or [""], dtype=object))
        mism = (cur_codes >= 0) & (cur_codes != want[s_code])
        if mism.any():
            cur = cur_names.to_numpy(dtype=object)[cur_codes[mism]]
            bad = pd.DataFrame({"inv": s_inv[mism], "cur": cur.astype(str)}).drop_duplicates().sort_values(["inv", "cur"])
            for i, grp in bad.groupby("inv"):
                ck = invoices[int(i)][0]
                problems[int(i)].append(
                    f"Harvest client currency {', '.join(grp['cur'])} disagrees with the rules currency {eff[ck].currency}")
    # projects on each invoice (deal problems, project caps)
    inv_projects: list[list[int]] = [[] for _ in range(n_inv)]
    if len(S):
        pairs = np.unique(s_inv * (2**36) + s_project)
        for i, pid in zip((pairs // (2**36)).tolist(), (pairs % (2**36)).tolist()):
            inv_projects[i].append(pid)

    ctx = InvoiceContext(
        rules=rules, period=period, start=start, end=end, realm_id=realm_id, history=history,
        catalog=Catalog(catalog), client_keys=client_keys, effective=eff, invoices=invoices,
        generations=generations, invoice_keys=inv_keys, terms=terms, rule_list=rule_list, item_names=item_names,
        problems=problems, inv_projects=inv_projects, carry_c=carry_c, available_c=available_c,
        included_used_c=included_used_c,
    )
    names = S
    clock.mark("invoice_prep")
    lines_out, invoices_out, dropped, line_numbers = finish_invoices(ctx, lines, ids_per_line, names)

    clock.mark("invoices")
    # ---- the entries report -----------------------------------------------------------------
    status = np.array(["excluded", "billed"], dtype=object)[candidate.astype(np.int64)]  # two shared strings
    inv_key_col = np.full(n, None, dtype=object)
    line_no_col = pd.array(np.zeros(n, dtype=np.int64), dtype="Int64")
    line_no_col[:] = pd.NA
    if len(S):
        inv_key_col[S_idx] = inv_keys_arr[s_inv]
        part_line_no = line_numbers[part_line] if len(part_line) else np.zeros(0, dtype=np.int64)
        first_no = np.full(len(S), np.iinfo(np.int64).max, dtype=np.int64)
        np.minimum.at(first_no, sp, part_line_no)
        ln = pd.array(first_no, dtype="Int64")
        line_no_col[S_idx] = ln
        if dropped:
            dropped_mask = np.isin(s_inv, np.array(sorted(dropped), dtype=np.int64))
            didx = S_idx[dropped_mask]
            status[didx] = "excluded"
            reasons[didx] = "invoice " + inv_key_col[didx] + " not issued: its total is zero"
            inv_key_col[didx] = None
            line_no_col[didx] = pd.NA
    out = E.copy(deep=False)
    ck_col = np.array(client_keys + [None], dtype=object)[np.where(code >= 0, code, n_clients)] if n else np.zeros(0, object)
    out["client_key"] = pd.Series(ck_col, dtype=object, index=out.index)
    out["status"] = pd.Series(status, dtype=object, index=out.index)
    out["reason"] = pd.Series(reasons, dtype=object, index=out.index)
    out["invoice_key"] = pd.Series(inv_key_col, dtype=object, index=out.index)
    out["line_no"] = line_no_col

    clock.mark("report")
    extras: dict = {"timings": clock.laps}
    if line_items is not None and rules.hubspot is not None:
        li_lines, li_invoices, li_report = price_line_items(
            rules, period, start, end, deals, line_items, ctx.catalog, deal_history, realm_id, client_keys, eff,
            report_unmapped=clients is None, line_columns=LINE_COLUMNS, invoice_columns=INVOICE_COLUMNS)
        extras["line_item_deals"] = li_report
        if len(li_invoices):
            invoices_out = pd.concat([invoices_out, li_invoices], ignore_index=True) if len(invoices_out) else li_invoices
            invoices_out = invoices_out.assign(_c=invoices_out["client_key"], _g=invoices_out["group_key"]).sort_values(
                ["_c", "_g"], kind="stable").drop(columns=["_c", "_g"]).reset_index(drop=True)
            lines_out = pd.concat([lines_out, li_lines], ignore_index=True) if len(lines_out) else li_lines
            order = {k: i for i, k in enumerate(invoices_out["invoice_key"])}
            lines_out = lines_out.assign(_o=lines_out["invoice_key"].map(order)).sort_values(
                ["_o", "line_no"], kind="stable").drop(columns="_o").reset_index(drop=True)
        clock.mark("line_items")
    if company is not None:
        invoices_out, lines_out = fit_to_company(invoices_out, lines_out, rules, company, ctx.catalog)
        clock.mark("company")
    return BillingResult(period=period, realm_id=realm_id, home_currency=rules.firm.home_currency, entries=out,
                         lines=lines_out, invoices=invoices_out, rules_source=rules.source,
                         extras=extras, company=company)


class _Clock:
    """Wall time per phase (seconds), reported in `BillingResult.extras["timings"]`."""

    def __init__(self) -> None:
        self._t = time.perf_counter()
        self.laps: dict[str, float] = {}

    def mark(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = round(now - self._t, 4)
        self._t = now


def _entry_ref(S: "_Billable", i: int) -> str:
    code = S.get("project_code", i) or S.get("project_name", i)
    return (f"{int(S.values('entry_id')[i])} ({S.get('user_name', i)}, {S.get('task_name', i)}, "
            f"{S.values('spent_date')[i]}, project {code})")


def _missing(v: object) -> bool:
    return v is None or v is pd.NA or (isinstance(v, float) and v != v)


class _Billable:
    """Columns of the billable entries (positions `idx` of the run's frame), taken lazily as arrays."""

    def __init__(self, E: pd.DataFrame, idx: np.ndarray) -> None:
        self._E, self._idx = E, idx
        self._cache: dict[str, np.ndarray] = {}
        self._sorted_values: dict[str, np.ndarray] = {}
        self._codes: dict[str, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self._idx)

    def __contains__(self, col: str) -> bool:
        return col in self._E.columns

    def values(self, col: str) -> np.ndarray:
        if col not in self._cache:
            arr = self._E[col].to_numpy()
            self._cache[col] = arr if len(self._idx) == len(arr) and (self._idx == np.arange(len(arr))).all() else arr[self._idx]
        return self._cache[col]

    def ints(self, col: str) -> np.ndarray:
        if len(self._idx) == 0:
            return np.zeros(0, dtype=np.int64)
        return _int_col(self._E, col)[self._idx]

    def codes(self, col: str) -> tuple[np.ndarray, pd.Index]:
        """Sorted factorisation: codes are in lexicographic order of the values, -1 for missing.

        The whole column is factorised (fast on pandas' string dtype), then taken at `idx`.
        """
        codes, uniques = pd.factorize(self._E[col], use_na_sentinel=True)
        uniques = pd.Index(uniques, dtype=object)
        order = np.argsort(uniques.to_numpy(dtype=object).astype(str), kind="stable")
        rank = np.empty(len(order), dtype=np.int64)
        rank[order] = np.arange(len(order))
        codes = codes.astype(np.int64)
        sorted_codes = np.where(codes >= 0, rank[np.maximum(codes, 0)] if len(rank) else -1, -1)
        values = uniques.to_numpy(dtype=object)[order]
        self._sorted_values[col] = values
        self._codes[col] = sorted_codes[self._idx]
        return self._codes[col], pd.Index(values)

    def labels_at(self, col: str, positions: np.ndarray) -> np.ndarray:
        """`texts(col, positions)` for a column already factorised by `codes`."""
        return self.labels(col, self._codes[col][positions])

    def labels(self, col: str, codes: np.ndarray) -> np.ndarray:
        """Object array of the values behind sorted `codes` of `col` (from `codes`), None for -1."""
        values = np.append(self._sorted_values[col], None)
        return values[np.where(codes >= 0, codes, len(values) - 1)]

    def get(self, col: str, i: int):  # noqa: ANN201
        v = self.values(col)[i]
        return None if _missing(v) else v

    def texts(self, col: str, positions: np.ndarray) -> np.ndarray:
        """Object array of the column's text at `positions` (of the billable entries), None where missing."""
        if col in self._cache:
            out = self._cache[col][positions].astype(object)
        else:
            out = np.array(self._E[col].take(self._idx[positions]).to_numpy(dtype=object), dtype=object, copy=True)
        out[pd.isna(out)] = None
        return out

    def project_labels(self, positions: np.ndarray) -> np.ndarray:
        code = self.texts("project_code", positions)
        name = self.texts("project_name", positions)
        has = np.array([c is not None for c in code], dtype=bool)
        out = name.copy()
        out[has] = code[has] + " " + name[has].astype(str)
        return out


def day_to_date(day: int) -> date:
    return EPOCH + timedelta(days=int(day))
