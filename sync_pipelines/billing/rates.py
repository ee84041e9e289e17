"""Rate resolution (DESIGN §5 "Rate resolution"), vectorised over entries.

A row applies when every filter it sets matches (person: user id or exact name; task: id or
name; project: id or code) and `from`/`to` (inclusive) contain the spent date. The highest
score 4*project + 2*person + 1*task wins; on a tie the latest `from` (none = earliest); a
deal's hourly rate is a project-level row dated from its close date and wins an exact tie
(it overrides the client's rules for its project).

Rates are int64 fixed point with 4 decimals (`RATE_SCALE`) inside the engine.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

import numpy as np
import pandas as pd

from sync_pipelines.billing.deals import ProjectTerms
from sync_pipelines.billing.rules import ClientRules, RateRow
from sync_pipelines.billing.selection import day_number

RATE_SCALE = 10_000
_NEVER_ID = -(2**62)
_NO_FROM = -(2**20)
_NO_TO = 2**40


def rate_fixed(rate: Decimal) -> int:
    v = rate * RATE_SCALE
    if v != v.to_integral_value():
        raise ValueError(f"rate {rate} has more than 4 decimal places")
    return int(v)


@dataclass(frozen=True)
class Rule:
    """A rate source: a rules-file row or a deal."""

    path: str  # e.g. "clients.acme.rates[1]" or "deal 8805 billing_hourly_rate"
    rate: Decimal


@dataclass(frozen=True)
class EntryKeys:
    """Entry attributes rate rows filter on, as int arrays (names as codes into the `*_names` indexes)."""

    group: np.ndarray  # client code per entry (-1: not priced)
    day: np.ndarray
    project_id: np.ndarray
    project_code: np.ndarray
    user_id: np.ndarray
    user_name: np.ndarray
    task_id: np.ndarray
    task_name: np.ndarray
    project_codes: pd.Index
    user_names: pd.Index
    task_names: pd.Index


def _filter(value: int | str | None, names: dict[str, int]) -> tuple[bool, int, int]:
    if value is None:
        return False, _NEVER_ID, -2
    if isinstance(value, int):
        return True, int(value), -2
    return True, _NEVER_ID, names.get(value, -3)


_TABLE_COLUMNS = ("group", "score", "from", "to", "p_has", "p_id", "p_code", "u_has", "u_id", "u_code",
                  "t_has", "t_id", "t_code", "rate", "rule", "prio")
_DEAL_FILTERS = (0, _NEVER_ID, -2, 0, _NEVER_ID, -2, 0, _NEVER_ID, -2)


def _table(rows: list[tuple[int, RateRow | None, int, int, int | None, int]], keys: EntryKeys) -> dict[str, np.ndarray]:
    """rows: (group, row, rule_id, prio, deal_from_day, rate_fixed) -> int64 columns sorted by group."""
    pc, un, tn = ({v: i for i, v in enumerate(ix.tolist())} for ix in (keys.project_codes, keys.user_names, keys.task_names))
    days: dict[object, int] = {}

    def day(d: object) -> int:
        if d not in days:
            days[d] = day_number(d)  # type: ignore[arg-type]
        return days[d]

    out = []
    for group, row, rule_id, prio, deal_from, fixed in rows:
        if row is None:  # a deal: a project-level row, matched through its group (the project)
            out.append((group, 4, _NO_FROM if deal_from is None else deal_from, _NO_TO, *_DEAL_FILTERS,
                        fixed, rule_id, prio))
        else:
            p = _filter(row.project, pc)
            u = _filter(row.person, un)
            t = _filter(row.task, tn)
            out.append((group, row.score, _NO_FROM if row.from_ is None else day(row.from_),
                        _NO_TO if row.to is None else day(row.to), int(p[0]), p[1], p[2], int(u[0]), u[1], u[2],
                        int(t[0]), t[1], t[2], fixed, rule_id, prio))
    arr = np.array(out, dtype=np.int64).reshape(len(out), len(_TABLE_COLUMNS))
    arr = arr[np.argsort(arr[:, 0], kind="stable")]
    return {k: np.ascontiguousarray(arr[:, i]) for i, k in enumerate(_TABLE_COLUMNS)}


def _scan(table: dict[str, np.ndarray], group: np.ndarray, n_groups: int, keys: EntryKeys,
          best_key: np.ndarray, best_rate: np.ndarray, best_rule: np.ndarray, tie: np.ndarray) -> None:
    """Offer every entry the r-th row of its group, r = 0, 1, ...: one vectorised pass per r.

    A filter no r-th row sets (no dates, no task, ...) is not tested in that pass; a pass that
    every entry takes part in works on whole columns instead of a selection.
    """
    if len(table["group"]) == 0:
        return
    counts = np.bincount(table["group"], minlength=n_groups)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    has_group = group >= 0
    g = np.where(has_group, group, 0)
    g_count = np.where(has_group, counts[g], 0)
    g_start = starts[g]
    dims = (("p", keys.project_id, keys.project_code), ("u", keys.user_id, keys.user_name),
            ("t", keys.task_id, keys.task_name))
    for r in range(int(counts.max())):
        valid = g_count > r
        everyone = bool(valid.all())
        if not everyone and not valid.any():
            break
        rows_r = starts[counts > r] + r  # the r-th row of every group that has one
        sel = slice(None) if everyone else np.flatnonzero(valid)
        idx = g_start[sel] + r
        ok = np.ones(len(idx), dtype=bool)
        if (table["from"][rows_r] != _NO_FROM).any() or (table["to"][rows_r] != _NO_TO).any():
            day = keys.day[sel]
            ok &= (table["from"][idx] <= day) & (day <= table["to"][idx])
        for dim, ent_id, ent_code in dims:
            if not table[f"{dim}_has"][rows_r].any():
                continue
            has = table[f"{dim}_has"][idx] == 1
            m = (ent_id[sel] == table[f"{dim}_id"][idx]) | (ent_code[sel] == table[f"{dim}_code"][idx])
            ok &= ~has | m
        key = (table["score"][idx] << 33) | ((table["from"][idx] - _NO_FROM) << 11) | table["prio"][idx]
        key = np.where(ok, key, -1)
        cur = best_key[sel]
        better = key > cur
        same = ok & (key == cur)
        if everyone:
            tie[same] = True
            tie[better] = False
            best_key[better] = key[better]
            best_rate[better] = table["rate"][idx][better]
            best_rule[better] = table["rule"][idx][better]
            continue
        tie[sel[same]] = True
        upd = sel[better]
        tie[upd] = False
        best_key[upd] = key[better]
        best_rate[upd] = table["rate"][idx][better]
        best_rule[upd] = table["rule"][idx][better]


def resolve_rates(
    clients: list[str],
    effective: dict[str, ClientRules],
    terms: dict[int, ProjectTerms],
    keys: EntryKeys,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[Rule]]:
    """Per entry: (rate fixed point or -1, rule id or -1, ambiguous flag) and the rule list."""
    rules: list[Rule] = []
    rows: list[tuple[int, RateRow | None, int, int, int | None, int]] = []
    for code, key in enumerate(clients):
        for i, row in enumerate(effective[key].rates):
            rules.append(Rule(f"clients.{key}.rates[{i}]", row.rate))
            rows.append((code, row, len(rules) - 1, 0, None, rate_fixed(row.rate)))
    deal_projects = sorted(pid for pid, t in terms.items() if t.rates)
    deal_rows: list[tuple[int, RateRow | None, int, int, int | None, int]] = []
    for pcode, pid in enumerate(deal_projects):
        for rank, dr in enumerate(terms[pid].rates):  # in (date, deal id) order: later ranks win ties
            rules.append(Rule(dr.rule, dr.rate))
            deal_rows.append((pcode, None, len(rules) - 1, 1 + rank, None if dr.from_ is None else day_number(dr.from_),
                              rate_fixed(dr.rate)))

    n = len(keys.day)
    best_key = np.full(n, -1, dtype=np.int64)
    best_rate = np.full(n, -1, dtype=np.int64)
    best_rule = np.full(n, -1, dtype=np.int64)
    tie = np.zeros(n, dtype=bool)
    _scan(_table(rows, keys), keys.group, len(clients), keys, best_key, best_rate, best_rule, tie)
    if deal_rows:
        pgroup = pd.Index(deal_projects).get_indexer(keys.project_id)
        pgroup = np.where(keys.group >= 0, pgroup, -1)
        _scan(_table(deal_rows, keys), pgroup, len(deal_projects), keys, best_key, best_rate, best_rule, tie)
    return best_rate, best_rule, tie, rules
