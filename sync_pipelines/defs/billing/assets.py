import hashlib
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import dagster as dg
import pandas as pd

from sync_pipelines import config, money
from sync_pipelines.billing.company import companies_from_document
from sync_pipelines.billing.company_pricing import REALM_COLUMN, price_month_by_company
from sync_pipelines.billing.rules import parse_rules
from sync_pipelines.defs.io_manager import BY_PARTITION_INPUT
from sync_pipelines.defs.partitions import MONTH_OF_CLIENT_MONTH, client_and_month, clients, monthly
from sync_pipelines.defs.resources import LedgerResource, QuickBooksResource, RulesResource
from sync_pipelines.posting.draft_checks import draft_problems
from sync_pipelines.posting.company_drafts import company_drafts_document
from sync_pipelines.posting.history import billing_history
from sync_pipelines.posting.report import reconciliation_report as build_report

ENTRY_REPORT_COLUMNS = ["client_key", "entry_id", "spent_date", "user_name", "project_name", "task_name", "hours_centi",
                        "billable", "status", "reason", "invoice_key", "line_no", "notes"]


def _client_output_dir(period: str, client_key: str) -> Path:
    path = Path(config.output_dir(), period, client_key)
    path.mkdir(parents=True, exist_ok=True)
    return path


#: Rows of a per-client table shown in a monthly asset's metadata (the full table is in the files).
METADATA_ROWS = 200


def _line_item_deals_metadata(result) -> dict:
    """Deals invoiced (or not) from their line items this month, when the rules turn it on."""
    deals = result.extras.get("line_item_deals")
    if deals is None or not len(deals):
        return {}
    return {"line_item_deals": dg.MetadataValue.md(
        deals[["client_key", "deal_id", "dealname", "status", "reason", "invoice_key"]].head(METADATA_ROWS).to_markdown(index=False)
    )}


@dataclass(frozen=True)
class _MonthResult:
    """The month's pricing of every company, read as one (entries, lines and extras of all clients)."""

    entries: pd.DataFrame
    lines: pd.DataFrame
    extras: dict

    @classmethod
    def of(cls, results: dict) -> "_MonthResult":
        parts = list(results.values())
        if len(parts) == 1:
            return cls(parts[0].entries, parts[0].lines, parts[0].extras)
        deals = [p.extras["line_item_deals"] for p in parts if p.extras.get("line_item_deals") is not None]
        return cls(pd.concat([p.entries for p in parts], ignore_index=True),
                   pd.concat([p.lines for p in parts], ignore_index=True),
                   {"line_item_deals": pd.concat(deals, ignore_index=True)} if deals else {})


