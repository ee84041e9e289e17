import hashlib
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import dagster as dg
import pandas as pd

from sync_pipelines import config, money
from sync_pipelines.billing.company import companies_from_document
from sync_pipelines.billing.company_pricing import company_rows, price_month_by_company
from sync_pipelines.billing.rules import parse_rules
from sync_pipelines.defs.partitions import client_months, clients, monthly
from sync_pipelines.defs.resources import LedgerResource, QuickBooksResource, RulesResource
from sync_pipelines.posting.draft_checks import draft_problems
from sync_pipelines.posting.company_drafts import company_drafts_document
from sync_pipelines.posting.history import billing_history
from sync_pipelines.posting.report import reconciliation_report as build_report

ENTRY_REPORT_COLUMNS = ["entry_id", "spent_date", "user_name", "project_name", "task_name", "hours_centi",
                        "billable", "status", "reason", "invoice_key", "line_no", "notes"]


def _client_output_dir(period: str, client_key: str) -> Path:
    path = Path(config.output_dir(), period, client_key)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _line_item_deals_metadata(result, client_key: str) -> dict:
    """Deals invoiced (or not) from their line items for this client, when the rules turn it on."""
    deals = result.extras.get("line_item_deals")
    if deals is None or not len(deals):
        return {}
    mine = deals[deals["client_key"] == client_key]
    return {"line_item_deals": dg.MetadataValue.md(
        mine[["deal_id", "dealname", "status", "reason", "invoice_key"]].to_markdown(index=False) if len(mine) else "_none_"
    )}


@dg.asset(partitions_def=monthly, group_name="extract", kinds={"yaml"}, code_version="1")
def billing_rules(context: dg.AssetExecutionContext, rules: RulesResource) -> dg.Output[dict]:
    """The billing rules file as it was when the month was billed (rates, rounding, discounts, caps).

    The whole file is validated first; an invalid file stops the run with every problem listed
    by path (`clients.acme.rates[2].from: ...`), so nothing is billed on half-read rules.
    Re-running one client's month later reuses this snapshot; re-materialise it to pick up edits.
    Each client in the file becomes a row of the billing board (the month × client partitions).
    """
    path = rules.resolved_path()
    text = Path(path).read_text()
    parsed = parse_rules(text, path)
    client_keys = sorted(parsed.clients)
    context.instance.add_dynamic_partitions(clients.name, client_keys)
    return dg.Output(
        {"source": path, "sha256": hashlib.sha256(text.encode()).hexdigest(), "yaml": text, "clients": client_keys},
        metadata={
            "clients": dg.MetadataValue.int(len(client_keys)),
            "client_keys": dg.MetadataValue.text(", ".join(client_keys)),
            "rules_file": dg.MetadataValue.path(path),
            "rules_sha256": dg.MetadataValue.text(hashlib.sha256(text.encode()).hexdigest()),
        },
    )


@dg.asset(partitions_def=monthly, group_name="billing", kinds={"pandas"}, code_version="1")
def unassigned_time(
    context: dg.AssetExecutionContext, harvest_time_entries: pd.DataFrame, billing_rules: dict
) -> dg.Output[pd.DataFrame]:
    """Hours logged in Harvest this month for clients that have no billing rules.

    These hours are never silently dropped: add the Harvest client to the rules file (or confirm
    it is not billable) and re-run. The `hours` metadata is what is waiting.
    """
    rules = parse_rules(billing_rules["yaml"], billing_rules["source"])
    mapped = {c.harvest_client_id for c in rules.clients.values()}
    frame = harvest_time_entries[~harvest_time_entries["client_id"].isin(mapped)]
    frame = frame[["entry_id", "spent_date", "client_id", "client_name", "user_name", "project_name", "task_name",
                   "hours_centi", "billable"]].reset_index(drop=True)
    by_client = (
        frame.groupby(["client_id", "client_name"])["hours_centi"].sum().reset_index()
        if len(frame) else pd.DataFrame(columns=["client_id", "client_name", "hours_centi"])
    )
    by_client["hours"] = [str(money.hours_from_centi(c)) for c in by_client["hours_centi"]]
    return dg.Output(
        frame,
        metadata={
            "dagster/row_count": dg.MetadataValue.int(len(frame)),
            "hours": dg.MetadataValue.text(str(money.hours_from_centi(int(frame["hours_centi"].sum())))),
            "by_harvest_client": dg.MetadataValue.md(
                by_client[["client_id", "client_name", "hours"]].to_markdown(index=False) if len(by_client) else "_none_"
            ),
        },
    )


