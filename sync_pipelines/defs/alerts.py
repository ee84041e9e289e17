import dagster as dg

from sync_pipelines.alerts import Alert, run_url, send
from sync_pipelines.run_errors import step_errors


@dg.run_failure_sensor(
    name="alert_on_failed_billing_run",
    monitor_all_code_locations=False,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Posts every failed run (client, month, first error) to SLACK_WEBHOOK_URL, or logs it when unset.",
)
def alert_on_failed_billing_run(context: dg.RunFailureSensorContext) -> None:
    run = context.dagster_run
    partition = run.tags.get("dagster/partition", "")
    client, _, month = partition.partition("|") if "|" in partition else ("", "", partition)
    lines = [f"job {run.job_name}"]
    if client:
        lines.append(f"client {client}")
    if month:
        lines.append(f"month {month}")
    lines.extend(step_errors(context.get_step_failure_events()) or [f"error: {context.failure_event.message}"])
    send(Alert(title="Billing run failed", lines=tuple(lines), run_url=run_url(run.run_id)))
