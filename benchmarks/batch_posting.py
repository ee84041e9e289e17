"""Batch posting throughput against the sandbox at QuickBooks' real limits and latency.

    .venv/bin/python benchmarks/batch_posting.py [--clients 1000] [--latency 150-400ms]
        [--single 120] [--budget-calls 300] [--postgres URL] [--record]

1. A month of `--clients` clients is generated and priced (not timed); the sandbox serves it with
   the real limits (500 calls/min, 10 in flight, 40 batch calls/min, 30 items a batch) and
   `--latency` added to every QuickBooks call.
   The sandbox runs in its own process (`sync-pipelines sandbox serve --latency ...`), as
   QuickBooks does: its CPU is not the poster's.
2. First month: `post_drafts` (batches of 30) creates every customer and every invoice, through the
   ledger-backed call budget, on a SQLite ledger. Then the same invoices again on a fresh ledger
   and a fresh sandbox whose customers already exist: invoices only. Each: wall time, invoices/min
   against the ceiling (40 batches x 30 = 1,200 invoices/min), QuickBooks calls by kind, the
   budget's own wait.
3. `--single N`: the first N invoices one create call per invoice (``batch_size=1``), the way
   one-call-per-invoice clients post, for the ratio.
4. The shared budget's own cost per call: `--budget-calls` acquire/release pairs with limits far
   away, on SQLite (and PostgreSQL with `--postgres`), against the in-process limiter.

`--record` appends the tables to docs/benchmarks.md ("Batch posting").
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx

from sync_pipelines import money
from sync_pipelines.connectors.factory import quickbooks_from_env
from sync_pipelines.connectors.http import RateLimiter
from sync_pipelines.ledger import Ledger
from sync_pipelines.ledger.call_budget import CallBudget, shared_call_budget
from sync_pipelines.posting.drafts import posting_drafts
from sync_pipelines.posting.invoices import post_drafts
from sync_pipelines.sandbox import generate_fixture
from sync_pipelines.serving import free_port, sandbox_env, stop_process
from sync_pipelines_tests import _sandbox_month as sm

PERIOD = "2026-10"
CEILING_PER_MIN = 40 * 30


def _calls(ledger: Ledger, since: datetime) -> Counter:
    """QuickBooks calls from the ledger's audit trail, by endpoint (and 429s)."""
    import sqlalchemy as sa

    from sync_pipelines.ledger.schema import audit_log

    c = audit_log.c
    out: Counter = Counter()
    with ledger.engine.connect() as conn:
        for path, status in conn.execute(sa.select(c.path, c.status).where(c.system == "quickbooks", c.at >= since)):
            out[path.rsplit("/", 1)[-1]] += 1
            if status == 429:
                out["429"] += 1
    return out


def _post(env: dict[str, str], drafts: list[Any], ledger_url: str, batch_size: int) -> dict[str, Any]:
    ledger = Ledger(ledger_url)
    ledger.migrate()
    try:
        budget = shared_call_budget(ledger, env["QBO_REALM_ID"])
        # The refresh token rotates on every refresh: start from the sandbox's current one.
        env = {**env, "QBO_REFRESH_TOKEN": _state(env)["sandbox"]["oauth"]["refresh_token"]}
        with quickbooks_from_env(ledger.tokens, env, audit=ledger, limiter=budget.calls,
                                 batch_limiter=budget.batches) as qbo:
            qbo.oauth.access_token()  # the token exchange is not posting
            since = datetime.now(timezone.utc)
            started = time.monotonic()
            outcomes = post_drafts(drafts, qbo=qbo, ledger=ledger, home_currency="USD", batch_size=batch_size)
            wall = time.monotonic() - started
        return {"wall": wall, "outcomes": Counter(o.outcome for o in outcomes), "calls": _calls(ledger, since),
                "budget_wait": budget.waited}
    finally:
        ledger.dispose()


def _start_sandbox(fixture: Path, latency: str, log: Any) -> tuple[subprocess.Popen, dict[str, str]]:
    """`sync-pipelines sandbox serve --latency ...` as a child (real limits); its exported env."""
    proc = subprocess.Popen([sys.executable, "-m", "sync_pipelines.cli", "sandbox", "serve", "--fixture", str(fixture),
                             "--port", str(free_port()), "--latency", latency],
                            stdout=subprocess.PIPE, stderr=log, text=True, start_new_session=True)
    env = sandbox_env(proc)
    if env is not None:
        return proc, env
    raise SystemExit(f"the sandbox exited with status {proc.wait()} before it was ready")


def _state(env: dict[str, str]) -> dict[str, Any]:
    return money.loads(httpx.get(env["QBO_BASE_URL"] + "/_sandbox/state", timeout=120).content)


def _without_invoices(state: dict[str, Any]) -> dict[str, Any]:
    """The sandbox as it was after the customers were created: no invoices, no replays."""
    state["quickbooks"]["invoices"] = []
    state.setdefault("sandbox", {})["qbo_requests"] = {}
    return state


def _budget_cost(url: str, n: int) -> float:
    ledger = Ledger(url)
    ledger.migrate()
    try:
        budget = CallBudget(ledger, "bench-realm", per_minute=10**9, per_second=10**9, in_flight=10**6)
        started = time.perf_counter()
        for _ in range(n):
            with budget.calls.acquire():
                pass
        return (time.perf_counter() - started) / n
    finally:
        ledger.dispose()


