"""The text of every alert an operator can receive (DESIGN §7 "Failure alerts").

Each builder returns an :class:`~sync_pipelines.alerts.Alert`; :func:`sync_pipelines.alerts.send`
delivers it (and strips anything secret-looking on the way). Every alert names what a person
needs to act without opening anything else: the client and period (or the deal), the invoice
key(s), what happened, what to do, and a link to the run (``DAGSTER_WEBSERVER_URL``).

Usage, e.g. from a sensor that cannot reach an API::

    from sync_pipelines.alert_messages import trigger_failed
    from sync_pipelines.alerts import send

    send(trigger_failed("hubspot_ready_deals", exc, system="HubSpot"))
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sync_pipelines.alerts import Alert, automation_url, run_url

#: At most this many invoices are listed in one alert (the run page has the rest).
MAX_LISTED = 20
SENSOR_LINK = "Open the sensors' ticks in Dagster"


@dataclass(frozen=True)
class InvoiceProblem:
    """One invoice an alert is about."""

    client_key: str
    period: str
    key: str
    detail: str
    deal_id: str | None = None

    def line(self) -> str:
        deal = f" (deal {self.deal_id})" if self.deal_id else ""
        return f"client {self.client_key}, period {self.period}{deal}, key {self.key}: {self.detail}"


def problem_of_outcome(outcome: Any, detail: str | None = None) -> InvoiceProblem:
    """An :class:`InvoiceProblem` from a posting outcome (``posting.invoices.PostingOutcome``)."""
    if detail is None:
        if getattr(outcome, "drift", None) is not None:
            detail = outcome.drift.summary()
        else:
            detail = "; ".join(getattr(outcome, "reasons", ()) or ()) or str(getattr(outcome, "outcome", ""))
    return InvoiceProblem(outcome.client_key, outcome.period, outcome.key, detail, deal_of_key(outcome.key))


def deal_of_key(key: str) -> str | None:
    """The HubSpot deal of an invoice made from one deal's line items (group ``deal-<id>``)."""
    parts = key.split(":")
    group = parts[3] if len(parts) >= 5 else ""
    return group[len("deal-"):] if group.startswith("deal-") else None


def _listed(problems: Sequence[InvoiceProblem]) -> tuple[str, ...]:
    lines = [p.line() for p in problems[:MAX_LISTED]]
    if len(problems) > MAX_LISTED:
        lines.append(f"… and {len(problems) - MAX_LISTED} more (see the run)")
    return tuple(lines)


def invoices_held(problems: Sequence[InvoiceProblem], run_id: str | None = None) -> Alert:
    """Invoices held whole (nothing of them reached QuickBooks): someone must fix the reason."""
    return Alert(
        title=f"{len(problems)} invoice(s) held, not sent to QuickBooks",
        lines=_listed(problems) + (
            "Nothing of a held invoice was posted. Fix the reason (rules, QuickBooks item, class, term or customer), "
            "then re-run the client's month: `sync-pipelines bill --month YYYY-MM --client CLIENT`.",
        ),
        run_url=run_url(run_id) if run_id else None,
    )


def invoices_drifted(problems: Sequence[InvoiceProblem], run_id: str | None = None) -> Alert:
    """Posted invoices whose inputs changed since: never re-posted, a true-up is proposed."""
    return Alert(
        title=f"{len(problems)} posted invoice(s) drifted from their inputs",
        lines=_listed(problems) + (
            "Nothing was re-posted. The reconciliation report proposes a true-up line or a credit memo.",
        ),
        run_url=run_url(run_id) if run_id else None,
    )


def posting_failed(problems: Sequence[InvoiceProblem], run_id: str | None = None) -> Alert:
    """QuickBooks stayed unavailable (or refused) through every retry: the invoices are pending."""
    return Alert(
        title=f"{len(problems)} invoice(s) could not be posted to QuickBooks",
        lines=_listed(problems) + (
            "The ledger kept each invoice's state, so nothing can be posted twice. Re-run the run, or "
            "`sync-pipelines ledger replay KEY` once QuickBooks answers.",
        ),
        run_url=run_url(run_id) if run_id else None,
    )