@dg.asset(partitions_def=monthly, group_name="extract", kinds={"yaml"}, code_version="1")
def billing_rules(context: dg.AssetExecutionContext, rules: RulesResource) -> dg.Output[dict]:
    """The billing rules file as it was when the month was billed (rates, rounding, discounts, caps).

    The whole file is validated first; an invalid file stops the run with every problem listed
    by path (`clients.acme.rates[2].from: ...`), so nothing is billed on half-read rules.
    Every month-end run (and every `bill`) takes a new snapshot, so a re-run after a rules fix
    prices with the fixed rules; posting one client's month from the UI posts the drafts priced
    from the snapshot (its metadata says when the file changed since). Each client in the file becomes a row of the billing board (the month × client partitions).
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
                "Every client's time entries for the month, each marked billed or excluded with the "
                "reason (not billable in Harvest, timer running, already billed on another invoice, "
                "...). Every hour of every rules client's month is in this table exactly once "
                "(hours of clients without rules are in `unassigned_time`)."
            ),
        ),
        "invoice_drafts": dg.AssetOut(
            group_name="billing",
            kinds={"json"},
            description=(
                "The invoices the month will produce, for every client, priced by the rules: each line "
                "says which rate rule applied, raw and billed hours, the rounding and the entries on it. "
                "Held invoices carry every reason. The preview CSVs (one per client, in the output "
                "folder) are what finance reviews; the payloads are stored exactly as they will be "
                "sent to QuickBooks."
            ),
        ),
    },
    # Drafts are priced from the selected entries, so the lineage shows entries -> drafts.
    internal_asset_deps={
        "billable_entries": {dg.AssetKey(k) for k in _EXTRACTS},
        "invoice_drafts": {dg.AssetKey("billable_entries"), *(dg.AssetKey(k) for k in _EXTRACTS)},
    },
    ins={k: dg.AssetIn() for k in sorted(_EXTRACTS)},
    partitions_def=monthly,
    check_specs=[
        dg.AssetCheckSpec(
            "drafts_are_consistent",
            asset="invoice_drafts",
            description="Every line's Amount is Qty x UnitPrice rounded half-up, lines add up to the total, "
            "and no entry is on two invoices. A client whose drafts fail it is not posted (the posting "
            "step checks each client again and marks it failed with the problems); the others are.",
        )
    ],
    code_version="2",
)
def price_month_drafts(
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
    period = context.partition_key
    # Parsed once for the whole month: every client is priced in one pass (DESIGN §11).
    rules = parse_rules(billing_rules["yaml"], billing_rules["source"])
    client_keys = sorted(rules.clients)
    # each client is billed from its own QuickBooks company (rules `company:`): its realm,
    # settings, catalog and history; a company that could not be read bills none of its clients
    companies = companies_from_document(qbo_company)
    groups = rules.clients_by_company(client_keys)
    unpriced = {
        ck: f"QuickBooks company {key!r} could not be read for {period} (an outage or a refused token: see the "
            "qbo_company step's log and the alert); nothing of this client was billed. Fix the cause, then "
            "re-run the month."
        for key, cks in groups.items() if key not in companies for ck in cks
    }
    if unpriced:
        context.log.error(f"{len(unpriced)} client(s) not priced: " + next(iter(unpriced.values())))
    led = ledger.open()
    histories = {
        companies[key].realm_id: billing_history(led.history(companies[key].realm_id, cks, period))
        for key, cks in groups.items() if key in companies and cks
    }
    # Time dated after today (in the firm's timezone) is excluded: it cannot have been spent yet.
    today = datetime.now(ZoneInfo(rules.firm.timezone)).date()
    results = price_month_by_company(rules, period, harvest_time_entries, hubspot_deals, qbo_catalog,
                                     {key: c for key, c in companies.items() if key in groups}, histories,
                                     [ck for ck in client_keys if ck not in unpriced],
                                     line_items=hubspot_deal_line_items, today=today)
    if not results:  # every company the rules bill from was unreadable
        raise dg.Failure(description="no client could be priced: " + next(iter(unpriced.values())))
    result = _MonthResult.of(results)

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
    # The rules the drafts were priced with: posting one client later says when the file changed.
    document["rules_sha256"] = billing_rules["sha256"]
    document["unpriced_clients"] = unpriced
    lines_by_client = dict(tuple(result.lines.groupby("client_key", sort=False))) if len(result.lines) else {}
    for client_key in client_keys:
        preview = _client_output_dir(period, client_key) / "invoice_preview.csv"
        lines_by_client.get(client_key, result.lines.iloc[0:0]).to_csv(preview, index=False)
    summary = pd.DataFrame(
        [{"client": i["client_key"], "invoice": i["doc_number"], "status": i["status"],
          "total": f"{i['total']} {i['currency']}",
          "expected_tax": "set by QuickBooks" if i["expected_tax"] is None else str(i["expected_tax"]),
          "hours": str(i["billed_hours"]), "reasons": "; ".join(i["hold_reasons"])} for i in document["invoices"]]
    )
    held = [i for i in document["invoices"] if i["status"] == "held"]
    if held:
        # One log line for the month (each line is an event the instance stores), every held invoice on it.
        context.log.warning("\n".join(f"HELD {inv['invoice_key']}: {'; '.join(inv['hold_reasons'])}" for inv in held))
    totals: dict[str, Decimal] = {}
    for i in document["invoices"]:
        if i["status"] == "ready":
            totals[i["currency"]] = totals.get(i["currency"], Decimal(0)) + Decimal(str(i["total"]))
    yield dg.Output(
        document,
        output_name="invoice_drafts",
        metadata={
            "clients": dg.MetadataValue.int(len(client_keys)),
            "clients_with_invoices": dg.MetadataValue.int(len({i["client_key"] for i in document["invoices"]})),
            "invoices": dg.MetadataValue.int(len(document["invoices"])),
            "held_invoices": dg.MetadataValue.int(len(held)),
            "lines": dg.MetadataValue.int(len(result.lines)),
            "total": dg.MetadataValue.text(", ".join(f"{t} {c}" for c, t in sorted(totals.items())) or "0"),
            "preview_csvs": dg.MetadataValue.path(str(Path(config.output_dir(), period))),
            "quickbooks_company": dg.MetadataValue.text(document.get("company") or ""),
            "rules_sha256": dg.MetadataValue.text(billing_rules["sha256"]),
            **_line_item_deals_metadata(result),
            "drafts": dg.MetadataValue.md(
                summary.head(METADATA_ROWS).to_markdown(index=False) if len(summary) else "_no invoice this month_"),
        },
    )
    problems = draft_problems(document)
    yield dg.AssetCheckResult(
        check_name="drafts_are_consistent",
        asset_key="invoice_drafts",
        passed=not problems,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={"problems": dg.MetadataValue.md("\n".join(f"- {p}" for p in problems[:METADATA_ROWS]) or "_none_")},
    )


def _by_client(frame: pd.DataFrame, column: str = "client_key") -> dict[str, pd.DataFrame]:
    return dict(tuple(frame.groupby(column, sort=False))) if len(frame) else {}


@dg.asset(
    partitions_def=monthly,
    group_name="posting",
    kinds={"pandas", "csv"},
    ins={
        "billable_entries": dg.AssetIn(),
        "invoice_drafts": dg.AssetIn(),
        "qbo_invoices": dg.AssetIn(partition_mapping=MONTH_OF_CLIENT_MONTH, metadata=BY_PARTITION_INPUT),
        "qbo_existing_invoices": dg.AssetIn(),
    },
    code_version="2",
)
def reconciliation_report(
    context: dg.AssetExecutionContext,
    billable_entries: pd.DataFrame,
    invoice_drafts: dict,
    qbo_invoices: dict,
    qbo_existing_invoices: pd.DataFrame,
) -> dg.Output[pd.DataFrame]:
    """What the finance lead reads after the month-end: everything that was not simply billed, and why.

    Per client: excluded time entries with their reason, held invoices with every reason, cap
    write-downs, drift (a posted invoice whose inputs changed), failures (a QuickBooks company
    that stayed unavailable), and invoices found in QuickBooks for the customer and month that
    the month-end did not create. One CSV per client in the output folder, and this table.
    """
    period = context.partition_key
    entries = _by_client(billable_entries)
    empty_entries = billable_entries.iloc[0:0]
    outcomes_by_client = {client_and_month(k)[0]: frame for k, frame in qbo_invoices.items()}
    posted_clients = sorted(outcomes_by_client)
    drafts_by_client: dict[str, list[dict]] = {}
    for inv in invoice_drafts["invoices"]:
        drafts_by_client.setdefault(inv["client_key"], []).append(inv)
    # The report compares a client's customers with the month's QuickBooks invoices: hand each
    # client only its customers' invoices, or the month costs clients x invoices.
    # Keyed by (realm, customer name): another company may have a customer of the same name.
    if REALM_COLUMN not in qbo_existing_invoices.columns:
        qbo_existing_invoices = qbo_existing_invoices.assign(**{REALM_COLUMN: invoice_drafts["realm_id"]})
    existing_by_customer = (dict(tuple(qbo_existing_invoices.groupby([REALM_COLUMN, "customer_name"], sort=False)))
                            if len(qbo_existing_invoices) else {})
    empty_existing = qbo_existing_invoices.iloc[0:0]
    frames = []
    for client_key in posted_clients:
        outcomes = outcomes_by_client[client_key]
        drafts = {**invoice_drafts, "invoices": drafts_by_client.get(client_key, [])}
        customers = sorted({(i.get("realm_id") or invoice_drafts["realm_id"], i["customer_name"])
                            for i in drafts["invoices"]})
        existing = (pd.concat([existing_by_customer[c] for c in customers if c in existing_by_customer])
                    if any(c in existing_by_customer for c in customers) else empty_existing)
        report = build_report(entries.get(client_key, empty_entries), drafts, outcomes, existing)
        report.to_csv(_client_output_dir(period, client_key) / "reconciliation_report.csv", index=False)
        frames.append(report.assign(client_key=client_key))
    report = (pd.concat(frames, ignore_index=True) if frames
              else pd.DataFrame(columns=[*build_report(empty_entries, {"invoices": []}, pd.DataFrame(columns=["outcome"]),
                                                       qbo_existing_invoices.iloc[0:0]).columns, "client_key"]))
    report = report[["client_key", *[c for c in report.columns if c != "client_key"]]]
    counts = report["section"].value_counts().to_dict() if len(report) else {}
    return dg.Output(
        report,
        metadata={
            "clients": dg.MetadataValue.int(len(posted_clients)),
            "report_csvs": dg.MetadataValue.path(str(Path(config.output_dir(), period))),
            **{f"{k}": dg.MetadataValue.int(int(v)) for k, v in sorted(counts.items())},
            "report": dg.MetadataValue.md(
                report.head(METADATA_ROWS).to_markdown(index=False) if len(report) else "_nothing to report_"),
        },
    )
