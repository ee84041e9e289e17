"""`sync-pipelines serve --sandbox` as a real subprocess: everything comes up, moving the deal the
banner names (with the banner's own curl) goes sandbox -> signed webhook -> receiver -> inbox ->
the daemon's deal sensor -> a deal_billing run, and ends as exactly one invoice in the sandbox's
QuickBooks; SIGTERM stops every process it started."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from decimal import Decimal
from pathlib import Path

import httpx

from sync_pipelines import money
from sync_pipelines.ledger import Ledger
from sync_pipelines.sandbox.generator import TRIAL_DEAL_NAME
from sync_pipelines.serving import free_port

REPO = Path(__file__).resolve().parents[2]


def _processes_with_home(home: str) -> set[int]:
    """Every live process whose environment has DAGSTER_HOME=home (children and grandchildren)."""
    pids = set()
    needle = f"DAGSTER_HOME={home}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                pids.add(int(entry.name))
        except OSError:
            continue
    return pids


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_serve_sandbox_bills_the_moved_deal_and_stops_on_sigterm(tmp_path):
    ui, hooks, sandbox = free_port(), free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("SYNC_DATABASE_URL", "DAGSTER_HOME", "WEBHOOK_PUBLIC_URL")}
    home = str((tmp_path / "trial" / "dagster_home").resolve())
    proc = subprocess.Popen(
        [sys.executable, "-m", "sync_pipelines.cli", "serve", "--sandbox", "--dir", str(tmp_path / "trial"),
         "--port", str(ui), "--webhooks-port", str(hooks), "--sandbox-port", str(sandbox)],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True)  # type: ignore[union-attr]
    reader.start()
    started: set[int] = set()
    try:
        deadline = time.monotonic() + 300
        while not any("sync_pipelines is running" in l for l in lines):
            assert proc.poll() is None, "serve exited early:\n" + "".join(lines[-50:])
            assert time.monotonic() < deadline, "serve not ready in 300 s:\n" + "".join(lines[-50:])
            time.sleep(0.5)
        time.sleep(1.0)  # the lines after the banner
        out = "".join(lines)
        assert f"http://127.0.0.1:{ui}" in out and f"http://127.0.0.1:{hooks}/healthz" in out
        assert f"http://127.0.0.1:{sandbox}" in out
        curl = re.search(r"curl -X POST (\S+/_sandbox/actions/move_deal_stage) -d '(.+)'", out)
        assert curl, out

        with httpx.Client(timeout=10) as http:
            assert http.get(f"http://127.0.0.1:{ui}/server_info").status_code == 200
            health = http.get(f"http://127.0.0.1:{hooks}/healthz").json()
            assert health["ok"] is True
            assert {k: v["secret_configured"] for k, v in health["endpoints"].items()} == {"hubspot": True, "quickbooks": True}
            config = http.get(f"http://127.0.0.1:{sandbox}/_sandbox/webhooks").json()["config"]
            assert config["hubspot_url"] == f"http://127.0.0.1:{hooks}/webhooks/hubspot"
            # what the banner tells the user to run
            moved = http.post(curl.group(1), content=curl.group(2))
            assert moved.status_code == 200, moved.text
            deal_id = moved.json()["id"]

        # the bounded wait: webhook (about a second) + sensor tick (2 s) + run start and steps
        # (seconds, more on a loaded machine); well inside the polling path's 30 s + 10 s lag too
        invoices: list[dict] = []
        state: dict = {}
        deadline = time.monotonic() + 90
        with httpx.Client(timeout=10) as http:
            while time.monotonic() < deadline:
                state = money.loads(http.get(f"http://127.0.0.1:{sandbox}/_sandbox/state").content)
                invoices = [i for i in state["quickbooks"]["invoices"]
                            if f":deal-{deal_id}:" in str(i.get("PrivateNote") or "")]
                if invoices:
                    break
                time.sleep(0.5)
            assert len(invoices) == 1, "".join(lines[-40:])
            [invoice] = invoices
            # the deal's two line items, nothing else: 2 x 1500.00 and 4 x 95.50
            assert sorted(ln["Amount"] for ln in invoice["Line"] if ln.get("DetailType") == "SalesItemLineDetail") == [
                Decimal("382.00"), Decimal("3000.00")]
            # it came by the webhook: delivered to the receiver, stored (the sensor drains the inbox)
            deliveries = http.get(f"http://127.0.0.1:{sandbox}/_sandbox/webhooks").json()["deliveries"]
            assert any(d["api"] == "hubspot" and d.get("status") == 200 for d in deliveries), deliveries
            health = http.get(f"http://127.0.0.1:{hooks}/healthz").json()
            assert health["counters"]["hubspot"]["events_accepted"] >= 1
            # the run's last step writes the invoice back to the deal; by then, and a few sensor
            # ticks later, there is still exactly one invoice for the deal
            deal: dict = {}
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                state = money.loads(http.get(f"http://127.0.0.1:{sandbox}/_sandbox/state").content)
                [deal] = [d for d in state["hubspot"]["deals"] if d["id"] == deal_id]
                if deal["properties"].get("qbo_invoice_id"):
                    break
                time.sleep(0.5)
            assert deal["properties"].get("qbo_invoice_id") == invoice["Id"]
            time.sleep(4)
            state = money.loads(http.get(f"http://127.0.0.1:{sandbox}/_sandbox/state").content)
        assert [i["Id"] for i in state["quickbooks"]["invoices"]
                if f":deal-{deal_id}:" in str(i.get("PrivateNote") or "")] == [invoice["Id"]]
        assert deal["properties"]["dealname"].endswith(TRIAL_DEAL_NAME)  # the generated deal left out of the stage

        ledger = Ledger(f"sqlite:///{home}/sync_ledger.db")
        try:  # the posting went through the ledger's exactly-once protocol
            assert [r.status for r in ledger.status() if f":deal-{deal_id}:" in r.key] == ["posted"]
        finally:
            ledger.dispose()

        started = _processes_with_home(home) - {proc.pid}
        assert len(started) >= 3  # receiver, webserver, daemon (+ their code servers)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=90) == 0, "".join(lines[-30:])
        reader.join(timeout=5)
        assert "Stopped." in "".join(lines)
        deadline = time.monotonic() + 10
        while any(_alive(p) for p in started) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not [p for p in started if _alive(p)]
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
        for pid in started | _processes_with_home(home):  # only processes this test started
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


def test_trial_rules_set_the_stage_and_leave_the_demo_rules_alone(tmp_path):
    from sync_pipelines.billing.rules_cache import cached_rules, ready_for_billing_stage
    from sync_pipelines.commands.demo import demo_data
    from sync_pipelines.commands.serve import trial_rules

    _, demo_rules = demo_data(tmp_path, "2026-11")
    before = demo_rules.read_text()
    path = trial_rules(demo_rules)
    assert path != demo_rules and demo_rules.read_text() == before
    assert ready_for_billing_stage(demo_rules) is None  # make demo's month-end: no deal triggers
    assert ready_for_billing_stage(path) == "ready_for_billing"
    # the same clients and prices otherwise
    assert cached_rules(path).clients == cached_rules(demo_rules).clients
    assert trial_rules(demo_rules).read_text() == path.read_text()  # idempotent across restarts


def test_the_deal_to_move_has_line_items_and_is_not_in_the_stage_yet():
    from sync_pipelines.commands.demo import DEMO_CLIENTS, DEMO_ENTRIES, DEMO_SEED
    from sync_pipelines.commands.serve import deal_to_move
    from sync_pipelines.sandbox import generate_fixture

    fixture, _ = generate_fixture(clients=DEMO_CLIENTS, entries=DEMO_ENTRIES, seed=DEMO_SEED, month="2026-11")
    hs = fixture["hubspot"]
    deal_id = deal_to_move(fixture)
    [deal] = [d for d in hs["deals"] if d["id"] == deal_id]
    assert deal["properties"]["dealname"].endswith(TRIAL_DEAL_NAME)
    assert deal["properties"]["dealstage"] == "contractsent"
    items = [a["to_id"] for a in hs["associations"] if a["from_id"] == deal_id and a["to_type"] == "line_items"]
    assert len(items) == 2
    company = [a["to_id"] for a in hs["associations"] if a["from_id"] == deal_id and a["to_type"] == "companies"]
    assert company and company[0] in {c["id"] for c in hs["companies"]}
    # once it is in the stage there is nothing left to move (every other package is there already)
    deal["properties"]["dealstage"] = "ready_for_billing"
    assert deal_to_move(fixture) is None
