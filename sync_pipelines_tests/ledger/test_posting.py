"""begin_posting / record_* state machine, entries, history (SQLite file and PostgreSQL)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from sync_pipelines.posting.history import billing_history

from sync_pipelines import money
from sync_pipelines.ledger import Ledger, LedgerConflict, payload_hash

from .conftest import REALM, begin, draft, post


def test_new_key_is_recorded_pending_before_the_call(ledger: Ledger, migrated_url: str) -> None:
    d = draft()
    r = begin(ledger, d)
    assert r.action == "post" and r.should_post and r.attempt == 1
    assert r.request_id == d["request_id"] and r.doc_number == d["doc_number"]
    assert r.payload_json == money.dumps(d["payload"])
    # committed: another connection (another process) sees the pending row and its entries
    other = Ledger(migrated_url)
    try:
        rec = other.get_invoice(d["key"])
        assert rec is not None and rec.status == "pending"
        assert rec.payload_hash == payload_hash(d["payload"]) == r.payload_hash
        assert rec.expected_total == Decimal("1500.00") and str(rec.expected_total) == "1500.00"
        assert rec.entries == ((1001, 400, "pending"), (1002, 600, "pending"))
        assert rec.payload() == d["payload"]  # exact Decimals back
    finally:
        other.dispose()


def test_payload_is_exact_json(ledger: Ledger) -> None:
    d = draft(amount="0.10")
    d["payload"]["Line"][0]["Amount"] = Decimal("0.1000000000000000055511151231257827")
    begin(ledger, d)
    rec = ledger.get_invoice(d["key"])
    assert '"Amount": 0.1000000000000000055511151231257827' in rec.payload_json
    with pytest.raises(TypeError):
        bad = draft(client="other")
        bad["payload"]["Line"][0]["Amount"] = 0.1
        begin(ledger, bad)


def test_skip_posted_same_payload_any_key_order(ledger: Ledger) -> None:
    d = draft()
    posted = post(ledger, d)
    assert posted.total_matches and posted.entries_billed == 2
    again = draft()
    again["payload"] = dict(reversed(list(again["payload"].items())))
    r = begin(ledger, again)
    assert r.action == "skip_posted" and not r.should_post
    assert r.qbo_id == "130" and r.qbo_total_amt == Decimal("1500.00") and r.intuit_tid == "1-abc-tid"


def test_drift_is_recorded_never_reposted(ledger: Ledger) -> None:
    d = draft()
    post(ledger, d)
    changed = draft(amount="1650.00", entries=[(1001, 400), (1002, 600), (1003, 100)])
    r = begin(ledger, changed)
    assert r.action == "drift" and r.status == "drift"
    assert r.old_total == Decimal("1500.00") and r.new_total == Decimal("1650.00")
    rec = ledger.get_invoice(d["key"])
    assert rec.status == "drift" and rec.qbo_id == "130"
    assert rec.payload_hash == payload_hash(d["payload"])  # what QBO has is kept
    assert rec.drift_payload_hash == payload_hash(changed["payload"])
    assert rec.drift_expected_total == Decimal("1650.00")
    assert {e for e, _, s in rec.entries if s == "billed"} == {1001, 1002}  # posted entries stay billed
    assert begin(ledger, changed).action == "drift"  # still never re-posted
    # the original draft again: back to posted
    assert begin(ledger, draft()).action == "skip_posted"
    assert ledger.get_invoice(d["key"]).status == "posted"


def test_busy_then_resume_pending_after_a_crash(ledger: Ledger, clock) -> None:
    d = draft()
    assert begin(ledger, d).action == "post"
    # ... the process crashes here: no record_posted / record_failed
    r = begin(ledger, d)
    assert r.action == "busy" and 0 < r.retry_after_seconds <= 300
    clock.advance(301)
    r = begin(ledger, d)
    assert r.action == "resume_pending" and r.attempt == 1 and not r.payload_changed
    assert r.doc_number == d["doc_number"] and r.request_id == d["request_id"]
    # the caller looked the DocNumber up in QBO and found nothing: claim the retry
    r2 = begin(ledger, d, resume_attempt=r.attempt)
    assert r2.action == "post" and r2.attempt == 2
    # a second resumer with the stale attempt number does not get "post"
    assert begin(ledger, d, resume_attempt=1).action == "busy"


def test_resume_found_in_qbo_records_the_pending_payload(ledger: Ledger, clock) -> None:
    d = draft()
    begin(ledger, d)
    clock.advance(301)
    changed = draft(amount="1700.00")
    r = begin(ledger, changed)
    assert r.action == "resume_pending" and r.payload_changed
    # lookup found the invoice the crashed attempt created: record it (its payload is the stored one)
    res = ledger.record_posted(d["key"], qbo_id="131", sync_token="0", qbo_doc_number=d["doc_number"],
                               qbo_total_amt=Decimal("1500.00"))
    assert res.total_matches
    assert begin(ledger, d).action == "skip_posted"
    assert begin(ledger, changed).action == "drift"


def test_failed_key_is_resumed_with_a_lookup(ledger: Ledger) -> None:
    d = draft()
    begin(ledger, d)
    assert ledger.record_failed(d["key"], "400 ValidationFault: Invalid Reference Id (Authorization: Bearer eyJabcdefgh.eyJabcdefgh.sig)")
    rec = ledger.get_invoice(d["key"])
    assert rec.status == "failed" and "eyJ" not in rec.last_error and "Invalid Reference Id" in rec.last_error
    assert {s for _, _, s in rec.entries} == {"pending"}
    assert ledger.history(REALM).billed_entries == {}
    r = begin(ledger, d)
    assert r.action == "resume_pending" and r.status == "failed"
    assert begin(ledger, d, resume_attempt=r.attempt).action == "post"
    assert not ledger.record_failed("no-such-key", "x")


def test_entries_billed_only_when_posted(ledger: Ledger) -> None:
    d = draft()
    begin(ledger, d)
    assert ledger.history(REALM).billed_entries == {}
    res = ledger.record_posted(d["key"], qbo_id="130", sync_token="0", qbo_doc_number=d["doc_number"],
                               qbo_total_amt=Decimal("1500.00"), intuit_tid="tid")
    assert res.entries_billed == 2
    assert ledger.history(REALM).billed_entries == {1001: d["key"], 1002: d["key"]}


def test_total_mismatch_is_flagged(ledger: Ledger) -> None:
    d = draft()
    res = post(ledger, d, total="1500.01")
    assert not res.total_matches and res.qbo_total_amt == Decimal("1500.01")
    rec = ledger.get_invoice(d["key"])
    assert rec.status == "posted" and rec.total_mismatch and "1500.01" in rec.last_error
    # 1500.0 == 1500.00 is a match (exact Decimal comparison, not text)
    d2 = draft(client="beta", entries=[(2001, 100)])
    assert post(ledger, d2, total="1500.0").total_matches


def test_record_posted_idempotent_and_conflict(ledger: Ledger) -> None:
    d = draft()
    post(ledger, d)
    again = ledger.record_posted(d["key"], qbo_id="130", sync_token="1", qbo_doc_number=None,
                                 qbo_total_amt=Decimal("1500.00"))
    assert again.already_posted and again.entries_billed == 2
    with pytest.raises(LedgerConflict):
        ledger.record_posted(d["key"], qbo_id="999", sync_token="0", qbo_doc_number=None,
                             qbo_total_amt=Decimal("1500.00"))
    assert "999" in ledger.get_invoice(d["key"]).last_error


def test_entries_billed_elsewhere_hold_the_draft(ledger: Ledger) -> None:
    post(ledger, draft(group="all"))
    other = draft(group="proj-2", entries=[(1002, 600), (2001, 100)])
    r = begin(ledger, other)
    assert r.action == "held" and r.conflicting_entries == {1002: draft()["key"]}
    rec = ledger.get_invoice(other["key"])
    assert rec.status == "held" and rec.attempts == 0 and "1002" in rec.hold_reasons[0]
    # once the draft no longer carries the entry it can be posted (held never reached QBO)
    fixed = draft(group="proj-2", entries=[(2001, 100)])
    assert begin(ledger, fixed).action == "post"


def test_record_held(ledger: Ledger) -> None:
    d = draft()
    status = ledger.record_held(
        d["key"], reasons=["no rate for Jane Doe / Design", "token=abcdef123456 leaked"], payload=d["payload"],
        realm_id=REALM, client_key="acme", period="2026-10", group_key="all", generation=1,
        expected_total=Decimal("1500.00"), currency="USD", entries=d["entries"],
    )
    assert status == "held"
    rec = ledger.get_invoice(d["key"])
    assert rec.hold_reasons[0] == "no rate for Jane Doe / Design" and "abcdef123456" not in rec.hold_reasons[1]
    with pytest.raises(ValueError):
        ledger.record_held("new-key", reasons=["x"], payload={})
    assert begin(ledger, d).action == "post"  # a held draft that never reached QBO posts normally
    ledger.record_posted(d["key"], qbo_id="1", sync_token="0", qbo_doc_number=None, qbo_total_amt=Decimal("1500.00"))
    assert ledger.record_held(d["key"], reasons=["late"], payload=d["payload"]) == "posted"


def test_void_and_next_generation(ledger: Ledger) -> None:
    d = draft()
    post(ledger, d)
    assert ledger.next_generation(REALM, "acme", "2026-10", "all") == 2
    assert ledger.history(REALM).generations == {("acme", "2026-10", "all"): 1}
    assert ledger.record_voided(d["key"]) and not ledger.record_voided(d["key"])
    r = begin(ledger, d)
    assert r.action == "voided" and r.next_generation == 2
    h = ledger.history(REALM)
    assert h.generations == {("acme", "2026-10", "all"): 2}
    assert h.billed_entries == {} and h.posted_totals == {}
    g2 = draft(generation=2)
    assert g2["key"].endswith(":g2") and g2["request_id"] != d["request_id"]
    post(ledger, g2, qbo_id="140")
    h = ledger.history(REALM)
    assert h.billed_entries == {1001: g2["key"], 1002: g2["key"]}
    assert h.generations == {("acme", "2026-10", "all"): 2}
    rec = ledger.find_by_qbo_id(REALM, "130")
    assert rec is not None and rec.status == "voided"


def test_history_contents(ledger: Ledger) -> None:
    a_sep = draft("acme", "2026-09", amount="1000.00", entries=[(1, 100)])
    a_oct = draft("acme", "2026-10", amount="1500.00", entries=[(2, 200), (3, 300)])
    a_oct_p = draft("acme", "2026-10", group="proj", amount="200.50", entries=[(4, 50)])
    b_oct = draft("beta", "2026-10", amount="99.99", entries=[(5, 25)])
    pend = draft("gamma", "2026-10", amount="10.00", entries=[(6, 10)])
    for d in (a_sep, a_oct, a_oct_p, b_oct):
        post(ledger, d)
    begin(ledger, pend)  # pending: not billed, not posted
    h = ledger.history(REALM)
    assert h.billed_entries == {1: a_sep["key"], 2: a_oct["key"], 3: a_oct["key"], 4: a_oct_p["key"], 5: b_oct["key"]}
    assert h.posted_totals == {("acme", "2026-09"): Decimal("1000.00"), ("acme", "2026-10"): Decimal("1700.50"),
                               ("beta", "2026-10"): Decimal("99.99")}
    assert h.posted_by_key[a_oct_p["key"]] == ("acme", "2026-10", Decimal("200.50"))
    assert h.billed_centi == {("acme", "2026-09"): 100, ("acme", "2026-10"): 550, ("beta", "2026-10"): 25}
    assert h.generations == {("acme", "2026-09", "all"): 1, ("acme", "2026-10", "all"): 1,
                             ("acme", "2026-10", "proj"): 1, ("beta", "2026-10", "all"): 1,
                             ("gamma", "2026-10", "all"): 1}
    only = ledger.history(REALM, ["beta"], "2026-10")
    assert only.posted_totals == {("beta", "2026-10"): Decimal("99.99")}
    assert only.generations == {("beta", "2026-10", "all"): 1}
    assert len(only.billed_entries) == 5  # billed entries span the realm (never bill twice)
    assert ledger.history(REALM, entry_ids=[2, 5, 77]).billed_entries == {2: a_oct["key"], 5: b_oct["key"]}
    assert ledger.history("other-realm").billed_entries == {}


def test_status_listing(ledger: Ledger) -> None:
    post(ledger, draft("acme", "2026-10"))
    post(ledger, draft("beta", "2026-10", entries=[(2001, 100)]))
    begin(ledger, draft("acme", "2026-11", entries=[(3001, 100)]))
    rows = ledger.status()
    assert [(r.client_key, r.period, r.status) for r in rows] == [
        ("acme", "2026-10", "posted"), ("beta", "2026-10", "posted"), ("acme", "2026-11", "pending")
    ]
    assert [r.client_key for r in ledger.status(period="2026-10")] == ["acme", "beta"]
    assert [r.period for r in ledger.status(client="acme")] == ["2026-10", "2026-11"]
    assert [r.status for r in ledger.status(statuses=["pending"])] == ["pending"]
    assert ledger.get_invoice("nope") is None


def test_writebacks_and_inbox(ledger: Ledger) -> None:
    d = draft()
    begin(ledger, d)
    assert ledger.enqueue_writeback(d["key"], "8805", {"qbo_invoice_id": "130", "amount": Decimal("1500.00")}) == "pending"
    assert ledger.pending_writebacks() == []  # only once the invoice is posted
    ledger.record_posted(d["key"], qbo_id="130", sync_token="0", qbo_doc_number=None, qbo_total_amt=Decimal("1500.00"))
    [wb] = ledger.pending_writebacks()
    assert wb.properties() == {"qbo_invoice_id": "130", "amount": Decimal("1500.00")}
    ledger.record_writeback(d["key"], "8805", ok=False, error="503 Service Unavailable")
    [wb] = ledger.pending_writebacks()
    assert wb.status == "failed" and wb.attempts == 1
    ledger.record_writeback(d["key"], "8805", ok=True)
    assert ledger.pending_writebacks() == []
    assert ledger.enqueue_writeback(d["key"], "8805", {"x": 1}) == "done"

    assert ledger.inbox_put("hubspot", "evt-1", {"objectId": 8805})
    assert not ledger.inbox_put("hubspot", "evt-1", {"objectId": 8805})
    assert ledger.inbox_put("intuit", "evt-1", {"id": "130"})
    pending = ledger.inbox_pending()
    assert [(e.source, e.event_id) for e in pending] == [("hubspot", "evt-1"), ("intuit", "evt-1")]
    assert ledger.inbox_mark_processed([pending[0].id]) == 1
    assert [e.source for e in ledger.inbox_pending()] == ["intuit"]


def test_billing_facts_and_billing_history(ledger: Ledger) -> None:
    from sync_pipelines.billing.history import BillingHistory

    sep = draft("ret", "2026-09", amount="6000.00", entries=[(1, 3000)])
    sep_b = draft("ret", "2026-09", group="proj-7", amount="10.00", entries=[(2, 10)])
    oct_ = draft("ret", "2026-10", amount="6000.00", entries=[(3, 100)])
    for d, carry in ((sep, "10.00"), (sep_b, "10.00"), (oct_, "5.50")):
        k = d.pop("key")
        r = ledger.begin_posting(k, **d, project_totals={77: Decimal("6000.00"), 78: Decimal("0.10")},
                                 carry_forward_hours=Decimal(carry))
        assert r.action == "post"
        ledger.record_posted(k, qbo_id=k[-12:], sync_token="0", qbo_doc_number=None,
                             qbo_total_amt=d["expected_total"])
        d["key"] = k
    rec = ledger.get_invoice(sep["key"])
    assert rec.project_totals == {77: Decimal("6000.00"), 78: Decimal("0.10")}
    assert rec.carry_forward_hours == Decimal("10.00")
    h = ledger.history(REALM, ["ret"], "2026-10")
    assert h.carryover_hours == {"ret": Decimal("10.00")}  # from September, not summed over invoices
    assert ledger.history(REALM, ["ret"], "2026-11").carryover_hours == {"ret": Decimal("5.50")}
    assert ledger.history(REALM, ["ret"]).carryover_hours == {}
    assert h.project_totals[oct_["key"]] == {77: Decimal("6000.00"), 78: Decimal("0.10")}
    bh = billing_history(h)
    assert isinstance(bh, BillingHistory)
    assert bh.posted_entries == {1: sep["key"], 2: sep_b["key"], 3: oct_["key"]}
    assert bh.posted_total("ret", "2026-09") == Decimal("6010.00")
    assert bh.posted_total("ret", "2026-10", exclude_keys=[oct_["key"]]) == Decimal(0)
    assert bh.posted_project_total("ret", 77) == Decimal("18000.00")
    assert bh.generation("ret", "2026-10", "all") == 1 and bh.carryover_hours == {"ret": Decimal("10.00")}
    assert ledger.history(REALM, ["ret"], "2026-01").carryover_hours == {}  # previous period 2025-12


def test_quickbooks_tax_is_recorded_and_only_a_pre_tax_difference_is_a_mismatch(ledger: Ledger) -> None:
    d = draft()  # expected_total 1500.00, pre-tax
    begin(ledger, d)
    r = ledger.record_posted(d["key"], qbo_id="91", sync_token="0", qbo_doc_number=d["doc_number"],
                             qbo_total_amt=Decimal("1800.00"), qbo_total_tax=Decimal("300.00"))
    assert r.total_matches and r.qbo_total_tax == Decimal("300.00")
    rec = ledger.get_invoice(d["key"])
    assert not rec.total_mismatch and rec.qbo_total_tax == Decimal("300.00") and rec.qbo_total_amt == Decimal("1800.00")
    again = begin(ledger, d)
    assert again.action == "skip_posted" and again.qbo_total_tax == Decimal("300.00") and not again.total_mismatch

    short = draft(client="other")
    begin(ledger, short)
    r = ledger.record_posted(short["key"], qbo_id="92", sync_token="0", qbo_doc_number=short["doc_number"],
                             qbo_total_amt=Decimal("1790.00"), qbo_total_tax=Decimal("300.00"))
    assert not r.total_matches
    assert ledger.get_invoice(short["key"]).last_error == (
        "pre-tax total mismatch: QuickBooks 1490.00 (TotalAmt 1790.00, tax 300.00), ours 1500.00")

    inclusive = draft(client="incl")
    begin(ledger, inclusive)
    r = ledger.record_posted(inclusive["key"], qbo_id="93", sync_token="0", qbo_doc_number=inclusive["doc_number"],
                             qbo_total_amt=Decimal("1500.00"), qbo_total_tax=Decimal("250.00"), tax_inclusive=True)
    assert r.total_matches  # the amounts contain the tax: TotalAmt is what we sent
