"""A deal marked ready for billing in HubSpot, billed now: one partition per deal.

`ready_deal` -> `deal_invoice_draft` -> `deal_qbo_invoice` -> `deal_crm_write_back`, launched by
the `ready_for_billing_deals` sensor (or by hand from the UI for one deal). The logic lives in
`sync_pipelines/triggers/`; these assets fetch, call it, and say what happened.
"""

from datetime import date, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

import dagster as dg
import pandas as pd

from sync_pipelines.alerts import Alert, run_url, send
from sync_pipelines.billing.company_pricing import rules_for_company
from sync_pipelines.billing.rules_cache import cached_rules
from sync_pipelines.connectors.hubspot_stages import iso_ms, parse_hubspot_datetime
from sync_pipelines.defs.partitions import deals
from sync_pipelines.defs.quickbooks.posting_outcomes import POSTING_RETRY_POLICY, post_document, report_outcomes
from sync_pipelines.defs.resources import HarvestResource, HubSpotResource, LedgerResource, QuickBooksResource, RulesResource
from sync_pipelines.extract import sources
from sync_pipelines.extract.frames import line_items_frame, time_entries_frame
from sync_pipelines.posting.draft_checks import draft_problems
from sync_pipelines.posting.drafts import drafts_document
from sync_pipelines.posting.history import billing_history
from sync_pipelines.posting.writeback import CONFIRMED, PROPERTIES, drain_writebacks, enqueue_writebacks
from sync_pipelines.triggers.deal_invoice import LINE_ITEMS, DealPlan, plan_deal, price_deal
from sync_pipelines.triggers.deal_sources import (
    deal_frame_from_row,
    deal_row,
    earlier_invoices,
    project_deals,
    project_entries,
    read_deal,
)
from sync_pipelines.triggers.stage_entry import StageEntry

#: Run tags the sensor sets (a run launched by hand without them bills the deal's current entry).
DEAL_TAG = "sync/deal_id"
ENTERED_TAG = "sync/stage_entered_ms"

TRIGGER_ASSET = dict(partitions_def=deals, group_name="triggers", code_version="1")


def _alert(context: dg.AssetExecutionContext, plan: DealPlan, title: str, lines: list[str]) -> None:
    send(Alert(title=title, lines=(f"deal {plan.deal_id} ({plan.dealname or 'unnamed'}), client "
                                   f"{plan.client_key or 'unknown'}, period {plan.period}", *lines),
               run_url=run_url(context.run.run_id)))


