"""`sync-pipelines ledger replay KEY` and `ledger reissue KEY`: one invoice at a time.

* **replay** retries one invoice from what the ledger recorded for it, through the same
  exactly-once protocol as the posting asset (:func:`sync_pipelines.posting.protocol.post_invoice`):
  a pending or failed key is first looked up in QuickBooks by its DocNumber, then posted only if
  it is not there; a posted key is left alone (``already_posted``). Then the key's CRM write-backs
  are queued and retried. A drifted key is never re-posted (its write-backs are retried, the drift
  stays reported); a key held by the billing rules is refused (fix the reason and re-bill the
  month: replaying would post what was held), a key QuickBooks had rejected is retried.
* **reissue** is for an invoice voided (or deleted) in QuickBooks. When the ledger already
  recorded the void (the ``quickbooks_changes`` sensor saw it through a webhook or CDC), no
  QuickBooks call is needed; otherwise it checks QuickBooks and records the void (the invoice's
  time entries become billable again). Then it bills the client's month again through the
  Dagster assets, which drafts the next generation: a new key, so a new requestid and a new
  DocNumber. A key whose invoice is still live in QuickBooks is
  refused: re-issuing never leaves the client with two live invoices.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sync_pipelines.connectors.http import ApiError, ApiNotFound
from sync_pipelines.connectors.quickbooks import QboReconnectRequired
from sync_pipelines.ledger import Ledger
from sync_pipelines.ledger.types import InvoiceRecord
from sync_pipelines.posting.protocol import post_invoice
from sync_pipelines.posting.writeback import WritebackResult, drain_writebacks, enqueue_writebacks
from sync_pipelines.qbo_changes.classify import is_voided


class CommandError(RuntimeError):
    """The command cannot be done for this key; the message says why and what to do instead."""


@dataclass
class ReplayResult:
    key: str
    status_before: str
    outcome: str  # a protocol outcome (posted, recovered, already_posted, failed, held, busy), or "drift"
    message: str | None = None
    qbo_id: str | None = None
    writebacks: list[WritebackResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.outcome in ("posted", "recovered", "already_posted", "drift") and all(
            w.status == "done" for w in self.writebacks
        )


def _record(ledger: Ledger, key: str) -> InvoiceRecord:
    record = ledger.get_invoice(key)
    if record is None:
        raise CommandError(f"no invoice {key!r} in the ledger (see `sync-pipelines ledger status`)")
    return record


def replay(
    ledger: Ledger,
    key: str,
    *,
    qbo: Any,
    hubspot: Any | None = None,
    writeback_inputs: Any = None,
    release_claim: bool = False,
) -> ReplayResult:
    """Retry one invoice (module docs). `writeback_inputs` is a callable ``(record) ->
    (projects_of_entries, deals frame, company id)`` (fetched only when there is a deal to update);
    without it or `hubspot`, only the posting is retried."""
    record = _record(ledger, key)
    before = record.status
    if before == "voided":
        raise CommandError(f"{key} was voided in QuickBooks: use `sync-pipelines ledger reissue {key}`")
    if before == "held" and record.attempts == 0:
        raise CommandError(
            f"{key} is held by the billing rules ({'; '.join(record.hold_reasons) or 'see the report'}); "
            f"fix the reason, then re-bill the month: "
            f"`sync-pipelines bill --month {record.period} --client {record.client_key}`"
        )
    if release_claim:
        ledger.release_claim(key)
    if before == "drift":
        result = ReplayResult(key, before, "drift", "posted; its inputs changed since (never re-posted)",
                              qbo_id=record.qbo_id)
    else:
        draft = record.as_draft()
        draft_key = draft.pop("key")
        out = post_invoice(ledger, qbo, draft_key, **draft)
        if out.error_class == QboReconnectRequired.__name__:
            raise QboReconnectRequired(record.realm_id, "/oauth2/v1/tokens/bearer")
        result = ReplayResult(key, before, out.outcome, out.message, out.qbo_id or record.qbo_id)
    if hubspot is not None and writeback_inputs is not None:
        record = _record(ledger, key)
        if record.status in ("posted", "drift"):
            projects, deals, company = writeback_inputs(record)
            enqueue_writebacks(ledger, [key], projects, deals, {record.client_key: company})
        result.writebacks = drain_writebacks(ledger, hubspot, [key])
    return result


def check_voided(ledger: Ledger, key: str, qbo: Any) -> InvoiceRecord:
    """Make sure `key` is voided (or deleted) in QuickBooks and record it in the ledger. A void
    the ledger already recorded is trusted as is (QuickBooks cannot un-void an invoice).

    Raises :class:`CommandError` when the invoice is still live, or the key was never posted.
    Returns the (now voided) record.
    """
    record = _record(ledger, key)
    if record.status == "voided":
        return record
    if record.status not in ("posted", "drift") or not record.qbo_id:
        raise CommandError(
            f"{key} is {record.status}, not voided: nothing was issued to void. "
            f"Use `sync-pipelines ledger replay {key}` to retry it."
        )
    try:
        invoice = qbo.get_invoice(record.qbo_id)
        gone = False
    except ApiNotFound:
        invoice, gone = {}, True  # deleted in QuickBooks: as good as voided for re-issuing
    except QboReconnectRequired:
        raise
    except ApiError as exc:
        raise CommandError(f"could not read invoice {record.qbo_id} from QuickBooks: {exc}") from None
    if not gone and not is_voided(invoice):
        raise CommandError(
            f"{key}: QuickBooks invoice {record.qbo_doc_number or record.doc_number} (Id {record.qbo_id}, total "
            f"{invoice.get('TotalAmt')}) is not voided. Void it in QuickBooks first; a re-issue never leaves "
            "two live invoices for one bill."
        )
    ledger.record_voided(key, deleted=gone)
    return _record(ledger, key)


@dataclass
class ReissueResult:
    voided_key: str
    new_keys: list[str]
    run: Any  # billing_runs.BillingRun

    @property
    def exit_code(self) -> int:
        return int(self.run.exit_code)


def reissue(ledger: Ledger, key: str, *, qbo: Any, bill: Any = None) -> ReissueResult:
    """Check the void, record it, and bill the client's month again (the next generation).

    `bill(period, client)` runs the month (default: :func:`sync_pipelines.commands.billing_runs.bill_month`
    through the Dagster assets, so the run shows in the UI).
    """
    record = check_voided(ledger, key, qbo)
    if bill is None:
        from sync_pipelines.commands.billing_runs import bill_month

        def bill(period: str, client: str) -> Any:
            return bill_month(period, client=client)

    run = bill(record.period, record.client_key)
    after = ledger.status(period=record.period, client=record.client_key, realm_id=record.realm_id)
    new_keys = [r.key for r in after if r.group_key == record.group_key and r.generation > record.generation]
    return ReissueResult(key, new_keys, run)


def writeback_inputs_from_apis(harvest: Any, hubspot: Any, rules_path: Any = None) -> Any:
    """A ``writeback_inputs`` callable for :func:`replay` that reads the record's month from
    Harvest, the deals from HubSpot and the client's company id from the rules file."""
    from sync_pipelines.extract import sources
    from sync_pipelines.posting.writeback import entry_projects

    def inputs(record: InvoiceRecord) -> tuple[dict[int, int], Any, str | None]:
        entries, _ = sources.harvest_time_entries(harvest, record.period)
        deals, _ = sources.hubspot_deals(hubspot)
        company = None
        if rules_path is not None:
            try:
                from sync_pipelines.billing.rules import load_rules

                client = load_rules(str(rules_path)).clients.get(record.client_key)
                company = client.hubspot_company_id if client is not None else None
            except Exception:  # noqa: BLE001 - the project link is enough without the company fallback
                company = None
        return entry_projects(entries), deals, company

    return inputs


