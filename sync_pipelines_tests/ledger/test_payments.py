"""The ledger's record of payments and QuickBooks deletions (revision 0004), on SQLite and PostgreSQL."""

from __future__ import annotations

from decimal import Decimal

import pytest

from sync_pipelines.ledger import Ledger, LedgerError

from .conftest import draft, post


def test_a_payment_is_recorded_exactly_and_an_older_version_never_overwrites_it(ledger: Ledger) -> None:
    d = draft(amount="1500.00")
    post(ledger, d)
    assert ledger.record_payment(d["key"], status="partially_paid", amount_paid=Decimal("499.99"),
                                 balance=Decimal("1000.01"), sync_token="2")
    # The same version again, and an older one arriving late: no change.
    assert not ledger.record_payment(d["key"], status="partially_paid", amount_paid=Decimal("499.99"),
                                     balance=Decimal("1000.01"), sync_token="2")
    assert not ledger.record_payment(d["key"], status="unpaid", amount_paid=Decimal("0"),
                                     balance=Decimal("1500.00"), sync_token="1")
    rec = ledger.get_invoice(d["key"])
    assert (rec.payment_status, rec.amount_paid, rec.qbo_balance) == ("partially_paid", Decimal("499.99"),
                                                                       Decimal("1000.01"))
    assert str(rec.amount_paid) == "499.99"
    assert ledger.record_payment(d["key"], status="paid", amount_paid=Decimal("1500.00"), balance=Decimal("0.00"),
                                 sync_token="10")  # "10" is newer than "2": SyncToken is a number
    rec = ledger.get_invoice(d["key"])
    assert rec.payment_status == "paid" and rec.amount_paid == Decimal("1500.00") and rec.status == "posted"


def test_a_payment_is_never_recorded_on_a_voided_or_unknown_invoice(ledger: Ledger) -> None:
    d = draft()
    post(ledger, d)
    assert ledger.record_voided(d["key"], deleted=True)
    assert not ledger.record_payment(d["key"], status="paid", amount_paid=Decimal("1"), balance=Decimal("0"),
                                     sync_token="9")
    rec = ledger.get_invoice(d["key"])
    assert rec.status == "voided" and rec.voided_how == "deleted" and rec.payment_status is None
    assert not ledger.record_payment("no:such:key:x:g1", status="paid", amount_paid=Decimal("1"),
                                     balance=Decimal("0"), sync_token="1")
    with pytest.raises(LedgerError, match="status must be one of unpaid, partially_paid, paid"):
        ledger.record_payment(d["key"], status="settled", amount_paid=Decimal("1"), balance=Decimal("0"),
                              sync_token="1")


def test_requeue_sends_new_properties_through_the_existing_write_back_rows(ledger: Ledger) -> None:
    d = draft()
    post(ledger, d)
    assert ledger.requeue_writebacks(d["key"], {"billing_status": "paid"}) == []  # never written back: nothing
    for deal in ("8802", "8801"):
        ledger.enqueue_writeback(d["key"], deal, {"billing_status": "invoiced"})
        ledger.record_writeback(d["key"], deal, ok=True)
    assert ledger.pending_writebacks() == []
    assert ledger.requeue_writebacks(d["key"], {"billing_status": "paid", "amount_paid": Decimal("1500.00")}) == [
        "8801", "8802"]
    pending = ledger.pending_writebacks()
    assert sorted(w.deal_id for w in pending) == ["8801", "8802"]
    assert pending[0].properties() == {"billing_status": "paid", "amount_paid": Decimal("1500.00")}
