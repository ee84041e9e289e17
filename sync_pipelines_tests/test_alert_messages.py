"""Every alert kind, delivered over real HTTP to a local Slack-compatible receiver: each names the
client, the period (or deal), the invoice key and links to the run, and carries no secret."""

from __future__ import annotations

import socket
from decimal import Decimal

import dagster as dg
import pytest

from sync_pipelines import alert_messages
from sync_pipelines.alerts import send
from sync_pipelines.connectors.http import ApiUnavailable
from sync_pipelines.posting.invoices import PostingOutcome

RUN_ID = "5d1c1b0e-0000-4000-8000-00000000abcd"
UI = "http://dagster.example:3000"
KEY = "9130357:acme:2026-10:all:g1"
DEAL_KEY = "9130357:acme:2026-10:deal-8805:g1"
SENTINELS = {
    "QBO_CLIENT_SECRET": "sentinel-client-secret-7Q2W",
    "QBO_REFRESH_TOKEN": "sentinel-refresh-token-AB12CD34",
    "HUBSPOT_ACCESS_TOKEN": "sentinel-hubspot-token-99ZZ",
    "HARVEST_ACCESS_TOKEN": "sentinel-harvest-token-5151",
}


@pytest.fixture
def channel(slack_webhook, monkeypatch):
    url, received = slack_webhook
    monkeypatch.setenv("SLACK_WEBHOOK_URL", url)
    monkeypatch.setenv("DAGSTER_WEBSERVER_URL", UI)
    for name, value in SENTINELS.items():
        monkeypatch.setenv(name, value)

    def deliver(alert) -> str:
        assert send(alert)
        text = received[-1]["text"]
        for secret in [*SENTINELS.values(), url, "secretpart"]:
            assert secret not in text, f"{secret!r} leaked into the alert"
        return text

    return deliver


def outcome(key: str, outcome: str, reasons: list[str]) -> PostingOutcome:
    client, period = key.split(":")[1], key.split(":")[2]
    return PostingOutcome(key=key, client_key=client, period=period, group_key=key.split(":")[3], outcome=outcome,
                          expected_total=Decimal("1500.00"), currency="USD", reasons=reasons)


def test_a_held_invoice_alert_names_client_period_deal_key_reason_and_run(channel) -> None:
    problems = [alert_messages.problem_of_outcome(outcome(KEY, "held", ["no rate for Jane Doe on Design"])),
                alert_messages.problem_of_outcome(outcome(DEAL_KEY, "held", ["unknown SKU 'X-1'"]))]
    text = channel(alert_messages.invoices_held(problems, RUN_ID))
    assert "2 invoice(s) held" in text
    assert f"client acme, period 2026-10, key {KEY}: no rate for Jane Doe on Design" in text
    assert f"client acme, period 2026-10 (deal 8805), key {DEAL_KEY}: unknown SKU 'X-1'" in text
    assert f"{UI}/runs/{RUN_ID}" in text


def test_a_drift_alert_says_nothing_was_reposted(channel) -> None:
    problem = alert_messages.InvoiceProblem("acme", "2026-10", KEY, "posted 1500.00 USD; the inputs now give 1350.00")
    text = channel(alert_messages.invoices_drifted([problem], RUN_ID))
    assert f"client acme, period 2026-10, key {KEY}: posted 1500.00 USD" in text
    assert "Nothing was re-posted" in text and f"{UI}/runs/{RUN_ID}" in text


def test_a_failed_posting_alert_lists_each_pending_invoice(channel) -> None:
    # An error text that (wrongly) quotes a token must not carry it into the channel.
    leaky = f"QuickBooks HTTP 503 after 5 attempts (refresh_token={SENTINELS['QBO_REFRESH_TOKEN']})"
    problem = alert_messages.problem_of_outcome(outcome(KEY, "failed", [leaky]))
    text = channel(alert_messages.posting_failed([problem], RUN_ID))
    assert f"client acme, period 2026-10, key {KEY}: QuickBooks HTTP 503 after 5 attempts" in text
    assert "ledger replay KEY" in text and f"{UI}/runs/{RUN_ID}" in text


def test_a_refused_token_alert_names_the_company_and_how_to_reconnect(channel) -> None:
    text = channel(alert_messages.token_refused("9130357", company="uk", run_id=RUN_ID, clients=["acme"],
                                                period="2026-10"))
    assert "company uk (realm 9130357)" in text and "invalid_grant" in text
    assert "client acme, period 2026-10" in text
    assert "re-authorise the app" in text and "QBO_REFRESH_TOKEN" in text and f"{UI}/runs/{RUN_ID}" in text


def test_a_trigger_failure_alert_names_the_sensor_the_deal_and_the_error(channel) -> None:
    error = ApiUnavailable("hubspot", "POST", "/crm/v3/objects/deals/search", 503, attempts=5,
                           api_message=f"upstream said Bearer {SENTINELS['HUBSPOT_ACCESS_TOKEN']}")
    text = channel(alert_messages.trigger_failed("hubspot_ready_deals", error, system="HubSpot", deal_id="8805",
                                                 keys=[DEAL_KEY]))
    assert "Trigger failed: hubspot_ready_deals" in text and "could not reach HubSpot" in text
    assert "ApiUnavailable" in text and "deal 8805" in text and DEAL_KEY in text
    assert f"<{UI}/automation|Open the sensors' ticks in Dagster>" in text


def test_a_change_capture_gap_alert_gives_both_times(channel) -> None:
    text = channel(alert_messages.change_capture_gap("9130357", "2026-10-01T00:00:00+00:00", "2026-11-01T12:05:00+00:00"))
    assert "realm 9130357" in text and "2026-10-01T00:00:00+00:00" in text and "2026-11-01T12:05:00+00:00" in text


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_change_sensor_alerts_once_when_quickbooks_is_unreachable(channel, slack_webhook, tmp_path) -> None:
    from sync_pipelines.defs.quickbooks.changes import quickbooks_changes
    from sync_pipelines.defs.resources import LedgerResource, QuickBooksResource, RulesResource

    _, received = slack_webhook
    dead = f"http://127.0.0.1:{_closed_port()}"
    ledger = LedgerResource(url=f"sqlite:///{tmp_path}/ledger.db")
    # no rules file: the sensor watches QBO_REALM_ID's company alone
    resources = {"ledger": ledger, "rules": RulesResource(path=str(tmp_path / "no-rules.yaml")), "quickbooks": QuickBooksResource(
        base_url=dead, token_url=f"{dead}/oauth2/v1/tokens/bearer", realm_id="9130357", client_id="cid",
        client_secret=SENTINELS["QBO_CLIENT_SECRET"], refresh_token=SENTINELS["QBO_REFRESH_TOKEN"], ledger=ledger)}
    with dg.instance_for_test() as instance:
        with dg.build_sensor_context(instance=instance, resources=resources) as ctx:
            first = quickbooks_changes.evaluate_tick(ctx)
        with dg.build_sensor_context(instance=instance, resources=resources, cursor=first.cursor) as ctx:
            second = quickbooks_changes.evaluate_tick(ctx)
    assert first.run_requests == [] and second.run_requests == []
    assert '"cdc": {}' in second.cursor  # the feed position did not move
    [alert] = [r["text"] for r in received]  # one alert for the outage, not one per tick
    assert "Trigger failed: quickbooks_changes" in alert and "could not reach QuickBooks" in alert
    assert f"{UI}/automation" in alert
    for secret in SENTINELS.values():
        assert secret not in alert
