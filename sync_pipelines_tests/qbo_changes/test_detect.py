"""Detection over a CDC feed larger than one response, and over a messy webhook inbox.

The CDC feed here is an in-process fake with QuickBooks' rules (30-day limit, 1,000 objects per
response, ordered by LastUpdatedTime): the point is the arithmetic over many responses. The
sensor against the real sandbox over HTTP is in test_change_capture_sandbox.py."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

from sync_pipelines.billing.keys import doc_number, invoice_key, request_id
from sync_pipelines.ledger import Ledger
from sync_pipelines.qbo_changes import windows
from sync_pipelines.qbo_changes.detect import Detection, drain_inbox, poll_cdc

REALM = "9130357"
NOW = datetime.now(timezone.utc).replace(microsecond=0)


class CdcFeed:
    """QuickBooks' CDC rules over a list of changed Invoice records."""

    def __init__(self, records: list[dict]) -> None:
        self.records = records
        self.reads: list[datetime] = []

    def cdc(self, entities, changed_since: datetime) -> dict:
        assert changed_since >= datetime.now(timezone.utc) - timedelta(days=30), "QuickBooks refuses this"
        self.reads.append(changed_since)
        out = {}
        for entity in entities:
            rows = [r for r in self.records if r["_entity"] == entity
                    and windows.parse_time(r["MetaData"]["LastUpdatedTime"]) >= changed_since]
            rows.sort(key=lambda r: windows.parse_time(r["MetaData"]["LastUpdatedTime"]))
            out[entity] = [{k: v for k, v in r.items() if k != "_entity"} for r in rows[: windows.CDC_MAX_OBJECTS]]
        return out


def invoice_row(qbo_id: int, at: datetime, *, total="100.00", balance="100.00", note=None) -> dict:
    row = {"_entity": "Invoice", "Id": str(qbo_id), "SyncToken": "1", "TotalAmt": Decimal(total),
           "Balance": Decimal(balance), "MetaData": {"LastUpdatedTime": at.isoformat()}}
    if note:
        row["PrivateNote"] = note
    return row


def posted(ledger: Ledger, client: str, qbo_id: str) -> str:
    key = invoice_key(REALM, client, "2026-10", "all", 1)
    d = dict(realm_id=REALM, client_key=client, period="2026-10", group_key="all", generation=1,
             payload={"Line": []}, expected_total=Decimal("100.00"), currency="USD", request_id=request_id(key),
             doc_number=doc_number(key, "2026-10"), entries=[(int(qbo_id) * 10, 100)])
    assert ledger.begin_posting(key, **d).action == "post"
    ledger.record_posted(key, qbo_id=qbo_id, sync_token="0", qbo_doc_number=d["doc_number"],
                         qbo_total_amt=Decimal("100.00"), intuit_tid="t")
    return key


@pytest.fixture
def ledger(tmp_path) -> Ledger:
    led = Ledger(f"sqlite:///{tmp_path}/ledger.db")
    led.migrate()
    yield led
    led.dispose()


def test_a_feed_of_2500_changes_is_read_in_shortened_windows_and_misses_none_of_ours(ledger: Ledger) -> None:
    start = NOW - timedelta(days=2)
    rows = [invoice_row(5000 + i, start + timedelta(seconds=30 * i)) for i in range(2500)]
    # Ours, at the start, past the first 1,000 and near the end: paid, voided, partially paid.
    rows[10] = invoice_row(11, start + timedelta(seconds=300), balance="0.00")
    rows[1800] = invoice_row(12, start + timedelta(seconds=30 * 1800), total="0.00", balance="0.00", note="Voided")
    rows[2490] = invoice_row(13, start + timedelta(seconds=30 * 2490), balance="40.00")
    for client, qbo_id in (("acme", "11"), ("beta", "12"), ("gamma", "13")):
        posted(ledger, client, qbo_id)
    feed = CdcFeed(rows)
    detection = Detection()
    cursor = {"Invoice": start.isoformat(), "Payment": NOW.isoformat()}
    poll = poll_cdc(ledger, feed, REALM, cursor, detection, now=lambda: NOW)
    [change_set] = detection.change_sets.values()
    assert change_set.invoice_ids == {"11", "12", "13"}
    invoice_reads = feed.reads[:-1]  # the last read is Payment's
    assert len(invoice_reads) == 3 and invoice_reads == sorted(invoice_reads)  # 1000 + 1000 + 500, shortened
    assert invoice_reads[1] == windows.parse_time(rows[999]["MetaData"]["LastUpdatedTime"])
    assert detection.not_ours == 2497 + 2  # the 2 boundary records are read twice
    assert windows.parse_time(poll.cursor["Invoice"]) == NOW - windows.OVERLAP
    assert poll.gap is None and not poll.overflow


