"""The posting state machine of the ledger (README.md: "Posting: the state machine"): claims,
pending / posted / failed / held / drift / voided, entries billed, generations.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from sync_pipelines import money
from sync_pipelines.ledger import redact
from sync_pipelines.ledger.base import (
    LedgerConflict,
    LedgerError,
    LedgerMixinBase,
    _chunks,
    _dec,
    _dec_text,
    _project_totals_text,
    log,
    payload_hash,
)
from sync_pipelines.ledger.schema import invoice_entries, invoices
from sync_pipelines.ledger.types import BeginResult, InvoiceRecord, PostedResult


class PostingStateMixin(LedgerMixinBase):
    """``begin_posting`` and the ``record_*`` transitions, each in one locked write transaction."""

    # -- posting -----------------------------------------------------------------------------

    def begin_posting(
        self,
        key: str,
        *,
        realm_id: str,
        client_key: str,
        period: str,
        group_key: str,
        generation: int,
        payload: dict[str, Any],
        expected_total: Decimal,
        currency: str,
        request_id: str,
        doc_number: str,
        entries: Iterable[tuple[int, int]] = (),
        resume_attempt: int | None = None,
        project_totals: Mapping[int, Decimal] | None = None,
        carry_forward_hours: Decimal | None = None,
        claimant: str | None = None,
        claimant_alive: Callable[[str], bool] | None = None,
    ) -> BeginResult:
        """Decide whether `key` may be posted now, and if so record it as pending first.

        Runs in one locked write transaction. For a new key (or a held key that never reached
        QuickBooks) the row is written as ``pending`` with the exact payload (``money.dumps``),
        its hash, ``request_id``, ``doc_number`` and the entries (status ``pending``), claimed for
        ``claim_seconds``, and committed before this returns ``"post"``. See
        :class:`~sync_pipelines.ledger.types.BeginResult` for every action.

        `resume_attempt`: after a ``"resume_pending"`` whose DocNumber lookup found nothing in
        QuickBooks, pass its ``attempt`` to replace the pending row with this draft and get
        ``"post"`` (unless another process moved the row meanwhile).

        `project_totals` ({Harvest project id: amount}) and `carry_forward_hours` (retainer
        rollover) are the draft's billing facts that later months read back through
        :meth:`history`; they are stored with the draft and not part of the payload hash.

        `claimant` (the Dagster run id) is recorded with the claim. A pending key claimed by
        another run is ``busy`` until the claim expires, unless `claimant_alive(owner)` says that
        run is dead (failed, canceled, killed): then the claim is taken over at once through the
        normal ``resume_pending`` path, whose DocNumber lookup comes before any new call. A claim
        left by an earlier attempt of the same run is the same run's, so it is taken over too.
        """
        body = money.dumps(payload)
        facts = {
            "project_totals": _project_totals_text(project_totals),
            "carry_forward_hours": _dec_text(carry_forward_hours, "carry_forward_hours"),
        }
        new_hash = payload_hash(payload)
        total_text = _dec_text(expected_total, "expected_total")
        entry_list = [(int(e), int(c)) for e, c in entries]
        if len({e for e, _ in entry_list}) != len(entry_list):
            raise ValueError(f"{key}: duplicate entry ids in the draft")
        now = self.now()
        claim_until = now + timedelta(seconds=self.claim_seconds)
        new_total = _dec(total_text)

        with self._write() as conn:
            row = conn.execute(sa.select(invoices).where(invoices.c.key == key)).mappings().first()
            if row is None:
                conflicts = self._entry_conflicts(conn, key, [e for e, _ in entry_list])
                status = "held" if conflicts else "pending"
                reasons = self._conflict_reasons(conflicts)
                conn.execute(
                    invoices.insert().values(
                        key=key,
                        realm_id=realm_id,
                        client_key=client_key,
                        period=period,
                        group_key=group_key,
                        generation=int(generation),
                        status=status,
                        payload=body,
                        payload_hash=new_hash,
                        request_id=request_id,
                        doc_number=doc_number,
                        expected_total=total_text,
                        currency=currency,
                        attempts=0 if conflicts else 1,
                        claimed_until=None if conflicts else claim_until,
                        claimed_by=None if conflicts else claimant,
                        hold_reasons=json.dumps(reasons) if reasons else None,
                        created_at=now,
                        updated_at=now,
                        **facts,
                    )
                )
                self._replace_entries(conn, key, entry_list, now)
                if conflicts:
                    return BeginResult(
                        action="held", key=key, status="held", payload_hash=new_hash, new_total=new_total,
                        reasons=tuple(reasons), conflicting_entries=conflicts, doc_number=doc_number,
                        request_id=request_id,
                    )
                return BeginResult(
                    action="post", key=key, status="pending", payload_hash=new_hash, attempt=1,
                    request_id=request_id, doc_number=doc_number, payload_json=body,
                    claimed_until=claim_until, new_total=new_total,
                )

            status = row["status"]
            stored = dict(
                key=key, stored_hash=row["payload_hash"], qbo_id=row["qbo_id"], sync_token=row["sync_token"],
                qbo_doc_number=row["qbo_doc_number"], qbo_total_amt=_dec(row["qbo_total_amt"]),
                qbo_total_tax=_dec(row["qbo_total_tax"]), total_mismatch=bool(row["total_mismatch"]),
                intuit_tid=row["intuit_tid"], old_total=_dec(row["expected_total"]), new_total=new_total,
                doc_number=row["doc_number"], request_id=row["request_id"], attempt=row["attempts"],
                payload_hash=new_hash,
            )
            if status in ("posted", "drift"):
                if new_hash == row["payload_hash"]:
                    if status == "drift":
                        conn.execute(
                            invoices.update().where(invoices.c.key == key).values(
                                status="posted", drift_payload=None, drift_payload_hash=None,
                                drift_expected_total=None, drift_detected_at=None, updated_at=now,
                            )
                        )
                    return BeginResult(action="skip_posted", status="posted", **stored)
                same_drift = row["drift_payload_hash"] == new_hash
                conn.execute(
                    invoices.update().where(invoices.c.key == key).values(
                        status="drift", drift_payload=body, drift_payload_hash=new_hash,
                        drift_expected_total=total_text,
                        drift_detected_at=row["drift_detected_at"] if same_drift else now, updated_at=now,
                    )
                )
                return BeginResult(action="drift", status="drift", **stored)

            if status == "voided":
                nxt = self._next_generation(conn, row["realm_id"], row["client_key"], row["period"], row["group_key"])
                return BeginResult(action="voided", status="voided", next_generation=nxt, **stored)

            # pending / failed / held
            claimed = row["claimed_until"]
            if status == "pending" and claimed is not None and claimed > now and not self._claim_abandoned(
                row["claimed_by"], claimant, claimant_alive
            ):
                return BeginResult(
                    action="busy", status=status, claimed_until=claimed,
                    retry_after_seconds=(claimed - now).total_seconds(), **stored,
                )
            if row["attempts"] > 0 and resume_attempt != row["attempts"]:
                return BeginResult(
                    action="resume_pending", status=status, payload_changed=new_hash != row["payload_hash"],
                    **stored,
                )
            conflicts = self._entry_conflicts(conn, key, [e for e, _ in entry_list])
            if conflicts:
                reasons = self._conflict_reasons(conflicts)
                conn.execute(
                    invoices.update().where(invoices.c.key == key).values(
                        status="held", payload=body, payload_hash=new_hash, expected_total=total_text,
                        currency=currency, hold_reasons=json.dumps(reasons), claimed_until=None, updated_at=now,
                        **facts,
                    )
                )
                self._replace_entries(conn, key, entry_list, now)
                stored["attempt"] = row["attempts"]
                return BeginResult(
                    action="held", status="held", reasons=tuple(reasons), conflicting_entries=conflicts, **stored
                )
            attempt = row["attempts"] + 1
            conn.execute(
                invoices.update().where(invoices.c.key == key).values(
                    status="pending", payload=body, payload_hash=new_hash, expected_total=total_text,
                    currency=currency, request_id=request_id, doc_number=doc_number, attempts=attempt,
                    claimed_until=claim_until, claimed_by=claimant, last_error=None, hold_reasons=None,
                    updated_at=now, **facts,
                )
            )
            self._replace_entries(conn, key, entry_list, now)
            return BeginResult(
                action="post", key=key, status="pending", payload_hash=new_hash, stored_hash=row["payload_hash"],
                attempt=attempt, request_id=request_id, doc_number=doc_number, payload_json=body,
                claimed_until=claim_until, new_total=new_total, old_total=_dec(row["expected_total"]),
            )

    @staticmethod
    def _claim_abandoned(owner: str | None, claimant: str | None,
                         claimant_alive: Callable[[str], bool] | None) -> bool:
        """The claim's run can no longer post: it is this run's own earlier attempt, or dead."""
        if owner is None or claimant is None:
            return False  # an anonymous claim: only its expiry frees it
        if owner == claimant:
            return True
        if claimant_alive is None:
            return False
        try:
            return not claimant_alive(owner)
        except Exception:  # noqa: BLE001 - unknown means alive: waiting out the claim is safe
            log.warning("could not tell whether run %s is alive; waiting out its claim", owner)
            return False

    def _replace_entries(self, conn: Connection, key: str, entries: list[tuple[int, int]], now: datetime) -> None:
        conn.execute(invoice_entries.delete().where(invoice_entries.c.invoice_key == key))
        for chunk in _chunks(entries):
            conn.execute(
                invoice_entries.insert(),
                [
                    {"invoice_key": key, "entry_id": e, "billed_centi": c, "status": "pending", "updated_at": now}
                    for e, c in chunk
                ],
            )

    def _entry_conflicts(self, conn: Connection, key: str, entry_ids: Sequence[int]) -> dict[int, str]:
        """Entries among `entry_ids` already billed on another key."""
        found: dict[int, str] = {}
        for chunk in _chunks(list(entry_ids)):
            rows = conn.execute(
                sa.select(invoice_entries.c.entry_id, invoice_entries.c.invoice_key).where(
                    invoice_entries.c.entry_id.in_(chunk),
                    invoice_entries.c.status == "billed",
                    invoice_entries.c.invoice_key != key,
                )
            )
            found.update({int(e): k for e, k in rows})
        return found

    @staticmethod
    def _conflict_reasons(conflicts: dict[int, str]) -> list[str]:
        if not conflicts:
            return []
        by_key: dict[str, list[int]] = {}
        for entry, other in sorted(conflicts.items()):
            by_key.setdefault(other, []).append(entry)
        return [
            f"entries already billed on {other}: {', '.join(map(str, ids[:20]))}{' ...' if len(ids) > 20 else ''}"
            for other, ids in by_key.items()
        ]

    def record_posted(
        self,
        key: str,
        *,
        qbo_id: str,
        sync_token: str | None,
        qbo_doc_number: str | None,
        qbo_total_amt: Decimal,
        intuit_tid: str | None = None,
        qbo_total_tax: Decimal | None = None,
        tax_inclusive: bool = False,
    ) -> PostedResult:
        """QuickBooks confirmed the invoice: record it and mark its entries billed, atomically.

        Our ``expected_total`` is pre-tax; QuickBooks' ``TotalAmt`` includes the tax it computed
        (``qbo_total_tax``, its ``TxnTaxDetail.TotalTax``), which is recorded beside it. The
        comparison is exact on the pre-tax amount: ``TotalAmt - TotalTax`` (``TotalAmt`` itself
        when the lines are ``tax_inclusive``, i.e. GlobalTaxCalculation TaxInclusive: our amounts
        already contain the tax). A mismatch keeps the status
        ``posted`` but sets ``total_mismatch`` and a ``last_error`` text, and is returned as
        ``total_matches=False``. Idempotent for the same ``qbo_id``; a different ``qbo_id`` for an
        already posted key raises :class:`LedgerConflict` (two QBO invoices for one key).
        """
        amt_text = _dec_text(qbo_total_amt, "qbo_total_amt")
        amt = Decimal(amt_text)  # type: ignore[arg-type]
        tax_text = None if qbo_total_tax is None else _dec_text(qbo_total_tax, "qbo_total_tax")
        tax = Decimal(tax_text) if tax_text is not None else Decimal(0)
        pre_tax = amt if tax_inclusive else amt - tax
        now = self.now()
        conflict: str | None = None
        result: PostedResult | None = None
        with self._write() as conn:
            row = conn.execute(sa.select(invoices).where(invoices.c.key == key)).mappings().first()
            if row is None:
                raise LedgerError(f"record_posted: unknown invoice key {key}")
            expected = _dec(row["expected_total"])
            if row["status"] == "voided":
                raise LedgerError(f"record_posted: {key} is voided")
            if row["status"] in ("posted", "drift") and row["qbo_id"] == str(qbo_id):
                billed = conn.execute(
                    sa.select(sa.func.count()).select_from(invoice_entries).where(
                        invoice_entries.c.invoice_key == key, invoice_entries.c.status == "billed"
                    )
                ).scalar_one()
                result = PostedResult(
                    key=key, total_matches=not row["total_mismatch"], expected_total=expected,
                    qbo_total_amt=_dec(row["qbo_total_amt"]) or amt, entries_billed=int(billed),
                    already_posted=True, qbo_total_tax=_dec(row["qbo_total_tax"]),
                    qbo_doc_number=row["qbo_doc_number"],
                )
            elif row["status"] in ("posted", "drift"):
                msg = f"QuickBooks holds two invoices for this key: Id {row['qbo_id']} (recorded) and Id {qbo_id}"
                conn.execute(invoices.update().where(invoices.c.key == key).values(last_error=msg, updated_at=now))
                conflict = f"{key}: {msg}"  # raised after the commit, so the record survives
            else:
                matches = expected is not None and expected == pre_tax
                error = None if matches else (
                    f"TotalAmt mismatch: QuickBooks {amt_text}, ours {row['expected_total']}" if tax_text is None else
                    f"pre-tax total mismatch: QuickBooks {pre_tax} (TotalAmt {amt_text}, tax {tax_text}), "
                    f"ours {row['expected_total']}")
                conn.execute(
                    invoices.update().where(invoices.c.key == key).values(
                        status="posted", qbo_id=str(qbo_id), sync_token=sync_token, qbo_doc_number=qbo_doc_number,
                        qbo_total_amt=amt_text, qbo_total_tax=tax_text, intuit_tid=intuit_tid,
                        total_mismatch=not matches,
                        last_error=error, hold_reasons=None, claimed_until=None, posted_at=now, updated_at=now,
                    )
                )
                own = [
                    int(e)
                    for e in conn.execute(
                        sa.select(invoice_entries.c.entry_id).where(invoice_entries.c.invoice_key == key)
                    ).scalars()
                ]
                double = self._entry_conflicts(conn, key, own)
                updated = conn.execute(
                    invoice_entries.update().where(invoice_entries.c.invoice_key == key).values(
                        status="billed", updated_at=now
                    )
                )
                if double:
                    log.error("invoice %s bills %d entries already billed on other invoices", key, len(double))
                if not matches:
                    log.warning("invoice %s: %s", key, error)
                result = PostedResult(
                    key=key, total_matches=matches, expected_total=expected, qbo_total_amt=amt,
                    entries_billed=int(updated.rowcount), double_billed_entries=double,
                    qbo_total_tax=None if tax_text is None else tax, qbo_doc_number=qbo_doc_number,
                )
        if conflict is not None:
            log.error("%s", conflict)
            raise LedgerConflict(conflict)
        assert result is not None
        return result

    def record_failed(self, key: str, error: str) -> bool:
        """QuickBooks refused the invoice (or the call gave up): status ``failed``, entries stay
        unbilled, the claim is released. `error` is redacted and shortened to 500 characters.
        Returns False (and changes nothing) unless the key is pending or failed."""
        text = redact.short_error(error)
        now = self.now()
        with self._write() as conn:
            result = conn.execute(
                invoices.update()
                .where(invoices.c.key == key, invoices.c.status.in_(("pending", "failed")))
                .values(status="failed", last_error=text, claimed_until=None, updated_at=now)
            )
            return bool(result.rowcount)

    def record_held(
        self,
        key: str,
        *,
        reasons: Sequence[str],
        payload: dict[str, Any],
        realm_id: str | None = None,
        client_key: str | None = None,
        period: str | None = None,
        group_key: str | None = None,
        generation: int | None = None,
        expected_total: Decimal | None = None,
        currency: str | None = None,
        request_id: str | None = None,
        doc_number: str | None = None,
        entries: Iterable[tuple[int, int]] = (),
    ) -> str:
        """Record the invoice as held (never posted, reported with `reasons`).

        Creates the row when the key is new (then realm_id, client_key, period, group_key and
        generation are required) or moves a pending/failed/held row to held. A posted, drifted or
        voided key is left alone. Returns the row's status afterwards.
        """
        body = money.dumps(payload)
        new_hash = payload_hash(payload)
        total_text = _dec_text(expected_total, "expected_total")
        clean_reasons = [redact.short_error(r, 300) or "" for r in reasons]
        entry_list = [(int(e), int(c)) for e, c in entries]
        now = self.now()
        with self._write() as conn:
            row = conn.execute(sa.select(invoices.c.status).where(invoices.c.key == key)).first()
            if row is None:
                missing = [
                    n for n, v in (("realm_id", realm_id), ("client_key", client_key), ("period", period),
                                   ("group_key", group_key), ("generation", generation)) if v is None
                ]
                if missing:
                    raise ValueError(f"record_held: new key {key} needs {', '.join(missing)}")
                conn.execute(
                    invoices.insert().values(
                        key=key, realm_id=realm_id, client_key=client_key, period=period, group_key=group_key,
                        generation=int(generation), status="held", payload=body, payload_hash=new_hash,  # type: ignore[arg-type]
                        request_id=request_id, doc_number=doc_number, expected_total=total_text,
                        currency=currency, attempts=0, hold_reasons=json.dumps(clean_reasons),
                        created_at=now, updated_at=now,
                    )
                )
                self._replace_entries(conn, key, entry_list, now)
                return "held"
            if row.status not in ("pending", "failed", "held"):
                return str(row.status)
            values: dict[str, Any] = dict(
                status="held", payload=body, payload_hash=new_hash, hold_reasons=json.dumps(clean_reasons),
                claimed_until=None, updated_at=now,
            )
            if total_text is not None:
                values["expected_total"] = total_text
            if currency is not None:
                values["currency"] = currency
            conn.execute(invoices.update().where(invoices.c.key == key).values(**values))
            if entry_list:
                self._replace_entries(conn, key, entry_list, now)
            return "held"

    def record_voided(self, key: str, *, deleted: bool = False) -> bool:
        """The invoice was voided or deleted in QuickBooks (CDC / webhook): status ``voided``
        (``voided_how`` says which), its entries are released (billable again under the next
        generation). False if unknown or already voided."""
        now = self.now()
        with self._write() as conn:
            result = conn.execute(
                invoices.update()
                .where(invoices.c.key == key, invoices.c.status != "voided")
                .values(status="voided", voided_at=now, claimed_until=None, updated_at=now,
                        voided_how="deleted" if deleted else "voided")
            )
            if not result.rowcount:
                return False
            conn.execute(
                invoice_entries.update().where(invoice_entries.c.invoice_key == key).values(
                    status="released", updated_at=now
                )
            )
            return True

    def release_claim(self, key: str) -> bool:
        """Operator escape hatch: drop the in-flight claim of a pending key so the next
        ``begin_posting`` returns ``"resume_pending"`` at once (e.g. after a known crash)."""
        with self._write() as conn:
            result = conn.execute(
                invoices.update()
                .where(invoices.c.key == key, invoices.c.status == "pending")
                .values(claimed_until=None, updated_at=self.now())
            )
            return bool(result.rowcount)

    def find_by_qbo_id(self, realm_id: str, qbo_id: str) -> InvoiceRecord | None:
        """The invoice recorded with QuickBooks Id `qbo_id` (for CDC voids and deletes)."""
        with self._read() as conn:
            key = conn.execute(
                sa.select(invoices.c.key).where(invoices.c.realm_id == realm_id, invoices.c.qbo_id == str(qbo_id))
            ).scalar_one_or_none()
        return None if key is None else self.get_invoice(key)

    if TYPE_CHECKING:

        def get_invoice(self, key: str) -> InvoiceRecord | None: ...  # InvoiceReadsMixin

    # -- generations -------------------------------------------------------------------------

    def _next_generation(self, conn: Connection, realm_id: str, client_key: str, period: str, group_key: str) -> int:
        top = conn.execute(
            sa.select(sa.func.max(invoices.c.generation)).where(
                invoices.c.realm_id == realm_id, invoices.c.client_key == client_key,
                invoices.c.period == period, invoices.c.group_key == group_key,
            )
        ).scalar_one_or_none()
        return int(top or 0) + 1

    def next_generation(self, realm_id: str, client_key: str, period: str, group_key: str) -> int:
        """The generation for a re-issue: highest recorded generation + 1 (1 when none)."""
        with self._read() as conn:
            return self._next_generation(conn, realm_id, client_key, period, group_key)
