import dagster as dg
import pandas as pd

from sync_pipelines.defs.partitions import EXTRACT_ASSET
from sync_pipelines.defs.quarantine import keep_rejected
from sync_pipelines.defs.resources import HubSpotResource
from sync_pipelines.extract import sources


@dg.asset(kinds={"hubspot", "pandas"}, **EXTRACT_ASSET)
def hubspot_deals(context: dg.AssetExecutionContext, hubspot: HubSpotResource) -> dg.Output[pd.DataFrame]:
    """HubSpot deals as they stood when the month was extracted, with their billing properties.

    A deal linked to a Harvest project (`harvest_project_id`) can override that project's
    billing: `billing_hourly_rate`, `billing_discount_percent`, `billing_not_to_exceed`,
    `po_number`. Each deal's primary company is attached so the invoice can be matched to it.
    """
    with hubspot.client() as client:
        frame, rejected = sources.hubspot_deals(client)
    meta = keep_rejected(context, "hubspot", context.partition_key, rejected)
    linked = int(frame["harvest_project_id"].notna().sum()) if len(frame) else 0
    return dg.Output(
        frame,
        metadata={
            "dagster/row_count": dg.MetadataValue.int(len(frame)),
            "deals_linked_to_harvest_projects": dg.MetadataValue.int(linked),
            **meta,
        },
    )