def test_a_cursor_older_than_30_days_restarts_at_the_limit_and_reports_the_gap(ledger: Ledger) -> None:
    feed = CdcFeed([])
    old = (NOW - timedelta(days=40)).isoformat()
    poll = poll_cdc(ledger, feed, REALM, {"Invoice": old, "Payment": old}, Detection(), now=lambda: NOW)
    assert poll.gap is not None and poll.gap[0] == old
    assert all(read >= NOW - timedelta(days=30) for read in feed.reads)


def test_the_inbox_keeps_only_our_live_invoices_and_payments(ledger: Ledger) -> None:
    key = posted(ledger, "acme", "61")
    voided = posted(ledger, "beta", "62")
    ledger.record_voided(voided)

    def event(entity, entity_id, op, realm=REALM, at="2026-12-01T10:00:00Z"):
        return {"realm_id": realm, "entity": entity, "entity_id": entity_id, "operation": op, "occurred_at": at,
                "format": "legacy", "raw": {}}

    ledger.inbox_put("quickbooks", "a", event("Invoice", "61", "Update"))
    ledger.inbox_put("quickbooks", "b", event("Invoice", "61", "Update", at="2026-12-01T09:00:00Z"))  # late
    ledger.inbox_put("quickbooks", "c", event("Invoice", "62", "Void"))  # already voided in the ledger
    ledger.inbox_put("quickbooks", "d", event("Invoice", "999", "Update"))  # not ours
    ledger.inbox_put("quickbooks", "e", event("Payment", "70", "Create"))
    ledger.inbox_put("quickbooks", "f", event("Invoice", "61", "Update", realm="other-realm"))
    ledger.inbox_put("quickbooks", "g", {"realm_id": REALM, "entity": "Invoice"})  # malformed
    ledger.inbox_put("hubspot", "h", {"objectId": 1})  # another source: not drained here
    detection = Detection()
    drain_inbox(ledger, detection, realms=[REALM])
    [cs] = detection.change_sets.values()
    assert cs.invoice_ids == {"61"} and cs.payment_ids == {"70"}
    assert detection.not_ours == 2 and detection.already_known == 1
    assert len(detection.unreadable) == 1 and "payload has no entity_id, operation" in detection.unreadable[0]
    ids = {e.event_id: e.id for e in ledger.inbox_pending(source="quickbooks")}
    assert cs.inbox_ids == {ids["a"], ids["b"], ids["e"]}
    assert set(detection.done_inbox_ids) == {ids["c"], ids["d"], ids["f"], ids["g"]}
    # The run key is derived from the changes: the same events give the same key, one more event another.
    same = Detection()
    drain_inbox(ledger, same, realms=[REALM])
    assert same.change_sets[REALM].run_key() == cs.run_key()
    ledger.inbox_put("quickbooks", "i", event("Payment", "71", "Create"))
    more = Detection()
    drain_inbox(ledger, more, realms=[REALM])
    assert more.change_sets[REALM].run_key() != cs.run_key()
    assert ledger.get_invoice(key).status == "posted"  # detection records nothing


def test_a_backlog_longer_than_one_ticks_reads_continues_from_where_it_stopped(ledger: Ledger) -> None:
    start = NOW - timedelta(days=1)
    rows = [invoice_row(5000 + i, start + timedelta(seconds=10 * i)) for i in range(3500)]
    feed = CdcFeed(rows)
    cursor = {"Invoice": start.isoformat(), "Payment": NOW.isoformat()}
    first = poll_cdc(ledger, feed, REALM, cursor, Detection(), now=lambda: NOW, max_reads=2)
    assert not first.complete
    # two full reads: rows 0-999, then 999-1998 (the boundary record is read again)
    assert windows.parse_time(first.cursor["Invoice"]) == start + timedelta(seconds=10 * 1998)
    second = poll_cdc(ledger, feed, REALM, first.cursor, Detection(), now=lambda: NOW, max_reads=2)
    assert second.complete and windows.parse_time(second.cursor["Invoice"]) == NOW - windows.OVERLAP
