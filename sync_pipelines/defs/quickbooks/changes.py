"""QuickBooks change capture: voids, deletions and payments of our invoices reach the ledger and
the CRM within minutes (DESIGN §7). The sensor detects; the run it requests records."""

import json
from datetime import datetime, timedelta, timezone
from typing import Any

import dagster as dg
import pandas as pd

from sync_pipelines import alert_messages
from sync_pipelines.alerts import send
from sync_pipelines.connectors.http import ApiError
from sync_pipelines.connectors.quickbooks import QboReconnectRequired
from sync_pipelines.billing.rules import RulesError
from sync_pipelines.defs.resources import (CredentialsRefused, HubSpotResource, LedgerResource, QuickBooksResource,
                                           RulesResource)
from sync_pipelines.qbo_changes.detect import Detection, drain_inbox, poll_cdc
from sync_pipelines.qbo_changes.record import CHANGE_COLUMNS, record_changes

#: CDC is read this often (the inbox every tick): webhooks are the fast path, CDC the catch-up.
CDC_POLL_MINUTES = 15
RECORD_OP = "record_changes_in_ledger"


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


class QuickBooksChangesConfig(dg.Config):
    """Which invoices to look at (filled in by the `quickbooks_changes` sensor)."""

    realm_id: str
    invoice_ids: list[str] = []
    payment_ids: list[str] = []
    inbox_ids: list[int] = []  # webhook events this run answers (marked processed at the end)


@dg.op(
    name=RECORD_OP,
    tags={"kind": "quickbooks"},
    out=dg.Out(dg.Nothing, description="what was recorded (metadata: the changes table)"),
    # Reading QuickBooks and recording is idempotent (the ledger keeps the latest version), so a
    # retry after an outage simply finishes the job.
    retry_policy=dg.RetryPolicy(max_retries=3, delay=30, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS),
)
def record_changes_in_ledger(
    context: dg.OpExecutionContext,
    config: QuickBooksChangesConfig,
    ledger: LedgerResource,
    quickbooks: QuickBooksResource,
    hubspot: HubSpotResource,
    rules: RulesResource,
) -> dg.Output[None]:
    """Reads the current QuickBooks state of the invoices in the run config and records it:
    voided or deleted invoices become `voided` in the ledger (their time is billable again and
    `ledger reissue KEY` needs no QuickBooks check); payments set the invoice's payment status
    (`paid` / `partially_paid`, `amount_paid`) in the ledger and on its HubSpot deals. Never
    writes to QuickBooks."""
    if config.realm_id not in _realms(rules, quickbooks):
        raise dg.Failure(
            description=f"the billing rules bill from QuickBooks realm(s) {', '.join(_realms(rules, quickbooks))}, not "
            f"{config.realm_id}: nothing was recorded for it",
            allow_retries=False,
        )
    led = ledger.open()
    try:
        with quickbooks.client(config.realm_id) as qbo, hubspot.client() as crm:
            report = record_changes(led, qbo, crm, config.realm_id, config.invoice_ids, config.payment_ids)
    except CredentialsRefused as exc:
        if isinstance(exc.cause, QboReconnectRequired):
            send(alert_messages.token_refused(str(exc.cause.realm_id), run_id=context.run.run_id,
                                              during="change capture"))
        raise
    led.inbox_mark_processed(config.inbox_ids)
    for problem in report.problems:
        context.log.warning(problem)
    rows = [c.as_row() for c in report.recorded]
    frame = pd.DataFrame(rows, columns=CHANGE_COLUMNS)
    failed = report.failed_writebacks
    if failed:
        raise dg.Failure(
            description=f"{len(failed)} deal update(s) still pending (recorded in the ledger; a retry sends them): "
            + "; ".join(f"{w.key} -> deal {w.deal_id}: {w.error}" for w in failed[:5]),
        )
    return dg.Output(None, metadata={
        "recorded": dg.MetadataValue.int(len(report.recorded)),
        "already_known": dg.MetadataValue.int(report.unchanged),
        "not_ours": dg.MetadataValue.int(report.not_ours),
        "unreadable": dg.MetadataValue.int(len(report.problems)),
        "changes": dg.MetadataValue.md(frame.to_markdown(index=False) if len(frame) else "_nothing new_"),
    })


@dg.job(
    description="Record what QuickBooks did to our invoices (voided, deleted, paid, partially paid) in the "
    "ledger, and send the payment status one way to the HubSpot deals. Requested by the quickbooks_changes "
    "sensor; safe to re-run.",
    tags={"sync/action": "quickbooks_changes", "dagster/max_retries": "2"},
)
def record_quickbooks_changes():
    record_changes_in_ledger()


