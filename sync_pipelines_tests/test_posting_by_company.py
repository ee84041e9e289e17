"""`post_document` posts each company's drafts with that company's client (DESIGN §5 "Many
QuickBooks companies"): one company refusing its token leaves its invoices FAILED with the
reconnect instruction and an alert naming the company, the other companies are posted; when
every company refuses, the step fails at once without retries. The end-to-end versions (real
HTTP, the sandbox's realms) are in test_company_months.py; here the posting protocol is replaced
so only the grouping is under test."""

from __future__ import annotations

from contextlib import contextmanager
from types import SimpleNamespace

import dagster as dg
import pytest

import sync_pipelines.defs.quickbooks.posting_outcomes as po
from sync_pipelines.connectors.quickbooks import QboReconnectRequired
from sync_pipelines.posting.company_drafts import company_batches
from sync_pipelines.posting.invoices import FAILED, PostingOutcome

US, UK = "1111", "2222"


def _invoice(client: str, realm: str, company: str, currency: str, status: str = "ready") -> dict:
    key = f"{realm}:{client}:2026-10:client:g1"
    return {"invoice_key": key, "client_key": client, "period": "2026-10", "group_key": "client", "generation": 1,
            "customer_name": client.title(), "currency": currency, "total": "100.00", "status": status,
            "hold_reasons": [] if status == "ready" else ["why"], "doc_number": "SP2610-X", "request_id": "r",
            "payload": {}, "entries": [], "company": company, "realm_id": realm, "home_currency": currency}


DOCUMENT = {"period": "2026-10", "realm_id": US, "home_currency": "USD", "company": None,
            "invoices": [_invoice("acme", US, "us", "USD"), _invoice("yorke", UK, "uk", "GBP"),
                         _invoice("zeta", US, "us", "USD")]}


class FakeQuickBooks:
    def __init__(self, refusing: set[str]):
        self.refusing = refusing
        self.realm_id = US
        self.batch_size, self.batches_in_flight = 30, 3  # QuickBooksResource's defaults

    @contextmanager
    def company_client(self, realm_id=None):
        yield SimpleNamespace(realm_id=realm_id, refusing=realm_id in self.refusing)


@pytest.fixture
def posted(monkeypatch):
    calls, alerts = [], []

    def fake_post(drafts, *, qbo, ledger, home_currency, claimant=None, claimant_alive=None, batch_size, concurrency):
        assert (batch_size, concurrency) == (30, 3)  # the resource's posting settings reach post_drafts
        if qbo.refusing:
            raise QboReconnectRequired(qbo.realm_id, "/oauth2/v1/tokens/bearer")
        calls.append((qbo.realm_id, home_currency, [d.client_key for d in drafts]))
        return [PostingOutcome(key=d.key, client_key=d.client_key, period=d.period, group_key=d.group_key,
                               outcome="posted", expected_total=d.expected_total, currency=d.currency) for d in drafts]

    monkeypatch.setattr(po, "post_drafts", fake_post)
    monkeypatch.setattr(po, "send", alerts.append)
    return calls, alerts


CONTEXT = SimpleNamespace(run=SimpleNamespace(run_id="run-1"), instance=None)
LEDGER = SimpleNamespace(open=lambda: None)


def test_drafts_are_grouped_by_company_with_its_realm_and_home_currency():
    batches = company_batches(DOCUMENT)
    assert [(b.company, b.realm_id, b.home_currency, [d.client_key for d in b.drafts]) for b in batches] == [
        ("us", US, "USD", ["acme", "zeta"]), ("uk", UK, "GBP", ["yorke"])]
    assert all(d.realm_id == b.realm_id for b in batches for d in b.drafts)


def test_each_company_is_posted_with_its_own_client(posted):
    calls, alerts = posted
    outcomes = po.post_document(CONTEXT, DOCUMENT, FakeQuickBooks(set()), LEDGER)
    assert calls == [(US, "USD", ["acme", "zeta"]), (UK, "GBP", ["yorke"])]
    assert {o.client_key: o.outcome for o in outcomes} == {"acme": "posted", "zeta": "posted", "yorke": "posted"}
    assert alerts == []


def test_a_company_refusing_its_token_fails_only_its_invoices(posted):
    calls, alerts = posted
    outcomes = po.post_document(CONTEXT, DOCUMENT, FakeQuickBooks({UK}), LEDGER)
    assert calls == [(US, "USD", ["acme", "zeta"])]
    by_client = {o.client_key: o for o in outcomes}
    assert by_client["acme"].outcome == "posted" and by_client["zeta"].outcome == "posted"
    assert by_client["yorke"].outcome == FAILED
    assert "company uk (realm 2222)" in by_client["yorke"].reasons[0]
    assert "qbo connect --company uk" in by_client["yorke"].reasons[0]
    (alert,) = alerts
    assert "company uk (realm 2222)" in alert.title and "acme" not in alert.text()
    # the step then fails through report_outcomes (its FAILED outcomes), after the others were posted
    with pytest.raises(dg.Failure):
        po.report_outcomes(SimpleNamespace(run=CONTEXT.run, log=SimpleNamespace(warning=print, info=print),
                                           retry_number=0), outcomes)


def test_every_company_refusing_fails_the_step_at_once(posted):
    calls, alerts = posted
    with pytest.raises(dg.Failure) as exc:
        po.post_document(CONTEXT, DOCUMENT, FakeQuickBooks({US, UK}), LEDGER)
    assert exc.value.allow_retries is False
    assert calls == [] and len(alerts) == 2
    assert {a.title for a in alerts} == {"QuickBooks must be reconnected: company us (realm 1111)",
                                         "QuickBooks must be reconnected: company uk (realm 2222)"}
