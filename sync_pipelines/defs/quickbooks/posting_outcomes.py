"""What a posting step does with `post_drafts`' outcomes, for the month-end and the deal triggers alike.

Held invoices and drift are logged and alerted (never half-posted, but someone must act),
failures fail the step so its retry policy re-runs it (the ledger already knows each key; the
alert goes out on the last attempt only, so a retry that succeeds stays quiet), a key another
live run is posting right now is retried shortly, and the rest becomes the step's metadata.
"""

from __future__ import annotations

from collections.abc import Sequence

import dagster as dg
import pandas as pd

from sync_pipelines import alert_messages
from sync_pipelines.alerts import send
from sync_pipelines.connectors.quickbooks import QboReconnectRequired
from sync_pipelines.defs.resources import quickbooks_refused
from sync_pipelines.posting.company_drafts import CompanyBatch, company_batches
from sync_pipelines.posting.invoices import FAILED, HELD, OUTCOME_COLUMNS, PostingOutcome, post_drafts
from sync_pipelines.run_liveness import run_is_alive

#: Step retries of the posting assets (QuickBooks outages); the failed-posting alert waits for the last.
POSTING_RETRIES = 3
POSTING_RETRY_POLICY = dg.RetryPolicy(
    max_retries=POSTING_RETRIES, delay=15, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS
)


def post_document(context: dg.AssetExecutionContext, document: dict, quickbooks, ledger) -> list[PostingOutcome]:
    """Post a drafts document (`posting.drafts.drafts_document`, or one of several companies:
    `posting.company_drafts`) through the ledger protocol, each company with its own client.

    `quickbooks` / `ledger` are the `QuickBooksResource` / `LedgerResource`. Each claim records
    this run, so a claim left by a dead run is taken over at once (after the DocNumber lookup)
    instead of blocking the month. Companies are independent: an outage of one leaves its
    invoices FAILED (the step is retried, the others are already posted and skipped), and a
    refused refresh token (`invalid_grant`) of one alerts naming the company and makes its
    invoices FAILED with the reconnect instruction while the others are posted. When every
    company refused its token the step fails at once, without retries (`QuickBooksResource.client`):
    retrying cannot help until a person re-authorises the app. Never a token in any message.
    """
    batches = company_batches(document)
    ledger_db = ledger.open()
    outcomes: list[PostingOutcome] = []
    refused: list[tuple[CompanyBatch, QboReconnectRequired]] = []
    for batch in batches:
        try:
            with quickbooks.company_client(batch.realm_id) as client:
                outcomes += post_drafts(batch.drafts, qbo=client, ledger=ledger_db,
                                        home_currency=batch.home_currency,
                                        batch_size=quickbooks.batch_size, concurrency=quickbooks.batches_in_flight,
                                        claimant=context.run.run_id,
                                        claimant_alive=lambda run_id: run_is_alive(context.instance, run_id))
        except QboReconnectRequired as exc:
            send(alert_messages.token_refused(
                str(exc.realm_id), company=batch.company, run_id=context.run.run_id, during="posting",
                clients=[d.client_key for d in batch.drafts], period=next((d.period for d in batch.drafts), None),
            ))
            refused.append((batch, exc))
    if refused and len(refused) == len(batches):
        # nothing could be posted anywhere: fail at once, naming the companies (never a token)
        raise quickbooks_refused(refused[0][1]) from None
    for batch, exc in refused:
        why = (f"not posted: QuickBooks {batch.label} refused the refresh token (invalid_grant); reconnect it with "
               f"`sync-pipelines qbo connect{' --company ' + batch.company if batch.company else ''}`, then re-run")
        outcomes += [_reconnect_outcome(d, why) for d in batch.drafts]
    return outcomes


def _reconnect_outcome(draft, why: str) -> PostingOutcome:
    # A held draft stays held (its reasons say more); a ready one is FAILED: not posted, the
    # ledger has no claim for it, a re-run after reconnecting posts it.
    if draft.status != "ready":
        return PostingOutcome(key=draft.key, client_key=draft.client_key, period=draft.period, group_key=draft.group_key,
                              outcome=HELD, expected_total=draft.expected_total, currency=draft.currency,
                              reasons=list(draft.hold_reasons))
    return PostingOutcome(key=draft.key, client_key=draft.client_key, period=draft.period, group_key=draft.group_key,
                          outcome=FAILED, expected_total=draft.expected_total, currency=draft.currency, reasons=[why])


def _json_rows(frame: pd.DataFrame) -> list[dict]:
    return [{k: (None if pd.isna(v) else v) for k, v in row.items()} for row in frame.to_dict("records")]


