"""The `deal_billing` job (ready_deal -> deal_invoice_draft -> deal_qbo_invoice -> deal_crm_write_back)
materialised against the sandbox over real HTTP; QuickBooks and HubSpot are read back over HTTP.

Also the month-end of the same month (`bill --month`'s code path) after a mid-month trigger:
every entry billed once, line-item invoices reported already posted, totals exact."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import dagster as dg
import pytest

from sync_pipelines import money
from sync_pipelines.billing import keys as keymod
from sync_pipelines.billing.engine import price_month
from sync_pipelines.billing.rules import parse_rules
from sync_pipelines.commands.billing_runs import bill_month
from sync_pipelines.defs.triggers.assets import DEAL_TAG, ENTERED_TAG
from sync_pipelines.ledger import Ledger
from sync_pipelines.sandbox import SandboxServer
from sync_pipelines_tests._sandbox_month import deal_properties, qbo_invoices, writeback_rows
from sync_pipelines_tests.triggers.portal import (
    ENTERED_MS,
    LINE_ITEMS_DEAL,
    MONTH,
    PROJECT_DEAL,
    PROJECT_ID,
    STAGE,
    UNKNOWN_SKU_DEAL,
    WAITING_DEAL,
    move_deal_stage,
    portal,
)


@dataclass
class Firm:
    sandbox: SandboxServer
    env: dict[str, str]
    rules_yaml: str
    fixture: dict
    home: Path
    instance: dg.DagsterInstance
    definitions: dg.Definitions
    slack: list[dict]

    def ledger(self) -> Ledger:
        return Ledger(f"sqlite:///{self.home / 'sync_ledger.db'}")

    def key(self, client: str, deal_id: str, period: str = MONTH, generation: int = 1) -> str:
        return keymod.invoice_key(self.env["QBO_REALM_ID"], client, period, f"deal-{deal_id}", generation)

    def run_deal(self, deal_id: str, entered_ms: int = ENTERED_MS, *, raise_on_error: bool = True):
        self.instance.add_dynamic_partitions("deals", [deal_id])
        job = self.definitions.resolve_job_def("deal_billing")
        return job.execute_in_process(instance=self.instance, partition_key=deal_id, raise_on_error=raise_on_error,
                                      tags={DEAL_TAG: deal_id, ENTERED_TAG: str(entered_ms)})

    def ours(self, key: str) -> list[dict]:
        doc = keymod.doc_number(key, key.split(":")[2])
        return [i for i in qbo_invoices(self.env) if i.get("DocNumber") == doc]


@pytest.fixture
def firm(tmp_path: Path, slack_webhook) -> Iterator[Firm]:
    fixture, rules_yaml = portal()
    rules_path = tmp_path / "billing_rules.yaml"
    rules_path.write_text(rules_yaml)
    home = tmp_path / "dagster_home"
    home.mkdir()
    saved = dict(os.environ)
    url, received = slack_webhook
    with SandboxServer(fixture, rate_limits="off", rotate_refresh_tokens="never") as sandbox:
        os.environ.update(sandbox.env())
        os.environ.update({"SYNC_RULES_FILE": str(rules_path), "DAGSTER_HOME": str(home), "SLACK_WEBHOOK_URL": url})
        os.environ.pop("SYNC_DATABASE_URL", None)
        os.environ.pop("SYNC_OUTPUT_DIR", None)
        try:
            from sync_pipelines.definitions import defs

            with dg.instance_for_test(temp_dir=str(home)) as instance:
                yield Firm(sandbox, sandbox.env(), rules_yaml, fixture, home, instance, defs(), received)
        finally:
            os.environ.clear()
            os.environ.update(saved)


def _outcomes(result) -> list[str]:
    frame = result.output_for_node("deal_qbo_invoice")
    return list(frame["outcome"])


def test_a_line_items_deal_becomes_one_invoice_then_the_deal_gets_its_id(firm: Firm) -> None:
    key = firm.key("cafe_zurich_gmbh", LINE_ITEMS_DEAL)
    result = firm.run_deal(LINE_ITEMS_DEAL)
    assert result.success and _outcomes(result) == ["posted"]
    [inv] = firm.ours(key)
    assert money.to_decimal(inv["TotalAmt"]) == Decimal("395.50")  # 2 x 150.00 + 95.50, no discount on line items
    assert inv["CustomerRef"]["name"] == "Café Zürich GmbH"
    props = deal_properties(firm.env, [LINE_ITEMS_DEAL])[LINE_ITEMS_DEAL]
    assert props["qbo_invoice_id"] == inv["Id"] and props["billing_status"] == "invoiced"
    assert props["qbo_invoice_number"] == inv["DocNumber"]
    # no secret in the run's event log (metadata included) or the ledger's audit rows
    secrets = [firm.env[k] for k in ("HUBSPOT_ACCESS_TOKEN", "QBO_CLIENT_SECRET", "QBO_REFRESH_TOKEN",
                                     "HARVEST_ACCESS_TOKEN")]
    log = "\n".join(str(e) for e in firm.instance.all_logs(result.run_id))
    assert "deal_qbo_invoice" in log and not [x for x in secrets if x in log]
    import sqlalchemy as sa

    from sync_pipelines.ledger.schema import audit_log

    with firm.ledger().engine.connect() as conn:
        audit = "\n".join(str(dict(r)) for r in conn.execute(sa.select(audit_log)).mappings())
    assert "/crm/v3/objects/deals/batch/read" in audit and not [x for x in secrets if x in audit]
    # the same trigger again (a retried or re-delivered run): nothing new
    again = firm.run_deal(LINE_ITEMS_DEAL)
    assert _outcomes(again) == ["already_posted"]
    assert len(firm.ours(key)) == 1


def test_an_unknown_sku_holds_the_whole_invoice_alerts_and_never_reaches_either_system(firm: Firm) -> None:
    key = firm.key("cafe_zurich_gmbh", UNKNOWN_SKU_DEAL)
    result = firm.run_deal(UNKNOWN_SKU_DEAL)
    assert result.success and _outcomes(result) == ["held"]
    assert firm.ours(key) == []
    record = firm.ledger().get_invoice(key)
    assert record.status == "held" and any("HW-STAND-9" in r for r in record.hold_reasons)
    props = deal_properties(firm.env, [UNKNOWN_SKU_DEAL])[UNKNOWN_SKU_DEAL]
    assert not props.get("qbo_invoice_id") and not props.get("billing_status")
    assert not [w for w in writeback_rows(firm.ledger()) if w["invoice_key"] == key]
    texts = [m["text"] for m in firm.slack]
    assert any(UNKNOWN_SKU_DEAL in t and "HW-STAND-9" in t and key in t for t in texts)
    meta = result.asset_materializations_for_node("deal_invoice_draft")[0].metadata
    assert "HW-STAND-9" in meta["hold_reasons"].value
    for secret in ("HUBSPOT_ACCESS_TOKEN", "QBO_CLIENT_SECRET", "QBO_REFRESH_TOKEN", "HARVEST_ACCESS_TOKEN"):
        assert all(firm.env[secret] not in t for t in texts)


def test_a_deal_that_left_the_stage_before_its_run_bills_nothing(firm: Firm) -> None:
    move_deal_stage(firm.sandbox.base_url, PROJECT_DEAL, "closedwon")
    result = firm.run_deal(PROJECT_DEAL)
    assert result.success and _outcomes(result) == []
    plan = result.output_for_node("ready_deal")["plan"]
    assert plan["basis"] is None and "left the ready_for_billing stage" in plan["reason"]
    assert firm.ledger().get_invoice(firm.key("o_brien_sons", PROJECT_DEAL)) is None


def test_a_deal_moved_into_the_stage_now_is_invoiced_in_the_month_it_entered(firm: Firm) -> None:
    move_deal_stage(firm.sandbox.base_url, WAITING_DEAL, STAGE)
    from sync_pipelines.connectors.factory import hubspot_from_env

    with hubspot_from_env(firm.env) as hs:
        deal = hs.batch_read_deals([WAITING_DEAL], [f"hs_v2_date_entered_{STAGE}"]).records[0]
    from sync_pipelines.connectors.hubspot_stages import parse_hubspot_datetime

    entered = parse_hubspot_datetime(deal.properties[f"hs_v2_date_entered_{STAGE}"])
    result = firm.run_deal(WAITING_DEAL, entered)
    assert result.success and _outcomes(result) == ["posted"]  # its line item, in the month it entered
    [inv] = firm.ours(firm.key("o_brien_sons", WAITING_DEAL, period=result.output_for_node("ready_deal")["plan"]["period"]))
    assert money.to_decimal(inv["TotalAmt"]) == Decimal("200.00")


def test_a_project_deal_mid_month_then_the_month_end_bill_every_entry_once(firm: Firm) -> None:
    deal_key = firm.key("o_brien_sons", PROJECT_DEAL)
    result = firm.run_deal(PROJECT_DEAL)
    assert result.success and _outcomes(result) == ["posted"]
    [deal_inv] = firm.ours(deal_key)
    props = deal_properties(firm.env, [PROJECT_DEAL])[PROJECT_DEAL]
    assert props["qbo_invoice_id"] == deal_inv["Id"] and props["billing_status"] == "invoiced"

    # the month-end of October afterwards, through the same code as `sync-pipelines bill --month`
    month = bill_month(MONTH, instance=firm.instance, definitions=firm.definitions)
    assert month.exit_code in (0, 3), [c.error for c in month.clients]
    ledger = firm.ledger()
    posted = [r for r in ledger.status(period=MONTH, client="o_brien_sons") if r.status == "posted"]
    assert deal_key in {r.key for r in posted} and len(posted) == 2  # the deal's and the month's
    on: dict[int, str] = {}
    for r in posted:
        for entry_id, _, status in ledger.get_invoice(r.key).entries:
            assert status == "billed" and entry_id not in on, f"entry {entry_id} on two invoices"
            on[entry_id] = r.key
    entries = firm.fixture["harvest"]["time_entries"]
    billable = {e["id"] for e in entries if e["billable"] and not e["is_running"]
                and e["spent_date"].startswith(MONTH) and e["client"]["id"] == 5700000}
    assert set(on) == billable  # every billable entry once, none dropped
    on_deal = {e for e, k in on.items() if k == deal_key}
    by_id = {e["id"]: e for e in entries}
    assert on_deal == {e for e in billable if by_id[e]["project"]["id"] == PROJECT_ID
                       and by_id[e]["spent_date"] <= "2026-10-15"}
    assert on_deal and on_deal != billable

    # totals exact: the two invoices add up to what October alone would have billed
    frame = firm.definitions.load_asset_value("harvest_time_entries", partition_key=MONTH, instance=firm.instance)
    rules = parse_rules(firm.rules_yaml, "rules.yaml")
    catalog = firm.definitions.load_asset_value("qbo_catalog", partition_key=MONTH, instance=firm.instance)
    alone = price_month(rules, MONTH, frame, None, catalog, None, firm.env["QBO_REALM_ID"], ["o_brien_sons"])
    want = sum(alone.invoices["total"], Decimal(0))
    qbo = {i["DocNumber"]: money.to_decimal(i["TotalAmt"]) for i in qbo_invoices(firm.env)}
    got = sum((qbo[r.qbo_doc_number or r.doc_number] for r in posted), Decimal(0))
    assert got == want and want > 0


def test_month_end_after_a_line_items_trigger_reports_it_already_posted(firm: Firm) -> None:
    key = firm.key("cafe_zurich_gmbh", LINE_ITEMS_DEAL)
    assert _outcomes(firm.run_deal(LINE_ITEMS_DEAL)) == ["posted"]
    month = bill_month(MONTH, client="cafe_zurich_gmbh", instance=firm.instance, definitions=firm.definitions)
    outcomes = firm.definitions.load_asset_value(
        "qbo_invoices", partition_key=dg.MultiPartitionKey({"client": "cafe_zurich_gmbh", "month": MONTH}),
        instance=firm.instance)
    mine = outcomes[outcomes["invoice_key"] == key]
    assert list(mine["outcome"]) == ["already_posted"], month
    assert len(firm.ours(key)) == 1


def test_a_deal_reentering_the_stage_is_not_billed_again(firm: Firm) -> None:
    key = firm.key("cafe_zurich_gmbh", LINE_ITEMS_DEAL)
    assert _outcomes(firm.run_deal(LINE_ITEMS_DEAL)) == ["posted"]
    move_deal_stage(firm.sandbox.base_url, LINE_ITEMS_DEAL, "contractsent")
    move_deal_stage(firm.sandbox.base_url, LINE_ITEMS_DEAL, STAGE)
    from sync_pipelines.connectors.factory import hubspot_from_env
    from sync_pipelines.connectors.hubspot_stages import parse_hubspot_datetime

    with hubspot_from_env(firm.env) as hs:
        deal = hs.batch_read_deals([LINE_ITEMS_DEAL], [f"hs_v2_date_entered_{STAGE}"]).records[0]
    entered = parse_hubspot_datetime(deal.properties[f"hs_v2_date_entered_{STAGE}"])
    assert entered != ENTERED_MS
    second = firm.run_deal(LINE_ITEMS_DEAL, entered)
    assert second.success and _outcomes(second) == []
    plan = second.output_for_node("ready_deal")["plan"]
    assert plan["already_invoiced"] == key
    assert len(firm.ours(key)) == 1
    # ... and no second invoice in the month it re-entered either
    other = keymod.invoice_key(firm.env["QBO_REALM_ID"], "cafe_zurich_gmbh", plan["period"], f"deal-{LINE_ITEMS_DEAL}", 1)
    assert other == key