_EXTRACTS = {"harvest_time_entries", "hubspot_deals", "hubspot_deal_line_items", "qbo_catalog", "qbo_company",
             "billing_rules"}


@dg.multi_asset(
    outs={
        "billable_entries": dg.AssetOut(
            group_name="billing",
            kinds={"pandas"},
            description=(
                "This client's time entries for the month, each marked billed or excluded with the "
                "reason (not billable in Harvest, timer running, already billed on another invoice, "
                "...). Every hour of the client's month is in this table exactly once."
            ),
        ),
        "invoice_drafts": dg.AssetOut(
            group_name="billing",
            kinds={"json"},
            description=(
                "The invoices this client's month will produce, priced by the rules: each line says "
                "which rate rule applied, raw and billed hours, the rounding and the entries on it. "
                "Held invoices carry every reason. The preview CSV (metadata) is what finance reviews; "
                "the payloads are stored exactly as they will be sent to QuickBooks."
            ),
        ),
    },
    # Drafts are priced from the selected entries, so the lineage shows entries -> drafts.
    internal_asset_deps={
        "billable_entries": {dg.AssetKey(k) for k in _EXTRACTS},
        "invoice_drafts": {dg.AssetKey("billable_entries"), *(dg.AssetKey(k) for k in _EXTRACTS)},
    },
    ins={
        "harvest_time_entries": dg.AssetIn(),
        "hubspot_deals": dg.AssetIn(),
        "hubspot_deal_line_items": dg.AssetIn(),
        "qbo_catalog": dg.AssetIn(),
        "qbo_company": dg.AssetIn(),
        "billing_rules": dg.AssetIn(),
    },
    partitions_def=client_months,
    check_specs=[
        dg.AssetCheckSpec(
            "drafts_are_consistent",
            asset="invoice_drafts",
            blocking=True,
            description="Every line's Amount is Qty x UnitPrice rounded half-up, lines add up to the total, "
            "and no entry is on two invoices. Posting does not run when this fails.",
        )
    ],
    code_version="1",
)
def price_client_month(
    context: dg.AssetExecutionContext,
    harvest_time_entries: pd.DataFrame,
    hubspot_deals: pd.DataFrame,
    hubspot_deal_line_items: pd.DataFrame,
    qbo_catalog: pd.DataFrame,
    qbo_company: dict,
    billing_rules: dict,
    ledger: LedgerResource,
    quickbooks: QuickBooksResource,
):
    keys = context.partition_key.keys_by_dimension
    client_key, period = keys["client"], keys["month"]
    rules = parse_rules(billing_rules["yaml"], billing_rules["source"])
    if client_key not in rules.clients:
        raise dg.Failure(description=f"client {client_key!r} is not in the billing rules snapshot for {period}")
    # the client is billed from its own QuickBooks company (rules `company:`): its realm, settings,
    # catalog and history
    company_key = rules.company_key(client_key)
    companies = companies_from_document(qbo_company)
    if company_key not in companies:
        raise dg.Failure(description=f"QuickBooks company {company_key or quickbooks.realm_id!r} could not be read "
                         f"for {period} (an outage or a refused token: see the qbo_company step's log and the alert); "
                         "nothing of this client was billed. Fix the cause, then re-run the month.")
    realm_id = companies[company_key].realm_id
    history = billing_history(ledger.open().history(realm_id, [client_key], period))
    # Time dated after today (in the firm's timezone) is excluded: it cannot have been spent yet.
    today = datetime.now(ZoneInfo(rules.firm.timezone)).date()
    results = price_month_by_company(rules, period, harvest_time_entries, hubspot_deals, qbo_catalog,
                                     {company_key: companies[company_key]}, {realm_id: history}, [client_key],
                                     line_items=hubspot_deal_line_items, today=today)
    result = results[company_key]

    entries = result.entries[ENTRY_REPORT_COLUMNS].reset_index(drop=True)
    billed = entries[entries["status"] == "billed"]
    yield dg.Output(
        entries,
        output_name="billable_entries",
        metadata={
            "dagster/row_count": dg.MetadataValue.int(len(entries)),
            "billed_entries": dg.MetadataValue.int(len(billed)),
            "excluded_entries": dg.MetadataValue.int(len(entries) - len(billed)),
            "billed_hours": dg.MetadataValue.text(str(money.hours_from_centi(int(billed["hours_centi"].sum())))),
        },
    )

    document = company_drafts_document(results, harvest_time_entries)
    out = _client_output_dir(period, client_key)
    preview = out / "invoice_preview.csv"
    result.lines.to_csv(preview, index=False)
    summary = pd.DataFrame(
        [{"invoice": i["doc_number"], "status": i["status"], "total": f"{i['total']} {i['currency']}",
          "expected_tax": "set by QuickBooks" if i["expected_tax"] is None else str(i["expected_tax"]),
          "hours": str(i["billed_hours"]), "reasons": "; ".join(i["hold_reasons"])} for i in document["invoices"]]
    )
    held = [i for i in document["invoices"] if i["status"] == "held"]
    for inv in held:
        context.log.warning(f"HELD {inv['invoice_key']}: {'; '.join(inv['hold_reasons'])}")
    yield dg.Output(
        document,
        output_name="invoice_drafts",
        metadata={
            "invoices": dg.MetadataValue.int(len(document["invoices"])),
            "held_invoices": dg.MetadataValue.int(len(held)),
            "lines": dg.MetadataValue.int(len(result.lines)),
            "total": dg.MetadataValue.text(
                ", ".join(f"{i['total']} {i['currency']}" for i in document["invoices"] if i["status"] == "ready") or "0"
            ),
            "preview_csv": dg.MetadataValue.path(str(preview)),
            "quickbooks_company": dg.MetadataValue.text(document.get("company") or ""),
            **_line_item_deals_metadata(result, client_key),
            "drafts": dg.MetadataValue.md(summary.to_markdown(index=False) if len(summary) else "_no invoice this month_"),
        },
    )
    problems = draft_problems(document)
    yield dg.AssetCheckResult(
        check_name="drafts_are_consistent",
        asset_key="invoice_drafts",
        passed=not problems,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={"problems": dg.MetadataValue.md("\n".join(f"- {p}" for p in problems) or "_none_")},
    )


