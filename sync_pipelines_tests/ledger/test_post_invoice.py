"""The whole exactly-once protocol against a fake QuickBooks, with a crash or fault at each step."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from sync_pipelines.connectors.http import ApiAuthError, ApiUnavailable, ApiValidationError
from sync_pipelines.ledger import Ledger
from sync_pipelines.posting.protocol import post_invoice

from .conftest import REALM, draft


class Crash(BaseException):
    """The process dies (nothing after this point runs)."""


class FakeQbo:
    """Invoices by Id, requestid replay (the first response, errors included), fault injection."""

    def __init__(self) -> None:
        self.invoices: dict[str, dict[str, Any]] = {}
        self.replay: dict[str, Any] = {}
        self.faults: list[str] = []  # consumed one per create call
        self.honour_doc_number = True
        self.unique_doc_number = False
        self.creates = 0
        self.total_skew = Decimal(0)

    def _error(self, cls: type, status: int, code: str) -> Exception:
        return cls("quickbooks", "POST", f"/v3/company/{REALM}/invoice", status, code=code, api_message="fault")

    def create_invoice(self, payload: dict[str, Any], request_id: str) -> dict[str, Any]:
        self.creates += 1
        fault = self.faults.pop(0) if self.faults else None
        if fault == "crash_before":
            raise Crash()
        if fault == "outage_before":
            raise self._error(ApiUnavailable, 503, "503")
        if request_id in self.replay:
            saved = self.replay[request_id]
            if isinstance(saved, Exception):
                raise saved
            return dict(saved)
        if fault == "reject":
            err = self._error(ApiValidationError, 400, "6000")
            self.replay[request_id] = err
            raise err
        if self.unique_doc_number and any(i["DocNumber"] == payload["DocNumber"] for i in self.invoices.values()):
            err = self._error(ApiValidationError, 400, "6140")
            self.replay[request_id] = err
            raise err
        inv_id = str(100 + len(self.invoices))
        total = sum(Decimal(str(line["Amount"])) for line in payload["Line"]) + self.total_skew
        doc = payload["DocNumber"] if self.honour_doc_number else f"10{len(self.invoices)}"
        invoice = {"Id": inv_id, "SyncToken": "0", "DocNumber": doc, "TotalAmt": total, "intuit_tid": f"tid-{inv_id}"}
        self.invoices[inv_id] = invoice
        self.replay[request_id] = invoice
        if fault == "crash_after":
            raise Crash()
        if fault == "timeout_after":  # created, but the response never arrived
            raise self._error(ApiUnavailable, None, "timeout")
        return dict(invoice)

    def find_invoice_by_doc_number(self, doc_number: str) -> dict[str, Any] | None:
        for inv in self.invoices.values():
            if inv["DocNumber"] == doc_number:
                return dict(inv)
        return None


def _run(ledger: Ledger, qbo: FakeQbo, d: dict[str, Any], clock) -> list[str]:
    """Run the posting step until it settles, like repeated Dagster runs; returns the outcomes."""
    outcomes = []
    for _ in range(6):
        try:
            out = post_invoice(ledger, qbo, **d)
        except Crash:
            outcomes.append("crash")
            clock.advance(ledger.claim_seconds + 1)  # the operator re-runs after the claim expired
            continue
        outcomes.append(out.outcome)
        if out.ok:
            return outcomes
        if out.outcome in ("failed", "busy"):
            clock.advance(ledger.claim_seconds + 1)
            continue
        return outcomes
    return outcomes


@pytest.mark.parametrize(
    "faults, expected",
    [
        ([], ["posted"]),
        (["crash_before"], ["crash", "posted"]),
        (["crash_after"], ["crash", "recovered"]),
        (["timeout_after"], ["failed", "recovered"]),
        (["outage_before"], ["failed", "posted"]),
        (["outage_before", "crash_after"], ["failed", "crash", "recovered"]),
    ],
)
def test_every_crash_point_ends_with_one_invoice(ledger: Ledger, clock, faults, expected) -> None:
    qbo = FakeQbo()
    qbo.faults = list(faults)
    d = draft()
    assert _run(ledger, qbo, d, clock) == expected
    assert len(qbo.invoices) == 1
    rec = ledger.get_invoice(d["key"])
    assert rec.status == "posted" and rec.qbo_id == next(iter(qbo.invoices)) and not rec.total_mismatch
    assert {s for _, _, s in rec.entries} == {"billed"}
    # and any number of later runs change nothing
    again = post_invoice(ledger, qbo, **d)
    assert again.outcome == "already_posted" and len(qbo.invoices) == 1


def test_crash_without_doc_number_is_caught_by_requestid_replay(ledger: Ledger, clock) -> None:
    qbo = FakeQbo()
    qbo.honour_doc_number = False  # company with automatic transaction numbers: lookup finds nothing
    qbo.faults = ["crash_after"]
    d = draft()
    assert _run(ledger, qbo, d, clock) == ["crash", "posted"]
    assert len(qbo.invoices) == 1  # the same requestid replayed the lost creation


def test_duplicate_doc_number_fault_recovers(ledger: Ledger, clock) -> None:
    qbo = FakeQbo()
    qbo.unique_doc_number = True
    d = draft()
    qbo.faults = ["timeout_after"]
    assert post_invoice(ledger, qbo, **d).outcome == "failed"  # created, response lost
    # the resume lookup misses it once (e.g. query lag): the 6140 duplicate DocNumber fault recovers
    real_find = qbo.find_invoice_by_doc_number
    calls = {"n": 0}

    def flaky_find(doc: str):
        calls["n"] += 1
        return None if calls["n"] == 1 else real_find(doc)

    qbo.find_invoice_by_doc_number = flaky_find  # type: ignore[method-assign]
    out = post_invoice(ledger, qbo, **d)
    assert out.outcome == "recovered" and len(qbo.invoices) == 1
    assert ledger.get_invoice(d["key"]).status == "posted"


def test_rejection_holds_then_a_fixed_draft_posts_with_a_fresh_requestid(ledger: Ledger, clock) -> None:
    qbo = FakeQbo()
    qbo.faults = ["reject"]
    d = draft()
    out = post_invoice(ledger, qbo, **d)
    assert out.outcome == "held" and "rejected" in out.message and out.error_class == "ApiValidationError"
    rec = ledger.get_invoice(d["key"])
    assert rec.status == "held" and rec.attempts == 1 and ledger.history(REALM).billed_entries == {}
    fixed = draft(memo="fixed customer memo")
    out = post_invoice(ledger, qbo, **fixed)
    assert out.outcome == "posted", out
    assert out.begin.request_id != d["request_id"]  # the old one would replay the rejection
    assert len(qbo.invoices) == 1 and ledger.get_invoice(d["key"]).attempts == 2


def test_auth_error_fails_without_holding(ledger: Ledger) -> None:
    class AuthFails(FakeQbo):
        def create_invoice(self, payload, request_id):
            raise ApiAuthError("quickbooks", "POST", "/invoice", 401, code="3200", api_message="Token expired")

    out = post_invoice(ledger, AuthFails(), **draft())
    assert out.outcome == "failed" and "3200" in out.message
    assert ledger.get_invoice(draft()["key"]).status == "failed"


def test_total_mismatch_outcome(ledger: Ledger) -> None:
    qbo = FakeQbo()
    qbo.total_skew = Decimal("0.01")  # e.g. a tax penny
    out = post_invoice(ledger, qbo, **draft())
    assert out.outcome == "posted" and out.total_matches is False and "1500.01" in out.message


def test_drift_busy_held_voided_outcomes(ledger: Ledger, clock) -> None:
    qbo = FakeQbo()
    d = draft()
    assert post_invoice(ledger, qbo, **d).outcome == "posted"
    out = post_invoice(ledger, qbo, **draft(amount="1600.00"))
    assert out.outcome == "drift" and "1600.00" in out.message and len(qbo.invoices) == 1
    other = draft(group="p2", entries=[(1001, 400)])
    assert post_invoice(ledger, qbo, **other).outcome == "held"
    ledger.record_voided(d["key"])
    out = post_invoice(ledger, qbo, **d)
    assert out.outcome == "voided" and out.begin.next_generation == 2
    g3 = draft(client="beta", entries=[(5, 5)])
    k = g3.pop("key")
    ledger.begin_posting(k, **g3)  # another run holds the claim
    g3["key"] = k
    assert post_invoice(ledger, qbo, **g3).outcome == "busy"


def test_replay_a_held_key_from_the_ledger(ledger: Ledger) -> None:
    qbo = FakeQbo()
    qbo.faults = ["outage_before"]
    d = draft()
    assert post_invoice(ledger, qbo, **d).outcome == "failed"
    stored = ledger.get_invoice(d["key"]).as_draft()
    assert stored["payload"] == d["payload"] and stored["entries"] == d["entries"]
    out = post_invoice(ledger, qbo, **stored)  # `sync-pipelines ledger replay KEY`
    assert out.outcome == "posted" and len(qbo.invoices) == 1
    assert post_invoice(ledger, qbo, **ledger.get_invoice(d["key"]).as_draft()).outcome == "already_posted"
