"""Pricing cost per client: `.venv/bin/python benchmarks/pricing_clients.py [--clients 10,100,1000
--entries-per-client 200 --repeat 3]`.

For each client count C: a rules file of C clients (the same synthetic rules as
`benchmarks/reconcile.py`: dated, task, person and project rates, every line detail and grouping,
discounts, minimums, caps, retainers, USD/EUR/JPY), C x 200 entries, deals and a catalog; then

* the rules parse: the first `parse_rules` of the text (validation of every client) and a second
  one of the same text (the month-end's assets each parse the text they are handed),
* one `price_month(..., clients=all C)` call fitted to a US multicurrency company, as the month-end
  run prices every client at once: wall and CPU seconds (best of `--repeat`) and per client.

Prints a markdown block for docs/benchmarks.md. Our own time only: no Dagster, no HTTP.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import pandas as pd  # noqa: E402

from reconcile import PERIOD, make_catalog, make_deals, make_entries, make_rules  # noqa: E402
from sync_pipelines.billing import BillingHistory, parse_rules, price_month  # noqa: E402
from sync_pipelines.billing.company import QboCompany  # noqa: E402

COMPANY = QboCompany(realm_id="9130", country="US", home_currency="USD", multicurrency=True, allow_discount=True,
                     custom_txn_numbers=True, class_per_txn=False, class_per_line=True)


def _timed(fn):  # noqa: ANN001, ANN202
    gc.collect()
    t, c = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - t, time.process_time() - c, out


def measure(n_clients: int, per_client: int, repeat: int, seed: int) -> dict:
    text = make_rules(n_clients, seed)
    source = f"benchmark-{n_clients}-{time.time_ns()}"  # a source never parsed before in this process
    parse_wall, parse_cpu, rules = _timed(lambda: parse_rules(text, source))
    again_wall, _, again = _timed(lambda: parse_rules(text, source))
    entries = make_entries(n_clients * per_client, n_clients, seed)
    deals, catalog = make_deals(n_clients), make_catalog(n_clients)
    clients = sorted(rules.clients)
    best = (float("inf"), float("inf"), None)
    for _ in range(repeat):
        w, c, result = _timed(lambda: price_month(rules, PERIOD, entries, deals, catalog, BillingHistory(), "9130",
                                                  clients=clients, company=COMPANY))
        if w < best[0]:
            best = (w, c, result)
    wall, cpu, result = best
    return {
        "clients": n_clients, "entries": len(entries), "invoices": len(result.invoices), "lines": len(result.lines),
        "held": int((result.invoices["status"] == "held").sum()),
        "parse": parse_wall, "parse_cpu": parse_cpu, "parse_again": again_wall, "same_object": again is rules,
        "wall": wall, "cpu": cpu,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--clients", default="10,100,1000")
    ap.add_argument("--entries-per-client", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    load = os.getloadavg()
    rows = [measure(int(c), args.entries_per_client, args.repeat, args.seed) for c in args.clients.split(",")]
    print(f"""
### Pricing per client (`python benchmarks/pricing_clients.py --clients {args.clients} --entries-per-client {args.entries_per_client}`)

{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, pandas {pd.__version__}; load average before the run {load[0]:.2f}, {load[1]:.2f}, {load[2]:.2f}.

| clients | entries | invoices / lines (held) | rules parse, first (CPU) | same text again | `price_month`, all clients, best of {args.repeat}: wall (CPU) | per client: wall (CPU) |
|---|---|---|---|---|---|---|""")
    for r in rows:
        print(f"| {r['clients']:,} | {r['entries']:,} | {r['invoices']:,} / {r['lines']:,} ({r['held']}) "
              f"| {r['parse']:.3f} s ({r['parse_cpu']:.3f} s) | {r['parse_again'] * 1e3:.2f} ms"
              f"{'' if r['same_object'] else ' (parsed again)'} "
              f"| {r['wall']:.3f} s ({r['cpu']:.3f} s) "
              f"| **{r['wall'] / r['clients'] * 1e3:.2f} ms** ({r['cpu'] / r['clients'] * 1e3:.2f} ms) |")


if __name__ == "__main__":
    main()