# -- the command line ------------------------------------------------------------------------


def _open_ledger() -> Ledger:
    from sync_pipelines import config

    ledger = Ledger(config.ledger_url())
    ledger.migrate()
    return ledger


def _run_command(action: Callable[[Ledger], Any]) -> tuple[Any, int | None]:
    """Run ``action`` on a fresh ledger; (result, None), or (None, exit status) after printing why."""
    import sys

    ledger = _open_ledger()
    try:
        return action(ledger), None
    except CommandError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None, 2
    except QboReconnectRequired as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None, 1
    finally:
        ledger.dispose()


def _realm_of(key: str) -> str | None:
    """The realm an invoice key belongs to (keys are ``realm:client:period:group:gN``)."""
    realm = key.split(":", 1)[0]
    return realm if len(key.split(":")) >= 5 and realm.isdigit() else None


def replay_main(key: str, *, release_claim: bool = False, out: Any = None) -> int:
    """``sync-pipelines ledger replay KEY``: 0 when the invoice is in QuickBooks and its
    write-backs are done, 1 otherwise (the message says why), 2 when the key cannot be replayed."""
    import sys

    from sync_pipelines import config
    from sync_pipelines.connectors.factory import harvest_from_env, hubspot_from_env, quickbooks_from_env

    out = out or sys.stdout

    def action(ledger: Ledger) -> Any:
        # the key starts with the realm of the company that holds the invoice
        with quickbooks_from_env(ledger.tokens, audit=ledger, realm_id=_realm_of(key)) as qbo, \
                hubspot_from_env(audit=ledger) as hubspot, \
                harvest_from_env(audit=ledger) as harvest:
            inputs = writeback_inputs_from_apis(harvest, hubspot, config.rules_file())
            return replay(ledger, key, qbo=qbo, hubspot=hubspot, writeback_inputs=inputs, release_claim=release_claim)

    result, status = _run_command(action)
    if status is not None:
        return status
    out.write(f"{key}: was {result.status_before}; now {result.outcome}"
              + (f" (QuickBooks Id {result.qbo_id})" if result.qbo_id else "") + "\n")
    if result.message:
        out.write(f"  {result.message}\n")
    for wb in result.writebacks:
        out.write(f"  write-back to deal {wb.deal_id}: {wb.status}" + (f" ({wb.error})" if wb.error else "") + "\n")
    return 0 if result.ok else 1


def reissue_main(key: str, *, out: Any = None) -> int:
    """``sync-pipelines ledger reissue KEY``: the exit status of the billing run (0, 3 held, 1),
    2 when the key cannot be re-issued (still live in QuickBooks, never posted, unknown)."""
    import sys

    from sync_pipelines.commands.billing_runs import print_run
    from sync_pipelines.connectors.factory import quickbooks_from_env

    out = out or sys.stdout

    def action(ledger: Ledger) -> Any:
        with quickbooks_from_env(ledger.tokens, audit=ledger, realm_id=_realm_of(key)) as qbo:
            return reissue(ledger, key, qbo=qbo)

    result, status = _run_command(action)
    if status is not None:
        return status
    print_run(result.run, out=out)
    if result.new_keys:
        out.write(f"{key} was voided; re-issued as {', '.join(result.new_keys)}\n")
    else:
        out.write(f"{key} was voided; this month now drafts no invoice for its group (nothing re-issued)\n")
    return result.exit_code
