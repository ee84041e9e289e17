import dagster as dg
import pandas as pd

from sync_pipelines.defs.extract_state import stored_invoices
from sync_pipelines.defs.partitions import EXTRACT_ASSET, client_months
from sync_pipelines.defs.quarantine import keep_rejected
from sync_pipelines.defs.quickbooks.posting_outcomes import POSTING_RETRY_POLICY, post_document, report_outcomes
from sync_pipelines.defs.resources import LedgerResource, QuickBooksResource
from sync_pipelines.extract import sources
from sync_pipelines.extract.qbo_existing_invoices import existing_invoices



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
    group_name="posting",
    kinds={"quickbooks"},
    ins={"invoice_drafts": dg.AssetIn()},
    # Posting is idempotent (ledger row before the call, requestid = key, DocNumber lookup on
    # resume), so a retried step can never create a second invoice.
    retry_policy=POSTING_RETRY_POLICY,
    pool="quickbooks",
    code_version="1",
)
def qbo_invoices(
    context: dg.AssetExecutionContext,
    invoice_drafts: dict,
    quickbooks: QuickBooksResource,
    ledger: LedgerResource,
) -> dg.Output[pd.DataFrame]:
    """The client's invoices for the month, created in QuickBooks exactly once.

    For each draft: the customer is found or created, the ledger records the exact payload
    before QuickBooks is called, the call carries the invoice key as `requestid`, and QuickBooks'
    TotalAmt is checked against ours. Re-running is always safe: an invoice already posted with
    the same content is skipped, one whose inputs changed since is reported as drift and never
    re-posted (the report gives the delta in hours and money and proposes a true-up line or a
    credit memo), and a held invoice is recorded with its reasons and never partly sent.

    If QuickBooks refuses the stored refresh token (`invalid_grant`), the run fails at once,
    without retries, with the steps to reconnect the app.
    """
    frame, metadata = report_outcomes(context, post_document(context, invoice_drafts, quickbooks, ledger))
    return dg.Output(frame, metadata=metadata)