@dg.asset(kinds={"hubspot"}, **TRIGGER_ASSET)
def ready_deal(
    context: dg.AssetExecutionContext, hubspot: HubSpotResource, rules: RulesResource, ledger: LedgerResource,
    quickbooks: QuickBooksResource,
) -> dg.Output[dict]:
    """The HubSpot deal that entered the ready-for-billing stage, and what this trigger will bill.

    The deal is read again from HubSpot: only a deal still in the stage, with the stage-entered
    date of this trigger, is billed. It bills its line items when it has any, else its Harvest
    project's unbilled time of the month up to the trigger day (`harvest_project_id`). A deal
    already invoiced is not billed again (`already_invoiced`; void the invoice to re-issue).
    `reason` says why nothing is billed; a deal that needs a person (no rules client for its
    company, nothing to bill) raises an alert.
    """
    parsed = cached_rules(rules.resolved_path())
    stage = parsed.hubspot.ready_for_billing_stage if parsed.hubspot else None
    deal_id = context.partition_key
    if stage is None:
        raise dg.Failure(description="the rules set no hubspot.ready_for_billing_stage: deal triggers are off")
    with hubspot.client() as client:
        frame, has_items = read_deal(client, deal_id, stage)
    row = deal_row(frame)
    tag = context.run.tags.get(ENTERED_TAG)
    when = int(tag) if tag and tag.isdigit() else parse_hubspot_datetime(row.get("stage_entered_at")) if row else None
    if when is None:
        raise dg.Failure(description=f"deal {deal_id} is not in the {stage} stage (or HubSpot gives no date it "
                         "entered it): nothing to bill")
    company = row.get("company_id") if row else None
    client_key = next((k for k, c in parsed.clients.items() if company and c.hubspot_company_id == company), None)
    # the client's own QuickBooks company (rules `company:`) holds its invoices
    realm = parsed.company_realm(parsed.company_key(client_key), str(quickbooks.realm_id)) if client_key else quickbooks.realm_id
    earlier = earlier_invoices(ledger.open(), realm, client_key, deal_id)
    # a re-execution of the same trigger (same deal, same stage entry) re-prices its invoice;
    # a new trigger of a deal already invoiced does not
    before = context.instance.get_run_records(
        dg.RunsFilter(tags={DEAL_TAG: deal_id, ENTERED_TAG: str(when)}), limit=5)
    retry = any(r.dagster_run.run_id != context.run.run_id for r in before)
    plan = plan_deal(parsed, StageEntry(deal_id, when), row, has_items, earlier, retry=retry)
    if plan.needs_attention:
        context.log.warning(plan.reason)
        _alert(context, plan, "A deal ready for billing was not billed", [plan.reason or ""])
    elif plan.reason:
        context.log.info(plan.reason)
    return dg.Output(
        {"plan": plan.as_dict(), "deal": None if row is None else {k: (None if pd.isna(v) else v) for k, v in row.items()}},
        metadata={
            "deal_id": dg.MetadataValue.text(deal_id),
            "dealname": dg.MetadataValue.text(plan.dealname or ""),
            "stage_entered": dg.MetadataValue.text(iso_ms(when)),
            "client": dg.MetadataValue.text(plan.client_key or "-"),
            "bills": dg.MetadataValue.text(plan.basis or "nothing"),
            "period": dg.MetadataValue.text(plan.period),
            "through": dg.MetadataValue.text(plan.through),
            "reason": dg.MetadataValue.text(plan.reason or ""),
            "already_invoiced": dg.MetadataValue.text(plan.already_invoiced or ""),
        },
    )


