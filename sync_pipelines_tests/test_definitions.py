"""The code location as Dagster loads it: assets, groups, partitions, jobs, the month-end schedule,
the sensors that chain the month's posting run and its follow-up, and loading with no secret set."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.events import DagsterEvent, DagsterEventType

from sync_pipelines import config

REPO = Path(__file__).resolve().parent.parent

RULES = """\
version: 1
firm: {timezone: America/New_York, home_currency: USD}
defaults:
  rounding: {increment_minutes: 6, mode: up, scope: entry}
  invoice: {group_by: client, line_detail: task, terms: "Net 30"}
  qbo: {item: "Services"}
clients:
  acme: {harvest_client_id: 1001, qbo_customer: "Acme Corp", currency: USD, rates: [{rate: 150.00}]}
  globex: {harvest_client_id: 1002, qbo_customer: "Globex", currency: USD, rates: [{rate: 175.00}]}
"""


@pytest.fixture
def no_secrets(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for name in (*config.SECRET_NAMES, "HARVEST_ACCOUNT_ID", "QBO_REALM_ID", "QBO_CLIENT_ID"):
        monkeypatch.delenv(name, raising=False)
    rules = tmp_path / "billing_rules.yaml"
    rules.write_text(RULES)
    monkeypatch.setenv("SYNC_RULES_FILE", str(rules))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    return rules


def _defs() -> dg.Definitions:
    from sync_pipelines.definitions import defs

    return defs()


def test_whole_definitions_load_without_any_secret(no_secrets: Path) -> None:
    defs = _defs()
    dg.Definitions.validate_loadable(defs)
    specs = {s.key.to_user_string(): s for s in defs.resolve_all_asset_specs()}
    groups = {name: spec.group_name for name, spec in specs.items()}
    assert groups == {
        "harvest_time_entries": "extract", "hubspot_deals": "extract", "hubspot_deal_line_items": "extract",
        "qbo_catalog": "extract", "qbo_company": "extract",
        "qbo_existing_invoices": "extract", "billing_rules": "extract",
        "unassigned_time": "billing", "billable_entries": "billing", "invoice_drafts": "billing",
        "qbo_invoices": "posting", "reconciliation_report": "posting", "crm_write_back": "posting",
        "ready_deal": "triggers", "deal_invoice_draft": "triggers", "deal_qbo_invoice": "triggers",
        "deal_crm_write_back": "triggers",
    }
    for name, spec in specs.items():
        assert spec.description and len(spec.description) > 40, f"{name} needs an operator-facing description"
    graph = defs.resolve_asset_graph()
    parents = {k.to_user_string(): {p.to_user_string() for p in graph.get(k).parent_keys} for k in graph.get_all_asset_keys()}
    assert parents["qbo_invoices"] == {"invoice_drafts"}
    assert "billable_entries" in parents["invoice_drafts"]
    assert parents["billable_entries"] == {
        "harvest_time_entries", "hubspot_deals", "hubspot_deal_line_items", "qbo_catalog", "qbo_company",
        "billing_rules"}
    assert {"billable_entries", "qbo_invoices", "qbo_existing_invoices"} <= parents["reconciliation_report"]
    # a triggered deal: deal -> draft -> QuickBooks -> CRM, partitioned by deal
    assert parents["deal_invoice_draft"] == {"ready_deal"} and parents["deal_qbo_invoice"] == {"deal_invoice_draft"}
    assert parents["deal_crm_write_back"] == {"deal_qbo_invoice", "deal_invoice_draft"}
    assert defs.resolve_job_def("deal_billing").partitions_def == dg.DynamicPartitionsDefinition(name="deals")


def test_the_drafts_consistency_check_is_reported_and_enforced_per_client_by_posting(no_secrets: Path) -> None:
    # Pricing covers every client in one step, so a blocking check would hold the whole month
    # for one client's problem: the check reports it, and the posting step leaves that client out.
    defs = _defs()
    checks = {c.key.name: c for c in defs.resolve_assets_def("invoice_drafts").check_specs}
    assert not checks["drafts_are_consistent"].blocking
    assert checks["drafts_are_consistent"].asset_key == dg.AssetKey("invoice_drafts")


def test_pricing_and_follow_up_are_monthly_and_only_posting_is_per_client(no_secrets: Path) -> None:
    defs = _defs()
    from sync_pipelines.defs.partitions import client_months, monthly

    for name in ("billable_entries", "invoice_drafts", "unassigned_time", "crm_write_back", "reconciliation_report"):
        assert defs.resolve_assets_def(name).partitions_def == monthly, name
    posting = defs.resolve_assets_def("qbo_invoices")
    assert posting.partitions_def == client_months
    assert posting.backfill_policy == dg.BackfillPolicy.single_run()
    per_client = [s.key.to_user_string() for s in defs.resolve_all_asset_specs() if s.partitions_def == client_months]
    assert per_client == ["qbo_invoices"]
    assert defs.resolve_job_def("month_extract").partitions_def == monthly
    assert defs.resolve_job_def("month_posting").partitions_def == client_months
    assert defs.resolve_job_def("month_follow_up").partitions_def == monthly


_SCHEDULE_PROBE = """
from datetime import datetime
from zoneinfo import ZoneInfo
import dagster as dg
from sync_pipelines.definitions import defs
from sync_pipelines.defs.partitions import monthly
schedule = defs().resolve_schedule_def("month_end_billing")
with dg.instance_for_test() as instance:
    for tick in (datetime(2026, 11, 1, 6, 0, tzinfo=ZoneInfo("America/New_York")),
                 datetime(2027, 1, 1, 6, 0, tzinfo=ZoneInfo("America/New_York"))):
        data = schedule.evaluate_tick(dg.build_schedule_context(instance=instance, scheduled_execution_time=tick))
        print(monthly.timezone, schedule.job_name, [r.partition_key for r in data.run_requests])