def company_unavailable(company: str, realm_id: str, why: str, run_id: str | None = None) -> Alert:
    """One QuickBooks company of several could not be read for the month: its clients are not
    billed this run; the other companies are."""
    return Alert(
        title=f"QuickBooks company {company} (realm {realm_id}) could not be read",
        lines=(why, "Its clients are not billed by this run; the other companies' invoices are. Fix the cause "
                    f"(`sync-pipelines qbo connect --company {company}` for a refused token), then re-run the month."),
        run_url=run_url(run_id) if run_id else None,
    )


def token_refused(
    realm_id: str, *, company: str | None = None, run_id: str | None = None, during: str = "posting",
    clients: Iterable[str] = (), period: str | None = None,
) -> Alert:
    """QuickBooks refused the stored refresh token (``invalid_grant``): a person must reconnect
    the app. Names the company and realm, never a token."""
    who = f"company {company} (realm {realm_id})" if company else f"realm {realm_id}"
    lines = [f"QuickBooks {who} refused the app's refresh token (invalid_grant) during {during}."]
    clients = sorted(set(clients))
    if clients or period:
        lines.append(f"client {', '.join(clients) or '-'}, period {period or '-'}")
    lines += [
        "Nothing was posted twice: the ledger kept every invoice's state.",
        "To reconnect: 1) re-authorise the app for this company with Intuit (OAuth consent on your app's "
        "connect page or the Intuit OAuth playground); 2) put the new refresh token in QBO_REFRESH_TOKEN in "
        "the code location's environment; 3) re-run the failed run (or the client's month).",
        *((f"With several companies: `sync-pipelines qbo connect --company {company}` stores the new token.",)
          if company else ()),
    ]
    # From a sensor tick there is no run: link to the sensors' ticks instead.
    if run_id:
        return Alert(title=f"QuickBooks must be reconnected: {who}", lines=tuple(lines), run_url=run_url(run_id))
    return Alert(title=f"QuickBooks must be reconnected: {who}", lines=tuple(lines), run_url=automation_url(),
                 link_text=SENSOR_LINK)


def _error_text(error: BaseException | str, limit: int = 300) -> str:
    if isinstance(error, BaseException):
        text = f"{type(error).__name__}: {error}"
    else:
        text = str(error)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def trigger_failed(
    sensor: str, error: BaseException | str, *, system: str | None = None, deal_id: str | None = None,
    keys: Iterable[str] = (), since: str | None = None,
) -> Alert:
    """A sensor tick could not reach an API (HubSpot, QuickBooks): no run was requested, so
    nothing is billed or recorded until it recovers; the cursor did not move, so nothing is
    skipped either. For the deal and QuickBooks change sensors."""
    target = f" {system}" if system else " an API"
    lines = [f"sensor {sensor} could not reach{target}: {_error_text(error)}"]
    if deal_id:
        lines.append(f"deal {deal_id}")
    keys = sorted(set(keys))
    if keys:
        lines.append("key(s) " + ", ".join(keys[:MAX_LISTED]))
    if since:
        lines.append(f"failing since {since}")
    lines.append("Its cursor did not move: once the API answers, the next tick catches up. "
                 "The sensor's ticks are in the UI (Automation).")
    return Alert(title=f"Trigger failed: {sensor}", lines=tuple(lines), run_url=automation_url(),
                 link_text=SENSOR_LINK)


def change_capture_gap(realm_id: str, cursor: str, start: str) -> Alert:
    """The QuickBooks change cursor is older than CDC's 30-day limit: changes between the two
    times are not in CDC any more."""
    return Alert(
        title=f"QuickBooks changes not read for more than 30 days: realm {realm_id}",
        lines=(
            f"the change cursor was {cursor}; CDC only reaches back to {start}, so reading resumes there",
            "Voids, deletions and payments between the two times may be missing from the ledger: compare the "
            "month's invoices with QuickBooks (reconciliation report), and re-check a void with "
            "`sync-pipelines ledger reissue KEY` (it asks QuickBooks when the ledger does not know).",
        ),
        run_url=automation_url(),
        link_text=SENSOR_LINK,
    )
