"""Stage change -> invoice latency through the real daemon: `python benchmarks/deal_trigger_latency.py [--deals 8]`.

A DAGSTER_HOME with Dagster's embedded SQLite instance, `dagster-daemon run` as a subprocess, the
sandbox in this process. Each sample: a deal with one line item is moved into the ready-for-billing
stage (`/_sandbox/actions/move_deal_stage`) and its HubSpot webhook event is put in the ledger
inbox (standing for the receiver, which answers within a second); the clock stops when the
invoice is readable in the sandbox's QuickBooks over HTTP. Deals are moved one at a time, after
a warm-up deal (the daemon's first tick and code-location load are not counted).

The design goal is p95 <= 10 s for the webhook path (DESIGN §7, issue 8). Prints a markdown block.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

import httpx

from sync_pipelines.billing import keys as keymod
from sync_pipelines.connectors.factory import hubspot_from_env
from sync_pipelines.connectors.hubspot_stages import parse_hubspot_datetime
from sync_pipelines.connectors.http import InMemoryTokenStore
from sync_pipelines.connectors.quickbooks import QboOAuth, QuickBooksClient
from sync_pipelines.ledger import Ledger
from sync_pipelines.sandbox import SandboxServer, generate_fixture
from sync_pipelines.sandbox.generator import READY_FOR_BILLING_STAGE as STAGE
from sync_pipelines.triggers.stage_entry import StageEntry

REPO = Path(__file__).resolve().parent.parent
COMPANY = "31000000000"  # the generator's first client (o_brien_sons for seed 5)


def _fixture(n: int) -> tuple[dict, str, list[str]]:
    fixture, rules = generate_fixture(clients=3, entries=60, seed=5, month="2026-10")
    hs = fixture["hubspot"]
    ids = []
    for k in range(n):
        did, lid = str(48_000_000_000 + k), str(48_100_000_000 + k)
        ids.append(did)
        stamp = "2026-09-01T00:00:00.000Z"
        hs["deals"].append({"id": did, "properties": {
            "dealname": f"Package {k}", "dealstage": "contractsent", "pipeline": "default", "createdate": stamp,
            "hs_lastmodifieddate": stamp, "hs_object_id": did}, "createdAt": stamp, "updatedAt": stamp,
            "archived": False})
        hs["line_items"].append({"id": lid, "properties": {
            "name": "Consulting", "hs_sku": "Consulting", "price": "100.00", "quantity": str(k + 1),
            "amount": str(Decimal(100 * (k + 1)).quantize(Decimal("0.01"))), "createdate": stamp,
            "hs_lastmodifieddate": stamp, "hs_object_id": lid}, "createdAt": stamp, "updatedAt": stamp,
            "archived": False})
        hs["associations"] += [
            {"from_type": "deals", "from_id": did, "to_type": "companies", "to_id": COMPANY, "type_id": 5},
            {"from_type": "deals", "from_id": did, "to_type": "line_items", "to_id": lid, "type_id": 19},
            {"from_type": "line_items", "from_id": lid, "to_type": "deals", "to_id": did, "type_id": 20}]
    return fixture, rules + f"hubspot: {{ready_for_billing_stage: {STAGE}}}\n", ids


def _doc_numbers(env: dict[str, str]) -> set[str]:
    oauth = QboOAuth(env["QBO_TOKEN_URL"], env["QBO_CLIENT_ID"], env["QBO_CLIENT_SECRET"], InMemoryTokenStore(),
                     env["QBO_REALM_ID"], seed_refresh_token=env["QBO_REFRESH_TOKEN"])
    with QuickBooksClient(env["QBO_BASE_URL"], env["QBO_REALM_ID"], oauth) as qbo:
        return {str(i.get("DocNumber")) for i in qbo.query_all("Invoice")}


def _trigger(sb: SandboxServer, env: dict[str, str], ledger: Ledger, deal_id: str, n: int) -> str:
    """Move the deal, store its webhook; the DocNumber its invoice will have."""
    httpx.post(f"{sb.base_url}/_sandbox/actions/move_deal_stage",
               json={"deal_id": deal_id, "dealstage": STAGE}).raise_for_status()
    with hubspot_from_env(env) as hs:
        deal = hs.batch_read_deals([deal_id], [f"hs_v2_date_entered_{STAGE}"]).records[0]
    entered = parse_hubspot_datetime(deal.properties[f"hs_v2_date_entered_{STAGE}"])
    ledger.inbox_put("hubspot", str(7000 + n), {
        "objectId": int(deal_id), "propertyName": "dealstage", "propertyValue": STAGE, "eventId": 7000 + n,
        "subscriptionType": "deal.propertyChange", "occurredAt": entered, "attemptNumber": 0})
    period = StageEntry(deal_id, entered or 0).period("America/New_York")
    key = keymod.invoice_key(env["QBO_REALM_ID"], "o_brien_sons", period, f"deal-{deal_id}", 1)
    return keymod.doc_number(key, period)


def _wait(env: dict[str, str], doc: str, timeout: float) -> float | None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if doc in _doc_numbers(env):
            return time.monotonic() - t0
        time.sleep(0.2)
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--deals", type=int, default=8)
    args = ap.parse_args()
    fixture, rules, ids = _fixture(args.deals + 1)
    samples: list[float] = []
    triggered: dict[str, float] = {}
    phases: list[tuple[float, float, float]] = []  # sensor -> run created, queued, run itself
    with tempfile.TemporaryDirectory() as tmp, SandboxServer(fixture, rate_limits="off",
                                                             rotate_refresh_tokens="never") as sb:
        home = Path(tmp) / "home"
        home.mkdir()
        (Path(tmp) / "rules.yaml").write_text(rules)
        env = sb.env()
        child_env = {**os.environ, **env, "DAGSTER_HOME": str(home), "SYNC_RULES_FILE": str(Path(tmp) / "rules.yaml")}
        child_env.pop("SYNC_DATABASE_URL", None)
        ledger = Ledger(f"sqlite:///{home / 'sync_ledger.db'}")
        ledger.migrate()
        proc = subprocess.Popen([str(Path(sys.executable).parent / "dagster-daemon"), "run", "-w", "workspace.yaml"],
                                cwd=REPO, env=child_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            warm = _wait(env, _trigger(sb, env, ledger, ids[0], 0), 180)
            for n, deal_id in enumerate(ids[1:], start=1):
                triggered[deal_id] = time.time()
                got = _wait(env, _trigger(sb, env, ledger, deal_id, n), 120)
                if got is None:
                    raise SystemExit(f"no invoice for deal {deal_id} within 120 s")
                samples.append(got)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        import dagster as dg

        with dg.instance_for_test(temp_dir=str(home)) as instance:
            for rec in instance.get_run_records():
                deal = rec.dagster_run.tags.get("dagster/partition")
                if deal in triggered and rec.start_time and rec.end_time:
                    created = rec.create_timestamp.timestamp()
                    phases.append((created - triggered[deal], rec.start_time - created, rec.end_time - rec.start_time))
    samples.sort()
    p95 = samples[min(len(samples) - 1, int(round(0.95 * (len(samples) - 1))))]
    load = os.getloadavg()[0]
    print("\n".join([
        f"```sh\n.venv/bin/python benchmarks/deal_trigger_latency.py {shlex.join(sys.argv[1:])}\n```", "",
        f"Run {time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC; {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, load average {load:.1f}.", "",
        "| measure | value |", "|---|---|",
        f"| warm-up (daemon start, first tick, first run) | {warm:.1f} s |",
        f"| samples | {len(samples)} deals, one at a time |",
        f"| stage change -> invoice in QuickBooks | median {statistics.median(samples):.1f} s, p95 {p95:.1f} s, "
        f"max {samples[-1]:.1f} s |",
        *([f"| of which: event -> run requested by the sensor | median {statistics.median(p[0] for p in phases):.1f} s |",
           f"| of which: run queued -> started (run worker process up) | median {statistics.median(p[1] for p in phases):.1f} s |",
           f"| of which: the run's four steps | median {statistics.median(p[2] for p in phases):.1f} s |"]
          if phases else []),
    ]))


if __name__ == "__main__":
    main()
