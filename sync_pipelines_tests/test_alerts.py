"""Failure alerts reach a Slack-compatible webhook over real HTTP, naming client and month."""

from __future__ import annotations

import dagster as dg

from sync_pipelines.alerts import Alert, send
from sync_pipelines.defs.alerts import alert_on_failed_billing_run


def test_send_posts_the_alert_text(slack_webhook) -> None:
    url, received = slack_webhook
    assert send(Alert("Invoice held", ("client acme", "month 2026-10")), webhook_url=url)
    assert "Invoice held" in received[0]["text"] and "client acme" in received[0]["text"]


def test_an_unreachable_webhook_never_raises_and_never_logs_its_url(caplog) -> None:
    url = "http://127.0.0.1:9/hooks/T000/B000/secretpart"
    assert send(Alert("x"), webhook_url=url) is False
    assert "secretpart" not in caplog.text


def _fail_and_alert(job: dg.JobDefinition) -> dg.ExecuteInProcessResult:
    """Run `job` (it fails) for the partition acme|2026-10 and evaluate the run-failure sensor on it."""
    with dg.instance_for_test() as instance:
        result = job.execute_in_process(instance=instance, raise_on_error=False,
                                        tags={"dagster/partition": "acme|2026-10"})
        assert not result.success
        ctx = dg.build_run_status_sensor_context(
            sensor_name="alert_on_failed_billing_run", dagster_instance=instance,
            dagster_run=result.dagster_run, dagster_event=result.get_run_failure_event(),
        ).for_run_failure()
        alert_on_failed_billing_run(ctx)
    return result


@dg.op
def failing_step():
    raise RuntimeError("QuickBooks unavailable after 5 attempts")


@dg.job
def failing_job():
    failing_step()


def test_a_failed_run_is_alerted_with_client_and_month(slack_webhook, monkeypatch) -> None:
    url, received = slack_webhook
    monkeypatch.setenv("SLACK_WEBHOOK_URL", url)
    monkeypatch.setenv("DAGSTER_WEBSERVER_URL", "http://dagster.example:3000")
    result = _fail_and_alert(failing_job)
    [message] = received
    text = message["text"]
    assert "Billing run failed" in text and "client acme" in text and "month 2026-10" in text
    assert "failing_step: RuntimeError: QuickBooks unavailable after 5 attempts" in text
    assert f"http://dagster.example:3000/runs/{result.run_id}" in text


@dg.op
def always_busy_step():
    # What qbo_invoices does while another run holds an invoice's claim.
    raise dg.RetryRequested(max_retries=1, seconds_to_wait=0) from RuntimeError(
        "another run is posting 9130357:acme:2026-10:all:g1 (it holds the ledger claim)"
    )


@dg.job
def busy_job():
    always_busy_step()


def test_a_run_that_ran_out_of_retries_is_alerted_with_the_cause_not_only_max_retries(slack_webhook, monkeypatch) -> None:
    url, received = slack_webhook
    monkeypatch.setenv("SLACK_WEBHOOK_URL", url)
    _fail_and_alert(busy_job)
    [message] = received
    assert "always_busy_step: RuntimeError: another run is posting 9130357:acme:2026-10:all:g1" in message["text"]
    assert "Exceeded max_retries" not in message["text"]