def _local_cost(n: int) -> float:
    limiter = RateLimiter([(10**9, 60.0), (10**9, 1.0)], max_in_flight=10)
    started = time.perf_counter()
    for _ in range(n):
        with limiter.acquire():
            pass
    return (time.perf_counter() - started) / n


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=1000)
    ap.add_argument("--latency", default="150-400ms")
    ap.add_argument("--single", type=int, default=120, help="also post this many invoices one call each (0: skip)")
    ap.add_argument("--budget-calls", type=int, default=300)
    ap.add_argument("--settle", type=float, default=61.0,
                    help="seconds between runs, so one run's minute of calls leaves the throttle windows")
    ap.add_argument("--postgres", default=os.environ.get("SYNC_TEST_DATABASE_URL"),
                    help="a PostgreSQL URL for the budget's cost there (default: $SYNC_TEST_DATABASE_URL)")
    ap.add_argument("--record", action="store_true", help="append the results to docs/benchmarks.md")
    args = ap.parse_args(argv)

    load = os.getloadavg()
    tmp = Path(tempfile.mkdtemp(prefix="batch-posting-"))
    fixture, rules_yaml = generate_fixture(clients=args.clients + 1, entries=(args.clients + 1) * 4, seed=9, month=PERIOD)
    (tmp / "month.json").write_bytes(money.dumps(fixture).encode())
    rows = []
    log = open(tmp / "sandbox.log", "w")
    # The sandbox in its own process, as QuickBooks is: its CPU is not the poster's.
    proc, env = _start_sandbox(tmp / "month.json", args.latency, log)
    try:
        pricing = Ledger(f"sqlite:///{tmp}/pricing.db")
        pricing.migrate()
        month = sm.price(env, rules_yaml, PERIOD, pricing)
        pricing.dispose()
        drafts = [d for d in posting_drafts(month.drafts) if d.status == "ready"]
        print(f"{len(drafts)} invoices, {len({d.customer_name for d in drafts})} customers", file=sys.stderr)
        time.sleep(args.settle)  # pricing's calls leave the throttle windows
        first = _post(env, drafts, f"sqlite:///{tmp}/first.db", 30)
        rows.append(("first month: customers + invoices, batches of 30", len(drafts), first))
        print(rows[-1], file=sys.stderr)
        after = _state(env)
    finally:
        stop_process(proc)

    # Same month on a fresh ledger against a sandbox whose customers exist and invoices do not.
    (tmp / "customers.json").write_bytes(money.dumps(_without_invoices(after)).encode())
    for name, n, size in [("invoices only (customers exist), batches of 30", len(drafts), 30)] + (
            [("invoices only, one create call per invoice", args.single, 1)] if args.single else []):
        proc, env = _start_sandbox(tmp / "customers.json", args.latency, log)
        try:
            result = _post(env, drafts[:n], f"sqlite:///{tmp}/run-{size}.db", size)
        finally:
            stop_process(proc)
        rows.append((name, n, result))
        print(rows[-1], file=sys.stderr)

    costs = {"in-process limiter": _local_cost(args.budget_calls * 10),
             "shared budget, SQLite ledger": _budget_cost(f"sqlite:///{tmp}/budget.db", args.budget_calls)}
    if args.postgres:
        from sync_pipelines_tests.conftest import _psycopg2_url, fresh_database

        with fresh_database(_psycopg2_url(args.postgres), "sync_bench_budget") as url:
            costs["shared budget, PostgreSQL ledger"] = _budget_cost(url, args.budget_calls)

    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "", "## Batch posting — `benchmarks/batch_posting.py`", "",
        f"Command: `.venv/bin/python benchmarks/batch_posting.py --clients {args.clients} --latency {args.latency}"
        f" --single {args.single} --budget-calls {args.budget_calls}`" + (" (PostgreSQL: the test server)" if args.postgres else ""),
        f"Machine: {platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}; {when}; "
        f"load average at start {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (the machine is shared).",
        f"Sandbox: real limits (500 calls/min, 10 in flight, 40 batch calls/min, ≤ 30 items), {args.latency} added to"
        " every QuickBooks call; SQLite ledger; every call through the ledger-backed call budget.", "",
        "| run | invoices | wall s | invoices/min | of 1,200/min ceiling | QuickBooks calls | budget wait s | outcomes |",
        "|---|---:|---:|---:|---:|---|---:|---|",
    ]
    for name, n, r in rows:
        rate = n / r["wall"] * 60
        calls = ", ".join(f"{k} {v}" for k, v in sorted(r["calls"].items()))
        outcomes = ", ".join(f"{k} {v}" for k, v in sorted(r["outcomes"].items()))
        lines.append(f"| {name} | {n} | {r['wall']:.1f} | {rate:.0f} | {rate / CEILING_PER_MIN:.0%} | {calls} | "
                     f"{r['budget_wait']:.1f} | {outcomes} |")
    if len(rows) >= 3:
        batch_rate = rows[1][1] / rows[1][2]["wall"]
        single_rate = rows[2][1] / rows[2][2]["wall"]
        lines += ["", f"Batches of 30 vs one call per invoice (invoices only): {batch_rate / single_rate:.1f}× the invoices per second."]
    lines += ["", "Cost of one call's budget (acquire + release, limits far away):", "",
              "| budget | per call |", "|---|---:|"]
    for name, seconds in costs.items():
        lines.append(f"| {name} | {seconds * 1000:.2f} ms |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.record:
        path = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
