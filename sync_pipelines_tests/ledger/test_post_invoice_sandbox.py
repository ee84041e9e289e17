"""post_invoice against the real QuickBooksClient and the sandbox (SQLite ledger)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

import pytest

from sync_pipelines.billing.keys import doc_number, invoice_key, request_id
from sync_pipelines.connectors.factory import quickbooks_from_env
from sync_pipelines.connectors.http import ApiValidationError
from sync_pipelines.ledger import Ledger
from sync_pipelines.posting.protocol import post_invoice
from sync_pipelines.sandbox import SandboxServer, generate_fixture


class Crash(BaseException):
    pass


@pytest.fixture(scope="module")
def sandbox() -> Iterator[SandboxServer]:
    fixture, _rules = generate_fixture(clients=2, entries=5, seed=3, month="2026-10")
    with SandboxServer(fixture, rate_limits=None) as sb:
        yield sb


@pytest.fixture
def setup(sandbox: SandboxServer, tmp_path, clock) -> Iterator[tuple[Ledger, Any, SandboxServer]]:
    ledger = Ledger(f"sqlite:///{tmp_path}/ledger.db", clock=clock)
    ledger.migrate()
    qbo = quickbooks_from_env(ledger.tokens, sandbox.env(), audit=ledger)
    try:
        yield ledger, qbo, sandbox
    finally:
        ledger.dispose()


def _draft(sb: SandboxServer, group: str, amount: str = "1500.00", item: str = "1") -> dict[str, Any]:
    realm = sb.realm_id
    key = invoice_key(realm, "obrien", "2026-10", group, 1)
    doc = doc_number(key, "2026-10")
    payload = {
        "CustomerRef": {"value": "58"},
        "DocNumber": doc,
        "TxnDate": "2026-10-31",
        "PrivateNote": f"sync_pipelines {key}",
        "Line": [{
            "DetailType": "SalesItemLineDetail", "Amount": Decimal(amount), "Description": "Consulting, October",
            "SalesItemLineDetail": {"ItemRef": {"value": item}, "Qty": Decimal("10.00"),
                                    "UnitPrice": Decimal(amount) / 10},
        }],
    }
    return dict(key=key, realm_id=realm, client_key="obrien", period="2026-10", group_key=group, generation=1,
                payload=payload, expected_total=Decimal(amount), currency="USD", request_id=request_id(key),
                doc_number=doc, entries=[(sum(map(ord, group)), 100)])


def _count(sb: SandboxServer, doc: str) -> int:
    return sum(1 for inv in sb.state()["quickbooks"]["invoices"] if inv.get("DocNumber") == doc)


def test_posts_once_and_skips_after(setup) -> None:
    ledger, qbo, sb = setup
    d = _draft(sb, "g-once")
    out = post_invoice(ledger, qbo, **d)
    assert out.outcome == "posted" and out.total_matches, out
    assert post_invoice(ledger, qbo, **d).outcome == "already_posted"
    assert _count(sb, d["doc_number"]) == 1
    rec = ledger.get_invoice(d["key"])
    assert rec.qbo_total_amt == Decimal("1500.00") and rec.intuit_tid
    paths = {a.path for a in ledger.audit_records(system="quickbooks")}
    assert f"/v3/company/{sb.realm_id}/invoice" in paths and all("?" not in p for p in paths)


def _crash_after_create(ledger: Ledger, qbo: Any, d: dict[str, Any]) -> None:
    """Post `d` with a process that dies right after QuickBooks created the invoice."""
    real_create = qbo.create_invoice

    def create_then_die(payload, rid):
        real_create(payload, rid)
        raise Crash()

    qbo.create_invoice = create_then_die
    try:
        with pytest.raises(Crash):
            post_invoice(ledger, qbo, **d)
    finally:
        qbo.create_invoice = real_create


@contextmanager
def _company(tmp_path, clock, group: str, key: str, value: bool) -> Iterator[tuple[Ledger, Any, SandboxServer]]:
    """A sandbox whose QuickBooks company has preferences[group][key] = value, and a fresh ledger."""
    fixture, _rules = generate_fixture(clients=2, entries=5, seed=3, month="2026-10")
    fixture["quickbooks"]["preferences"][group][key] = value
    with SandboxServer(fixture, rate_limits=None) as sb:
        ledger = Ledger(f"sqlite:///{tmp_path}/ledger.db", clock=clock)
        ledger.migrate()
        try:
            yield ledger, quickbooks_from_env(ledger.tokens, sb.env(), audit=ledger), sb
        finally:
            ledger.dispose()


def test_crash_after_create_recovers_by_doc_number(setup, clock) -> None:
    ledger, qbo, sb = setup
    d = _draft(sb, "g-crash")
    _crash_after_create(ledger, qbo, d)
    assert post_invoice(ledger, qbo, **d).outcome == "busy"
    clock.advance(ledger.claim_seconds + 1)
    out = post_invoice(ledger, qbo, **d)
    assert out.outcome == "recovered" and _count(sb, d["doc_number"]) == 1


def test_rejected_then_fixed_uses_a_fresh_requestid(setup) -> None:
    ledger, qbo, sb = setup
    bad = _draft(sb, "g-reject", item="999999")  # unknown ItemRef: a validation fault
    out = post_invoice(ledger, qbo, **bad)
    assert out.outcome == "held" and out.error_class == "ApiValidationError"
    # the sandbox (like QuickBooks) replays the first response for a requestid, errors included
    with pytest.raises(ApiValidationError):
        qbo.create_invoice(_draft(sb, "g-reject")["payload"], bad["request_id"])
    out = post_invoice(ledger, qbo, **_draft(sb, "g-reject"))
    assert out.outcome == "posted", out
    assert _count(sb, bad["doc_number"]) == 1


def test_crash_after_create_recovers_by_private_note_when_quickbooks_numbers_invoices(tmp_path, clock) -> None:
    """CustomTxnNumbers off: no DocNumber is sent, so the resume lookup reads the customer's
    invoices of the TxnDate (PrivateNote is not filterable in QuickBooks) and matches the note."""
    with _company(tmp_path, clock, "SalesFormsPrefs", "CustomTxnNumbers", False) as (ledger, qbo, sb):
        d = _draft(sb, "g-numbered")
        d["payload"].pop("DocNumber")
        other = _draft(sb, "g-other")  # same customer and date, another key: must not match
        other["payload"].pop("DocNumber")
        assert post_invoice(ledger, qbo, **other).outcome == "posted"
        _crash_after_create(ledger, qbo, d)
        clock.advance(ledger.claim_seconds + 1)
        out = post_invoice(ledger, qbo, **d)
        assert out.outcome == "recovered", out
        mine = [i for i in sb.state()["quickbooks"]["invoices"] if i.get("PrivateNote") == d["payload"]["PrivateNote"]]
        assert len(mine) == 1 and out.qbo_id == mine[0]["Id"]
        assert ledger.get_invoice(d["key"]).qbo_doc_number == mine[0]["DocNumber"]  # QuickBooks' own number
        queries = [a.path for a in ledger.audit_records(system="quickbooks") if a.path.endswith("/query")]
        assert queries  # found through a query, not by replaying the create


def test_discount_line_dropped_by_a_company_with_discounts_off_is_a_total_mismatch(tmp_path, clock) -> None:
    """What QuickBooks does with a DiscountLineDetail when AllowDiscount is false (drops it) is
    caught by the TotalAmt check, never recorded as a match."""
    with _company(tmp_path, clock, "SalesFormsPrefs", "AllowDiscount", False) as (ledger, qbo, sb):
        d = _draft(sb, "g-discount")
        d["payload"]["Line"].append({"DetailType": "DiscountLineDetail", "Amount": Decimal("150.00"),
                                     "DiscountLineDetail": {"PercentBased": False}})
        d["expected_total"] = Decimal("1350.00")
        out = post_invoice(ledger, qbo, **d)
        assert out.outcome == "posted" and out.total_matches is False
        assert "1500.00" in (out.message or "") and "1350.00" in (out.message or "")
        assert ledger.get_invoice(d["key"]).total_mismatch
