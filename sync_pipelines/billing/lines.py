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


def amount_minor(billed_centi: np.ndarray, rate: np.ndarray, minor_digits: np.ndarray) -> np.ndarray:
    """Qty (centihours) x rate (1e-4 fixed point), half up to 10^-minor_digits, as int64.

    The product is in 1e-6 units; values are non-negative, so half up is floor(x + d/2).
    Overflow would need more than ~9e14 currency units on one line and is refused.
    """
    billed = billed_centi.astype(np.int64)
    r = np.where(rate >= 0, rate, 0).astype(np.int64)
    if len(billed) and int(billed.max(initial=0)) * int(r.max(initial=0)) >= 2**62:
        raise OverflowError("line amount too large for int64 arithmetic")
    product = billed * r  # units of 1e-6
    scale = 2 + len(str(RATE_SCALE)) - 1  # 6 decimals
    div = (10 ** (scale - minor_digits.astype(np.int64))).astype(np.int64)
    return (product + div // 2) // div


def aggregate(parts: pd.DataFrame, scope_line: np.ndarray, inc: np.ndarray, mode: np.ndarray,
              minor_digits: np.ndarray) -> tuple[pd.DataFrame, np.ndarray, list[np.ndarray]]:
    """Group parts into lines.

    `scope_line`, `inc`, `mode`, `minor_digits` are per client code. Returns (lines, line id per
    part, entry ids per line) with lines sorted into invoice order (line ids are positions).
    """
    if len(parts) == 0:
        empty = pd.DataFrame({c: np.zeros(0, dtype=np.int64) for c in
                              LINE_KEYS + ["client", "raw", "billed", "amount", "rule", "rule_multi", "day_min",
                                           "day_max", "first", "n_entries", "unpriced"]})
        return empty, np.zeros(0, dtype=np.int64), []
    gid = parts.groupby(LINE_KEYS, sort=False).ngroup().to_numpy()
    n_lines = int(gid.max()) + 1
    first = np.full(n_lines, len(parts), dtype=np.int64)
    np.minimum.at(first, gid, np.arange(len(parts), dtype=np.int64))
    lines = parts.iloc[first][LINE_KEYS + ["client", "s_project", "s_task", "s_user", "s_day"]].reset_index(drop=True)
    lines["first"] = first
    lines["raw"] = _sum_int(gid, parts["raw"].to_numpy(), n_lines)
    entry_billed = _sum_int(gid, parts["billed"].to_numpy(), n_lines)
    day = parts["day"].to_numpy()
    dmin = np.full(n_lines, np.iinfo(np.int64).max, dtype=np.int64)
    dmax = np.full(n_lines, np.iinfo(np.int64).min, dtype=np.int64)
    np.minimum.at(dmin, gid, day)
    np.maximum.at(dmax, gid, day)
    lines["day_min"], lines["day_max"] = dmin, dmax
    lines["n_entries"] = np.bincount(gid, minlength=n_lines)

    client = lines["client"].to_numpy()
    by_line = scope_line[client]
    line_minutes = _sum_int(gid, to_minutes(parts["raw"].to_numpy()), n_lines)
    line_inc = inc[client]
    line_rounded = np.where(line_inc > 0, round_minutes(line_minutes, line_inc, mode[client]), lines["raw"].to_numpy())
    lines["billed"] = np.where(by_line, line_rounded, entry_billed)
    rate = lines["rate"].to_numpy()
    lines["unpriced"] = rate < 0
    lines["amount"] = amount_minor(lines["billed"].to_numpy(), rate, minor_digits[client])

    # the rate rule(s) behind each line: usually one; several rules with one rate share a line
    rules = pd.DataFrame({"g": gid, "rule": parts["rule"].to_numpy()}).drop_duplicates()
    rule_count = np.bincount(rules["g"].to_numpy(), minlength=n_lines)
    lines["rule"] = parts["rule"].to_numpy()[first]
    lines["rule_multi"] = rule_count > 1
    multi = {}
    if (rule_count > 1).any():
        sub = rules[rule_count[rules["g"].to_numpy()] > 1].sort_values(["g", "rule"])
        for g, grp in sub.groupby("g"):
            multi[int(g)] = [int(r) for r in grp["rule"]]
    lines.attrs["multi_rules"] = multi

    # entry ids per line, ascending
    eid = parts["entry_id"].to_numpy()
    order = np.lexsort((eid, gid))
    bounds = np.searchsorted(gid[order], np.arange(n_lines + 1))
    sorted_ids = eid[order]
    ids_per_line = [sorted_ids[bounds[i]:bounds[i + 1]] for i in range(n_lines)]

    # invoice order
    sort_order = np.lexsort(tuple(lines[k].to_numpy() for k in reversed(SORT_KEYS)))
    remap = np.empty(n_lines, dtype=np.int64)
    remap[sort_order] = np.arange(n_lines)
    lines = lines.iloc[sort_order].reset_index(drop=True)
    lines.attrs["multi_rules"] = {int(remap[g]): v for g, v in multi.items()}
    ids_per_line = [ids_per_line[i] for i in sort_order]
    return lines, remap[gid], ids_per_line


def _sum_int(gid: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    out = np.zeros(n, dtype=np.int64)
    np.add.at(out, gid, values.astype(np.int64))
    return out
