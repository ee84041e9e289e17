import dagster as dg

from sync_pipelines.alerts import send
from sync_pipelines.billing.rules_cache import ready_for_billing_stage
from sync_pipelines.defs.partitions import deals
from sync_pipelines.defs.resources import HubSpotResource, LedgerResource, RulesResource
from sync_pipelines.defs.triggers.assets import DEAL_TAG, ENTERED_TAG
from sync_pipelines.triggers.ready_deals_tick import evaluate

deal_billing = dg.define_asset_job(
    "deal_billing",
    selection=dg.AssetSelection.groups("triggers"),
    description="Bill one HubSpot deal that entered the ready-for-billing stage: price it, post its invoice to "
    "QuickBooks exactly once, write the invoice back to the deal. Safe to re-run.",
    tags={"dagster/max_retries": "2"},
    # Four small sequential steps: one process for the run instead of one per step, which is most
    # of the stage change -> invoice latency (each step process re-imports the code location).
    executor_def=dg.in_process_executor,
)


# Running by default: this is the near-real-time feature (stage change -> invoice in seconds).
# It does nothing until the rules set hubspot.ready_for_billing_stage.
@dg.sensor(
    job=deal_billing,
    minimum_interval_seconds=2,
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def ready_for_billing_deals(
    context: dg.SensorEvaluationContext, hubspot: HubSpotResource, ledger: LedgerResource, rules: RulesResource,
) -> dg.SensorResult | dg.SkipReason:
    """Bills each HubSpot deal that enters the rules' ready-for-billing stage, once.

    At every pass of the sensor daemon (about every 5 s) it drains the HubSpot webhook inbox (each event's deal is read back from HubSpot:
    only a deal now in the stage counts); every 30 s it also searches HubSpot for deals in the
    stage modified since the last search, which catches what a webhook missed. One run per
    (deal, time it entered the stage): a duplicate or replayed webhook, a deal seen by both paths
    or an edit to a deal already billed never starts a second run; a deal that left the stage
    starts none. A tick reads at most 10 search pages; a backlog is worked off over the next
    ticks, the cursor moving only past what was fully read. HubSpot failing 3 ticks in a row
    raises an alert (then every 10 minutes while it lasts).
    """
    stage = ready_for_billing_stage(rules.resolved_path())
    if stage is None:
        return dg.SkipReason("the rules set no hubspot.ready_for_billing_stage (or cannot be read): deal triggers are off")
    with hubspot.client() as client:
        tick = evaluate(client, ledger.open(), stage, context.cursor)
    for alert in tick.alerts:
        send(alert)
    for note in tick.notes:
        context.log.warning(note)
    ids = sorted({t.deal_id for t in tick.triggers})
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(run_key=t.run_key, partition_key=t.deal_id,
                          tags={DEAL_TAG: t.deal_id, ENTERED_TAG: str(t.entered_ms)})
            for t in tick.triggers
        ],
        dynamic_partitions_requests=[deals.build_add_request(ids)] if ids else [],
        cursor=tick.cursor_text,
    )
