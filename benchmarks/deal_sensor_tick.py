"""Deal sensor tick durations on a 50,000-deal portal: `python benchmarks/deal_sensor_tick.py [--deals 50000]`.

The tick is `sync_pipelines.triggers.ready_deals_tick.evaluate`, exactly what the
`ready_for_billing_deals` sensor runs, against the sandbox over loopback HTTP, with the
production HubSpot client *and its real client-side limits* (search 5/s, 100 per 10 s), a SQLite
ledger holding the webhook inbox. Scenarios:

A. `--deals` deals modified over the last 90 days, 1 in 50 in the ready-for-billing stage:
   the first tick from an empty cursor (31 days back), steady-state ticks (poll due, nothing new),
   and ticks with 20 webhook events for deals just moved into the stage;
B. a backlog: the same number of deals all modified in the last 30 days, 1 in 4 ready (more than
   the 10,000-result search cap): ticks until the cursor has caught up, each bounded.

Prints a markdown block (command, machine, date, per-scenario timings) for docs/benchmarks.md.
Dagster's limit for a sensor tick is 60 s (reference/dagster-notes.md P6).
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone

import httpx

from sync_pipelines.connectors.factory import hubspot_from_env
from sync_pipelines.ledger import Ledger
from sync_pipelines.sandbox import SandboxServer, generate_fixture
from sync_pipelines.sandbox.generator import READY_FOR_BILLING_STAGE, add_portal_deals
from sync_pipelines.triggers.ready_deals_tick import SensorCursor, evaluate

STAGE = READY_FOR_BILLING_STAGE


def _machine() -> str:
    cores = os.cpu_count()
    load = os.getloadavg()[0]
    mem = subprocess.run(["free", "-g"], capture_output=True, text=True).stdout.split("\n")[1].split()[1]
    return f"{cores} cores, {mem} GiB, Python {platform.python_version()}, load average {load:.1f}"


def _portal(deals: int, days: int, ready_every: int, seed: int) -> tuple[dict, int]:
    now = datetime.now(timezone.utc)
    fixture, _ = generate_fixture(clients=2, entries=20, seed=seed, month=f"{now.year:04d}-{now.month:02d}")
    ready = add_portal_deals(fixture, deals, seed, ready_every=ready_every,
                             start=now - timedelta(days=days), span_days=days)
    return fixture, ready


def _ticks(hs, ledger, cursor: str | None, limit: int = 100) -> tuple[list[tuple[float, int, int]], str, int]:
    """Tick until the poll is caught up; (seconds, pages, triggers) per tick, final cursor, total triggers."""
    rows = []
    seen: set[str] = set()
    for _ in range(limit):
        t0 = time.perf_counter()
        out = evaluate(hs, ledger, STAGE, cursor)
        rows.append((time.perf_counter() - t0, out.pages, len(out.triggers)))
        seen |= {t.run_key for t in out.triggers}
        cursor = out.cursor_text
        if out.polled and out.poll_complete:
            break
    return rows, cursor or "", len(seen)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--deals", type=int, default=50_000)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    cmd = "python benchmarks/deal_sensor_tick.py " + shlex.join(sys.argv[1:])
    out = [f"```sh\n.venv/bin/{cmd.strip()}\n```", "",
           f"Run {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; {_machine()}.", ""]

    with tempfile.TemporaryDirectory() as tmp:
        ledger = Ledger(f"sqlite:///{tmp}/ledger.db")
        ledger.migrate()

        # ---- A: a normal portal
        fixture, ready = _portal(args.deals, 90, 50, args.seed)
        with SandboxServer(fixture, rate_limits="off") as sb, hubspot_from_env(sb.env()) as hs:
            first, cursor, found = _ticks(hs, ledger, None)
            steady = []
            for _ in range(5):
                c = SensorCursor.parse(cursor)
                c.next_poll_ms = 0  # poll due now
                t0 = time.perf_counter()
                o = evaluate(hs, ledger, STAGE, c.dumps())
                steady.append(time.perf_counter() - t0)
                cursor = o.cursor_text
            moved = [d["id"] for d in fixture["hubspot"]["deals"][-400:] if d["properties"]["dealstage"] != STAGE][:20]
            for n, did in enumerate(moved):
                httpx.post(f"{sb.base_url}/_sandbox/actions/move_deal_stage", json={"deal_id": did, "dealstage": STAGE})
                ledger.inbox_put("hubspot", f"bench-{n}", {"objectId": int(did), "propertyName": "dealstage",
                                                            "propertyValue": STAGE, "eventId": n,
                                                            "subscriptionType": "deal.propertyChange",
                                                            "occurredAt": int(time.time() * 1000), "attemptNumber": 0})
            t0 = time.perf_counter()
            hooked = evaluate(hs, ledger, STAGE, cursor)
            webhook_tick = time.perf_counter() - t0
        out += [f"**A. {args.deals:,} deals over 90 days, {ready:,} ready (1 in 50)**", "",
                "| tick | wall time | search pages | triggers |", "|---|---|---|---|"]
        out += [f"| first tick #{i + 1} (empty cursor, 31 days back) | {s:.2f} s | {p} | {t} |"
                for i, (s, p, t) in enumerate(first)]
        out += [f"| steady state, poll due, nothing new (5 ticks) | median {sorted(steady)[2]:.2f} s, "
                f"max {max(steady):.2f} s | 1 | 0 |",
                f"| 20 webhook events for deals just moved into the stage (poll not due) | {webhook_tick * 1000:.0f} ms | "
                f"{hooked.pages} | {len(hooked.triggers)} |", "",
                f"Ready deals found by the first poll: {found:,}.", ""]

        # ---- B: a backlog past the 10,000 cap
        fixture, ready = _portal(args.deals, 30, 4, args.seed + 1)
        with SandboxServer(fixture, rate_limits="off") as sb, hubspot_from_env(sb.env()) as hs:
            ledger2 = Ledger(f"sqlite:///{tmp}/ledger2.db")
            ledger2.migrate()
            t0 = time.perf_counter()
            backlog, _, found = _ticks(hs, ledger2, None, limit=200)
            total = time.perf_counter() - t0
        secs = sorted(s for s, _, _ in backlog)
        out += [f"**B. backlog: {args.deals:,} deals in the last 30 days, {ready:,} ready (past the 10,000 search cap)**",
                "", "| measure | value |", "|---|---|",
                f"| ticks to catch up | {len(backlog)} (at most 10 search pages each) |",
                f"| tick wall time | median {secs[len(secs) // 2]:.2f} s, max {secs[-1]:.2f} s |",
                f"| distinct triggers found | {found:,} of {ready:,} |",
                f"| all ticks together | {total:.1f} s |", ""]
    print("\n".join(out))


if __name__ == "__main__":
    main()