@dg.asset(
    kinds={"json"},
    ins={"ready_deal": dg.AssetIn()},
    check_specs=[dg.AssetCheckSpec(
        "deal_draft_is_consistent", asset="deal_invoice_draft", blocking=True,
        description="Every line's Amount is Qty x UnitPrice rounded half-up and the lines add up to the total. "
        "The invoice is not posted when this fails.")],
    **TRIGGER_ASSET,
)
def deal_invoice_draft(
    context: dg.AssetExecutionContext, ready_deal: dict, rules: RulesResource, ledger: LedgerResource,
    quickbooks: QuickBooksResource, hubspot: HubSpotResource, harvest: HarvestResource,
) -> dg.Output[dict]:
    """The deal's invoice, priced by the month-end's engine and rules, before it is posted.

    Line items: one line per item, product SKU -> QuickBooks item; an unknown SKU holds the whole
    invoice. Project time: the entries of the deal's Harvest project not billed yet, spent up to
    the trigger day, at the client's rates (or the deal's `billing_hourly_rate`), with the
    client's or deal's discount and caps but no monthly minimum. A held invoice lists every reason
    here (the posting step records it and raises the alert); nothing of it reaches QuickBooks.
    """
    plan = DealPlan.from_dict(ready_deal["plan"])
    parsed = cached_rules(rules.resolved_path())
    # billed from the client's own QuickBooks company (rules `company:`), in its home currency
    company_key = parsed.company_key(plan.client_key) if plan.client_key else None
    realm = parsed.company_realm(company_key, str(quickbooks.realm_id))
    parsed = rules_for_company(parsed, company_key)
    if plan.basis is None:
        document = {"period": plan.period, "realm_id": realm, "home_currency": parsed.firm.home_currency,
                    "invoices": [], "deal": plan.as_dict()}
        yield dg.Output(document, metadata={"invoices": dg.MetadataValue.int(0),
                                            "reason": dg.MetadataValue.text(plan.reason or "")})
        yield dg.AssetCheckResult(check_name="deal_draft_is_consistent", passed=True)
        return
    deal_frame = deal_frame_from_row(ready_deal["deal"])
    with quickbooks.client(realm) as qbo:
        catalog, _ = sources.qbo_catalog(qbo)
        # Read now, not from the month's extract: the deal is billed today, into the company as it is.
        company, _ = sources.qbo_company(qbo)
    line_items = None
    entries = time_entries_frame([])
    with hubspot.client() as hs:
        if plan.basis == LINE_ITEMS:
            line_items, _ = sources.hubspot_deal_line_items(hs, deal_frame, stage=None)
        else:
            deal_frame = project_deals(hs, deal_frame, parsed.hubspot.ready_for_billing_stage)  # type: ignore[union-attr]
    if plan.basis != LINE_ITEMS:
        with harvest.client() as hv:
            entries, rejected = project_entries(hv, int(plan.harvest_project_id), plan.period,  # type: ignore[arg-type]
                                                date.fromisoformat(plan.through))
        if len(rejected):
            context.log.warning(f"{len(rejected)} Harvest entries of project {plan.harvest_project_id} were "
                                "malformed and are not billed: " + "; ".join(rejected["reason"].head(5)))
    history = billing_history(ledger.open().history(realm, [plan.client_key], plan.period))  # type: ignore[list-item]
    result = price_deal(parsed, plan, deal_frame, line_items if line_items is not None else line_items_frame([]),
                        entries, catalog, history, realm, company=company,
                        today=datetime.now(ZoneInfo(parsed.firm.timezone)).date())
    document = drafts_document(result, entries)
    document["deal"] = plan.as_dict()
    nothing = None
    if not document["invoices"]:
        nothing = (f"nothing to bill: project {plan.harvest_project_id} has no unbilled billable time in "
                   f"{plan.period} up to {plan.through}" if plan.basis != LINE_ITEMS else
                   f"nothing to bill: deal {plan.deal_id}'s line items total zero")
        context.log.info(nothing)
    held = [i for i in document["invoices"] if i["status"] == "held"]
    # Logged here; the alert goes out once, from `deal_qbo_invoice`, which records the held
    # invoice in the ledger (as the month-end's `qbo_invoices` does).
    for inv in held:
        context.log.warning(f"HELD {inv['invoice_key']}: {'; '.join(inv['hold_reasons'])}")
    lines = result.lines
    yield dg.Output(
        document,
        metadata={
            "invoices": dg.MetadataValue.int(len(document["invoices"])),
            "held_invoices": dg.MetadataValue.int(len(held)),
            "total": dg.MetadataValue.text(", ".join(f"{i['total']} {i['currency']}" for i in document["invoices"]) or "0"),
            "entries": dg.MetadataValue.int(sum(len(i["entries"]) for i in document["invoices"])),
            "hold_reasons": dg.MetadataValue.md("\n".join(f"- {r}" for i in held for r in i["hold_reasons"]) or "_none_"),
            "reason": dg.MetadataValue.text(nothing or ""),
            "lines": dg.MetadataValue.md(
                lines[["line_no", "description", "qty", "unit_price", "amount", "rate_rule"]].astype(str)
                .to_markdown(index=False) if len(lines) else "_no lines_"),
        },
    )
    problems = draft_problems(document)
    yield dg.AssetCheckResult(
        check_name="deal_draft_is_consistent", passed=not problems, severity=dg.AssetCheckSeverity.ERROR,
        metadata={"problems": dg.MetadataValue.md("\n".join(f"- {p}" for p in problems) or "_none_")},
    )


