"""Pure logic of QuickBooks change capture: what a record says, and CDC window arithmetic."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

from sync_pipelines.qbo_changes import classify, windows
from sync_pipelines.qbo_changes.classify import ChangeError

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)


def invoice(total: str, balance: str, **extra) -> dict:
    return {"Id": "61", "SyncToken": "3", "TotalAmt": Decimal(total), "Balance": Decimal(balance),
            "CurrencyRef": {"value": "EUR"}, "MetaData": {"LastUpdatedTime": "2026-12-01T03:00:00-08:00"}, **extra}


@pytest.mark.parametrize(
    ("record", "kind", "paid"),
    [
        (invoice("1500.00", "1500.00"), classify.UNPAID, Decimal("0.00")),
        (invoice("1500.00", "1000.01"), classify.PARTIALLY_PAID, Decimal("499.99")),
        (invoice("1500.00", "0.00"), classify.PAID, Decimal("1500.00")),
        # A voided invoice also has TotalAmt 0 and Balance 0: it is a void, not a payment.
        (invoice("0.00", "0.00", PrivateNote="Voided - SP2610-1A2B3C4D"), classify.VOIDED, None),
        ({"domain": "QBO", "status": "Deleted", "Id": "61", "MetaData": {"LastUpdatedTime": "2026-12-01T03:00:00-08:00"}},
         classify.DELETED, None),
    ],
)
def test_an_invoice_record_is_classified_from_its_current_state(record, kind, paid) -> None:
    state = classify.invoice_state(record)
    assert state.kind == kind and state.qbo_id == "61"
    assert state.amount_paid == paid
    if paid is not None:
        assert isinstance(state.amount_paid, Decimal) and str(state.amount_paid) == str(paid)  # exact digits


def test_a_note_saying_voided_on_a_live_invoice_is_not_a_void() -> None:
    assert classify.invoice_state(invoice("100.00", "100.00", PrivateNote="Voided by mistake?")).kind == classify.UNPAID


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"TotalAmt": 1}, "no Id"),
        ({"Id": "7", "Balance": Decimal("1")}, "Invoice 7: missing TotalAmt"),
        ({"Id": "7", "TotalAmt": Decimal("10"), "Balance": Decimal("11")}, "Balance 11 is not between 0 and TotalAmt 10"),
        ({"Id": "7", "TotalAmt": 10.5, "Balance": 0}, "refusing binary float"),
    ],
)
def test_a_malformed_invoice_names_what_is_wrong(record, message) -> None:
    with pytest.raises(ChangeError, match=message):
        classify.invoice_state(record)


def test_a_payment_leads_to_the_invoices_it_pays() -> None:
    payment = {"Id": "90", "Line": [
        {"Amount": 5, "LinkedTxn": [{"TxnId": "61", "TxnType": "Invoice"}, {"TxnId": "3", "TxnType": "CreditMemo"}]},
        {"Amount": 5, "LinkedTxn": [{"TxnId": "101", "TxnType": "Invoice"}, {"TxnId": "61", "TxnType": "Invoice"}]},
        {"Amount": 1},
    ]}
    assert classify.payment_invoice_ids(payment) == ["61", "101"]
    with pytest.raises(ChangeError, match=r"Payment 90: Line\[0\].LinkedTxn holds a str"):
        classify.payment_invoice_ids({"Id": "90", "Line": [{"LinkedTxn": ["61"]}]})


def test_inbox_events_and_cdc_rows_become_changes() -> None:
    change = classify.inbox_change({"realm_id": "9130", "entity": "Invoice", "entity_id": "61", "operation": "Void",
                                    "occurred_at": "2026-12-01T11:00:00Z", "format": "legacy", "raw": {}})
    assert (change.realm_id, change.entity, change.entity_id, change.operation) == ("9130", "Invoice", "61", "Void")
    with pytest.raises(ChangeError, match="inbox event 4: payload has no entity_id, operation"):
        classify.inbox_change({"realm_id": "9130", "entity": "Invoice"}, where="inbox event 4")
    deleted = classify.cdc_change("9130", "Invoice", {"status": "Deleted", "Id": "61",
                                                      "MetaData": {"LastUpdatedTime": "2026-12-01T03:00:00-08:00"}})
    assert deleted.deleted and deleted.version == "2026-12-01T03:00:00-08:00"


# -- windows ------------------------------------------------------------------------------------


def test_a_first_read_starts_as_far_back_as_cdc_goes() -> None:
    start = windows.window_start(None, NOW)
    assert start.gap_from is None
    assert NOW - timedelta(days=30) < start.start < NOW - timedelta(days=29, hours=23)


def test_a_cursor_inside_30_days_is_used_as_is() -> None:
    cursor = NOW - timedelta(days=29, hours=23)
    assert windows.window_start(cursor, NOW) == windows.WindowStart(cursor)


def test_a_cursor_past_30_days_restarts_at_the_limit_and_reports_the_gap() -> None:
    cursor = NOW - timedelta(days=30)  # exactly 30 days: QuickBooks would refuse it by the time it arrives
    start = windows.window_start(cursor, NOW)
    assert start.gap_from == cursor
    assert start.start == NOW - windows.CDC_MAX_AGE + windows.LIMIT_MARGIN
    assert windows.window_start(NOW - timedelta(days=45), NOW).gap_from == NOW - timedelta(days=45)


def rows(n: int, first: datetime, step: timedelta = timedelta(seconds=1), deleted: int = 0) -> list[dict]:
    live = [{"Id": str(i), "MetaData": {"LastUpdatedTime": (first + i * step).isoformat()}} for i in range(n - deleted)]
    dead = [{"status": "Deleted", "Id": str(10_000 + i),
             "MetaData": {"LastUpdatedTime": (first + i * step).isoformat()}} for i in range(deleted)]
    return live + dead


def test_a_short_response_completes_the_window_up_to_just_before_the_request() -> None:
    start = NOW - timedelta(hours=1)
    out = windows.after_read(start, NOW, rows(999, start))
    assert out.complete and not out.overflow
    assert out.next_start == NOW - windows.OVERLAP


def test_a_full_response_shortens_the_window_to_its_last_change() -> None:
    start = NOW - timedelta(hours=1)
    records = rows(1000, start + timedelta(seconds=1))
    out = windows.after_read(start, NOW, records)
    assert not out.complete
    assert out.next_start == start + timedelta(seconds=1000)  # the last record's LastUpdatedTime


def test_a_full_response_ending_in_deletions_resumes_at_the_last_deletion() -> None:
    start = NOW - timedelta(hours=1)
    records = rows(1000, start + timedelta(seconds=1), deleted=10)
    out = windows.after_read(start, NOW, records)
    assert not out.complete and out.next_start == start + timedelta(seconds=10)


def test_a_thousand_changes_in_one_instant_are_taken_and_reported() -> None:
    start = NOW - timedelta(hours=1)
    out = windows.after_read(start, NOW, rows(1000, start, step=timedelta(0)))
    assert out.complete and out.overflow


@pytest.mark.parametrize("text", ["2026-11-30T10:15:00-08:00", "2026-11-30T18:15:00Z", "2026-11-30T18:15:00+00:00"])
def test_quickbooks_times_are_parsed_with_their_offset(text) -> None:
    assert windows.parse_time(text) == datetime(2026, 11, 30, 18, 15, tzinfo=timezone.utc)