def alert_outcomes(context: dg.AssetExecutionContext, outcomes: Sequence[PostingOutcome]) -> None:
    """Log and alert held invoices and drift (never half-posted, but someone must act)."""
    # One log line per kind (each line is an event the instance stores: a month-end posts many).
    lines = [f"HELD {o.key}: {'; '.join(o.reasons)}" for o in outcomes if o.outcome == HELD]
    lines += [f"DRIFT {o.key}: {o.drift.summary()}" for o in outcomes if o.drift is not None]
    if lines:
        context.log.warning("\n".join(lines))
    held = [alert_messages.problem_of_outcome(o) for o in outcomes if o.outcome == HELD and o.drift is None]
    if held:
        send(alert_messages.invoices_held(held, context.run.run_id))
    drifted = [alert_messages.problem_of_outcome(o) for o in outcomes if o.drift is not None]
    if drifted:
        send(alert_messages.invoices_drifted(drifted, context.run.run_id))


def alert_failed_on_last_attempt(context: dg.AssetExecutionContext, failed: Sequence[PostingOutcome]) -> None:
    """The failed-posting alert, sent on the step's last attempt only (a retry that succeeds stays quiet)."""
    if failed and context.retry_number >= POSTING_RETRIES:
        send(alert_messages.posting_failed([alert_messages.problem_of_outcome(o) for o in failed], context.run.run_id))


def failed_description(failed: Sequence[PostingOutcome]) -> str:
    return (f"{len(failed)} invoice(s) could not be posted; re-run to finish: "
            + "; ".join(f"{o.key}: {o.reasons[0] if o.reasons else 'error'}" for o in failed))


def retry_while_busy(context: dg.AssetExecutionContext, outcomes: Sequence[PostingOutcome]) -> None:
    """Another live run (the same month launched twice) holds a key's claim and is posting it
    now: come back shortly and find it posted. A claim whose run is dead (failed, canceled, or
    its process gone) is not busy: it was taken over already."""
    busy = [o for o in outcomes if o.outcome == "busy"]
    if busy:
        why = "another run is posting " + ", ".join(o.key for o in busy) + " (it holds the ledger claim)"
        context.log.info(why + "; retrying shortly")
        # The cause is kept so that, once the retries run out, the failure (and its alert) says
        # why rather than only "Exceeded max_retries".
        raise dg.RetryRequested(max_retries=5, seconds_to_wait=10) from RuntimeError(
            why + "; if that run crashed, `sync-pipelines ledger replay KEY --release-claim`"
        )


def outcomes_metadata(frame: pd.DataFrame, outcomes: Sequence[PostingOutcome]) -> dict:
    """The metadata of a set of posting outcomes (one client-month's, or one deal's)."""
    counts = frame["outcome"].value_counts().to_dict() if len(frame) else {}
    return {
        "invoices": dg.MetadataValue.int(len(frame)),
        **{f"outcome_{k}": dg.MetadataValue.int(int(v)) for k, v in sorted(counts.items())},
        "posted_total": dg.MetadataValue.text(
            str(sum((o.qbo_total or 0) for o in outcomes if o.outcome in ("posted", "already_posted", "recovered")))
        ),
        "results": dg.MetadataValue.md(frame.to_markdown(index=False) if len(frame) else "_no invoices_"),
        # This run's own outcomes (amounts as exact text): two runs of one partition share the
        # stored output, so `bill` reports what *its* run did from here.
        "outcomes": dg.MetadataValue.json(_json_rows(frame)),
    }


def outcomes_frame(outcomes: Sequence[PostingOutcome]) -> pd.DataFrame:
    return pd.DataFrame([o.as_row() for o in outcomes], columns=OUTCOME_COLUMNS)


def report_outcomes(context: dg.AssetExecutionContext, outcomes: Sequence[PostingOutcome]) -> tuple[pd.DataFrame, dict]:
    """(outcomes frame, metadata) of a posting step; raises to fail or retry it (module docs)."""
    frame = outcomes_frame(outcomes)
    alert_outcomes(context, outcomes)
    failed = [o for o in outcomes if o.outcome == FAILED]
    if failed:
        # QuickBooks stayed unavailable through the connector's retries: fail the step so the
        # retry policy (and then the operator) re-runs it; the ledger already knows each key.
        alert_failed_on_last_attempt(context, failed)
        raise dg.Failure(description=failed_description(failed))
    retry_while_busy(context, outcomes)
    return frame, outcomes_metadata(frame, outcomes)
