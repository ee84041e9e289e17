"""How billing runs: a month-end is three runs for the month, whatever the number of clients.

1. `month_extract` (monthly): the extracts, the rules snapshot, unassigned time, and every
   client's entries and drafts priced in one pass.
2. `month_posting` (month × client): ONE run posting every client-month of the month (a single
   run over the range of client partitions, `BackfillPolicy.single_run()`), so the board shows
   each client-month's own status while Dagster's per-run cost is paid once.
3. `month_follow_up` (monthly): the CRM write-back and the reconciliation report, for every
   client posted.

The schedule starts 1; the sensors below chain 2 and 3. The CLI's `bill` runs the same three in
process. One client's month alone: launch `qbo_invoices` for `acme|2026-10` in the UI, or
`sync-pipelines bill --client acme` (which prices the month again first). Measured reasons and
what was verified on Dagster 1.13.27: docs/architecture.md "Month-end runs".
"""

import dagster as dg

from sync_pipelines.defs.partitions import client_and_month, client_month_key, clients, month_posting_tags

#: Tag of a `month_extract` run that is followed by one client's posting only (re-issue, `bill --client`).
ONLY_CLIENT_TAG = "sync/client"

month_extract = dg.define_asset_job(
    "month_extract",
    selection=dg.AssetSelection.groups("extract") | dg.AssetSelection.assets(
        "unassigned_time", "billable_entries", "invoice_drafts"),
    description="Pull the month's Harvest time, HubSpot deals and QuickBooks lists; snapshot the billing rules; "
    "price every client's month (drafts and preview CSVs). Posts nothing: this is also the dry run.",
    tags={"dagster/max_retries": "2"},
)

month_posting = dg.define_asset_job(
    "month_posting",
    selection=dg.AssetSelection.assets("qbo_invoices"),
    description="Post the month's invoices to QuickBooks exactly once, every selected client in one run. "
    "Safe to re-run.",
    tags={"dagster/max_retries": "2"},
)

month_follow_up = dg.define_asset_job(
    "month_follow_up",
    selection=dg.AssetSelection.assets("crm_write_back", "reconciliation_report"),
    description="Write the posted invoices back to the HubSpot deals and write the reconciliation report.",
    tags={"dagster/max_retries": "2"},
)

# Ticks on the 1st at 06:00 in the firm's timezone (the partitions' timezone) and requests the
# previous, now complete, month. Stopped by default: turn it on in the UI once the rules are
# reviewed, because each tick posts real invoices.
month_end_schedule = dg.build_schedule_from_partitioned_job(
    month_extract,
    name="month_end_billing",
    hour_of_day=6,
    description="Month-end billing: extract and price the previous complete month; posting and follow-up follow.",
)


def month_of_run(run: dg.DagsterRun) -> str | None:
    """The month a run worked on: its monthly partition, or the month of its client-month(s)."""
    tags = run.tags
    key = tags.get("dagster/partition") or tags.get("dagster/asset_partition_range_start")
    if not key:
        return None
    return client_and_month(key)[1] if "|" in key else key


def posting_request(instance: dg.DagsterInstance, month: str, only_client: str | None, *, run_key: str,
                    tags: dict[str, str]) -> dg.RunRequest:
    """The `month_posting` run for a month: every registered client in one run, or one client."""
    if only_client:
        return dg.RunRequest(run_key=run_key, partition_key=client_month_key(only_client, month), tags=tags)
    registered = instance.get_dynamic_partitions(clients.name)
    return dg.RunRequest(run_key=run_key, tags={**tags, **month_posting_tags(month, list(registered))})


@dg.run_status_sensor(
    run_status=dg.DagsterRunStatus.SUCCESS,
    monitored_jobs=[month_extract],
    request_job=month_posting,
    name="post_month_after_extract",
    description="When a month's extract and pricing succeed, request ONE posting run for all of the month's clients.",
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def post_month_after_extract(context: dg.RunStatusSensorContext):
    month = context.dagster_run.tags.get("dagster/partition")
    if not month:
        return dg.SkipReason("the extract run has no month partition")
    if context.dagster_run.tags.get("sync/trigger") == "cli":
        return dg.SkipReason("`sync-pipelines bill` posts the month itself, in process")
    if not context.instance.get_dynamic_partitions(clients.name):
        return dg.SkipReason("no client is registered: the billing rules list none")
    # One request per extract run: a re-extract re-posts (idempotently), a repeated tick never does.
    return posting_request(
        context.instance, month, context.dagster_run.tags.get(ONLY_CLIENT_TAG),
        run_key=f"post|{month}|{context.dagster_run.run_id}",
        tags={"sync/trigger": "month_extract", "sync/extract_run": context.dagster_run.run_id},
    )


def _follow_up(context: dg.RunStatusSensorContext, *, after_failure: bool):
    run = context.dagster_run
    month = month_of_run(run)
    if not month:
        return dg.SkipReason("the posting run has no month partition")
    if after_failure and not context.instance.get_records_for_run(
        run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION, limit=1
    ).records:
        return dg.SkipReason("the posting run failed before recording any client-month")
    return dg.RunRequest(
        run_key=f"follow_up|{month}|{run.run_id}",
        partition_key=month,
        tags={"sync/trigger": "month_posting", "sync/posting_run": run.run_id},
    )


@dg.run_status_sensor(
    run_status=dg.DagsterRunStatus.SUCCESS,
    monitored_jobs=[month_posting],
    request_job=month_follow_up,
    name="follow_up_month_after_posting",
    description="When a month's posting succeeds, write the invoices back to HubSpot and write the report.",
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def follow_up_month_after_posting(context: dg.RunStatusSensorContext):
    return _follow_up(context, after_failure=False)


@dg.run_status_sensor(
    run_status=dg.DagsterRunStatus.FAILURE,
    monitored_jobs=[month_posting],
    request_job=month_follow_up,
    name="follow_up_month_after_partial_posting",
    description="When a month's posting failed for some invoices (a QuickBooks company unavailable) after "
    "recording every client-month, follow up the ones that were posted.",
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def follow_up_month_after_partial_posting(context: dg.RunStatusSensorContext):
    return _follow_up(context, after_failure=True)
