"""CRM write-back (DESIGN §6): its own ledgered step, only after QuickBooks confirmed the invoice,
retried until done; a held or failed invoice never reaches the CRM."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pandas as pd
import pytest

from sync_pipelines.connectors.factory import hubspot_from_env, quickbooks_from_env
from sync_pipelines.connectors.http import ApiError, ApiValidationError
from sync_pipelines.ledger import Ledger
from sync_pipelines.posting.drafts import posting_drafts
from sync_pipelines.posting.invoices import post_drafts
from sync_pipelines.posting.writeback import (
    READY_FOR_BILLING_STAGE,
    deal_targets,
    drain_writebacks,
    enqueue_writebacks,
    plan_writebacks,
)
from sync_pipelines.sandbox import SandboxServer, generate_fixture
from sync_pipelines_tests import _sandbox_month as sm

PERIOD = "2026-10"


def _deals(rows: list[dict[str, Any]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["deal_id", "dealstage", "harvest_project_id", "company_id"])
    frame["harvest_project_id"] = frame["harvest_project_id"].astype("Int64")
    return frame


def test_deals_linked_to_the_invoices_projects_are_the_targets() -> None:
    deals = _deals([
        {"deal_id": "1", "dealstage": "closedwon", "harvest_project_id": 100, "company_id": "7"},
        {"deal_id": "2", "dealstage": "closedwon", "harvest_project_id": 200, "company_id": "7"},
        {"deal_id": "3", "dealstage": READY_FOR_BILLING_STAGE, "harvest_project_id": None, "company_id": "7"},
    ])
    assert deal_targets([100], deals, "7") == [("1", "project 100")]
    # No linked deal: the client's company deal waiting in the ready-for-billing stage.
    assert deal_targets([999], deals, "7") == [("3", f"company 7, stage {READY_FOR_BILLING_STAGE}")]
    assert deal_targets([999], deals, None) == []
    assert deal_targets([999], deals, "8") == []
    assert deal_targets([100], deals.iloc[0:0], "7") == []


@pytest.fixture(scope="module")
def sandbox() -> Iterator[tuple[SandboxServer, str]]:
    fixture, rules_yaml = generate_fixture(clients=4, entries=60, seed=21, month=PERIOD)
    with SandboxServer(fixture, rate_limits=None, rotate_refresh_tokens="never") as sb:
        yield sb, rules_yaml


@pytest.fixture
def posted(sandbox, tmp_path) -> Iterator[tuple[Ledger, sm.Month, dict[str, str], list[Any]]]:
    sb, rules_yaml = sandbox
    sb.reset()
    env = sb.env()
    ledger = Ledger(f"sqlite:///{tmp_path}/ledger.db")
    ledger.migrate()
    month = sm.price(env, rules_yaml, PERIOD, ledger)
    with quickbooks_from_env(ledger.tokens, env, audit=ledger) as qbo:
        outcomes = post_drafts(posting_drafts(month.drafts), qbo=qbo, ledger=ledger, home_currency="USD")
    try:
        yield ledger, month, env, outcomes
    finally:
        ledger.dispose()


def test_confirmed_invoices_write_their_id_to_the_linked_deals(posted) -> None:
    ledger, month, env, outcomes = posted
    assert {o.outcome for o in outcomes} == {"posted"}
    keys = [o.key for o in outcomes]
    planned = enqueue_writebacks(ledger, keys, month.entry_projects, month.deals, month.company_ids)
    assert planned and all(p.why.startswith("project ") for p in planned)
    assert {r["status"] for r in sm.writeback_rows(ledger)} == {"pending"}
    with hubspot_from_env(env, audit=ledger) as hubspot:
        results = drain_writebacks(ledger, hubspot, keys)
        assert [r.status for r in results] == ["done"] * len(planned)
        assert drain_writebacks(ledger, hubspot, keys) == []  # nothing left to do
    props = sm.deal_properties(env, [p.deal_id for p in planned])
    for p in planned:
        record = ledger.get_invoice(p.key)
        assert props[p.deal_id]["qbo_invoice_id"] == record.qbo_id
        assert props[p.deal_id]["qbo_invoice_number"] == record.qbo_doc_number
        assert props[p.deal_id]["billed_through"] == "2026-10-31"
        assert props[p.deal_id]["billing_status"] == "invoiced"
    # Enqueueing again (every run does) leaves done write-backs done.
    enqueue_writebacks(ledger, keys, month.entry_projects, month.deals, month.company_ids)
    assert {r["status"] for r in sm.writeback_rows(ledger)} == {"done"}
    assert ledger.pending_writebacks() == []


def test_a_held_or_failed_invoice_never_enqueues(posted) -> None:
    ledger, month, env, outcomes = posted
    held_key, failed_key = "R:held:2026-10:all:g1", "R:failed:2026-10:all:g1"
    project_entry = next(iter(month.entry_projects))
    ledger.record_held(held_key, reasons=["no rate"], payload={"Line": []}, realm_id="R", client_key="held",
                       period=PERIOD, group_key="all", generation=1, entries=[(10**9, 100)])
    r = ledger.begin_posting(failed_key, realm_id="R", client_key="failed", period=PERIOD, group_key="all",
                             generation=1, payload={"Line": []}, expected_total=Decimal("1"), currency="USD",
                             request_id="rid-failed", doc_number="SP2610-FAILED", entries=[(10**9 + 1, 100)])
    assert r.action == "post"
    ledger.record_failed(failed_key, "QuickBooks unavailable")
    # Even with a deal linked to their projects and a company deal ready for billing.
    deals = pd.concat([month.deals, _deals([{"deal_id": "99", "dealstage": READY_FOR_BILLING_STAGE,
                                             "harvest_project_id": None, "company_id": "C"}])])
    projects = {**month.entry_projects, 10**9: month.entry_projects[project_entry],
                10**9 + 1: month.entry_projects[project_entry]}
    for key in (held_key, failed_key):
        record = ledger.get_invoice(key)
        assert plan_writebacks(record, projects, deals, "C") == []
    assert enqueue_writebacks(ledger, [held_key, failed_key], projects, deals, {"held": "C", "failed": "C"}) == []
    assert sm.writeback_rows(ledger) == []


class FlakyHubSpot:
    """update_deal fails `failures` times (an outage that outlasted the connector's retries)."""

    def __init__(self, inner: Any, failures: int, error: Exception) -> None:
        self.inner, self.failures, self.error = inner, failures, error
        self.ensured: list[str] = []

    def update_deal(self, deal_id: str, properties: dict[str, str]) -> Any:
        if self.failures > 0:
            self.failures -= 1
            raise self.error
        return self.inner.update_deal(deal_id, properties)

    def ensure_deal_property(self, name: str, *a: Any, **kw: Any) -> bool:
        self.ensured.append(name)
        return False


def test_a_failed_write_back_is_recorded_and_retried_until_done(posted) -> None:
    ledger, month, env, outcomes = posted
    keys = [o.key for o in outcomes]
    planned = enqueue_writebacks(ledger, keys, month.entry_projects, month.deals, month.company_ids)
    outage = ApiError("hubspot", "PATCH", "/crm/v3/objects/deals/1", 503, api_message="Service Unavailable")
    with hubspot_from_env(env) as real:
        flaky = FlakyHubSpot(real, failures=len(planned) + 1, error=outage)
        first = drain_writebacks(ledger, flaky, keys)
        assert {r.status for r in first} == {"failed"}
        rows = sm.writeback_rows(ledger)
        assert {r["status"] for r in rows} == {"failed"} and all(r["attempts"] == 1 for r in rows)
        assert all("503" in (r["last_error"] or "") for r in rows)
        assert len(ledger.pending_writebacks()) == len(planned)
        second = drain_writebacks(ledger, flaky, keys)  # one more failure, then the rest go through
        assert sorted(r.status for r in second) == ["done"] * (len(planned) - 1) + ["failed"]
        third = drain_writebacks(ledger, flaky, keys)
        assert [r.status for r in third] == ["done"]
    assert {r["status"] for r in sm.writeback_rows(ledger)} == {"done"}


def test_a_missing_deal_property_is_created_then_written(posted) -> None:
    ledger, month, env, outcomes = posted
    keys = [o.key for o in outcomes]
    planned = enqueue_writebacks(ledger, keys, month.entry_projects, month.deals, month.company_ids)
    missing = ApiValidationError("hubspot", "PATCH", "/crm/v3/objects/deals/1", 400, code="PROPERTY_DOESNT_EXIST",
                                 api_message="Property values were not valid")
    with hubspot_from_env(env) as real:
        flaky = FlakyHubSpot(real, failures=1, error=missing)
        results = drain_writebacks(ledger, flaky, keys)
    assert [r.status for r in results] == ["done"] * len(planned)
    assert flaky.ensured == ["qbo_invoice_id", "qbo_invoice_number", "billed_through", "billing_status", "amount_paid"]
