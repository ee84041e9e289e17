import dagster as dg
import pandas as pd

from sync_pipelines import money
from sync_pipelines.connectors.quickbooks import quote
from sync_pipelines.defs.partitions import EXTRACT_ASSET, client_months
from sync_pipelines.defs.quarantine import keep_rejected
from sync_pipelines.defs.quickbooks.posting_outcomes import POSTING_RETRY_POLICY, post_document, report_outcomes
from sync_pipelines import alert_messages
from sync_pipelines.alerts import send
from sync_pipelines.billing.company import companies_document
from sync_pipelines.connectors.http import ApiError
from sync_pipelines.defs.resources import CredentialsRefused, LedgerResource, QuickBooksResource, RulesResource
from sync_pipelines.extract import sources

EXISTING_INVOICE_COLUMNS = ["qbo_id", "doc_number", "customer_id", "customer_name", "txn_date", "total",
                            "balance", "private_note", "company", "realm_id"]


def _companies(rules: RulesResource, quickbooks: QuickBooksResource) -> dict[str | None, str]:
    """{company key: realm} of every QuickBooks company the rules bill from (None: QBO_REALM_ID's)."""
    return rules.load().company_realms(str(quickbooks.realm_id))


def _read_companies(context, rules: RulesResource, quickbooks: QuickBooksResource, read) -> dict:
    """{company key: read(client)} of every company the rules bill from. With several companies
    one that cannot be read (an outage, a refused token) is left out, logged and alerted, so the
    others' month goes on; its clients then fail to price, naming the company. One company alone
    fails the step as before."""
    companies = _companies(rules, quickbooks)
    out = {}
    for key, realm in companies.items():
        try:
            with quickbooks.client(realm) as client:
                out[key] = read(client)
        except (CredentialsRefused, ApiError) as exc:
            if len(companies) == 1:
                raise
            why = f"QuickBooks company {key} (realm {realm}) could not be read: {getattr(exc, 'description', None) or exc}"
            context.log.error(why)
            send(alert_messages.company_unavailable(key or "", realm, why, context.run.run_id))
    if not out:
        raise dg.Failure(description="no QuickBooks company could be read (see the log)")
    return out


def _each_company(context, rules: RulesResource, quickbooks: QuickBooksResource, read):
    """`read(client)` for every company, the rows tagged with the company and its realm."""
    frames, rejected = [], []
    realms = _companies(rules, quickbooks)
    for key, (frame, bad) in _read_companies(context, rules, quickbooks, read).items():
        frames.append(frame.assign(company=key or "", realm_id=realms[key]))
        rejected.append(bad)
    return (pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0],
            pd.concat(rejected, ignore_index=True) if len(rejected) > 1 else rejected[0])


@dg.asset(kinds={"quickbooks", "pandas"}, **EXTRACT_ASSET)
def qbo_catalog(context: dg.AssetExecutionContext, quickbooks: QuickBooksResource,
                rules: RulesResource) -> dg.Output[pd.DataFrame]:
    """QuickBooks customers, items, classes and terms, inactive ones included, of every company
    the rules bill from (`company` / `realm_id` columns).

    Invoices reference these by name in the billing rules (`qbo_customer`, `qbo.item`,
    `qbo.class`, `qbo.terms`), looked up in the client's own company only; a name that is not
    there holds the invoice instead of guessing. Inactive customers are listed because they
    still own their name in QuickBooks.
    """
    frame, rejected = _each_company(context, rules, quickbooks, sources.qbo_catalog)
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
def qbo_company(context: dg.AssetExecutionContext, quickbooks: QuickBooksResource,
                rules: RulesResource) -> dg.Output[dict]:
    """The settings of each QuickBooks company the invoices must fit, read for the month (one
    document per company of the rules' `companies:`).

    Country, home currency, multicurrency, discounts, custom invoice numbers, class tracking,
    sales tax / Automated Sales Tax, and the tax codes with their sales rates. Each draft is fitted
    to these (CurrencyRef, discount item, class on invoice or lines, DocNumber, TaxCodeRef) or
    held with the reason, so a setting changed in QuickBooks shows up as a held invoice, never as
    an invoice QuickBooks rejects or silently alters. Re-materialise after changing a setting.
    """
    companies, rejected = {}, []
    for key, (company, bad) in _read_companies(context, rules, quickbooks, sources.qbo_company).items():
        companies[key] = company
        rejected.append(bad)
    meta = keep_rejected(context, "quickbooks", context.partition_key,
                         pd.concat(rejected, ignore_index=True) if len(rejected) > 1 else rejected[0])
    codes = pd.DataFrame(
        [{"company": key or "", "tax_code": c.name, "id": c.id, "active": c.active,
          "sales_rates": ", ".join(f"{r.name} {r.percent}%" for r in c.sales_rates)}
         for key, company in companies.items() for c in company.tax_codes],
        columns=["company", "tax_code", "id", "active", "sales_rates"],
    )
    first = next(iter(companies.values()))
    return dg.Output(
        companies_document(companies),
        metadata={
            "settings": dg.MetadataValue.text("; ".join(
                (f"{key} (realm {c.realm_id}): " if key else "") + c.summary() for key, c in companies.items())),
            "companies": dg.MetadataValue.int(len(companies)),
            "country": dg.MetadataValue.text(", ".join(sorted({c.country for c in companies.values()}))),
            "home_currency": dg.MetadataValue.text(first.home_currency if len(companies) == 1 else ", ".join(
                f"{key}: {c.home_currency}" for key, c in companies.items())),
            "tax_codes": dg.MetadataValue.md(codes.to_markdown(index=False) if len(codes) else "_none_"),
            **meta,
        },
    )


@dg.asset(kinds={"quickbooks", "pandas"}, **EXTRACT_ASSET)
def qbo_existing_invoices(context: dg.AssetExecutionContext, quickbooks: QuickBooksResource,
                          rules: RulesResource) -> dg.Output[pd.DataFrame]:
    """Invoices already in QuickBooks dated in the month, whoever created them, in every company
    the rules bill from (`company` / `realm_id` columns).

    The reconciliation report compares these with what the ledger posted, so an invoice keyed
    in by hand for a client we also bill shows up before the client gets two.
    """
    first, last = sources.month_bounds(context.partition_key)
    realms = _companies(rules, quickbooks)
    where = f"TxnDate >= {quote(first.isoformat())} AND TxnDate <= {quote(last.isoformat())}"
    records = []
    for key, rows in _read_companies(context, rules, quickbooks, lambda c: c.query_all("Invoice", where)).items():
        records += [_existing_invoice(r, key or "", realms[key]) for r in rows]
    frame = pd.DataFrame(records, columns=EXISTING_INVOICE_COLUMNS, dtype=object)
    return dg.Output(frame, metadata={"dagster/row_count": dg.MetadataValue.int(len(frame))})


def _existing_invoice(r: dict, company: str, realm: str) -> dict:
    return {
        "qbo_id": str(r.get("Id")),
        "doc_number": r.get("DocNumber"),
        "customer_id": str((r.get("CustomerRef") or {}).get("value")),
        "customer_name": (r.get("CustomerRef") or {}).get("name"),
        "txn_date": r.get("TxnDate"),
        "total": str(money.to_decimal(r.get("TotalAmt", 0), what="TotalAmt")),
        "balance": str(money.to_decimal(r.get("Balance", 0), what="Balance")),
        "private_note": r.get("PrivateNote"),
        "company": company,
        "realm_id": realm,
    }


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
