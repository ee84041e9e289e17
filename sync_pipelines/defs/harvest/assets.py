import dagster as dg
import pandas as pd

from sync_pipelines import money
from sync_pipelines.defs.partitions import EXTRACT_ASSET
from sync_pipelines.defs.quarantine import keep_rejected
from sync_pipelines.defs.resources import HarvestResource
from sync_pipelines.extract import sources

@dg.asset(kinds={"harvest", "pandas"}, **EXTRACT_ASSET)
def harvest_time_entries(context: dg.AssetExecutionContext, harvest: HarvestResource) -> dg.Output[pd.DataFrame]:
    """Every Harvest time entry whose spent date falls in the month, for all clients.

    Billable or not, running or not: the billing step decides what can be billed and reports
    the rest with a reason, so no hour disappears here. Hours are kept exactly as Harvest sent
    them. Records Harvest sent malformed are quarantined (see the `quarantine_file` metadata).
    """
    period = context.partition_key
    with harvest.client() as client:
        frame, rejected = sources.harvest_time_entries(client, period)
    meta = keep_rejected(context, "harvest", period, rejected)
    hours = frame["hours_centi"].sum() if len(frame) else 0
    billable = frame.loc[frame["billable"], "hours_centi"].sum() if len(frame) else 0
    return dg.Output(
        frame,
        metadata={
            "dagster/row_count": dg.MetadataValue.int(len(frame)),
            "hours": dg.MetadataValue.text(str(money.hours_from_centi(hours))),
            "billable_hours": dg.MetadataValue.text(str(money.hours_from_centi(billable))),
            "harvest_clients": dg.MetadataValue.int(int(frame["client_id"].nunique()) if len(frame) else 0),
            **meta,
        },
    )
