import hashlib
from pathlib import Path

import dagster as dg
import pandas as pd

from sync_pipelines.defs.extract_state import stored_invoices
from sync_pipelines.defs.io_manager import ByPartition
from sync_pipelines.defs.partitions import EXTRACT_ASSET, MONTH_OF_CLIENT_MONTH, client_and_month, client_months
from sync_pipelines.defs.quarantine import keep_rejected
from sync_pipelines.defs.quickbooks.posting_outcomes import (
    POSTING_RETRIES,
    POSTING_RETRY_POLICY,
    alert_failed_on_last_attempt,
    alert_outcomes,
    failed_description,
    outcomes_frame,
    outcomes_metadata,
    post_document,
    retry_while_busy,
)
from sync_pipelines.defs.resources import LedgerResource, QuickBooksResource, RulesResource
from sync_pipelines.extract import sources
from sync_pipelines.extract.qbo_existing_invoices import existing_invoices
from sync_pipelines.posting.client_months import client_month_status, month_posting, outcomes_by_client
from sync_pipelines.posting.invoices import FAILED



@dg.asset(kinds={"quickbooks", "pandas"}, **EXTRACT_ASSET)
def qbo_catalog(context: dg.AssetExecutionContext, quickbooks: QuickBooksResource) -> dg.Output[pd.DataFrame]:
    """QuickBooks customers, items, classes and terms, inactive ones included.

    Invoices reference these by name in the billing rules (`qbo_customer`, `qbo.item`,
    `qbo.class`, `qbo.terms`); a name that is not here holds the invoice instead of guessing.
    Inactive customers are listed because they still own their name in QuickBooks.
    """
    with quickbooks.client() as client:
        frame, rejected = sources.qbo_catalog(client)
    meta = keep_rejected(context, "quickbooks", context.partition_key, rejected)
    counts = frame["entity"].value_counts().to_dict() if len(frame) else {}
    return dg.Output(
        frame,
        metadata={
            "dagster/row_count": dg.MetadataValue.int(len(frame)),
            **{f"{entity.lower()}_count": dg.MetadataValue.int(int(counts.get(entity, 0)))
               for entity in ("Customer", "Item", "Class", "Term")},
            **meta,
        },
    )


@dg.asset(kinds={"quickbooks", "json"}, **EXTRACT_ASSET)
def qbo_company(context: dg.AssetExecutionContext, quickbooks: QuickBooksResource) -> dg.Output[dict]:
    """The QuickBooks company's settings the invoices must fit, read for the month.

    Country, home currency, multicurrency, discounts, custom invoice numbers, class tracking,
    sales tax / Automated Sales Tax, and the tax codes with their sales rates. Each draft is fitted
    to these (CurrencyRef, discount item, class on invoice or lines, DocNumber, TaxCodeRef) or
    held with the reason, so a setting changed in QuickBooks shows up as a held invoice, never as
    an invoice QuickBooks rejects or silently alters. Re-materialise after changing a setting.
    """
    with quickbooks.client() as client:
        company, rejected = sources.qbo_company(client)
    meta = keep_rejected(context, "quickbooks", context.partition_key, rejected)
    codes = pd.DataFrame(
        [{"tax_code": c.name, "id": c.id, "active": c.active, "sales_rates": ", ".join(f"{r.name} {r.percent}%" for r in c.sales_rates)}
         for c in company.tax_codes],
        columns=["tax_code", "id", "active", "sales_rates"],
    )
    return dg.Output(
        company.as_document(),
        metadata={
            "settings": dg.MetadataValue.text(company.summary()),
            "country": dg.MetadataValue.text(company.country),
            "home_currency": dg.MetadataValue.text(company.home_currency),
            "tax_codes": dg.MetadataValue.md(codes.to_markdown(index=False) if len(codes) else "_none_"),
            **meta,
        },
    )


class QboExistingInvoicesConfig(dg.Config):
    """Set `full` to query the whole month again instead of catching up through QuickBooks CDC."""

    full: bool = False


@dg.asset(kinds={"quickbooks", "pandas"}, **EXTRACT_ASSET)
def qbo_existing_invoices(
    context: dg.AssetExecutionContext, quickbooks: QuickBooksResource, config: QboExistingInvoicesConfig
) -> dg.Output[pd.DataFrame]:
    """Invoices already in QuickBooks dated in the month, whoever created them.

    The reconciliation report compares these with what the ledger posted, so an invoice keyed
    in by hand for a client we also bill shows up before the client gets two.

    Re-materialising catches up through QuickBooks' change feed (CDC: one call) when the last
    extraction is under 29 days old; otherwise, or with `full: true`, the month is queried again
    (`extraction` says which and why).
    """
    stored, stored_at = (None, None) if config.full else stored_invoices(context)
    with quickbooks.client() as client:
        extract = existing_invoices(client, context.partition_key, stored, stored_at, full=config.full)
    context.log.info(f"QuickBooks invoices {context.partition_key}: {extract.mode} ({extract.reason})")
    return dg.Output(extract.frame, metadata={
        "dagster/row_count": dg.MetadataValue.int(len(extract.frame)),
        "extraction": dg.MetadataValue.text(f"{extract.mode}: {extract.reason}"),
        "extracted_at": dg.MetadataValue.text(extract.extracted_at.isoformat()),
    })


