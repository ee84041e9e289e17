"""Drift, re-issue after a void, and the reconnect alert, through the Dagster assets and the sandbox.

One month is billed with `bill_month` (the CLI's path: month_extract, month_posting for every
client in one run, then month_follow_up with `crm_write_back`); then, in order:

1. a time entry is shortened in Harvest: the re-run reports drift with the delta in hours and
   money and proposes a credit memo; nothing is re-posted;
2. the drifted invoice is voided in QuickBooks and `ledger reissue` posts generation 2 (new key,
   new DocNumber, the released entries billed again exactly once), and the deal points to it;
3. a live invoice cannot be re-issued; the UI job does the same check and its sensor requests
   the client's month;
4. QuickBooks refusing the refresh token fails the posting step once, with how to reconnect and
   no token in the message.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from decimal import Decimal
from io import StringIO
from typing import Any

import dagster as dg
import httpx
import pytest

from sync_pipelines import money
from sync_pipelines.commands.billing_runs import EXIT_HELD, EXIT_OK, bill_month
from sync_pipelines.connectors.factory import quickbooks_from_env
from sync_pipelines.ledger import Ledger
from sync_pipelines.commands.ledger_commands import CommandError, check_voided, reissue
from sync_pipelines.posting.drift import CREDIT_MEMO, NONE, TRUE_UP, billed_hours, compare
from sync_pipelines_tests import _sandbox_month as sm

PERIOD = "2026-10"


# -- drift arithmetic (no I/O) --------------------------------------------------------------------


def _payload(lines: list[tuple[str, str, str]], discount: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"CustomerRef": {"value": "58", "name": "Acme"}, "DocNumber": "SP2610-AAAA0001", "Line": []}
    for description, qty, rate in lines:
        body["Line"].append({
            "DetailType": "SalesItemLineDetail", "Description": description,
            "Amount": Decimal(qty) * Decimal(rate),
            "SalesItemLineDetail": {"ItemRef": {"value": "3", "name": "Consulting"}, "Qty": Decimal(qty),
                                    "UnitPrice": Decimal(rate), "ClassRef": {"value": "7", "name": "Consulting"}},
        })
    if discount:
        body["Line"].append({"DetailType": "DiscountLineDetail", "Amount": Decimal(discount),
                             "DiscountLineDetail": {"PercentBased": False}})
    return body


def test_more_time_proposes_a_true_up_line_with_the_exact_difference() -> None:
    posted = _payload([("Design — 10.00 h @ USD 150.00/h", "10.00", "150.00"), ("Minimum fee (minimum USD 1)", "1", "50.00")])
    new = _payload([("Design — 12.50 h @ USD 150.00/h", "12.50", "150.00"), ("Minimum fee (minimum USD 1)", "1", "50.00")])
    assert billed_hours(posted) == Decimal("10.00")  # the fixed-amount line is not hours
    d = compare("K", PERIOD, "USD", posted, new, posted_entries=[(1, 500), (2, 500)],
                new_entries=[(1, 500), (2, 600), (3, 150)])
    assert (d.delta_hours, d.delta_amount) == (Decimal("2.50"), Decimal("375.0000"))
    assert d.entries_added == (3,) and d.entries_changed == (2,) and d.entries_removed == ()
    assert d.adjustment.kind == TRUE_UP
    line = d.adjustment.payload
    assert line["Amount"] == Decimal("375.0000") == line["SalesItemLineDetail"]["UnitPrice"]
    assert line["SalesItemLineDetail"]["Qty"] == 1 and line["SalesItemLineDetail"]["ItemRef"]["name"] == "Consulting"
    assert line["SalesItemLineDetail"]["ServiceDate"] == "2026-10-31"
    assert "+2.50 h" in d.summary() and "+375.0000 USD" in d.summary() and "not re-posted" in d.summary()


def test_less_time_proposes_a_credit_memo_and_an_unchanged_total_nothing() -> None:
    posted = _payload([("Dev — 8.00 h @ USD 100.00/h", "8.00", "100.00")], discount="80.00")
    new = _payload([("Dev — 6.00 h @ USD 100.00/h", "6.00", "100.00")], discount="60.00")
    d = compare("K", PERIOD, "USD", posted, new)
    assert (d.posted_total, d.new_total) == (Decimal("720.0000"), Decimal("540.0000"))
    assert d.adjustment.kind == CREDIT_MEMO and d.adjustment.amount == Decimal("180.0000")
    memo = d.adjustment.payload
    assert memo["CustomerRef"] == posted["CustomerRef"] and len(memo["DocNumber"]) <= 21
    assert memo["Line"][0]["Amount"] == Decimal("180.0000")
    reworded = _payload([("Development — 8.00 h @ USD 100.00/h", "8.00", "100.00")], discount="80.00")
    assert compare("K", PERIOD, "USD", posted, reworded).adjustment.kind == NONE


# -- through Dagster and the sandbox -------------------------------------------------------------


class World(sm.BilledMonth):
    def bill(self, client: str | None = None) -> Any:
        return bill_month(PERIOD, client=client, instance=self.instance, definitions=self.definitions)

    def posted(self, ledger: Ledger) -> dict[str, Any]:
        return {r.client_key: r for r in ledger.status(period=PERIOD) if r.status in ("posted", "drift")}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with sm.billed_month(tmp_path_factory.mktemp("reissue"), PERIOD) as month:
        assert month.first_run.exit_code == EXIT_OK, [c.error for c in month.first_run.clients]
        yield World(**vars(month))


def _deals_of(w: World, ledger: Ledger, key: str) -> dict[str, dict[str, Any]]:
    from sync_pipelines.extract import sources
    from sync_pipelines.connectors.factory import harvest_from_env, hubspot_from_env
    from sync_pipelines.posting.writeback import entry_projects, plan_writebacks

    with harvest_from_env(w.env) as harvest, hubspot_from_env(w.env) as hubspot:
        entries, _ = sources.harvest_time_entries(harvest, PERIOD)
        deals, _ = sources.hubspot_deals(hubspot)
    record = ledger.get_invoice(key)
    planned = plan_writebacks(record, entry_projects(entries), deals)
    return {p.deal_id: p.properties for p in planned}


def _step_1_the_month_writes_every_invoice_back_to_its_deals(world: World) -> None:
    ledger = world.ledger()
    posted = world.posted(ledger)
    assert len(posted) == 2
    written = 0
    for record in posted.values():
        expected = _deals_of(world, ledger, record.key)
        got = sm.deal_properties(world.env, sorted(expected))
        for deal, props in expected.items():
            assert {k: got[deal][k] for k in props} == props
            written += 1
    assert written > 0
    assert {r["status"] for r in sm.writeback_rows(ledger)} == {"done"}
    # the write-back is monthly: one materialisation for the month-end, covering both clients
    mats = world.instance.fetch_materializations(dg.AssetKey("crm_write_back"), limit=10).records
    assert len(mats) == 1 and mats[0].partition_key == PERIOD


def _step_2_edited_time_is_reported_as_drift_with_a_credit_memo_never_reposted(world: World) -> None:
    ledger = world.ledger()
    target = sorted(world.posted(ledger).values(), key=lambda r: r.client_key)[0]
    billed_ids = {e for e, _, _ in ledger.get_invoice(target.key).entries}
    entry = next(e for e in world.fixture["harvest"]["time_entries"]
                 if e["id"] in billed_ids and money.to_decimal(e["hours"]) >= 2 and not e.get("is_locked"))
    # someone shortened it after invoicing, in Harvest (which stamps updated_at, so the month's
    # incremental re-extraction sees it)
    env = world.env
    response = httpx.patch(
        f"{env['HARVEST_BASE_URL'].rstrip('/')}/v2/time_entries/{entry['id']}",
        content=money.dumps({"hours": money.to_decimal(entry["hours"]) - 1}),
        headers={"Authorization": f"Bearer {env['HARVEST_ACCESS_TOKEN']}", "Harvest-Account-Id": env["HARVEST_ACCOUNT_ID"],
                 "User-Agent": "a Harvest user (user@example.com)", "Content-Type": "application/json"})
    assert response.status_code == 200, response.text
    before = len(sm.qbo_invoices(world.env))
    run = world.bill(client=target.client_key)
    assert run.exit_code == EXIT_HELD  # completed, with something to look at
    [row] = run.clients[0].outcomes.to_dict("records")
    assert row["outcome"] == "drift"
    assert Decimal(row["delta_hours"]) < 0 and Decimal(row["delta_amount"]) < 0
    adjustment = money.loads(row["adjustment"])
    assert adjustment["kind"] == CREDIT_MEMO
    assert adjustment["payload"]["Line"][0]["Amount"] == -Decimal(row["delta_amount"])
    assert len(sm.qbo_invoices(world.env)) == before  # nothing re-posted
    report = run.clients[0].report_path.read_text()
    assert "drift" in report and "credit memo" in report
    assert ledger.get_invoice(target.key).status == "drift"

    from sync_pipelines.commands.ledger_status import print_status

    out = StringIO()
    print_status(month=PERIOD, out=out)
    text = out.getvalue()
    assert "drift: posted" in text and f"{row['delta_amount']} USD" in text and "credit memo" in text


def _step_3_a_voided_invoice_is_reissued_as_the_next_generation(world: World) -> None:
    ledger = world.ledger()
    old = sorted(world.posted(ledger).values(), key=lambda r: r.client_key)[0]
    assert old.status == "drift"
    old_entries = {e for e, _, _ in ledger.get_invoice(old.key).entries}
    with quickbooks_from_env(ledger.tokens, world.env, audit=ledger) as qbo:
        with pytest.raises(CommandError, match="not voided"):
            check_voided(ledger, old.key, qbo)
        response = httpx.post(f"{world.sb.base_url}/_sandbox/actions/void_invoice", json={"invoice_id": old.qbo_id})
        assert response.status_code == 200
        result = reissue(ledger, old.key, qbo=qbo, bill=lambda period, client: world.bill(client=client))
    assert result.exit_code == EXIT_OK
    [new_key] = result.new_keys
    assert new_key.endswith(":g2") and new_key != old.key
    new = ledger.get_invoice(new_key)
    assert new.status == "posted" and new.qbo_id != old.qbo_id
    assert new.qbo_doc_number != old.qbo_doc_number
    voided = ledger.get_invoice(old.key)
    assert voided.status == "voided" and {s for _, _, s in voided.entries} == {"released"}
    # The released time is billed again, once, on generation 2 (with the shortened entry).
    assert {e for e, _, _ in new.entries} == old_entries
    billed: dict[int, str] = {}
    for record in ledger.status(period=PERIOD, statuses=["posted"]):
        for e, _, s in ledger.get_invoice(record.key).entries:
            assert s == "billed" and e not in billed
            billed[e] = record.key
    qbo_invoices = {i["DocNumber"]: i for i in sm.qbo_invoices(world.env)}
    assert money.to_decimal(qbo_invoices[old.qbo_doc_number]["TotalAmt"]) == 0  # the voided one stays voided
    assert money.to_decimal(qbo_invoices[new.qbo_doc_number]["TotalAmt"]) == new.expected_total
    # The deals now point at the re-issued invoice.
    expected = _deals_of(world, ledger, new_key)
    got = sm.deal_properties(world.env, sorted(expected))
    assert expected and all(got[d]["qbo_invoice_id"] == new.qbo_id for d in expected)
    # Re-issuing again changes nothing: the key is voided and generation 2 is posted.
    again = reissue(ledger, old.key, qbo=_NoQbo(), bill=lambda period, client: world.bill(client=client))
    assert again.new_keys == [new_key] and len(sm.qbo_invoices(world.env)) == len(qbo_invoices)


class _NoQbo:
    def __getattr__(self, name: str) -> Any:
        raise AssertionError("a voided key needs no QuickBooks check")


def _step_4_the_reissue_job_checks_the_void_and_its_sensor_bills_the_month(world: World) -> None:
    ledger = world.ledger()
    voided = ledger.status(period=PERIOD, statuses=["voided"])[0]
    live = sorted(world.posted(ledger).values(), key=lambda r: r.client_key)[-1]
    job = world.definitions.resolve_job_def("reissue_invoice")

    def config(key: str) -> dict[str, Any]:
        return {"ops": {"void_checked_in_quickbooks": {"config": {"key": key}}}}

    refused = job.execute_in_process(run_config=config(live.key), instance=world.instance, raise_on_error=False)
    assert not refused.success
    assert ledger.get_invoice(live.key).status == "posted"
    ok = job.execute_in_process(run_config=config(voided.key), instance=world.instance)
    assert ok.success
    sensor = world.definitions.resolve_sensor_def("bill_month_after_reissue")
    from dagster._core.events import DagsterEvent, DagsterEventType

    run = world.instance.get_run_by_id(ok.run_id)
    event = DagsterEvent(event_type_value=DagsterEventType.RUN_SUCCESS.value, job_name="reissue_invoice")
    ctx = dg.build_run_status_sensor_context(sensor_name="bill_month_after_reissue", dagster_event=event,
                                             dagster_instance=world.instance, dagster_run=run)
    request = sensor(ctx)
    assert isinstance(request, dg.RunRequest)
    # the month is priced again, then only this client is posted (post_month_after_extract)
    assert request.partition_key == PERIOD and request.tags["sync/client"] == voided.client_key


def test_write_back_then_drift_then_void_and_reissue(world: World) -> None:
    # One story in order (steps share the month's state, so they are one test for pytest-xdist).
    _step_1_the_month_writes_every_invoice_back_to_its_deals(world)
    _step_2_edited_time_is_reported_as_drift_with_a_credit_memo_never_reposted(world)
    _step_3_a_voided_invoice_is_reissued_as_the_next_generation(world)
    _step_4_the_reissue_job_checks_the_void_and_its_sensor_bills_the_month(world)


def test_a_refused_refresh_token_fails_posting_once_with_how_to_reconnect(world: World) -> None:
    ledger = world.ledger()
    other = sorted(world.posted(ledger).values(), key=lambda r: r.client_key)[-1]
    stored = ledger.tokens.get(world.env["QBO_REALM_ID"])
    secrets = [world.env["QBO_CLIENT_SECRET"], world.env["QBO_REFRESH_TOKEN"], stored.refresh_token.get_secret_value()]
    if stored.access_token is not None:
        secrets.append(stored.access_token.get_secret_value())
    r = httpx.post(f"{world.sb.base_url}/_sandbox/expire_tokens", json={"refresh_token": True})
    assert r.status_code == 200
    try:
        job = world.definitions.resolve_job_def("month_posting")
        result = job.execute_in_process(partition_key=f"{other.client_key}|{PERIOD}", instance=world.instance,
                                        raise_on_error=False)
        assert not result.success
        failures = [e for e in result.all_events if e.is_step_failure]
        [failure] = [e for e in failures if e.step_key == "qbo_invoices"]
        message = failure.step_failure_data.error.message
        assert "invalid_grant" in message and "QBO_REFRESH_TOKEN" in message and "Re-authorise" in message
        assert not any(e.event_type_value == "STEP_UP_FOR_RETRY" for e in result.all_events)
        logs = "\n".join(str(rec) for rec in world.instance.all_logs(result.run_id))
        for secret in secrets:
            assert secret not in message and secret not in logs
        assert ledger.get_invoice(other.key).status == "posted"  # nothing changed
    finally:
        # The operator follows the message: a new refresh token (the sandbox's current one stands
        # for the token a reconnect gives) in QBO_REFRESH_TOKEN, then re-runs the month.
        os.environ["QBO_REFRESH_TOKEN"] = world.sb.env()["QBO_REFRESH_TOKEN"]
    again = job.execute_in_process(partition_key=f"{other.client_key}|{PERIOD}", instance=world.instance)
    assert again.success
    outcomes = world.definitions.load_asset_value("qbo_invoices", partition_key=f"{other.client_key}|{PERIOD}",
                                                  instance=world.instance)
    assert set(outcomes["outcome"]) == {"already_posted"}