"""


def test_month_end_schedule_requests_the_previous_complete_month_in_the_firm_timezone(no_secrets: Path) -> None:
    # In a fresh process, as a code server loads it: the partitions' timezone comes from the
    # rules file when the location loads.
    proc = subprocess.run([sys.executable, "-c", _SCHEDULE_PROBE], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[:2] == [
        "America/New_York month_extract ['2026-10']",
        "America/New_York month_extract ['2026-12']",
    ]


def _status_context(defs, instance, sensor_name: str, job_name: str, tags: dict, status=DagsterEventType.RUN_SUCCESS):
    run = instance.add_run(dg.DagsterRun(job_name=job_name, tags=tags))
    event = DagsterEvent(event_type_value=status.value, job_name=job_name)
    return run, dg.build_run_status_sensor_context(
        sensor_name=sensor_name, dagster_event=event, dagster_instance=instance, dagster_run=run,
    )


def test_sensor_requests_one_posting_run_for_every_client_after_a_successful_extract(no_secrets: Path) -> None:
    defs = _defs()
    sensor = defs.resolve_sensor_def("post_month_after_extract")
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("clients", ["globex", "acme", "initech"])  # registered order, not sorted
        run, ctx = _status_context(defs, instance, "post_month_after_extract", "month_extract",
                                   {"dagster/partition": "2026-10"})
        request = sensor(ctx)
        assert isinstance(request, dg.RunRequest)
        assert request.run_key == f"post|2026-10|{run.run_id}"
        assert request.tags["dagster/asset_partition_range_start"] == "globex|2026-10"
        assert request.tags["dagster/asset_partition_range_end"] == "initech|2026-10"
        # the range the run will cover: every registered client of that month, nothing else
        keys = defs.resolve_assets_def("qbo_invoices").partitions_def.get_partition_keys_in_range(
            dg.PartitionKeyRange("globex|2026-10", "initech|2026-10"), dynamic_partitions_store=instance)
        assert sorted(keys) == ["acme|2026-10", "globex|2026-10", "initech|2026-10"]

        # a re-issue's extract is followed by that client's posting only
        _, ctx = _status_context(defs, instance, "post_month_after_extract", "month_extract",
                                 {"dagster/partition": "2026-10", "sync/client": "acme"})
        assert sensor(ctx).partition_key == "acme|2026-10"
        # `bill` posts in process: the daemon must not start a second posting run beside it
        _, ctx = _status_context(defs, instance, "post_month_after_extract", "month_extract",
                                 {"dagster/partition": "2026-10", "sync/trigger": "cli"})
        assert isinstance(sensor(ctx), dg.SkipReason)


def test_follow_up_is_requested_after_posting_and_after_a_failed_posting_that_recorded_client_months(
    no_secrets: Path,
) -> None:
    defs = _defs()
    ok = defs.resolve_sensor_def("follow_up_month_after_posting")
    partial = defs.resolve_sensor_def("follow_up_month_after_partial_posting")
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("clients", ["acme", "globex"])
        range_tags = {"dagster/asset_partition_range_start": "acme|2026-10",
                      "dagster/asset_partition_range_end": "globex|2026-10"}
        run, ctx = _status_context(defs, instance, "follow_up_month_after_posting", "month_posting", range_tags)
        request = ok(ctx)
        assert (request.partition_key, request.run_key) == ("2026-10", f"follow_up|2026-10|{run.run_id}")
        _, ctx = _status_context(defs, instance, "follow_up_month_after_posting", "month_posting",
                                 {"dagster/partition": "globex|2026-10"})
        assert ok(ctx).partition_key == "2026-10"
        # a failed posting run that stored nothing has nothing to follow up
        run, ctx = _status_context(defs, instance, "follow_up_month_after_partial_posting", "month_posting",
                                   range_tags, status=DagsterEventType.RUN_FAILURE)
        instance.report_run_failed(run)
        assert isinstance(partial(ctx), dg.SkipReason)


def test_invalid_rules_stop_the_month_with_every_problem_listed(no_secrets: Path) -> None:
    no_secrets.write_text(RULES.replace("rate: 150.00", "rate: -5").replace("currency: USD, rates: [{rate: 175.00}]",
                                                                              "currency: XXQ, rates: [{rate: 175.00}]"))
    from sync_pipelines.defs.billing.assets import billing_rules
    from sync_pipelines.defs.resources import RulesResource

    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [billing_rules], partition_key="2026-10", instance=instance,
            resources={"rules": RulesResource()}, raise_on_error=False,
        )
        assert not instance.get_dynamic_partitions("clients")
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    message = str(failure.step_failure_data.error)
    assert "clients.acme.rates[0].rate" in message
    assert "clients.globex.currency" in message


def test_dagster_cli_validates_the_workspace(no_secrets: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "dagster", "definitions", "validate", "-w", "workspace.yaml"],
        cwd=REPO, capture_output=True, text=True, timeout=180,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_posting_batch_settings_are_read_and_checked(monkeypatch) -> None:
    from sync_pipelines import config
    from sync_pipelines.defs.resources import build_resources

    monkeypatch.setenv("QBO_BATCH_SIZE", "12")
    monkeypatch.setenv("QBO_BATCHES_IN_FLIGHT", "2")
    qbo = build_resources()["quickbooks"]
    assert (qbo.batch_size, qbo.batches_in_flight) == (12, 2)
    for bad in ("31", "0", "thirty"):  # QuickBooks takes at most 30 items a batch
        monkeypatch.setenv("QBO_BATCH_SIZE", bad)
        with pytest.raises(ValueError, match=rf"QBO_BATCH_SIZE='{bad}': expected a whole number from 1 to 30"):
            config.int_setting("QBO_BATCH_SIZE", 1, 30)