@dg.asset(
    kinds={"quickbooks"},
    ins={"deal_invoice_draft": dg.AssetIn()},
    # Posting is idempotent (ledger row before the call, requestid = key, DocNumber lookup on
    # resume), so a retried step can never create a second invoice.
    retry_policy=POSTING_RETRY_POLICY,
    pool="quickbooks",
    **TRIGGER_ASSET,
)
def deal_qbo_invoice(
    context: dg.AssetExecutionContext, deal_invoice_draft: dict, quickbooks: QuickBooksResource, ledger: LedgerResource,
) -> dg.Output[pd.DataFrame]:
    """The deal's invoice created in QuickBooks exactly once, through the month-end's ledger protocol.

    The customer is found (inactive too) or created; the ledger records the payload before the
    call; the call carries the invoice key as `requestid`. A re-run, or the month-end of the same
    month, finds it `already_posted`; a changed draft is reported as drift, never re-posted; a
    held invoice is recorded with its reasons and never partly sent.
    """
    plan = deal_invoice_draft.get("deal") or {}
    frame, metadata = report_outcomes(context, post_document(context, deal_invoice_draft, quickbooks, ledger))
    if plan.get("already_invoiced"):
        metadata["already_invoiced"] = dg.MetadataValue.text(plan["already_invoiced"])
    return dg.Output(frame, metadata=metadata)


@dg.asset(
    kinds={"hubspot"},
    ins={"deal_qbo_invoice": dg.AssetIn(), "deal_invoice_draft": dg.AssetIn()},
    retry_policy=dg.RetryPolicy(max_retries=3, delay=15, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS),
    **TRIGGER_ASSET,
)
def deal_crm_write_back(
    context: dg.AssetExecutionContext, deal_qbo_invoice: pd.DataFrame, deal_invoice_draft: dict,
    ledger: LedgerResource, hubspot: HubSpotResource,
) -> dg.Output[pd.DataFrame]:
    """The deal gets its QuickBooks invoice: `qbo_invoice_id`, `qbo_invoice_number`,
    `billing_status` = invoiced (and `billed_through`), only once QuickBooks has confirmed it.

    Ledgered like the month-end's write-back: recorded before and after the HubSpot call and
    retried by every later run until done; a held or failed invoice never touches the deal.
    """
    led = ledger.open()
    plan = deal_invoice_draft.get("deal") or {}
    keys = [i["invoice_key"] for i in deal_invoice_draft["invoices"]]
    if plan.get("already_invoiced"):
        keys.append(plan["already_invoiced"])  # finish a write-back an earlier trigger left pending
    confirmed = [k for k in keys if (r := led.get_invoice(k)) is not None and r.status in CONFIRMED]
    # a deal invoice writes back to its own deal (group key deal-<id>); no frames needed
    planned = enqueue_writebacks(led, confirmed, {}, pd.DataFrame())
    with hubspot.client() as client:
        results = drain_writebacks(led, client, confirmed)
    rows = [{"invoice_key": r.key, "deal_id": r.deal_id, "status": r.status, "error": r.error} for r in results]
    frame = pd.DataFrame(rows, columns=["invoice_key", "deal_id", "status", "error"], dtype=object)
    failed = [r for r in results if r.status == "failed"]
    if failed:
        raise dg.Failure(description=f"CRM write-back of {failed[0].key} to deal {failed[0].deal_id} still pending "
                         f"(recorded; the next run retries): {failed[0].error}")
    return dg.Output(frame, metadata={
        "write_backs": dg.MetadataValue.int(len(planned)),
        "written_now": dg.MetadataValue.int(sum(1 for r in results if r.status == "done")),
        "not_confirmed": dg.MetadataValue.text(", ".join(sorted(set(keys) - set(confirmed))) or "-"),
        "properties": dg.MetadataValue.text(", ".join(PROPERTIES)),
        "total": dg.MetadataValue.text(str(sum((Decimal(str(i["total"])) for i in deal_invoice_draft["invoices"]),
                                               Decimal(0)))),
    })
