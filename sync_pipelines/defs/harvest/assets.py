import dagster as dg
import pandas as pd

from sync_pipelines import money
from sync_pipelines.defs.extract_state import stored_harvest_month
from sync_pipelines.defs.partitions import EXTRACT_ASSET
from sync_pipelines.defs.quarantine import keep_rejected
from sync_pipelines.defs.resources import HarvestResource
from sync_pipelines.extract.harvest_month import extract_month


class HarvestExtractConfig(dg.Config):
    """Set `full` to read the whole month again instead of only what changed since the last read."""

    full: bool = False


@dg.asset(kinds={"harvest", "pandas"}, **EXTRACT_ASSET)
def harvest_time_entries(
    context: dg.AssetExecutionContext, harvest: HarvestResource, config: HarvestExtractConfig
) -> dg.Output[pd.DataFrame]:
    """Every Harvest time entry whose spent date falls in the month, for all clients.

    Billable or not, running or not: the billing step decides what can be billed and reports
    the rest with a reason, so no hour disappears here. Hours are kept exactly as Harvest sent
    them. Records Harvest sent malformed are quarantined (see the `quarantine_file` metadata).

    Re-materialising a month already extracted asks Harvest only for the entries changed since
    (`extraction` says which way it went and why, `api_calls` what it cost); a deleted entry is
    noticed by the month's entry count and the month is then read in full, as it is at least
    once a week or when launched with `full: true`.
    """
    period = context.partition_key
    stored, state = (None, "full extraction requested") if config.full else stored_harvest_month(context)
    with harvest.client() as client:
        extract = extract_month(client, period, stored, full=config.full)
    frame, rejected = extract.frame, extract.rejected
    meta = keep_rejected(context, "harvest", period, rejected)
    context.log.info(f"Harvest {period}: {extract.mode} extraction ({extract.reason}; {state}), "
                     f"{extract.api_calls} API call(s), {extract.entries_read} record(s) read")
    hours = frame["hours_centi"].sum() if len(frame) else 0
    billable = frame.loc[frame["billable"], "hours_centi"].sum() if len(frame) else 0
    return dg.Output(
        frame,
        metadata={
            "dagster/row_count": dg.MetadataValue.int(len(frame)),
            "hours": dg.MetadataValue.text(str(money.hours_from_centi(hours))),
            "billable_hours": dg.MetadataValue.text(str(money.hours_from_centi(billable))),
            "harvest_clients": dg.MetadataValue.int(int(frame["client_id"].nunique()) if len(frame) else 0),
            "extraction": dg.MetadataValue.text(f"{extract.mode}: {extract.reason}"),
            "api_calls": dg.MetadataValue.int(extract.api_calls),
            "entries_read": dg.MetadataValue.int(extract.entries_read),
            "high_water_mark": dg.MetadataValue.text(extract.high_water_mark or ""),
            "last_full_pull_at": dg.MetadataValue.text(extract.last_full_pull_at.isoformat()),
            **meta,
        },
    )