@dg.asset(
    partitions_def=client_months,
    # The month-end posts every client of the month in ONE run (a range of client-months):
    # Dagster's per-run overhead is paid once, and posting can batch across clients (DESIGN §11).
    backfill_policy=dg.BackfillPolicy.single_run(),
    group_name="posting",
    kinds={"quickbooks"},
    ins={"invoice_drafts": dg.AssetIn(partition_mapping=MONTH_OF_CLIENT_MONTH)},
    # Posting is idempotent (ledger row before the call, requestid = key, DocNumber lookup on
    # resume), so a retried step can never create a second invoice; it re-posts only what is not posted.
    retry_policy=POSTING_RETRY_POLICY,
    pool="quickbooks",
    code_version="2",
)
def qbo_invoices(
    context: dg.AssetExecutionContext,
    invoice_drafts: dict,
    quickbooks: QuickBooksResource,
    ledger: LedgerResource,
    rules: RulesResource,
):
    """Each client's invoices for the month, created in QuickBooks exactly once.

    For each draft: the customer is found or created, the ledger records the exact payload
    before QuickBooks is called, the call carries the invoice key as `requestid`, and QuickBooks'
    TotalAmt is checked against ours. Re-running is always safe: an invoice already posted with
    the same content is skipped, one whose inputs changed since is reported as drift and never
    re-posted (the report gives the delta in hours and money and proposes a true-up line or a
    credit memo), and a held invoice is recorded with its reasons and never partly sent.

    The month-end posts all clients in one run; each client-month's `status` metadata says how it
    ended (posted, no invoice, needs attention, failed, blocked, stopped). A client whose drafts
    fail the consistency checks is blocked, the others are posted. When QuickBooks stays
    unavailable, the step retries (only what is not posted yet); on the last attempt every
    client-month is recorded with its status and then the run fails, naming the invoices left.

    If QuickBooks refuses the stored refresh token (`invalid_grant`), the run fails at once,
    without retries, with the steps to reconnect the app.
    """
    selected = {client_and_month(k)[0]: str(k) for k in context.partition_keys}
    plan = month_posting(invoice_drafts, selected)
    outcomes = post_document(context, plan.document, quickbooks, ledger) if plan.document["invoices"] else []
    failed = [o for o in outcomes if o.outcome == FAILED]
    last_attempt = context.retry_number >= POSTING_RETRIES
    if failed and not last_attempt:
        # Retried by the policy: what was posted is found in the ledger and skipped.
        raise dg.Failure(description=failed_description(failed))
    retry_while_busy(context, outcomes)
    alert_outcomes(context, outcomes)
    alert_failed_on_last_attempt(context, failed)

    rules_changed = _rules_changed_since(invoice_drafts, rules)
    if rules_changed:
        context.log.warning("the billing rules file changed since these drafts were priced: materialise "
                            "month_extract for the month first to post with the current rules")
    grouped = outcomes_by_client(outcomes)
    stored = ByPartition()
    for client_key, partition_key in selected.items():
        mine = grouped.get(client_key, [])
        problems = plan.problems.get(client_key, [])
        frame = outcomes_frame(mine)
        metadata = {
            "status": dg.MetadataValue.text(client_month_status(mine, problems)),
            **outcomes_metadata(frame, mine),
            "rules_changed_since_pricing": dg.MetadataValue.bool(rules_changed),
        }
        if problems:
            metadata["problems"] = dg.MetadataValue.md("\n".join(f"- {p}" for p in problems))
            context.log.error(f"{client_key}: drafts are inconsistent, nothing posted: {'; '.join(problems)}")
        context.add_asset_metadata(metadata, partition_key=partition_key)
        stored[partition_key] = frame
    yield dg.Output(stored)
    if failed:
        # Every client-month is stored with its status (the other companies' invoices are posted
        # and followed up); the run still fails so the board and the alert show what is left.
        raise dg.Failure(description=failed_description(failed), allow_retries=False)


def _rules_changed_since(document: dict, rules: RulesResource) -> bool:
    priced_with = document.get("rules_sha256")
    if not priced_with:
        return False
    try:
        current = hashlib.sha256(Path(rules.resolved_path()).read_text().encode()).hexdigest()
    except OSError:
        return False
    return current != priced_with