class _CursorState:
    """The sensor's cursor: the CDC position per realm and entity, when CDC is next due, and an
    ongoing outage (alerted once, not every tick)."""

    def __init__(self, raw: str | None) -> None:
        data = json.loads(raw) if raw else {}
        self.cdc: dict[str, dict[str, str]] = dict(data.get("cdc") or {})
        self.next_poll: str | None = data.get("next_poll")
        self.failing: dict[str, str] | None = data.get("failing")

    def cdc_due(self, now: datetime) -> bool:
        return self.next_poll is None or datetime.fromisoformat(self.next_poll) <= now

    def dump(self) -> str:
        return json.dumps({"cdc": self.cdc, "next_poll": self.next_poll, "failing": self.failing}, sort_keys=True)


@dg.sensor(
    name="quickbooks_changes",
    job=record_quickbooks_changes,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Watches QuickBooks for what happens to our invoices after posting: voids, deletions and payments. "
        f"Each minute it reads the QuickBooks webhook inbox; every {CDC_POLL_MINUTES} minutes it also reads "
        "QuickBooks' change feed (CDC) as the catch-up for missed webhooks. Only invoices in the ledger count. "
        "Each batch of changes becomes one record_quickbooks_changes run (nothing is written by the sensor "
        "itself). If QuickBooks cannot be reached, one alert is sent and the feed position stays where it was."
    ),
)
def quickbooks_changes(
    context: dg.SensorEvaluationContext, ledger: LedgerResource, quickbooks: QuickBooksResource,
    rules: RulesResource,
) -> dg.SensorResult:
    state = _CursorState(context.cursor)
    led = ledger.open()
    # every QuickBooks company the rules bill from (DESIGN §5 "Many QuickBooks companies")
    realms = _realms(rules, quickbooks)
    detection = Detection()
    drain_inbox(led, detection, realms=realms)
    now = _utcnow()
    if state.cdc_due(now):
        complete, failed = True, False
        for realm in realms:
            try:
                with quickbooks.client(realm) as qbo:
                    polled = poll_cdc(led, qbo, realm, state.cdc.get(realm, {}), detection, now=_utcnow)
            except (CredentialsRefused, ApiError) as error:
                # one company's outage: its feed position stays, the other companies are read
                failed = True
                exc = error.cause if isinstance(error, CredentialsRefused) else error
                if isinstance(exc, QboReconnectRequired):
                    _outage(state, "token", lambda: alert_messages.token_refused(str(exc.realm_id), during="change capture"))
                else:
                    _outage(state, "api", lambda: alert_messages.trigger_failed(
                        "quickbooks_changes", exc, system="QuickBooks", since=(state.failing or {}).get("since")))
                continue
            state.cdc[realm] = polled.cursor
            complete = complete and polled.complete
            if polled.gap is not None:
                send(alert_messages.change_capture_gap(realm, *polled.gap))
            if polled.overflow:
                context.log.warning("more than 1,000 QuickBooks changes share one instant: some cannot be read "
                                    "through CDC (run a full reconcile of the month)")
        if not failed:
            # A backlog longer than one tick's reads continues on the next tick, not in 15 minutes.
            state.next_poll = (now + timedelta(minutes=CDC_POLL_MINUTES if complete else 0)).isoformat()
            state.failing = None
    for problem in detection.unreadable:
        context.log.warning(problem)
    led.inbox_mark_processed(detection.done_inbox_ids)
    requests = [
        dg.RunRequest(
            run_key=cs.run_key(),
            run_config={"ops": {RECORD_OP: {"config": cs.run_config()}}},
            tags={"sync/trigger": "quickbooks_changes", "sync/realm": cs.realm_id},
        )
        for cs in detection.change_sets.values() if cs
    ]
    skip = None if requests else (
        f"no new change to our invoices ({detection.already_known} already known, {detection.not_ours} not ours)"
    )
    return dg.SensorResult(run_requests=requests, cursor=state.dump(), skip_reason=skip)


def _realms(rules: RulesResource, quickbooks: QuickBooksResource) -> list[str]:
    """The realms of every company the rules bill from; QBO_REALM_ID's alone when the rules file
    cannot be read (the month-end reports that; change capture keeps watching)."""
    try:
        return list(dict.fromkeys(rules.load().company_realms(str(quickbooks.realm_id)).values()))
    except (RulesError, OSError):
        return [str(quickbooks.realm_id)]


def _outage(state: _CursorState, kind: str, alert: Any) -> None:
    # One alert when an outage starts (or changes kind), not one a minute while it lasts.
    if state.failing is None or state.failing.get("kind") != kind:
        state.failing = {"kind": kind, "since": _utcnow().isoformat()}
        send(alert())
