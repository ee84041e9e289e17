"""Time lines: entries (or their retainer parts) grouped by line detail and rate, vectorised.

Input is a frame of *parts*, one per entry (two for the retainer boundary entry), with int
columns only. A line's Qty is its billed hours: the sum of per-entry rounded hours under
`scope: entry`, the line's raw hours rounded once under `scope: line`. Amount = Qty x rate,
half up to the currency's minor unit, in integer arithmetic.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from sync_pipelines.billing.rates import RATE_SCALE
from sync_pipelines.billing.rounding import round_minutes, to_minutes

KIND_INCLUDED, KIND_OVERAGE, KIND_TIME = 1, 2, 3
KIND_NAMES = {KIND_INCLUDED: "included", KIND_OVERAGE: "overage", KIND_TIME: "time"}

LINE_KEYS = ["inv", "kind", "item", "ld_project", "ld_task", "ld_user", "ld_entry", "rate"]
SORT_KEYS = ["inv", "kind", "s_project", "s_task", "s_user", "s_day", "ld_entry", "rate", "item"]


# 1e17 millionths = 1e11 currency units: past QuickBooks' 9,999,999,999.99 by 10x.
SATURATED_PRODUCT = 10**17


def amount_minor(billed_centi: np.ndarray, rate: np.ndarray, minor_digits: np.ndarray) -> np.ndarray:
    """Qty (centihours) x rate (1e-4 fixed point), half up to 10^-minor_digits, as int64.

    The product is in 1e-6 units; values are non-negative, so half up is floor(x + d/2).
    A product beyond ``SATURATED_PRODUCT`` (10x the largest amount QuickBooks accepts) is
    computed exactly and then saturated there: such a line can never be invoiced (the guard holds
    its invoice, billing/guards.py), and int64 sums of many of them still cannot overflow.
    """
    billed = billed_centi.astype(np.int64)
    r = np.where(rate >= 0, rate, 0).astype(np.int64)
    if len(billed) and int(billed.max(initial=0)) * int(r.max(initial=0)) >= SATURATED_PRODUCT:
        exact = billed.astype(object) * r.astype(object)
        product = np.array([min(int(p), SATURATED_PRODUCT) for p in exact], dtype=np.int64)
    else:
        product = billed * r  # units of 1e-6
    scale = 2 + len(str(RATE_SCALE)) - 1  # 6 decimals
    div = (10 ** (scale - minor_digits.astype(np.int64))).astype(np.int64)
    return (product + div // 2) // div


def group_ids(keys: list[np.ndarray]) -> np.ndarray:
    """Dense group id per row for the combination of int64 key columns.

    Each column is made dense (0..k-1; small non-negative ranges as they are, others through a
    hash factorisation), then columns are packed into one int64 by mixed radix while the radix
    product fits, re-densified when it would not.
    """
    if not keys:
        return np.zeros(0, dtype=np.int64)
    gid = np.zeros(len(keys[0]), dtype=np.int64)
    size = 1
    for k in keys:
        lo, hi = (int(k.min()), int(k.max())) if len(k) else (0, 0)
        if hi - lo < 1 << 16:
            codes, card = k - lo, hi - lo + 1
        else:
            codes, uniques = pd.factorize(k)
            card = len(uniques)
        if size * card >= 1 << 62:
            gid, uniq = pd.factorize(gid)
            size = len(uniq)
        gid = gid * card + codes
        size *= card
    return pd.factorize(gid)[0].astype(np.int64)


def _by_line_then_entry(gid: np.ndarray, eid: np.ndarray) -> np.ndarray:
    """Part positions by line id, entry id ascending within a line.

    The parts usually come in entry order within each line already (the engine passes each kind
    of part in entry order), and then one stable sort on the line id is enough: checked, else
    the two-key sort."""
    order = np.argsort(gid, kind="stable")
    g, e = gid[order], eid[order]
    if len(order) < 2 or bool(np.all((e[1:] > e[:-1]) | (g[1:] != g[:-1]))):
        return order
    return np.lexsort((eid, gid))


def aggregate(parts: dict[str, np.ndarray], scope_line: np.ndarray, inc: np.ndarray, mode: np.ndarray,
              minor_digits: np.ndarray) -> tuple[pd.DataFrame, np.ndarray, list[list[int]]]:
    """Group parts (a dict of equal-length int64 arrays) into lines.

    `scope_line`, `inc`, `mode`, `minor_digits` are per client code. Returns (lines, line id per
    part, entry ids per line) with lines sorted into invoice order (line ids are positions).
    """
    n_parts = len(parts["inv"])
    if n_parts == 0:
        empty = pd.DataFrame({c: np.zeros(0, dtype=np.int64) for c in
                              LINE_KEYS + ["client", "raw", "billed", "amount", "rule", "rule_multi", "day_min",
                                           "day_max", "first", "n_entries", "unpriced"]})
        empty.attrs["multi_rules"] = {}
        return empty, np.zeros(0, dtype=np.int64), []
    gid = group_ids([parts[k] for k in LINE_KEYS])
    n_lines = int(gid.max()) + 1
    eid = parts["entry_id"]
    order = _by_line_then_entry(gid, eid)
    g_sorted = gid[order]
    starts = np.searchsorted(g_sorted, np.arange(n_lines))
    first = order[starts]

    def total(values: np.ndarray) -> np.ndarray:
        return np.add.reduceat(values.astype(np.int64)[order], starts)

    lines = pd.DataFrame({k: parts[k][first] for k in LINE_KEYS + ["client", "s_project", "s_task", "s_user", "s_day"]})
    lines["first"] = first
    raw = total(parts["raw"])
    lines["raw"] = raw
    entry_billed = total(parts["billed"])
    day = parts["day"][order]
    lines["day_min"] = np.minimum.reduceat(day, starts)
    lines["day_max"] = np.maximum.reduceat(day, starts)
    lines["n_entries"] = np.diff(np.append(starts, n_parts))

    client = lines["client"].to_numpy()
    line_minutes = total(to_minutes(parts["raw"]))
    line_inc = inc[client]
    line_rounded = np.where(line_inc > 0, round_minutes(line_minutes, line_inc, mode[client]), raw)
    billed = np.where(scope_line[client], line_rounded, entry_billed)
    lines["billed"] = billed
    rate = lines["rate"].to_numpy()
    lines["unpriced"] = rate < 0
    lines["amount"] = amount_minor(billed, rate, minor_digits[client])

    # the rate rule(s) behind each line: usually one; several rules with one rate share a line
    rule_sorted = parts["rule"][order]
    rmin = np.minimum.reduceat(rule_sorted, starts)
    rmax = np.maximum.reduceat(rule_sorted, starts)
    lines["rule"] = rmin
    lines["rule_multi"] = rmin != rmax
    multi: dict[int, list[int]] = {}
    for g in np.flatnonzero(rmin != rmax).tolist():
        end = starts[g + 1] if g + 1 < n_lines else n_parts
        multi[g] = sorted(set(rule_sorted[starts[g]:end].tolist()))

    # invoice order
    sort_order = np.lexsort(tuple(lines[k].to_numpy() for k in reversed(SORT_KEYS)))
    remap = np.empty(n_lines, dtype=np.int64)
    remap[sort_order] = np.arange(n_lines)
    lines = lines.iloc[sort_order].reset_index(drop=True)
    lines.attrs["multi_rules"] = {int(remap[g]): v for g, v in multi.items()}

    # entry ids per line (in invoice order), ascending: the blocks of `order` moved into invoice
    # order without sorting again, then one list per line sliced from one list
    sizes = np.diff(np.append(starts, n_parts))[sort_order]
    new_starts = np.concatenate([[0], np.cumsum(sizes)])
    pos = np.arange(n_parts) - np.repeat(new_starts[:-1] - starts[sort_order], sizes)
    all_ids = eid[order[pos]].tolist()
    bl = new_starts.tolist()
    ids_per_line = [all_ids[bl[i]:bl[i + 1]] for i in range(n_lines)]
    return lines, remap[gid], ids_per_line
