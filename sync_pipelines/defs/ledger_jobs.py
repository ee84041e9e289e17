"""Ledger actions from the UI: re-issue a voided invoice.

`reissue_invoice` is the UI's `sync-pipelines ledger reissue KEY`: launch it from the Launchpad
with the key as run config. It checks in QuickBooks that the invoice is voided (or deleted),
records the void in the ledger (its time becomes billable again), and on success the sensor below
starts `month_extract` for the client's month (extracted and priced again, so time edited since
is picked up), tagged so that only this client is then posted: the next generation (a new key,
requestid and DocNumber).
"""

import dagster as dg

from sync_pipelines.defs.jobs import ONLY_CLIENT_TAG, month_extract
from sync_pipelines.defs.resources import LedgerResource, QuickBooksResource


class ReissueConfig(dg.Config):
    key: str  # the voided invoice's key, as `sync-pipelines ledger status` prints it


@dg.op(tags={"kind": "quickbooks"})
def void_checked_in_quickbooks(
    context: dg.OpExecutionContext, config: ReissueConfig, ledger: LedgerResource, quickbooks: QuickBooksResource
) -> None:
    """Confirms in QuickBooks that the invoice is voided or deleted and records it in the ledger;
    fails (and nothing is re-issued) while the invoice is still live there."""
    from sync_pipelines.commands.ledger_commands import CommandError, check_voided

    try:
        with quickbooks.client() as client:
            record = check_voided(ledger.open(), config.key, client)
    except CommandError as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from None
    # Nothing is stored (no output): the sensor below reads the key from this run's config.
    context.log.info(f"{record.key} is voided; billing {record.client_key} {record.period} issues the next generation")


@dg.job(
    description="Re-issue an invoice voided in QuickBooks: check and record the void, then bill the client's "
    "month again as the next generation (run config: the invoice key).",
    tags={"sync/action": "reissue"},
)
def reissue_invoice():
    void_checked_in_quickbooks()


def _partition_of(run: dg.DagsterRun) -> tuple[str, str] | None:
    key = (((run.run_config or {}).get("ops") or {}).get("void_checked_in_quickbooks") or {}).get("config", {}).get("key")
    parts = str(key or "").split(":")
    if len(parts) < 5:
        return None
    return parts[1], parts[2]  # realm:client:period:group:gN


@dg.run_status_sensor(
    run_status=dg.DagsterRunStatus.SUCCESS,
    monitored_jobs=[reissue_invoice],
    request_job=month_extract,
    name="bill_month_after_reissue",
    description="When a re-issue has recorded a void, bill that client's month (the next generation is posted).",
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def bill_month_after_reissue(context: dg.RunStatusSensorContext):
    found = _partition_of(context.dagster_run)
    if found is None:
        return dg.SkipReason("the re-issue run has no invoice key in its config")
    client, month = found
    return dg.RunRequest(
        run_key=f"reissue|{context.dagster_run.run_id}",
        # The month is priced again (the voided invoice's next generation), then only this
        # client is posted (`post_month_after_extract` reads the tag).
        partition_key=month,
        tags={"sync/trigger": "reissue", "sync/reissue_run": context.dagster_run.run_id, ONLY_CLIENT_TAG: client},
    )
