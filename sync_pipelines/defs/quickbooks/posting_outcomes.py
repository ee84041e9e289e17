"""What a posting step does with `post_drafts`' outcomes, for the month-end and the deal triggers alike.

Held invoices and drift are logged and alerted (never half-posted, but someone must act),
failures fail the step so its retry policy re-runs it (the ledger already knows each key), a key
another run is posting right now is retried shortly, and the rest becomes the step's metadata.
"""

from __future__ import annotations

from collections.abc import Sequence

import dagster as dg
import pandas as pd

from sync_pipelines.alerts import Alert, run_url, send
from sync_pipelines.connectors.quickbooks import QboReconnectRequired
from sync_pipelines.posting.drafts import posting_drafts
from sync_pipelines.posting.invoices import FAILED, HELD, OUTCOME_COLUMNS, PostingOutcome, post_drafts


def post_document(document: dict, quickbooks, ledger) -> list[PostingOutcome]:
    """Post a drafts document (`posting.drafts.drafts_document`) through the ledger protocol.

    `quickbooks` / `ledger` are the `QuickBooksResource` / `LedgerResource`. A refused refresh
    token fails the step at once, without retries: retrying cannot help until a person
    re-authorises the app (the message names the realm and the token endpoint, never a token).
    """
    try:
        with quickbooks.client() as client:
            return post_drafts(posting_drafts(document), qbo=client, ledger=ledger.open(),
                               home_currency=document["home_currency"])
    except QboReconnectRequired as exc:
        raise dg.Failure(
            description=f"{exc} Nothing was posted twice: the ledger kept every invoice's state.",
            metadata={"realm_id": dg.MetadataValue.text(str(exc.realm_id))},
            allow_retries=False,
        ) from None


def report_outcomes(context: dg.AssetExecutionContext, outcomes: Sequence[PostingOutcome],
                    subject: str = "") -> tuple[pd.DataFrame, dict]:
    """(outcomes frame, metadata) of a posting step; raises to fail or retry it (module docs).
    `subject` prefixes the alert lines (e.g. ``"deal 123: "``)."""
    frame = pd.DataFrame([o.as_row() for o in outcomes], columns=OUTCOME_COLUMNS)
    counts = frame["outcome"].value_counts().to_dict() if len(frame) else {}
    for o in outcomes:
        if o.outcome == HELD:
            context.log.warning(f"HELD {o.key}: {'; '.join(o.reasons)}")
        if o.drift is not None:
            context.log.warning(f"DRIFT {o.key}: {o.drift.summary()}")
    attention = [o for o in outcomes if o.outcome == HELD or o.drift is not None]
    if attention:
        send(Alert(
            title=f"{len(attention)} invoice(s) need attention",
            lines=tuple(
                f"{subject}{o.client_key} {o.period} {o.key}: "
                + (o.drift.summary() if o.drift is not None else "held: " + "; ".join(o.reasons))
                for o in attention
            ),
            run_url=run_url(context.run.run_id),
        ))
    failed = [o for o in outcomes if o.outcome == FAILED]
    if failed:
        raise dg.Failure(
            description=f"{len(failed)} invoice(s) could not be posted; re-run to finish: "
            + "; ".join(f"{o.key}: {o.reasons[0] if o.reasons else 'error'}" for o in failed),
        )
    busy = [o for o in outcomes if o.outcome == "busy"]
    if busy:
        # Another run holds the key's claim and is posting it now: come back shortly and find it
        # posted. If the claim belongs to a crashed run, the retries run out and the step fails;
        # it resumes after the claim expires, or at once with `sync-pipelines ledger replay KEY --release-claim`.
        context.log.info("another run is posting " + ", ".join(o.key for o in busy) + "; retrying shortly")
        raise dg.RetryRequested(max_retries=5, seconds_to_wait=10)
    metadata = {
        "invoices": dg.MetadataValue.int(len(frame)),
        **{f"outcome_{k}": dg.MetadataValue.int(int(v)) for k, v in sorted(counts.items())},
        "posted_total": dg.MetadataValue.text(
            str(sum((o.qbo_total or 0) for o in outcomes if o.outcome in ("posted", "already_posted", "recovered")))
        ),
        "results": dg.MetadataValue.md(frame.to_markdown(index=False) if len(frame) else "_no invoices_"),
    }
    return frame, metadata
