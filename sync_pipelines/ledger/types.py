"""Plain data returned by the ledger (frozen dataclasses; no secrets in any of them)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from sync_pipelines import money

#: Every value of :attr:`BeginResult.action`.
ACTIONS = ("post", "skip_posted", "drift", "resume_pending", "busy", "held", "voided")


@dataclass(frozen=True)
class BeginResult:
    """What :meth:`Ledger.begin_posting` decided for one invoice key.

    ``action``:

    - ``"post"``: the row is now ``pending`` (committed) and claimed by this caller until
      ``claimed_until``; POST ``payload_json`` to QuickBooks with ``request_id``, then call
      ``record_posted`` / ``record_failed`` / ``record_held``.
    - ``"skip_posted"``: already posted with the same payload hash; ``qbo_*`` carry what was stored.
    - ``"drift"``: already posted with a *different* payload: recorded (status ``drift``), never
      re-posted; ``old_total`` is what was posted, ``new_total`` the new draft's total.
    - ``"resume_pending"``: an earlier attempt (``attempt``) may have reached QuickBooks and was
      never confirmed (crash, or a recorded failure/hold after the call). Look the DocNumber
      ``doc_number`` up in QuickBooks first: found -> ``record_posted``; not found -> call
      ``begin_posting`` again with ``resume_attempt=result.attempt`` to get ``"post"``.
    - ``"busy"``: another process claimed this key less than the claim time ago and may be posting
      right now; retry after ``retry_after_seconds``.
    - ``"held"``: the draft bills entries already billed on another posted invoice
      (``conflicting_entries``); recorded as held with ``reasons``, never posted.
    - ``"voided"``: this key's invoice was voided; re-issue under ``next_generation``.
    """

    action: str
    key: str
    status: str  # the row's status after the call
    payload_hash: str  # hash of the draft given to begin_posting
    stored_hash: str | None = None  # hash stored for the key before the call (posted / pending)
    payload_changed: bool = False  # resume_pending: the draft differs from the pending payload
    attempt: int = 0  # number of post attempts for the key, including this one for "post"
    request_id: str | None = None
    doc_number: str | None = None
    payload_json: str | None = field(default=None, repr=False)  # "post": the exact body recorded (POST these bytes)
    claimed_until: datetime | None = None
    qbo_id: str | None = None
    sync_token: str | None = None
    qbo_doc_number: str | None = None
    qbo_total_amt: Decimal | None = None
    qbo_total_tax: Decimal | None = None  # QuickBooks' TxnTaxDetail.TotalTax, when recorded
    total_mismatch: bool = False  # the stored posting's pre-tax total differed from ours
    intuit_tid: str | None = None
    old_total: Decimal | None = None
    new_total: Decimal | None = None
    retry_after_seconds: float | None = None
    next_generation: int | None = None
    reasons: tuple[str, ...] = ()
    conflicting_entries: dict[int, str] = field(default_factory=dict)

    @property
    def should_post(self) -> bool:
        return self.action == "post"


@dataclass(frozen=True)
class PostedResult:
    """What :meth:`Ledger.record_posted` recorded."""

    key: str
    total_matches: bool  # QBO's pre-tax total (TotalAmt - TotalTax) == our expected_total, exactly
    expected_total: Decimal | None
    qbo_total_amt: Decimal
    entries_billed: int
    already_posted: bool = False  # the same QBO invoice was recorded before (idempotent repeat)
    double_billed_entries: dict[int, str] = field(default_factory=dict)  # entry -> other posted key
    qbo_total_tax: Decimal | None = None  # TxnTaxDetail.TotalTax (TotalAmt includes it)
    qbo_doc_number: str | None = None  # QuickBooks' DocNumber (its own when it numbers invoices)


@dataclass(frozen=True)
class InvoiceRecord:
    """One row of the invoices table (``payload_json`` is the exact body recorded)."""

    key: str
    realm_id: str
    client_key: str
    period: str
    group_key: str
    generation: int
    status: str
    payload_hash: str
    request_id: str | None
    doc_number: str | None
    qbo_id: str | None
    sync_token: str | None
    qbo_doc_number: str | None
    qbo_total_amt: Decimal | None
    expected_total: Decimal | None
    currency: str | None
    intuit_tid: str | None
    last_error: str | None
    attempts: int
    total_mismatch: bool
    hold_reasons: tuple[str, ...]
    created_at: datetime
    updated_at: datetime
    posted_at: datetime | None
    voided_at: datetime | None
    claimed_until: datetime | None
    drift_payload_hash: str | None
    drift_expected_total: Decimal | None
    drift_detected_at: datetime | None
    project_totals: dict[int, Decimal] = field(default_factory=dict)
    carry_forward_hours: Decimal | None = None
    voided_how: str | None = None  # voided | deleted (None: not voided, or voided before revision 0004)
    payment_status: str | None = None  # unpaid | partially_paid | paid (None: no payment seen)
    amount_paid: Decimal | None = None  # invoice currency
    qbo_balance: Decimal | None = None
    payment_sync_token: str | None = None
    qbo_total_tax: Decimal | None = None  # QuickBooks' TxnTaxDetail.TotalTax (revision 0006)
    payload_json: str = field(repr=False, default="")
    drift_payload_json: str | None = field(repr=False, default=None)
    entries: tuple[tuple[int, int, str], ...] = field(repr=False, default=())  # (entry_id, billed_centi, status)

    def payload(self) -> Any:
        """The recorded payload, Decimals exact."""
        return money.loads(self.payload_json)

    def as_draft(self) -> dict[str, Any]:
        """The recorded draft as keyword arguments for ``post_invoice(ledger, qbo, **draft)`` or
        ``ledger.begin_posting(**draft)`` (``sync-pipelines ledger replay KEY``). Needs the
        entries, so use a record from ``get_invoice``."""
        return dict(
            key=self.key, realm_id=self.realm_id, client_key=self.client_key, period=self.period,
            group_key=self.group_key, generation=self.generation, payload=self.payload(),
            expected_total=self.expected_total if self.expected_total is not None else Decimal(0),
            currency=self.currency or "", request_id=self.request_id or "", doc_number=self.doc_number or "",
            entries=[(e, c) for e, c, _ in self.entries], project_totals=dict(self.project_totals) or None,
            carry_forward_hours=self.carry_forward_hours,
        )


@dataclass(frozen=True)
class LedgerHistory:
    """What the billing engine needs from the ledger, as plain data.

    - ``billed_entries``: Harvest entry id -> key of the posted (or drifted) invoice billing it, in
      the realm, all clients and periods (an entry billed anywhere must never be billed again).
    - ``posted_totals``: (client_key, period) -> sum of our ``expected_total`` over posted/drift
      invoices (voided excluded), all periods of the selected clients.
    - ``generations``: (client_key, period, group_key) -> the generation a draft should use now:
      the latest generation, or latest + 1 when the latest was voided. Absent means 1.
    - ``posted_by_key``: invoice key -> (client_key, period, expected_total) of the same invoices
      as ``posted_totals``, so that a cap can exclude the draft's own key (a re-run must reproduce
      the same payload, not count its own earlier posting against the cap).
    - ``billed_centi``: (client_key, period) -> billed hours (centihours) on those invoices.
    - ``project_totals``: invoice key -> {Harvest project id: amount} for those invoices (deal
      not-to-exceed caps), as given to ``begin_posting``.
    - ``carryover_hours``: client_key -> retainer hours carried INTO ``period`` (the
      ``carry_forward_hours`` recorded on the client's posted invoices of the previous month; a
      client-level figure repeated on each of its invoices, so the maximum is taken). Only filled
      when ``history`` is given a period.
    """

    billed_entries: dict[int, str] = field(default_factory=dict)
    posted_totals: dict[tuple[str, str], Decimal] = field(default_factory=dict)
    generations: dict[tuple[str, str, str], int] = field(default_factory=dict)
    posted_by_key: dict[str, tuple[str, str, Decimal]] = field(default_factory=dict)
    billed_centi: dict[tuple[str, str], int] = field(default_factory=dict)
    project_totals: dict[str, dict[int, Decimal]] = field(default_factory=dict)
    carryover_hours: dict[str, Decimal] = field(default_factory=dict)


@dataclass(frozen=True)
class AuditRecord:
    id: int
    at: datetime
    system: str
    method: str
    path: str
    status: int | None
    duration_ms: int | None
    request_id: str | None
    trace_id: str | None
    error: str | None


@dataclass(frozen=True)
class Writeback:
    invoice_key: str
    deal_id: str
    properties_json: str
    status: str
    attempts: int
    last_error: str | None
    updated_at: datetime

    def properties(self) -> Any:
        return money.loads(self.properties_json)


@dataclass(frozen=True)
class InboxEvent:
    id: int
    source: str
    event_id: str
    received_at: datetime
    payload_json: str = field(repr=False)
    processed_at: datetime | None = None

    def payload(self) -> Any:
        return money.loads(self.payload_json)
