"""What posting stores in the ledger comes back into the next month's pricing: retainer hours
rolled over, and time charged per project for a deal's lifetime not-to-exceed cap."""

from __future__ import annotations

from decimal import Decimal as D

from sync_pipelines.billing import BillingHistory, price_month
from sync_pipelines.ledger import Ledger
from sync_pipelines.posting.drafts import drafts_document, posting_drafts
from sync_pipelines.posting.history import billing_history
from sync_pipelines_tests.billing.helpers import catalog_frame, deal, deals_frame, entries_frame, entry, rules_for

RETAINER = """\
  acme:
    harvest_client_id: 1001
    qbo_customer: "Acme Corp"
    currency: USD
    billing_type: retainer
    rates: [{rate: 150.00}]
    rounding: {increment_minutes: 0}
    retainer: {fee: 6000.00, included_hours: 40, overage_rate: 165.00, rollover: true}
"""

REALM = "9130"


def _post_all(ledger: Ledger, result, entries) -> None:
    """Record every draft as posted, the way the posting step does after QuickBooks confirms."""
    for n, draft in enumerate(posting_drafts(drafts_document(result, entries)), start=1):
        begin = ledger.begin_posting(
            draft.key, **draft.ledger_fields(), payload={**draft.payload, "CustomerRef": {"value": "1"}},
            project_totals=draft.project_totals, carry_forward_hours=draft.carry_forward_hours,
        )
        assert begin.action == "post"
        ledger.record_posted(draft.key, qbo_id=str(n), sync_token="0", qbo_doc_number=draft.doc_number,
                             qbo_total_amt=draft.expected_total)


def test_unused_retainer_hours_roll_over_into_next_month_through_the_ledger(tmp_path) -> None:
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    ledger.migrate()
    rules = rules_for(RETAINER)
    # 10 of 40 included hours unused (entries stay under 24 h each: longer ones are not billed)
    september = entries_frame([entry(1, "2026-09-10", "15.00"), entry(3, "2026-09-11", "15.00")])
    first = price_month(rules, "2026-09", september, deals_frame(), catalog_frame(), BillingHistory(), REALM)
    assert first.invoices.iloc[0]["retainer_carry_forward_hours"] == D("10.00")
    _post_all(ledger, first, september)

    history = billing_history(ledger.history(REALM, ["acme"], "2026-10"))
    assert history.carryover_hours == {"acme": D("10.00")}
    october = entries_frame([entry(2, "2026-10-05", "20.00"), entry(4, "2026-10-06", "15.00"),
                             entry(5, "2026-10-07", "10.00")])
    second = price_month(rules, "2026-10", october, deals_frame(), catalog_frame(), history, REALM)
    inv = second.invoices.iloc[0]
    assert inv["retainer_included_hours"] == D("50.00")
    assert inv["total"] == D("6000.00")  # 45 h within 40 + 10 rolled over: no overage


def test_a_deal_lifetime_cap_counts_what_earlier_months_posted(tmp_path) -> None:
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    ledger.migrate()
    rules = rules_for("""\
  acme:
    harvest_client_id: 1001
    qbo_customer: "Acme Corp"
    currency: USD
    rates: [{rate: 100.00}]
    rounding: {increment_minutes: 0}
""")
    deals = deals_frame([deal("8805", 4001, nte="1500.00")])
    september = entries_frame([entry(1, "2026-09-10", "10.00", project=4001)])
    first = price_month(rules, "2026-09", september, deals, catalog_frame(), BillingHistory(), REALM)
    assert first.invoices.iloc[0]["total"] == D("1000.00")
    _post_all(ledger, first, september)

    history = billing_history(ledger.history(REALM, ["acme"], "2026-10"))
    october = entries_frame([entry(2, "2026-10-05", "10.00", project=4001)])
    second = price_month(rules, "2026-10", october, deals, catalog_frame(), history, REALM)
    inv = second.invoices.iloc[0]
    assert inv["total"] == D("500.00")  # 1500 lifetime cap - 1000 already posted
    assert inv["write_down"] == D("500.00")