@dg.asset(
    partitions_def=client_months,
    group_name="posting",
    kinds={"pandas", "csv"},
    ins={
        "billable_entries": dg.AssetIn(),
        "invoice_drafts": dg.AssetIn(),
        "qbo_invoices": dg.AssetIn(),
        "qbo_existing_invoices": dg.AssetIn(),
    },
    code_version="1",
)
def reconciliation_report(
    context: dg.AssetExecutionContext,
    billable_entries: pd.DataFrame,
    invoice_drafts: dict,
    qbo_invoices: pd.DataFrame,
    qbo_existing_invoices: pd.DataFrame,
) -> dg.Output[pd.DataFrame]:
    """What the finance lead reads after a run: everything that was not simply billed, and why.

    Excluded time entries with their reason, held invoices with every reason, cap write-downs,
    drift (a posted invoice whose inputs changed), failures, and invoices found in QuickBooks for
    this customer and month that this run did not create. Also written as a CSV (metadata).
    """
    keys = context.partition_key.keys_by_dimension
    # the client's own company only: another company may have a customer of the same name
    report = build_report(billable_entries, invoice_drafts, qbo_invoices,
                          company_rows(qbo_existing_invoices, invoice_drafts["realm_id"]))
    path = _client_output_dir(keys["month"], keys["client"]) / "reconciliation_report.csv"
    report.to_csv(path, index=False)
    counts = report["section"].value_counts().to_dict() if len(report) else {}
    return dg.Output(
        report,
        metadata={
            "report_csv": dg.MetadataValue.path(str(path)),
            **{f"{k}": dg.MetadataValue.int(int(v)) for k, v in sorted(counts.items())},
            "report": dg.MetadataValue.md(report.head(50).to_markdown(index=False) if len(report) else "_nothing to report_"),
        },
    )
