import dagster as dg
import pandas as pd

from sync_pipelines.defs.extract_state import stored_deals
from sync_pipelines.defs.partitions import EXTRACT_ASSET
from sync_pipelines.defs.quarantine import keep_rejected
from sync_pipelines.defs.resources import HubSpotResource, RulesResource
from sync_pipelines.billing.rules import parse_rules
from sync_pipelines.billing.rules_cache import ready_for_billing_stage
from sync_pipelines.extract import sources
from sync_pipelines.extract.hubspot_deals_refresh import extract_deals
from sync_pipelines.extract.frames import line_items_frame


class HubSpotDealsConfig(dg.Config):
    """Set `full` to read every deal again instead of only those modified since the last read."""

    full: bool = False


@dg.asset(kinds={"hubspot", "pandas"}, **EXTRACT_ASSET)
def hubspot_deals(
    context: dg.AssetExecutionContext, hubspot: HubSpotResource, rules: RulesResource, config: HubSpotDealsConfig
) -> dg.Output[pd.DataFrame]:
    """HubSpot deals as they stood when the month was extracted, with their billing properties.

    A deal linked to a Harvest project (`harvest_project_id`) can override that project's
    billing: `billing_hourly_rate`, `billing_discount_percent`, `billing_not_to_exceed`,
    `po_number`. Each deal's primary company is attached so the invoice can be matched to it.
    Deals in the rules' ready-for-billing stage carry when they entered it (`stage_entered_at`):
    that date, not the last edit, decides the month a line-item deal is invoiced in.

    Re-materialising asks HubSpot only for deals modified since the last read (`extraction`
    says which way it went and why); an archived deal is noticed by the portal's deal count and
    every deal is then read again, as it is at least weekly or when launched with `full: true`.
    """
    stage = ready_for_billing_stage(rules.resolved_path())
    stored = None if config.full else stored_deals(context)
    with hubspot.client() as client:
        extract = extract_deals(client, stored, stage=stage, full=config.full)
    frame, rejected = extract.frame, extract.rejected
    meta = keep_rejected(context, "hubspot", context.partition_key, rejected)
    linked = int(frame["harvest_project_id"].notna().sum()) if len(frame) else 0
    context.log.info(f"HubSpot deals: {extract.mode} ({extract.reason}), {extract.deals_read} deal(s) read")
    return dg.Output(
        frame,
        metadata={
            "dagster/row_count": dg.MetadataValue.int(len(frame)),
            "deals_linked_to_harvest_projects": dg.MetadataValue.int(linked),
            "extraction": dg.MetadataValue.text(f"{extract.mode}: {extract.reason}"),
            "extracted_at": dg.MetadataValue.text(extract.extracted_at.isoformat()),
            "last_full_pull_at": dg.MetadataValue.text(extract.last_full_pull_at.isoformat()),
            "ready_for_billing_stage": dg.MetadataValue.text(stage or ""),
            **meta,
        },
    )


@dg.asset(
    kinds={"hubspot", "pandas"},
    ins={"hubspot_deals": dg.AssetIn(), "billing_rules": dg.AssetIn()},
    **EXTRACT_ASSET,
)
def hubspot_deal_line_items(
    context: dg.AssetExecutionContext, hubspot: HubSpotResource, hubspot_deals: pd.DataFrame, billing_rules: dict
) -> dg.Output[pd.DataFrame]:
    """Line items of the deals in the rules' ready-for-billing stage (`hubspot.ready_for_billing_stage`).

    Such a deal is invoiced from its line items (product SKU -> QuickBooks item). Empty when the
    rules configure no stage: the feature is off. A ready deal whose company is not a rules
    client's `hubspot_company_id` is listed in the `unmapped_ready_deals` metadata, never dropped.
    """
    rules = parse_rules(billing_rules["yaml"], billing_rules["source"])
    if rules.hubspot is None:
        return dg.Output(line_items_frame([]), metadata={"feature": dg.MetadataValue.text(
            "off: set hubspot.ready_for_billing_stage in the rules to invoice deals from their line items")})
    stage = rules.hubspot.ready_for_billing_stage
    with hubspot.client() as client:
        frame, rejected = sources.hubspot_deal_line_items(client, hubspot_deals, stage=stage)
    meta = keep_rejected(context, "hubspot_line_items", context.partition_key, rejected)
    companies = {c.hubspot_company_id for c in rules.clients.values() if c.hubspot_company_id}
    ready = hubspot_deals[hubspot_deals["dealstage"] == stage]
    unmapped = ready[~ready["company_id"].isin(list(companies))]
    if len(unmapped):
        context.log.warning(f"{len(unmapped)} deal(s) ready for billing belong to no rules client: "
                            + ", ".join(f"{d} ({n})" for d, n in zip(unmapped["deal_id"], unmapped["dealname"])))
    return dg.Output(
        frame,
        metadata={
            "dagster/row_count": dg.MetadataValue.int(len(frame)),
            "ready_deals": dg.MetadataValue.int(len(ready)),
            "unmapped_ready_deals": dg.MetadataValue.md(
                unmapped[["deal_id", "dealname", "company_id"]].to_markdown(index=False) if len(unmapped) else "_none_"
            ),
            **meta,
        },
    )
