"""QuickBooks change capture end to end: the sandbox over HTTP, the sensor via build_sensor_context,
the run via execute_in_process, the ledger on SQLite.

A month is billed first (through the Dagster assets, as `sync-pipelines bill` does); then:

1. an invoice is voided in QuickBooks: the sensor's CDC read requests one run, the run records the
   void, and `ledger reissue` re-issues it without asking QuickBooks again;
2. a partial payment arrives as webhook events, duplicated and out of order: one run, the ledger
   and the deal show `partially_paid` with the exact amount;
3. the rest is paid and only CDC sees it: the ledger and the deal show `paid`;
4. throughout, nothing is ever written to QuickBooks by this path.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from decimal import Decimal
from io import StringIO
from typing import Any

import dagster as dg
import httpx
import pytest

from sync_pipelines import money
from sync_pipelines.commands.billing_runs import EXIT_OK, bill_month
from sync_pipelines.commands.ledger_commands import reissue
from sync_pipelines.connectors.factory import hubspot_from_env, quickbooks_from_env
from sync_pipelines.ledger import Ledger
from sync_pipelines_tests import _sandbox_month as sm

PERIOD = "2026-10"


class World(sm.BilledMonth):
    def tick(self, cursor: str | None) -> Any:
        sensor = self.definitions.resolve_sensor_def("quickbooks_changes")
        from sync_pipelines.defs.resources import build_resources

        resources = {k: v for k, v in build_resources().items() if k in ("ledger", "quickbooks", "rules")}
        with dg.build_sensor_context(instance=self.instance, cursor=cursor, resources=resources) as ctx:
            return sensor.evaluate_tick(ctx)

    def run(self, request: dg.RunRequest) -> Any:
        job = self.definitions.resolve_job_def("record_quickbooks_changes")
        result = job.execute_in_process(run_config=request.run_config, instance=self.instance, tags=request.tags)
        # No secret in anything the run shows in the UI (logs, metadata, errors).
        logs = "\n".join(str(record) for record in self.instance.all_logs(result.run_id))
        secrets = [self.env[k] for k in ("QBO_CLIENT_SECRET", "QBO_REFRESH_TOKEN", "HUBSPOT_ACCESS_TOKEN")]
        stored = self.ledger().tokens.get(self.env["QBO_REALM_ID"])
        secrets.append(stored.refresh_token.get_secret_value())
        if stored.access_token is not None:
            secrets.append(stored.access_token.get_secret_value())
        assert logs and not [s for s in secrets if s in logs]
        return result

    def qbo_state(self) -> dict[str, Any]:
        return httpx.get(f"{self.sb.base_url}/_sandbox/state").json()["quickbooks"]

    def action(self, name: str, **body: Any) -> dict[str, Any]:
        response = httpx.post(f"{self.sb.base_url}/_sandbox/actions/{name}", json=body)
        assert response.status_code == 200, response.text
        return money.loads(response.content)

    def deal(self, deal_id: str) -> dict[str, Any]:
        with hubspot_from_env(self.env) as hubspot:
            return dict(hubspot.get_deal(deal_id, ["billing_status", "amount_paid", "qbo_invoice_id"]).properties)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with sm.billed_month(tmp_path_factory.mktemp("qbo_changes"), PERIOD) as month:
        assert month.first_run.exit_code == EXIT_OK, [c.error for c in month.first_run.clients]
        yield World(**vars(month))


def _writes_to_quickbooks(ledger: Ledger, after_id: int) -> list[str]:
    """QuickBooks calls after audit row `after_id` that could change something (queries are POSTs too)."""
    rows = [r for r in ledger.audit_records(limit=10_000, system="quickbooks") if r.id > after_id]
    return [f"{r.method} {r.path}" for r in rows if r.method != "GET" and not r.path.endswith("/query")]


def _recorded(result: Any) -> int:
    """The run's "recorded" count (metadata of the op's output, as the UI shows it)."""
    [output] = [e for e in result.all_events if e.event_type_value == "STEP_OUTPUT"]
    return output.event_specific_data.metadata["recorded"].value


def _last_audit_id(ledger: Ledger) -> int:
    rows = ledger.audit_records(limit=1)
    return rows[0].id if rows else 0


def _deals_of(ledger: Ledger, key: str) -> list[str]:
    with ledger.engine.connect() as conn:
        import sqlalchemy as sa

        from sync_pipelines.ledger.schema import crm_writebacks

        return sorted(conn.execute(sa.select(crm_writebacks.c.deal_id).where(crm_writebacks.c.invoice_key == key))
                      .scalars())


def _inbox_event(realm: str, entity: str, entity_id: str, operation: str, at: str, fmt: str = "legacy") -> dict:
    # What the webhook receiver stores, one row per entity change (docs/architecture.md "Webhook inbox").
    return {"realm_id": realm, "entity": entity, "entity_id": entity_id, "operation": operation, "occurred_at": at,
            "format": fmt, "raw": {"name": entity, "id": entity_id, "operation": operation, "lastUpdated": at}}


def test_voids_and_payments_reach_the_ledger_and_the_deal_and_nothing_reaches_quickbooks(world: World) -> None:
    ledger = world.ledger()
    realm = world.env["QBO_REALM_ID"]
    posted = sorted((r for r in ledger.status(period=PERIOD) if r.status == "posted"), key=lambda r: r.client_key)
    assert len(posted) >= 2
    voided, paying = posted[0], posted[1]
    paying_deals = _deals_of(ledger, paying.key)
    assert paying_deals, "the paid invoice must have been written back to a deal"

    # -- 1. a void, seen by CDC ---------------------------------------------------------------
    world.action("void_invoice", invoice_id=voided.qbo_id)
    before = world.qbo_state()
    mark = _last_audit_id(ledger)
    tick = world.tick(None)
    [request] = tick.run_requests
    config = request.run_config["ops"]["record_changes_in_ledger"]["config"]
    assert config["realm_id"] == realm and config["invoice_ids"] == [voided.qbo_id]  # the others did not change
    assert request.run_key.startswith(f"qbo-changes:{realm}:")
    assert ledger.get_invoice(voided.key).status == "posted"  # the sensor only detects
    assert world.tick(None).run_requests[0].run_key == request.run_key  # same change, same run key
    result = world.run(request)
    assert result.success
    record = ledger.get_invoice(voided.key)
    assert record.status == "voided" and record.voided_how == "voided"
    assert {s for _, _, s in record.entries} == {"released"}
    assert world.qbo_state() == before and _writes_to_quickbooks(ledger, mark) == []
    again = world.tick(tick.cursor)  # CDC is not due again yet and the inbox is empty
    assert again.run_requests == [] and again.skip_message

    # `ledger reissue` trusts the recorded void: no read of that invoice in QuickBooks.
    mark = _last_audit_id(ledger)
    with quickbooks_from_env(ledger.tokens, world.env, audit=ledger) as qbo:
        out = reissue(ledger, voided.key, qbo=qbo,
                      bill=lambda period, client: bill_month(period, client=client, instance=world.instance,
                                                             definitions=world.definitions))
    assert out.exit_code == EXIT_OK and len(out.new_keys) == 1
    reads = [r.path for r in ledger.audit_records(limit=10_000, system="quickbooks")
             if r.id > mark and r.method == "GET" and r.path.endswith(f"/invoice/{voided.qbo_id}")]
    assert reads == []
    reissued = ledger.get_invoice(out.new_keys[0])
    assert reissued.status == "posted"

    # The re-issued invoice is then deleted in QuickBooks (by someone there, through its API).
    with quickbooks_from_env(ledger.tokens, world.env) as qbo:
        live = qbo.get_invoice(reissued.qbo_id)
        qbo._request("POST", "/invoice", params={"operation": "delete"},
                     json_body={"Id": reissued.qbo_id, "SyncToken": live["SyncToken"]})
    state = json.loads(tick.cursor)
    state["next_poll"] = None  # CDC due now
    tick = world.tick(json.dumps(state))
    [request] = tick.run_requests
    assert request.run_config["ops"]["record_changes_in_ledger"]["config"]["invoice_ids"] == [reissued.qbo_id]
    before, mark = world.qbo_state(), _last_audit_id(ledger)
    assert world.run(request).success
    record = ledger.get_invoice(reissued.key)
    assert record.status == "voided" and record.voided_how == "deleted"
    assert world.qbo_state() == before and _writes_to_quickbooks(ledger, mark) == []

    # -- 2. a partial payment, as webhook events: duplicated and out of order -------------------
    total = ledger.get_invoice(paying.key).qbo_total_amt
    part = money.quantize(total / 3, paying.currency or "USD")
    paid = world.action("record_payment", invoice_id=paying.qbo_id, amount=str(part))
    payment_id = paid["Payment"]["Id"]
    assert paid["Payment"]["Line"][0]["LinkedTxn"] == [{"TxnId": paying.qbo_id, "TxnType": "Invoice"}]
    before = world.qbo_state()
    events = [
        ("e-inv", _inbox_event(realm, "Invoice", paying.qbo_id, "Update", "2026-12-01T10:00:02Z")),
        ("e-pay", _inbox_event(realm, "Payment", payment_id, "Create", "2026-12-01T10:00:01Z")),
        ("e-pay", _inbox_event(realm, "Payment", payment_id, "Create", "2026-12-01T10:00:01Z")),  # redelivered
        ("ce-1", _inbox_event(realm, "Payment", payment_id, "Create", "2026-12-01T10:00:01Z", "cloudevents")),
        ("e-old", _inbox_event(realm, "Invoice", paying.qbo_id, "Update", "2026-11-30T09:00:00Z")),  # late, older
    ]
    stored = [ledger.inbox_put("quickbooks", eid, payload) for eid, payload in events]
    assert stored == [True, True, False, True, True]
    mark = _last_audit_id(ledger)
    tick = world.tick(tick.cursor)
    [request] = tick.run_requests
    config = request.run_config["ops"]["record_changes_in_ledger"]["config"]
    assert config["invoice_ids"] == [paying.qbo_id] and config["payment_ids"] == [payment_id]
    assert len(config["inbox_ids"]) == 4
    result = world.run(request)
    assert result.success
    assert _recorded(result) == 1  # five deliveries of one change: one recorded change
    record = ledger.get_invoice(paying.key)
    assert (record.status, record.payment_status, record.amount_paid) == ("posted", "partially_paid", part)
    assert record.qbo_balance == total - part
    for deal in paying_deals:
        props = world.deal(deal)
        assert props["billing_status"] == "partially_paid" and props["amount_paid"] == format(part, "f")
        assert props["qbo_invoice_id"] == paying.qbo_id
    assert world.qbo_state() == before and _writes_to_quickbooks(ledger, mark) == []
    assert ledger.inbox_pending(source="quickbooks") == []
    assert world.tick(tick.cursor).run_requests == []  # every event answered: nothing more to do

    # -- 3. the rest is paid, and only CDC sees it ----------------------------------------------
    world.action("record_payment", invoice_id=paying.qbo_id)
    before = world.qbo_state()
    mark = _last_audit_id(ledger)
    state = json.loads(tick.cursor)
    state["next_poll"] = None  # CDC due now
    tick = world.tick(json.dumps(state))
    [request] = tick.run_requests
    assert paying.qbo_id in request.run_config["ops"]["record_changes_in_ledger"]["config"]["invoice_ids"]
    assert world.run(request).success
    record = ledger.get_invoice(paying.key)
    assert (record.payment_status, record.amount_paid, record.qbo_balance) == ("paid", total, Decimal("0.00"))
    for deal in paying_deals:
        assert world.deal(deal)["billing_status"] == "paid"
        assert world.deal(deal)["amount_paid"] == format(total, "f")
    assert world.qbo_state() == before and _writes_to_quickbooks(ledger, mark) == []

    # -- 4. the operator sees it ------------------------------------------------------------------
    from sync_pipelines.commands.ledger_status import print_status

    text = StringIO()
    print_status(month=PERIOD, out=text)
    assert f"paid: {total} {paying.currency} received" in text.getvalue()
    assert "voided: 2" in text.getvalue() and "deleted in QuickBooks" in text.getvalue()


def test_a_refused_token_during_change_capture_alerts_once_with_the_realm(world: World, slack_webhook) -> None:
    url, received = slack_webhook
    os.environ["SLACK_WEBHOOK_URL"] = url
    realm = world.env["QBO_REALM_ID"]
    try:
        assert httpx.post(f"{world.sb.base_url}/_sandbox/expire_tokens", json={"refresh_token": True}).status_code == 200
        first = world.tick(None)
        assert first.run_requests == []
        second = world.tick(first.cursor)
        assert second.run_requests == []
        assert len(received) == 1  # one alert per outage, not one per tick
        text = received[0]["text"]
        assert f"realm {realm}" in text and "invalid_grant" in text and "QBO_REFRESH_TOKEN" in text
        for secret in (world.env["QBO_CLIENT_SECRET"], world.env["QBO_REFRESH_TOKEN"], url):
            assert secret not in text
        assert json.loads(second.cursor).get("cdc", {}) == {}  # the feed position did not move
    finally:
        os.environ.pop("SLACK_WEBHOOK_URL", None)
        os.environ["QBO_REFRESH_TOKEN"] = world.sb.env()["QBO_REFRESH_TOKEN"]
