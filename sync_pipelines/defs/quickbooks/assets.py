import dagster as dg
import pandas as pd

from sync_pipelines import alert_messages, money
from sync_pipelines.alerts import send
from sync_pipelines.connectors.quickbooks import QboReconnectRequired, quote
from sync_pipelines.defs.partitions import EXTRACT_ASSET, client_months
from sync_pipelines.defs.quarantine import keep_rejected
from sync_pipelines.defs.resources import LedgerResource, QuickBooksResource
from sync_pipelines.extract import sources
from sync_pipelines.posting.drafts import posting_drafts
from sync_pipelines.posting.invoices import FAILED, HELD, OUTCOME_COLUMNS, post_drafts
from sync_pipelines.run_liveness import run_is_alive

QBO_INVOICES_RETRIES = 3  # step retries of qbo_invoices (QuickBooks outages)
EXISTING_INVOICE_COLUMNS = ["qbo_id", "doc_number", "customer_id", "customer_name", "txn_date", "total",
                            "balance", "private_note"]


def _json_rows(frame: pd.DataFrame) -> list[dict]:
    return [{k: (None if pd.isna(v) else v) for k, v in row.items()} for row in frame.to_dict("records")]


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


@dg.asset(kinds={"quickbooks", "pandas"}, **EXTRACT_ASSET)
def qbo_existing_invoices(context: dg.AssetExecutionContext, quickbooks: QuickBooksResource) -> dg.Output[pd.DataFrame]:
    """Invoices already in QuickBooks dated in the month, whoever created them.

    The reconciliation report compares these with what the ledger posted, so an invoice keyed
    in by hand for a client we also bill shows up before the client gets two.
    """
    first, last = sources.month_bounds(context.partition_key)
    with quickbooks.client() as client:
        rows = client.query_all("Invoice", f"TxnDate >= {quote(first.isoformat())} AND TxnDate <= {quote(last.isoformat())}")
    records = [
        {
            "qbo_id": str(r.get("Id")),
            "doc_number": r.get("DocNumber"),
            "customer_id": str((r.get("CustomerRef") or {}).get("value")),
            "customer_name": (r.get("CustomerRef") or {}).get("name"),
            "txn_date": r.get("TxnDate"),
            "total": str(money.to_decimal(r.get("TotalAmt", 0), what="TotalAmt")),
            "balance": str(money.to_decimal(r.get("Balance", 0), what="Balance")),
            "private_note": r.get("PrivateNote"),
        }
        for r in rows
    ]
    frame = pd.DataFrame(records, columns=EXISTING_INVOICE_COLUMNS, dtype=object)
    return dg.Output(frame, metadata={"dagster/row_count": dg.MetadataValue.int(len(frame))})


@dg.asset(
    partitions_def=client_months,
    group_name="posting",
    kinds={"quickbooks"},
    ins={"invoice_drafts": dg.AssetIn()},
    # Posting is idempotent (ledger row before the call, requestid = key, DocNumber lookup on
    # resume), so a retried step can never create a second invoice.
    retry_policy=dg.RetryPolicy(max_retries=QBO_INVOICES_RETRIES, delay=15, backoff=dg.Backoff.EXPONENTIAL,
                                jitter=dg.Jitter.PLUS_MINUS),
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
    drafts = posting_drafts(invoice_drafts)
    # A refused refresh token (`invalid_grant`) fails the step at once, without retries
    # (QuickBooksResource.client): nothing can be posted until the app is reconnected.
    with quickbooks.client() as client:
        try:
            outcomes = post_drafts(drafts, qbo=client, ledger=ledger.open(),
                                   home_currency=invoice_drafts["home_currency"],
                                   claimant=context.run.run_id,
                                   claimant_alive=lambda run_id: run_is_alive(context.instance, run_id))
        except QboReconnectRequired as exc:
            # The message names the realm and the token endpoint, never a token.
            send(alert_messages.token_refused(
                str(exc.realm_id), run_id=context.run.run_id, during="posting",
                clients=[d.client_key for d in drafts], period=next((d.period for d in drafts), None),
            ))
            raise
    frame = pd.DataFrame([o.as_row() for o in outcomes], columns=OUTCOME_COLUMNS)
    counts = frame["outcome"].value_counts().to_dict() if len(frame) else {}
    for o in outcomes:
        if o.outcome == HELD:
            context.log.warning(f"HELD {o.key}: {'; '.join(o.reasons)}")
        if o.drift is not None:
            context.log.warning(f"DRIFT {o.key}: {o.drift.summary()}")
    # A held invoice is never half-posted, but it is also not billed: someone must act.
    held = [alert_messages.problem_of_outcome(o) for o in outcomes if o.outcome == HELD and o.drift is None]
    if held:
        send(alert_messages.invoices_held(held, context.run.run_id))
    drifted = [alert_messages.problem_of_outcome(o) for o in outcomes if o.drift is not None]
    if drifted:
        send(alert_messages.invoices_drifted(drifted, context.run.run_id))
    failed = [o for o in outcomes if o.outcome == FAILED]
    if failed:
        # QuickBooks stayed unavailable through the connector's retries: fail the step so the
        # retry policy (and then the operator) re-runs it; the ledger already knows each key.
        # Alerted on the last attempt only, so a retry that succeeds stays quiet.
        if context.retry_number >= QBO_INVOICES_RETRIES:
            send(alert_messages.posting_failed([alert_messages.problem_of_outcome(o) for o in failed],
                                               context.run.run_id))
        raise dg.Failure(
            description=f"{len(failed)} invoice(s) could not be posted; re-run to finish: "
            + "; ".join(f"{o.key}: {o.reasons[0] if o.reasons else 'error'}" for o in failed),
        )
    busy = [o for o in outcomes if o.outcome == "busy"]
    if busy:
        # Another live run (the same month launched twice) holds the key's claim and is posting
        # it now: come back shortly and find it posted. A claim whose run is dead (failed,
        # canceled, or its process gone) is not busy: it was taken over already.
        why = "another run is posting " + ", ".join(o.key for o in busy) + " (it holds the ledger claim)"
        context.log.info(why + "; retrying shortly")
        # The cause is kept so that, once the retries run out, the failure (and its alert) says
        # why rather than only "Exceeded max_retries".
        raise dg.RetryRequested(max_retries=5, seconds_to_wait=10) from RuntimeError(
            why + "; if that run crashed, `sync-pipelines ledger replay KEY --release-claim`"
        )
    return dg.Output(
        frame,
        metadata={
            "invoices": dg.MetadataValue.int(len(frame)),
            **{f"outcome_{k}": dg.MetadataValue.int(int(v)) for k, v in sorted(counts.items())},
            "posted_total": dg.MetadataValue.text(
                str(sum((o.qbo_total or 0) for o in outcomes if o.outcome in ("posted", "already_posted", "recovered")))
            ),
            "results": dg.MetadataValue.md(frame.to_markdown(index=False) if len(frame) else "_no invoices_"),
            # This run's own outcomes (amounts as exact text): two runs of one partition share the
            # stored output, so `bill` reports what *its* run did from here.
            "outcomes": dg.MetadataValue.json(_json_rows(frame)),
        },
    )
