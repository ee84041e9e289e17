"""`sync-pipelines bill` and `rules check` as an operator uses them: exit statuses, held invoices
never posted, and a dry run whose payloads are exactly what posting then sends."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from sync_pipelines import money
from sync_pipelines.commands.billing_runs import EXIT_HELD, EXIT_OK, bill_month
from sync_pipelines.cli import main
from sync_pipelines.ledger import Ledger
from sync_pipelines.sandbox import SandboxServer, generate_fixture

PERIOD = "2026-10"


@pytest.fixture
def sandbox_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    fixture, rules_yaml = generate_fixture(clients=4, entries=160, seed=5, month=PERIOD)
    home = tmp_path / "home"
    home.mkdir()
    with SandboxServer(fixture) as sandbox:
        for name, value in sandbox.env().items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("DAGSTER_HOME", str(home))
        monkeypatch.delenv("SYNC_DATABASE_URL", raising=False)
        monkeypatch.delenv("SYNC_OUTPUT_DIR", raising=False)
        yield fixture, rules_yaml, tmp_path, home, sandbox


def _bill(rules_path: Path, monkeypatch: pytest.MonkeyPatch, instance: dg.DagsterInstance, **kw):
    monkeypatch.setenv("SYNC_RULES_FILE", str(rules_path))
    from sync_pipelines.definitions import defs

    return bill_month(PERIOD, instance=instance, definitions=defs(), **kw)


def test_an_invoice_with_an_unknown_item_is_held_whole_and_the_run_exits_3(sandbox_env, monkeypatch, slack_webhook) -> None:
    fixture, rules_yaml, tmp, home, sandbox = sandbox_env
    webhook_url, alerts = slack_webhook
    monkeypatch.setenv("SLACK_WEBHOOK_URL", webhook_url)
    monkeypatch.setenv("DAGSTER_WEBSERVER_URL", "http://dagster.example:3000")
    first_client = rules_yaml.split("clients:\n", 1)[1].split(":", 1)[0].strip()
    held_rules = rules_yaml.replace(
        f"  {first_client}:\n", f"  {first_client}:\n    qbo: {{item: \"No Such Item\"}}\n", 1
    )
    rules_path = tmp / "rules.yaml"
    rules_path.write_text(held_rules)
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        run = _bill(rules_path, monkeypatch, instance)
    assert run.exit_code == EXIT_HELD
    held = next(c for c in run.clients if c.client_key == first_client)
    [invoice] = held.drafts["invoices"]
    assert invoice["status"] == "held"
    assert any("No Such Item" in r for r in invoice["hold_reasons"])
    assert list(held.outcomes["outcome"]) == ["held"]
    # Nothing of it reached QuickBooks; the other clients were posted.
    qbo_numbers = {i.get("DocNumber") for i in sandbox.state()["quickbooks"]["invoices"]}
    assert invoice["doc_number"] not in qbo_numbers
    others = [c for c in run.clients if c.client_key != first_client]
    assert others and all(set(c.outcomes["outcome"]) == {"posted"} for c in others)
    ledger = Ledger(f"sqlite:///{home / 'sync_ledger.db'}")
    statuses = {r.client_key: r.status for r in ledger.status(period=PERIOD)}
    assert statuses[first_client] == "held"
    report = (home / "output" / PERIOD / first_client / "reconciliation_report.csv").read_text()
    assert "held" in report and "No Such Item" in report
    # The operator is alerted with the client, the period and the key.
    [alert] = [a["text"] for a in alerts if "held, not sent to QuickBooks" in a["text"]]
    assert f"client {first_client}, period {PERIOD}" in alert and invoice["invoice_key"] in alert
    assert "No Such Item" in alert and "http://dagster.example:3000/runs/" in alert
    assert webhook_url not in alert and sandbox.env()["QBO_CLIENT_SECRET"] not in alert


def test_dry_run_payloads_are_exactly_what_posting_sends(sandbox_env, monkeypatch) -> None:
    fixture, rules_yaml, tmp, home, sandbox = sandbox_env
    rules_path = tmp / "rules.yaml"
    rules_path.write_text(rules_yaml)
    out = tmp / "dry"
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        dry = _bill(rules_path, monkeypatch, instance, dry_run=True, out_dir=out)
        assert dry.exit_code == EXIT_OK
        assert not sandbox.state()["quickbooks"].get("invoices") or all(
            not str(i.get("DocNumber", "")).startswith("SP") for i in sandbox.state()["quickbooks"]["invoices"]
        )
        written = {p.stem: money.loads(p.read_text()) for p in out.glob("SP*.json")}
        assert written and (out / "diff_against_quickbooks.csv").exists()
        real = _bill(rules_path, monkeypatch, instance)
        assert real.exit_code == EXIT_OK
    ledger = Ledger(f"sqlite:///{home / 'sync_ledger.db'}")
    compared = 0
    for record in ledger.status(period=PERIOD):
        sent = money.loads(ledger.get_invoice(record.key).payload_json)
        previewed = written[record.doc_number]
        if "value" not in previewed["CustomerRef"]:
            # The customer did not exist at dry-run time; posting created it.
            assert previewed["CustomerRef"]["name"] == sent["CustomerRef"]["name"]
            previewed = {**previewed, "CustomerRef": sent["CustomerRef"]}
        assert previewed == sent
        compared += 1
    assert compared == len(written)


def test_rules_check_lists_every_problem_and_fails(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "version: 1\nfirm: {timezone: America/New_York, home_currency: USD}\n"
        "clients:\n  acme:\n    harvest_client_id: 1\n    qbo_customer: Acme\n    currency: USD\n"
        "    rates:\n      - {rate: 150.00}\n      - {rate: 160.00, from: not-a-date}\n"
        "    rounding: {increment_minutes: 7, mode: up, scope: entry}\n"
    )
    assert main(["rules", "check", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "clients.acme.rates[1].from" in err
    assert "clients.acme.rounding.increment_minutes" in err

    _, rules_yaml = generate_fixture(clients=3, entries=10, seed=1, month=PERIOD)
    good = tmp_path / "good.yaml"
    good.write_text(rules_yaml)
    assert main(["rules", "check", str(good)]) == 0


def test_bill_command_json_summary_and_exit_status(sandbox_env, monkeypatch, capsys) -> None:
    fixture, rules_yaml, tmp, home, sandbox = sandbox_env
    rules_path = tmp / "rules.yaml"
    rules_path.write_text(rules_yaml)
    monkeypatch.setenv("SYNC_RULES_FILE", str(rules_path))
    assert main(["bill", "--month", PERIOD, "--json"]) == EXIT_OK
    summary = money.loads(capsys.readouterr().out)
    assert summary["exit_code"] == EXIT_OK and summary["period"] == PERIOD
    outcomes = [o for c in summary["clients"] for o in c["outcomes"]]
    assert outcomes and {o["outcome"] for o in outcomes} == {"posted"}
    # Amounts are exact decimals in the JSON, equal to what QuickBooks holds.
    qbo = {i["DocNumber"]: i["TotalAmt"] for i in sandbox.state()["quickbooks"]["invoices"]}
    for o in outcomes:
        assert money.to_decimal(o["qbo_total"]) == qbo[o["doc_number"]]


def test_a_deal_ready_for_billing_is_invoiced_from_its_line_items_and_written_back(sandbox_env, monkeypatch) -> None:
    fixture, rules_yaml, tmp, home, sandbox = sandbox_env
    [deal] = [d for d in fixture["hubspot"]["deals"] if d["properties"]["dealstage"] == "ready_for_billing"]
    item_ids = {a["to_id"] for a in fixture["hubspot"]["associations"]
                if a["from_type"] == "deals" and a["from_id"] == deal["id"] and a["to_type"] == "line_items"}
    items = [li for li in fixture["hubspot"]["line_items"] if li["id"] in item_ids]
    assert items
    expected = sum(money.quantize(money.to_decimal(li["properties"]["quantity"]) * money.to_decimal(li["properties"]["price"]),
                                  "USD") for li in items)
    rules_path = tmp / "rules.yaml"
    rules_path.write_text(rules_yaml.replace("clients:\n", "hubspot: {ready_for_billing_stage: ready_for_billing}\nclients:\n", 1))
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        run = _bill(rules_path, monkeypatch, instance)
    assert run.exit_code == EXIT_OK, [c.error for c in run.clients]
    drafts = [i for c in run.clients for i in c.drafts["invoices"] if i["group_key"] == f"deal-{deal['id']}"]
    assert len(drafts) == 1 and drafts[0]["status"] == "ready"
    state = sandbox.state()
    [posted] = [i for i in state["quickbooks"]["invoices"] if i.get("DocNumber") == drafts[0]["doc_number"]]
    assert posted["TotalAmt"] == expected
    # The write-back goes to that deal (and the invoice's id is what it carries).
    [after] = [d for d in state["hubspot"]["deals"] if d["id"] == deal["id"]]
    assert after["properties"]["qbo_invoice_id"] == posted["Id"]
