"""The `ready_for_billing_deals` sensor through Dagster's sensor evaluation API (`build_sensor_context`,
`evaluate_tick`), its resources pointed at the sandbox over HTTP; and once through the real
`dagster-daemon`, which turns a stage change into exactly one invoice in the sandbox's QuickBooks."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from sync_pipelines.billing import keys as keymod
from sync_pipelines.connectors.factory import hubspot_from_env
from sync_pipelines.connectors.hubspot_stages import iso_ms, parse_hubspot_datetime
from sync_pipelines.ledger import Ledger
from sync_pipelines.sandbox import SandboxServer
from sync_pipelines.serving import stop_process
from sync_pipelines.triggers.stage_entry import StageEntry
from sync_pipelines_tests._sandbox_month import qbo_invoices
from sync_pipelines_tests.triggers.portal import (
    ENTERED_MS,
    LINE_ITEMS_DEAL,
    PROJECT_DEAL,
    STAGE,
    UNKNOWN_SKU_DEAL,
    WAITING_DEAL,
    hubspot_event,
    move_deal_stage,
    portal,
)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def env_home(tmp_path: Path) -> Iterator[tuple[SandboxServer, Path, Path]]:
    fixture, rules_yaml = portal()
    # PROJECT_DEAL was edited a minute ago (its stage entry is still October's): polling finds it
    recent = iso_ms(int(time.time() * 1000) - 60_000)
    for d in fixture["hubspot"]["deals"]:
        if d["id"] == PROJECT_DEAL:
            d["properties"]["hs_lastmodifieddate"] = recent
    rules = tmp_path / "billing_rules.yaml"
    rules.write_text(rules_yaml)
    home = tmp_path / "home"
    home.mkdir()
    saved = dict(os.environ)
    with SandboxServer(fixture, rate_limits="off", rotate_refresh_tokens="never") as sb:
        os.environ.update(sb.env())
        os.environ.update({"SYNC_RULES_FILE": str(rules), "DAGSTER_HOME": str(home)})
        os.environ.pop("SYNC_DATABASE_URL", None)
        os.environ.pop("SLACK_WEBHOOK_URL", None)
        try:
            yield sb, home, rules
        finally:
            os.environ.clear()
            os.environ.update(saved)


def test_one_tick_requests_one_run_per_trigger_and_adds_the_partitions(env_home) -> None:
    sb, home, _ = env_home
    from sync_pipelines.definitions import defs

    definitions = defs()
    sensor = definitions.resolve_sensor_def("ready_for_billing_deals")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    assert sensor.minimum_interval_seconds <= 10
    ledger = Ledger(f"sqlite:///{home / 'sync_ledger.db'}")
    ledger.migrate()
    for n, deal in enumerate([LINE_ITEMS_DEAL, LINE_ITEMS_DEAL, PROJECT_DEAL, WAITING_DEAL], start=1):
        ledger.inbox_put("hubspot", str(n), hubspot_event(n, deal))
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        resources = {k: definitions.resources[k] for k in ("hubspot", "ledger", "rules")}
        with dg.build_sensor_context(instance=instance, resources=resources) as ctx:
            raw = sensor(ctx)
        assert isinstance(raw, dg.SensorResult)
        keys = sorted(r.run_key for r in raw.run_requests)
        # webhooks: LINE_ITEMS (twice) and PROJECT; polling: PROJECT again; WAITING is not in the stage
        assert keys == sorted(StageEntry(d, ENTERED_MS).run_key for d in (LINE_ITEMS_DEAL, PROJECT_DEAL))
        assert {r.partition_key for r in raw.run_requests} == {LINE_ITEMS_DEAL, PROJECT_DEAL}
        assert all(r.tags["sync/stage_entered_ms"] == str(ENTERED_MS) for r in raw.run_requests)
        [add] = raw.dynamic_partitions_requests
        assert sorted(add.partition_keys) == sorted([LINE_ITEMS_DEAL, PROJECT_DEAL])
        cursor = json.loads(raw.cursor)
        assert cursor["ack"] == [1, 2, 3, 4] and cursor["failures"] == 0

        # the daemon's path: partitions exist, run requests validate against them
        instance.add_dynamic_partitions("deals", [LINE_ITEMS_DEAL, PROJECT_DEAL])
        with dg.partition_loading_context(dynamic_partitions_store=instance), \
                dg.build_sensor_context(instance=instance, resources=resources, definitions=definitions) as ctx:
            data = sensor.evaluate_tick(ctx)
        assert sorted(r.run_key for r in data.run_requests) == keys
        # the next tick marks the events processed and, polling not due, requests nothing
        with dg.partition_loading_context(dynamic_partitions_store=instance), \
                dg.build_sensor_context(instance=instance, resources=resources, definitions=definitions,
                                        cursor=data.cursor) as ctx:
            nxt = sensor.evaluate_tick(ctx)
        assert nxt.run_requests == [] and ledger.inbox_pending(10, source="hubspot") == []


def test_without_a_ready_stage_in_the_rules_the_sensor_skips(env_home) -> None:
    _, home, rules = env_home
    rules.write_text(rules.read_text().replace("hubspot: {ready_for_billing_stage: ready_for_billing}\n", ""))
    from sync_pipelines.definitions import defs

    definitions = defs()
    sensor = definitions.resolve_sensor_def("ready_for_billing_deals")
    resources = {k: definitions.resources[k] for k in ("hubspot", "ledger", "rules")}
    with dg.instance_for_test(temp_dir=str(home)) as instance, \
            dg.build_sensor_context(instance=instance, resources=resources) as ctx:
        data = sensor.evaluate_tick(ctx)
    assert data.run_requests == [] and "ready_for_billing_stage" in (data.skip_message or "")


def test_the_rules_file_is_parsed_once_per_version(env_home) -> None:
    _, _, rules = env_home
    from sync_pipelines.billing import rules_cache

    first = rules_cache.cached_rules(rules)
    n = rules_cache.parses
    for _ in range(50):
        assert rules_cache.cached_rules(rules) is first
    assert rules_cache.parses == n
    rules.write_text(rules.read_text() + "\n# edited\n")
    assert rules_cache.cached_rules(rules) is not first and rules_cache.parses == n + 1


# ---------------------------------------------------------------------------- the real daemon


def _diagnose(home: Path) -> str:
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        runs = [(r.job_name, r.status, r.tags.get("dagster/partition")) for r in instance.get_runs()]
    return f"runs {runs}; daemon log: " + (home / "daemon.log").read_text()[-3000:]


def test_the_daemon_turns_a_stage_change_into_exactly_one_invoice(env_home) -> None:
    sb, home, _ = env_home
    env = sb.env()
    ledger = Ledger(f"sqlite:///{home / 'sync_ledger.db'}")
    ledger.migrate()
    # the waiting deal is moved to the stage (the sandbox sets its stage-entered date to now) and
    # the webhook for it arrives twice (HubSpot retries), as the receiver would store it
    move_deal_stage(sb.base_url, WAITING_DEAL, STAGE)
    with hubspot_from_env(env) as hs:
        deal = hs.batch_read_deals([WAITING_DEAL], [f"hs_v2_date_entered_{STAGE}"]).records[0]
    entered = parse_hubspot_datetime(deal.properties[f"hs_v2_date_entered_{STAGE}"])
    ledger.inbox_put("hubspot", "900", hubspot_event(900, WAITING_DEAL, occurred_ms=entered))
    ledger.inbox_put("hubspot", "901", hubspot_event(901, WAITING_DEAL, occurred_ms=entered, attempt=1))
    day = dt.datetime.fromtimestamp(entered / 1000, dt.timezone.utc).astimezone(
        __import__("zoneinfo").ZoneInfo("America/New_York"))
    period = f"{day.year:04d}-{day.month:02d}"
    key = keymod.invoice_key(env["QBO_REALM_ID"], "o_brien_sons", period, f"deal-{WAITING_DEAL}", 1)
    doc = keymod.doc_number(key, period)

    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "dagster-daemon"), "run", "-w", "workspace.yaml"],
        cwd=REPO, env={**os.environ}, stdout=subprocess.DEVNULL, stderr=open(home / "daemon.log", "wb"),
    )
    started = time.monotonic()
    try:
        deadline = started + 90
        found: list[dict] = []
        while time.monotonic() < deadline:
            found = [i for i in qbo_invoices(env) if i.get("DocNumber") == doc]
            if found and ledger.pending_writebacks() == [] and ledger.inbox_pending(10, "hubspot") == []:
                break
            if proc.poll() is not None:
                pytest.fail("dagster-daemon exited: " + (home / "daemon.log").read_text()[-2000:])
            time.sleep(1)
        assert len(found) == 1, "no invoice within 90 s: " + _diagnose(home)
        print(f"invoice after {time.monotonic() - started:.1f} s")
        # the events were marked processed: at least one more tick ran after the run request
        assert len([i for i in qbo_invoices(env) if i.get("DocNumber") == doc]) == 1
    finally:
        stop_process(proc)
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        runs = [r for r in instance.get_runs() if r.job_name == "deal_billing"]
    mine = [r for r in runs if r.tags.get("dagster/partition") == WAITING_DEAL]
    assert len(mine) == 1 and mine[0].tags["dagster/run_key"] == StageEntry(WAITING_DEAL, entered).run_key
    # the other deals polling found (PROJECT_DEAL, edited a minute ago) also ran once each
    assert len({r.tags.get("dagster/run_key") for r in runs}) == len(runs)
    assert UNKNOWN_SKU_DEAL not in {r.tags.get("dagster/partition") for r in runs}  # October: outside the lookback
