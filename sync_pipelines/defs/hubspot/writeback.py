import dagster as dg
import pandas as pd

from sync_pipelines.billing.rules import parse_rules
from sync_pipelines.defs.partitions import MONTH_OF_CLIENT_MONTH, monthly
from sync_pipelines.defs.resources import HubSpotResource, LedgerResource
from sync_pipelines.posting.writeback import (
    CONFIRMED,
    PROPERTIES,
    drain_writebacks,
    enqueue_writebacks,
    entry_projects,
)

WRITEBACK_COLUMNS = ["invoice_key", "deal_id", "status", "why", "error"]
#: Rows of the results table shown in the metadata (the stored table has them all).
METADATA_ROWS = 200


@dg.asset(
    partitions_def=monthly,
    group_name="posting",
    kinds={"hubspot"},
    # Runs after the month's posting (any client-month of it); reads what QuickBooks confirmed
    # from the ledger, not the posting outputs, so nothing per client is loaded.
    deps=[dg.AssetDep("qbo_invoices", partition_mapping=MONTH_OF_CLIENT_MONTH)],
    ins={
        "harvest_time_entries": dg.AssetIn(),
        "hubspot_deals": dg.AssetIn(),
        "billing_rules": dg.AssetIn(),
    },
    # Setting the same deal properties again is harmless and the ledger records each write-back,
    # so a retried step finishes what the previous attempt left pending.
    retry_policy=dg.RetryPolicy(max_retries=3, delay=15, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS),
    code_version="2",
)
def crm_write_back(
    context: dg.AssetExecutionContext,
    harvest_time_entries: pd.DataFrame,
    hubspot_deals: pd.DataFrame,
    billing_rules: dict,
    ledger: LedgerResource,
    hubspot: HubSpotResource,
) -> dg.Output[pd.DataFrame]:
    """The HubSpot deals billed this month (every client) get their QuickBooks invoice: `qbo_invoice_id`,
    `qbo_invoice_number`, `billed_through` (the month's last day) and `billing_status`.

    Only invoices QuickBooks has confirmed are written back: a held or failed invoice never
    touches the CRM. A deal is written to when its `harvest_project_id` project has time on the
    invoice (else, the client's company deal in the ready-for-billing stage). Each write-back is
    recorded in the ledger before and after the HubSpot call and retried by every later run
    until it is done; this step fails while any is still pending, so the board shows it.
    """
    period = context.partition_key
    led = ledger.open()
    rules = parse_rules(billing_rules["yaml"], billing_rules["source"])
    companies = {key: c.hubspot_company_id for key, c in rules.clients.items()}
    # Every confirmed invoice of the month's rules clients, not just the last run's outcomes: a
    # write-back left behind by a crash (or a re-issued generation) is picked up here.
    invoice_keys = [r.key for r in led.status(period=period, statuses=CONFIRMED) if r.client_key in companies]
    planned = enqueue_writebacks(
        led, invoice_keys, entry_projects(harvest_time_entries), hubspot_deals, companies,
        ready_stage=rules.hubspot.ready_for_billing_stage if rules.hubspot else None,
    )
    why = {(p.key, p.deal_id): p.why for p in planned}
    with hubspot.client() as client:
        results = drain_writebacks(led, client, invoice_keys)
    status = {(r.key, r.deal_id): r for r in results}
    rows = []
    for (key, deal), reason in sorted(why.items()):
        r = status.get((key, deal))
        rows.append({"invoice_key": key, "deal_id": deal, "status": r.status if r else "done", "why": reason,
                     "error": r.error if r else None})
    frame = pd.DataFrame(rows, columns=WRITEBACK_COLUMNS, dtype=object)
    no_deal = sorted(set(invoice_keys) - {p.key for p in planned})
    if no_deal:
        # One log line for the month, not one per invoice: each line is an event the instance stores.
        context.log.info(f"{len(no_deal)} invoice(s) have no HubSpot deal linked to their projects; nothing to "
                         "write back: " + ", ".join(no_deal[:METADATA_ROWS]) + (" ..." if len(no_deal) > METADATA_ROWS else ""))
    failed = [r for r in results if r.status == "failed"]
    if failed:
        raise dg.Failure(
            description=f"{len(failed)} CRM write-back(s) still pending (recorded; the next run retries): "
            + "; ".join(f"{r.key} -> deal {r.deal_id}: {r.error}" for r in failed[:5]),
        )
    return dg.Output(
        frame,
        metadata={
            "write_backs": dg.MetadataValue.int(len(frame)),
            "written_now": dg.MetadataValue.int(sum(1 for r in results if r.status == "done")),
            "invoices_without_deal": dg.MetadataValue.int(len(no_deal)),
            "properties": dg.MetadataValue.text(", ".join(PROPERTIES)),
            "results": dg.MetadataValue.md(
                frame.head(METADATA_ROWS).to_markdown(index=False) if len(frame) else "_no deal to update_"),
        },
    )
