"""Month-end billing end to end: generated fixture -> sandbox over real loopback HTTP -> the
Dagster assets -> invoices read back from the sandbox's QuickBooks API, checked against totals
computed independently from the fixture. Also: a second run posts nothing, and no secret leaks
into the event log, the ledger's audit rows or the files written for people.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import dagster as dg
import httpx
import pytest

from sync_pipelines import money
from sync_pipelines.commands.billing_runs import EXIT_OK, BillingRun, bill_month
from sync_pipelines.connectors.quickbooks import QboOAuth, QuickBooksClient
from sync_pipelines.ledger import Ledger
from sync_pipelines.sandbox import SandboxServer, generate_fixture
from sync_pipelines_tests.independent_totals import expected_invoices

PERIOD = "2026-10"
REPO = Path(__file__).resolve().parent.parent


@dataclass
class Billed:
    fixture: dict
    rules_yaml: str
    sandbox: SandboxServer
    instance: dg.DagsterInstance
    definitions: dg.Definitions
    first: BillingRun
    home: Path

    def ledger(self) -> Ledger:
        return Ledger(f"sqlite:///{self.home / 'sync_ledger.db'}")

    def qbo_invoices(self) -> list[dict]:
        ledger = self.ledger()
        env = self.sandbox.env()
        oauth = QboOAuth(env["QBO_TOKEN_URL"], env["QBO_CLIENT_ID"], env["QBO_CLIENT_SECRET"], ledger.tokens,
                         env["QBO_REALM_ID"], seed_refresh_token=env["QBO_REFRESH_TOKEN"])
        with QuickBooksClient(env["QBO_BASE_URL"], env["QBO_REALM_ID"], oauth) as qbo:
            return qbo.query_all("Invoice")


@pytest.fixture(scope="module")
def billed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Billed]:
    tmp = tmp_path_factory.mktemp("e2e")
    fixture, rules_yaml = generate_fixture(clients=6, entries=500, seed=11, month=PERIOD)
    rules_path = tmp / "billing_rules.yaml"
    rules_path.write_text(rules_yaml)
    home = tmp / "dagster_home"
    home.mkdir()
    saved = dict(os.environ)
    with SandboxServer(fixture) as sandbox:
        os.environ.update(sandbox.env())
        os.environ.update({"SYNC_RULES_FILE": str(rules_path), "DAGSTER_HOME": str(home)})
        os.environ.pop("SYNC_DATABASE_URL", None)
        os.environ.pop("SYNC_OUTPUT_DIR", None)
        try:
            from sync_pipelines.definitions import defs

            definitions = defs()
            with dg.instance_for_test(temp_dir=str(home)) as instance:
                first = bill_month(PERIOD, instance=instance, definitions=definitions)
                yield Billed(fixture, rules_yaml, sandbox, instance, definitions, first, home)
        finally:
            os.environ.clear()
            os.environ.update(saved)


def _ours(invoices: list[dict]) -> list[dict]:
    return [i for i in invoices if str(i.get("DocNumber", "")).startswith("SP" + PERIOD.replace("-", "")[2:])]


def test_every_invoice_matches_totals_computed_from_the_fixture(billed: Billed) -> None:
    assert billed.first.exit_code == EXIT_OK, [c.error for c in billed.first.clients]
    expected = expected_invoices(billed.fixture, billed.rules_yaml, PERIOD)
    assert len(expected) >= 4
    invoices = _ours(billed.qbo_invoices())
    by_customer = {}
    for inv in invoices:
        name = inv["CustomerRef"]["name"]
        assert name not in by_customer, f"two invoices for {name}"
        by_customer[name] = inv
    assert set(by_customer) == set(expected)
    for name, want in expected.items():
        got = by_customer[name]
        assert money.to_decimal(got["TotalAmt"]) == want["total"], name
        hours = sum(
            (money.to_decimal(line["SalesItemLineDetail"]["Qty"]) for line in got["Line"]
             if line.get("DetailType") == "SalesItemLineDetail"),
            Decimal(0),
        )
        assert hours == want["hours"], name


def test_every_billable_entry_is_on_exactly_one_posted_invoice(billed: Billed) -> None:
    ledger = billed.ledger()
    records = [r for r in ledger.status(period=PERIOD) if r.status == "posted"]
    billed_entries: dict[int, str] = {}
    for record in records:
        full = ledger.get_invoice(record.key)
        for entry_id, _, status in full.entries:
            assert status == "billed"
            assert entry_id not in billed_entries
            billed_entries[entry_id] = record.key
    billable = {
        e["id"] for e in billed.fixture["harvest"]["time_entries"]
        if e["billable"] and not e["is_running"] and str(e["spent_date"]).startswith(PERIOD)
        and e["client"]["id"] != billed.fixture["harvest"]["clients"][-1]["id"]  # the unmapped client
    }
    assert set(billed_entries) == billable


def test_unmapped_client_time_is_reported_not_lost(billed: Billed) -> None:
    unassigned = billed.definitions.load_asset_value("unassigned_time", partition_key=PERIOD, instance=billed.instance)
    unmapped_id = billed.fixture["harvest"]["clients"][-1]["id"]
    in_month = [e for e in billed.fixture["harvest"]["time_entries"]
                if e["client"]["id"] == unmapped_id and str(e["spent_date"]).startswith(PERIOD)]
    assert len(in_month) > 0
    assert sorted(unassigned["entry_id"]) == sorted(e["id"] for e in in_month)


def test_runs_are_recorded_in_the_instance_for_the_ui(billed: Billed) -> None:
    runs = billed.instance.get_runs()
    first = [r for r in runs if r.run_id in {billed.first.extract_run_id, billed.first.posting_run_id,
                                             billed.first.follow_up_run_id}]
    # one month-end = three runs, whatever the number of clients (issue 9 item 1)
    assert sorted(r.job_name for r in first) == ["month_extract", "month_follow_up", "month_posting"]
    posting = next(r for r in first if r.job_name == "month_posting")
    keys = billed.definitions.resolve_assets_def("qbo_invoices").partitions_def.get_partition_keys_in_range(
        dg.PartitionKeyRange(posting.tags["dagster/asset_partition_range_start"],
                             posting.tags["dagster/asset_partition_range_end"]),
        dynamic_partitions_store=billed.instance)
    assert sorted(keys) == sorted(f"{c.client_key}|{PERIOD}" for c in billed.first.clients)


def test_a_second_run_posts_nothing(billed: Billed) -> None:
    before = _ours(billed.qbo_invoices())
    second = bill_month(PERIOD, instance=billed.instance, definitions=billed.definitions)
    assert second.exit_code == EXIT_OK
    outcomes = [o for c in second.clients for o in c.outcomes["outcome"]]
    assert outcomes and set(outcomes) == {"already_posted"}
    after = _ours(billed.qbo_invoices())
    assert sorted(i["Id"] for i in after) == sorted(i["Id"] for i in before)


def test_no_secret_reaches_logs_audit_rows_metadata_or_files(billed: Billed) -> None:
    env = billed.sandbox.env()
    secrets = [env[k] for k in ("HARVEST_ACCESS_TOKEN", "HUBSPOT_ACCESS_TOKEN", "QBO_CLIENT_SECRET", "QBO_REFRESH_TOKEN")]
    stored = billed.ledger().tokens.get(env["QBO_REALM_ID"])
    assert stored is not None
    secrets.append(stored.refresh_token.get_secret_value())
    if stored.access_token is not None:
        secrets.append(stored.access_token.get_secret_value())
    secrets = [s for s in secrets if s]
    assert len(secrets) >= 5

    haystacks = []
    for run in billed.instance.get_runs():
        for record in billed.instance.all_logs(run.run_id):
            haystacks.append(str(record))
    haystacks.extend(str(a) for a in billed.ledger().audit_records(limit=100_000))
    assert any("quickbooks" in h for h in haystacks)
    for path in billed.home.rglob("*"):
        if path.is_file() and path.suffix in {".csv", ".json", ".parquet", ".yaml"}:
            haystacks.append(path.read_bytes().decode("utf-8", errors="replace"))
    for secret in secrets:
        leaks = [h[:200] for h in haystacks if secret in h]
        assert not leaks, f"a secret leaked into: {leaks[0]}"


@pytest.fixture(scope="module")
def webserver(billed: Billed) -> Iterator[str]:
    """A real dagster-webserver process on the instance the billing runs were recorded in."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "DAGSTER_HOME": str(billed.home), **billed.sandbox.env()}
    proc = subprocess.Popen(
        [sys.executable, "-m", "dagster_webserver", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{base}/server_info", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "webserver did not start"
            time.sleep(0.5)
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_the_webserver_api_shows_lineage_runs_and_the_billing_board(billed: Billed, webserver: str) -> None:
    def gql(query: str) -> dict:
        response = httpx.post(f"{webserver}/graphql", json={"query": query}, timeout=60)
        response.raise_for_status()
        body = response.json()
        assert "errors" not in body, body
        return body["data"]

    nodes = gql("{ assetNodes { assetKey { path } dependencyKeys { path } groupName } }")["assetNodes"]
    deps = {n["assetKey"]["path"][-1]: {d["path"][-1] for d in n["dependencyKeys"]} for n in nodes}
    assert deps["qbo_invoices"] == {"invoice_drafts"}
    runs = gql('{ runsOrError { ... on Runs { results { runId jobName status tags { key value } } } } }')
    results = runs["runsOrError"]["results"]
    billing_runs = [r for r in results if r["jobName"] == "month_posting"]
    assert billing_runs and all(r["status"] == "SUCCESS" for r in billing_runs)
    status = gql(
        '{ assetNodeOrError(assetKey: {path: ["qbo_invoices"]}) { ... on AssetNode { '
        'assetPartitionStatuses { ... on MultiPartitionStatuses { primaryDimensionName '
        'ranges { primaryDimStartKey secondaryDim { ... on DefaultPartitionStatuses { materializedPartitions } } } } } } } }'
    )["assetNodeOrError"]["assetPartitionStatuses"]
    materialized = {p for r in status["ranges"] for p in r["secondaryDim"]["materializedPartitions"]}
    assert {c.client_key for c in billed.first.clients} <= materialized


def _chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    if os.environ.get("CI"):
        pytest.fail("chromium is not installed: .ci/run installs Debian's chromium for this test")
    pytest.skip("no chromium on this machine (apt-get install chromium) to render the UI")


def _render(url: str, tmp_path: Path) -> str:
    # Flags as the machine notes require for headless Chromium as root on a closed network.
    proc = subprocess.run(
        [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path}", "--virtual-time-budget=20000", "--dump-dom", url],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def test_a_browser_renders_the_runs_and_the_billing_board(billed: Billed, webserver: str, tmp_path: Path) -> None:
    runs_page = _render(f"{webserver}/runs", tmp_path / "a")
    assert "month_posting" in runs_page and "month_extract" in runs_page
    board = _render(f"{webserver}/assets/qbo_invoices?view=partitions", tmp_path / "b")
    assert f"Materialized ({len(billed.first.clients)})" in board
    for client in billed.first.clients:
        assert client.client_key in board
