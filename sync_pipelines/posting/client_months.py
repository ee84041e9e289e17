"""The month-end's posting step, seen per client-month: which drafts of the month's document a
run posts, and the status each client-month gets on the billing board.

One run posts every selected client of the month (DESIGN §11); a client whose drafts fail the
consistency checks is left out (never posted) while the others are posted, and each client-month
gets its own status, so one client's problem never hides another's result.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sync_pipelines.posting.draft_checks import draft_problems
from sync_pipelines.posting.invoices import FAILED, HELD, STOPPED, PostingOutcome

POSTED_OUTCOMES = ("posted", "already_posted", "recovered")

# Board statuses of a client-month, worst first.
BLOCKED = "blocked"  # drafts failed the consistency checks: nothing posted
NOT_POSTED = "failed"  # QuickBooks did not take some invoice (outage of the client's company)
STOPPED_STATUS = "stopped"
NEEDS_ATTENTION = "needs attention"  # held or drifted invoices: nothing half-posted, someone must act
POSTED = "posted"
NO_INVOICE = "no invoice"


@dataclass
class MonthPosting:
    """What a posting run does for its selected clients of one month."""

    #: The month's drafts document narrowed to the clients that may be posted.
    document: dict[str, Any]
    #: Consistency problems of the clients that are not posted, by client.
    problems: dict[str, list[str]] = field(default_factory=dict)


def month_posting(document: dict[str, Any], client_keys: Iterable[str]) -> MonthPosting:
    """Select ``client_keys``' drafts from the month's document, leaving out each client whose
    drafts are inconsistent (checked client by client: a problem names its invoice)."""
    selected = set(client_keys)
    by_client: dict[str, list[dict[str, Any]]] = {}
    for inv in document["invoices"]:
        if inv["client_key"] in selected:
            by_client.setdefault(inv["client_key"], []).append(inv)
    problems: dict[str, list[str]] = {}
    postable: list[dict[str, Any]] = []
    for client_key, invoices in by_client.items():
        found = draft_problems({**document, "invoices": invoices})
        if found:
            problems[client_key] = found
        else:
            postable.extend(invoices)
    return MonthPosting(document={**document, "invoices": postable}, problems=problems)


def outcomes_by_client(outcomes: Sequence[PostingOutcome]) -> dict[str, list[PostingOutcome]]:
    grouped: dict[str, list[PostingOutcome]] = {}
    for o in outcomes:
        grouped.setdefault(o.client_key, []).append(o)
    return grouped


def client_month_status(outcomes: Sequence[PostingOutcome], problems: Sequence[str] = ()) -> str:
    """The billing board's status of one client-month after a posting run."""
    kinds = {o.outcome for o in outcomes}
    if problems:
        return BLOCKED
    if FAILED in kinds:
        return NOT_POSTED
    if STOPPED in kinds:
        return STOPPED_STATUS
    if HELD in kinds or any(o.drift is not None for o in outcomes) or kinds - set(POSTED_OUTCOMES) - {"busy"}:
        return NEEDS_ATTENTION
    return POSTED if outcomes else NO_INVOICE
