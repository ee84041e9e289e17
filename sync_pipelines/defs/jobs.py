"""How billing runs: a month's extract, then one run per client's month.

Extract assets are monthly and billing/posting assets are month × client, so a month-end is
two steps: `month_extract` for the month, then `client_month_billing` for each client. The
schedule starts the first; the sensor below chains the second when it succeeds. The CLI's
`bill` command does the same in process.
"""

import dagster as dg

from sync_pipelines.billing.rules import RulesError
from sync_pipelines.defs.partitions import client_month_key
from sync_pipelines.defs.resources import RulesResource

month_extract = dg.define_asset_job(
    "month_extract",
    selection=dg.AssetSelection.groups("extract") | dg.AssetSelection.assets("unassigned_time"),
    description="Pull the month's Harvest time, HubSpot deals and QuickBooks lists; snapshot the billing rules.",
    tags={"dagster/max_retries": "2"},
)

client_month_billing = dg.define_asset_job(
    "client_month_billing",
    selection=dg.AssetSelection.assets(
        "billable_entries", "invoice_drafts", "qbo_invoices", "crm_write_back", "reconciliation_report"
    ),
    description="Price one client's month, post its invoices to QuickBooks exactly once and write the invoice "
    "ids back to the HubSpot deals. Safe to re-run.",
    tags={"dagster/max_retries": "2"},
)

client_month_preview = dg.define_asset_job(
    "client_month_preview",
    selection=dg.AssetSelection.assets("billable_entries", "invoice_drafts"),
    description="Price one client's month without posting anything (review the preview CSV first).",
)

# Ticks on the 1st at 06:00 in the firm's timezone (the partitions' timezone) and requests the
# previous, now complete, month. Stopped by default: turn it on in the UI once the rules are
# reviewed, because each tick posts real invoices.
month_end_schedule = dg.build_schedule_from_partitioned_job(
    month_extract,
    name="month_end_billing",
    hour_of_day=6,
    description="Month-end billing: extract the previous complete month; billing runs follow per client.",
)


@dg.run_status_sensor(
    run_status=dg.DagsterRunStatus.SUCCESS,
    monitored_jobs=[month_extract],
    request_job=client_month_billing,
    name="bill_clients_after_extract",
    description="When a month's extract succeeds, request one billing run per client in the rules file.",
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def bill_clients_after_extract(context: dg.RunStatusSensorContext, rules: RulesResource):
    month = context.dagster_run.tags.get("dagster/partition")
    if not month:
        return dg.SkipReason("the extract run has no month partition")
    try:
        client_keys = sorted(rules.load().clients)
    except RulesError as exc:
        return dg.SkipReason(f"billing rules are invalid: {exc}")
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(
                # One request per (client, month, extract run): a re-extract re-bills (idempotently),
                # a repeated tick for the same run never does.
                run_key=f"{client}|{month}|{context.dagster_run.run_id}",
                partition_key=client_month_key(client, month),
                tags={"sync/trigger": "month_extract", "sync/extract_run": context.dagster_run.run_id},
            )
            for client in client_keys
        ],
        dynamic_partitions_requests=[dg.AddDynamicPartitionsRequest("clients", client_keys)],
    )
