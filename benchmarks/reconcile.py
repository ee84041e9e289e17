"""Benchmark of the billing engine: `.venv/bin/python benchmarks/reconcile.py [--entries N --clients C
--reference-entries M --repeat R] [--company us]` (defaults 1,000,000 / 1,000 / 100,000 / 3; `--company us`
fits every draft to a US multicurrency QuickBooks company, as the Dagster assets do).

Synthesises the engine's input frames directly (numpy/pandas, no sandbox): N time entries over C
clients with a realistic rules file (dated, task, person and project rates; every line detail
and grouping; discounts, minimums, caps, retainers; deals with rates, discounts, caps and POs),
then times `price_month`, measures its peak memory, and compares with the per-entry reference
implementation on a smaller sample. Prints a markdown block.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import resource
import time
import tracemalloc
from datetime import date
from decimal import Decimal

import numpy as np
import pandas as pd

from sync_pipelines.billing import BillingHistory, parse_rules, price_month
from sync_pipelines.billing.company import QboCompany
from sync_pipelines.billing.reference import reference_price

TASKS = ["Design", "Development", "Meetings", "QA", "Project management", "Research", "Support", "Training",
         "Copywriting", "Analytics"]
DETAILS = ["task"] * 10 + ["task_person"] * 6 + ["summary"] * 2 + ["person"] * 2 + ["project"] * 2 + ["entry"]
PERIOD = "2026-10"


def make_rules(n_clients: int, seed: int) -> str:
    rng = np.random.default_rng(seed)
    out = ["version: 1", "firm: {timezone: America/New_York, home_currency: USD}", "defaults:",
           "  rounding: {increment_minutes: 6, mode: up, scope: entry}",
           '  invoice: {group_by: client, line_detail: task, terms: "Net 30"}', '  qbo: {item: "Services"}', "clients:"]
    for c in range(n_clients):
        cur = "USD" if c % 10 else ("EUR" if c % 20 else "JPY")
        base = 100 + int(rng.integers(0, 150))
        if cur == "JPY":
            base *= 150
        retainer = c % 20 == 7
        lines = [f"  c{c:04d}:", f"    harvest_client_id: {100000 + c}", f'    qbo_customer: "Client {c:04d}"',
                 f"    currency: {cur}", "    rates:", f"      - {{rate: {base}.00}}",
                 f"      - {{rate: {base + 10}.00, from: 2026-10-15}}",
                 f"      - {{rate: {base + 25}.50, task: \"{TASKS[c % 10]}\"}}",
                 f"      - {{rate: {base + 60}.00, person: {1000 + (c * 7) % 5000}, task: \"{TASKS[(c + 1) % 10]}\"}}",
                 f"      - {{rate: {base + 40}.00, project: {c * 10 + 1}, to: 2026-12-31}}"]
        inc, mode, scope = [(6, "up", "entry"), (15, "up", "entry"), (15, "nearest", "line"), (0, "up", "entry"),
                            (30, "down", "line")][c % 5]
        lines.append(f"    rounding: {{increment_minutes: {inc}, mode: {mode}, scope: {scope}}}")
        group = "client" if retainer else ["client", "client", "project", "po"][c % 4]
        lines.append(f"    invoice: {{group_by: {group}, line_detail: {DETAILS[c % len(DETAILS)]}, memo: \"PO {{po_number}}\"}}")
        if c % 3 == 0:
            lines.append("    discount: {percent: 7.5}")
        elif c % 11 == 0:
            lines.append(f"    discount: {{amount: {250 * (150 if cur == 'JPY' else 1)}}}")
        if c % 4 == 1:
            lines.append(f"    minimum: {5000 * (150 if cur == 'JPY' else 1)}")
        if c % 6 == 2:
            lines.append(f"    cap: {{amount: {80000 * (150 if cur == 'JPY' else 1)}, period: month}}")
        if retainer:
            lines.append("    billing_type: retainer")
            lines.append(f"    retainer: {{fee: {6000 * (150 if cur == 'JPY' else 1)}, included_hours: 400, "
                         f"overage_rate: {base + 15}, rollover: true}}")
        if c % 5 == 3:
            lines.append('    qbo: {item: "Consulting", items_by_task: {"Design": "Design Services"}, class: "Consulting"}')
        out += lines
    return "\n".join(out) + "\n"


def make_entries(n: int, n_clients: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    client = rng.integers(0, n_clients, n)
    project_local = rng.integers(0, 5, n)
    project_id = client * 10 + 1 + project_local
    # each client has a team of 3 to 12 people (of 5,000): member k of client c is user 1000 + (7c + 13k) mod 5000
    team_size = 3 + (np.arange(n_clients) * 5) % 10
    member = (rng.random(n) * team_size[client]).astype(np.int64)
    user_id = 1000 + (client * 7 + member * 13) % 5000
    task_id = rng.integers(0, 10, n)
    day = rng.integers(-1, 32, n)  # a few entries fall outside the month
    days = (np.datetime64("2026-10-01") + day).astype("datetime64[D]")
    hours = rng.choice(np.array([17, 25, 50, 75, 100, 110, 150, 200, 275, 400, 800]), n)
    user_names = np.array([f"User {i}" for i in range(1000, 6000)], dtype=object)
    task_names = np.array(TASKS, dtype=object)
    client_names = np.array([f"Client {c:04d}" for c in range(n_clients)], dtype=object)
    currencies = np.array([("USD" if c % 10 else ("EUR" if c % 20 else "JPY")) for c in range(n_clients)], dtype=object)
    pcodes = np.array([f"P{c:04d}-{k}" for c in range(n_clients) for k in range(1, 6)], dtype=object)
    pnames = np.array([f"Project {c:04d}/{k}" for c in range(n_clients) for k in range(1, 6)], dtype=object)
    pidx = client * 5 + project_local
    harvest_client = 100000 + client
    harvest_client[rng.random(n) < 0.002] = 999999  # unmapped Harvest client
    unique_days = pd.Series(np.arange("2026-09-30", "2026-11-02", dtype="datetime64[D]"))
    day_objects = dict(zip(unique_days.to_numpy(), unique_days.dt.date))
    spent = pd.Series(days).map(day_objects).to_numpy(dtype=object)
    return pd.DataFrame({
        "entry_id": np.arange(1, n + 1, dtype=np.int64) * 3,
        "spent_date": spent,
        "hours_centi": hours.astype(np.int64),
        "hours_text": pd.Series(hours).map({h: f"{h // 100}.{h % 100:02d}" for h in np.unique(hours).tolist()}).to_numpy(dtype=object),
        "billable": rng.random(n) < 0.95,
        "is_running": rng.random(n) < 0.001,
        "is_locked": np.zeros(n, dtype=bool),
        "user_id": user_id.astype(np.int64),
        "user_name": user_names[user_id - 1000],
        "client_id": harvest_client.astype(np.int64),
        "client_name": client_names[client],
        "client_currency": currencies[client],
        "project_id": project_id.astype(np.int64),
        "project_name": pnames[pidx],
        "project_code": pcodes[pidx],
        "task_id": (500 + task_id).astype(np.int64),
        "task_name": task_names[task_id],
        "notes": np.full(n, None, dtype=object),
        "harvest_billable_rate": np.full(n, None, dtype=object),
        "updated_at": np.full(n, "2026-11-01T00:00:00Z", dtype=object),
    })


def make_deals(n_clients: int) -> pd.DataFrame:
    rows = []
    for c in range(0, n_clients, 2):
        pid = c * 10 + 2
        rows.append({
            "deal_id": str(880000 + c), "dealname": f"SOW {c}", "dealstage": "closedwon", "pipeline": "default",
            "closedate": "2026-10-10T15:00:00Z", "createdate": "2026-09-01T15:00:00Z", "hs_lastmodifieddate": None,
            "harvest_project_id": pid, "billing_hourly_rate": "210.00" if c % 4 == 0 else None,
            "billing_discount_percent": "5" if c % 8 == 0 else None,
            "billing_not_to_exceed": "20000.00" if c % 12 == 0 else None, "po_number": f"PO-{c:05d}",
            "company_id": str(5000 + c),
        })
    df = pd.DataFrame(rows)
    df["harvest_project_id"] = df["harvest_project_id"].astype("Int64")
    return df


def make_catalog(n_clients: int) -> pd.DataFrame:
    rows = [("Item", "1", "Services", None), ("Item", "2", "Consulting", None), ("Item", "3", "Design Services", None),
            ("Class", "10", "Consulting", None), ("Term", "20", "Net 30", None)]
    for c in range(n_clients):
        cur = "USD" if c % 10 else ("EUR" if c % 20 else "JPY")
        rows.append(("Customer", str(100 + c), f"Client {c:04d}", cur))
    return pd.DataFrame([{"entity": e, "id": i, "name": n, "active": True, "currency": cur, "sku": None, "sync_token": "0"}
                         for e, i, n, cur in rows])


def timed(fn, repeat: int = 1):  # noqa: ANN001, ANN201
    """(best wall seconds, best CPU seconds, last result)."""
    best, best_cpu = float("inf"), float("inf")
    out = None
    for _ in range(repeat):
        out = None
        gc.collect()
        t, c = time.perf_counter(), time.process_time()
        out = fn()
        best = min(best, time.perf_counter() - t)
        best_cpu = min(best_cpu, time.process_time() - c)
    return best, best_cpu, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--entries", type=int, default=1_000_000)
    ap.add_argument("--clients", type=int, default=1000)
    ap.add_argument("--reference-entries", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--company", choices=["none", "us"], default="none",
                    help="us: fit the drafts to a US multicurrency company (billing/company_fit.py)")
    args = ap.parse_args()
    company = None if args.company == "none" else QboCompany(
        realm_id="9130", country="US", home_currency="USD", multicurrency=True, allow_discount=True,
        custom_txn_numbers=True, class_per_txn=False, class_per_line=True)

    t0 = time.perf_counter()
    rules = parse_rules(make_rules(args.clients, args.seed), "benchmark")
    entries = make_entries(args.entries, args.clients, args.seed)
    deals, catalog = make_deals(args.clients), make_catalog(args.clients)
    history = BillingHistory()
    setup = time.perf_counter() - t0
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    def run(frame: pd.DataFrame):  # noqa: ANN202
        return price_month(rules, PERIOD, frame, deals, catalog, history, "9130", company=company)

    wall, cpu, result = timed(lambda: run(entries), args.repeat)
    phases = ", ".join(f"{k} {v:.2f}" for k, v in result.extras["timings"].items())
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    del result
    gc.collect()
    tracemalloc.start()
    result = run(entries)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    sample = entries.iloc[: args.reference_entries].reset_index(drop=True)
    eng_small, eng_small_cpu, small = timed(lambda: run(sample), args.repeat)
    records = sample.to_dict("records")
    deal_rates: dict = {}
    for rec in deals.to_dict("records"):
        if isinstance(rec["billing_hourly_rate"], str):
            deal_rates.setdefault(int(rec["harvest_project_id"]), []).append(
                (date(2026, 10, 10), Decimal(rec["billing_hourly_rate"]),
                 f"deal {rec['deal_id']} billing_hourly_rate"))
    ref_wall, ref_cpu, ref = timed(lambda: reference_price(rules, PERIOD, records, history, "9130", deal_rates), 1)

    # cross-check: without deals (the reference models deal rates only) and without PO grouping
    # (the reference groups by client or project), every invoice must agree to the cent
    plain = price_month(rules, PERIOD, sample, None, catalog, history, "9130")
    ref_plain = reference_price(rules, PERIOD, records, history, "9130", {})
    comparable = [k for k in plain.invoices["invoice_key"] if ":po-" not in k and ":no-po:" not in k]
    totals = dict(zip(plain.invoices["invoice_key"], plain.invoices["total"]))
    differ = [k for k in comparable if k not in ref_plain["invoices"] or ref_plain["invoices"][k]["total"] != totals[k]]
    agree = f"{len(comparable) - len(differ):,} of {len(comparable):,} invoice totals equal"
    inv = result.invoices
    held = int((inv["status"] == "held").sum())
    billed = int((result.entries["status"] == "billed").sum())
    total_usd = sum((t for t, c in zip(inv["total"], inv["currency"]) if c == "USD"), start=0)
    print(f"""
### Billing engine benchmark (`python benchmarks/reconcile.py --entries {args.entries} --clients {args.clients} --company {args.company}`)

| measure | value |
|---|---|
| machine | {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, pandas {pd.__version__} |
| entries / clients | {args.entries:,} / {args.clients:,} (billed {billed:,}; {len(result.entries) - billed:,} excluded with a reason) |
| invoices / lines | {len(inv):,} ({held} held) / {len(result.lines):,} |
| `price_month` wall time (best of {args.repeat}) | **{wall:.2f} s** (CPU {cpu:.2f} s) |
| phases of the last run (s) | {phases} |
| peak memory allocated during `price_month` (tracemalloc) | **{peak / 2**20:,.0f} MiB** |
| process max RSS (inputs + run) | {rss_after / 1024:,.0f} MiB (inputs alone {rss_before / 1024:,.0f} MiB) |
| reference (per-entry Python) on {args.reference_entries:,} entries | {ref_wall:.2f} s (CPU {ref_cpu:.2f} s) |
| engine on the same {args.reference_entries:,} entries | {eng_small:.3f} s (CPU {eng_small_cpu:.3f} s) |
| speed-up over the reference (wall / CPU) | **{ref_wall / eng_small:.0f}x** / {ref_cpu / eng_small_cpu:.0f}x |
| engine vs reference on the sample, deals left out | {{agree}} |
| USD invoiced (sanity) | {total_usd} |
| setup (synthesising the frames, untimed) | {setup:.1f} s |
""".replace("{agree}", agree))


if __name__ == "__main__":
    main()
