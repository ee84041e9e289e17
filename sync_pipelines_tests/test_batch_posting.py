"""Batch posting (DESIGN §6, §11) against the sandbox over real HTTP: bIds and batch requestids,
every item's ledger row before its batch, per-item faults item by item, lost batches resumed."""

from __future__ import annotations

import dataclasses
import signal
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from sync_pipelines import money, stopping
from sync_pipelines.connectors.factory import quickbooks_from_env
from sync_pipelines.connectors.http import ApiUnavailable, RetryPolicy
from sync_pipelines.connectors.quickbooks import BATCH_MAX_ITEMS
from sync_pipelines.ledger import Ledger
from sync_pipelines.ledger.base import payload_hash
from sync_pipelines.posting.batches import batch_item_id, batch_request_id
from sync_pipelines.posting.drafts import PostingDraft, posting_drafts
from sync_pipelines.posting.invoices import post_drafts
from sync_pipelines.sandbox import SandboxServer, generate_fixture
from sync_pipelines_tests import _sandbox_month as sm

PERIOD = "2026-10"


def test_bid_is_ten_characters_derived_from_the_key() -> None:
    keys = [f"9130:client-{i}:{PERIOD}:default:g1" for i in range(2000)]
    bids = [batch_item_id(k) for k in keys]
    assert all(len(b) == 10 for b in bids)
    assert len(set(bids)) == len(bids)
    assert batch_item_id(keys[0]) == batch_item_id(str(keys[0]))  # deterministic
    assert batch_item_id(keys[0].replace("g1", "g2")) != bids[0]


def test_batch_request_id_follows_the_items_not_their_order() -> None:
    a = batch_request_id(["r1", "r2", "r3"])
    assert len(a) == 36
    assert a == batch_request_id(["r3", "r1", "r2"])
    assert a != batch_request_id(["r1", "r2"])
    assert a != batch_request_id(["r1", "r2", "r3#attempt2"])


class Recording:
    """A QuickBooks client that checks, at every invoice batch, that each item's ledger row is
    already pending with the exact payload (hash) it carries -- and counts the calls."""

    def __init__(self, inner: Any, ledger: Ledger, keys: list[str]) -> None:
        self._inner, self.ledger = inner, ledger
        self.by_bid = {batch_item_id(k): k for k in keys}
        self.batches: list[tuple[str, int]] = []
        self.single_creates = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def create_invoice(self, payload: dict[str, Any], request_id: str) -> dict[str, Any]:
        self.single_creates += 1
        return self._inner.create_invoice(payload, request_id)

    def batch(self, items: list[dict[str, Any]], request_id: str | None = None) -> dict[str, Any]:
        kinds = {k for item in items for k in item if k in ("Invoice", "Customer", "Query")}
        self.batches.append(("+".join(sorted(kinds)), len(items)))
        for item in items:
            if "Invoice" in item:
                record = self.ledger.get_invoice(self.by_bid[item["bId"]])
                assert record is not None and record.status == "pending", item["bId"]
                assert record.payload_hash == payload_hash(item["Invoice"])
                assert money.loads(record.payload_json) == item["Invoice"]
        return self._inner.batch(items, request_id)


@dataclasses.dataclass
class World:
    sb: SandboxServer
    env: dict[str, str]
    ledger: Ledger
    drafts: list[PostingDraft]


@pytest.fixture(scope="module")
def month_of_34() -> Iterator[tuple[SandboxServer, str]]:
    # 34 clients (the last has no rules): 33 invoices, more than one batch of 30.
    fixture, rules_yaml = generate_fixture(clients=34, entries=340, seed=5, month=PERIOD)
    with SandboxServer(fixture, rate_limits="real", rotate_refresh_tokens="never") as sb:
        yield sb, rules_yaml


@pytest.fixture
def world(month_of_34, tmp_path) -> Iterator[World]:
    sb, rules_yaml = month_of_34
    sb.reset()
    sb.set_faults("quickbooks")
    ledger = Ledger(f"sqlite:///{tmp_path}/ledger.db")
    ledger.migrate()
    month = sm.price(sb.env(), rules_yaml, PERIOD, ledger)
    try:
        yield World(sb, sb.env(), ledger, [d for d in posting_drafts(month.drafts) if d.status == "ready"])
    finally:
        ledger.dispose()


def _post(w: World, drafts: list[PostingDraft], **kw: Any) -> tuple[list[Any], Recording]:
    with quickbooks_from_env(w.ledger.tokens, w.env, audit=w.ledger, retry=RetryPolicy.fast()) as qbo:
        rec = Recording(qbo, w.ledger, [d.key for d in drafts])
        return post_drafts(drafts, qbo=rec, ledger=w.ledger, home_currency="USD", **kw), rec


def _invoices_by_doc(w: World) -> Counter:
    return Counter(inv.get("DocNumber") for inv in w.sb.state()["quickbooks"]["invoices"])


def test_a_month_posts_in_batches_of_30_ledger_rows_first(world: World) -> None:
    assert len(world.drafts) > BATCH_MAX_ITEMS
    outcomes, rec = _post(world, world.drafts)
    assert [o.key for o in outcomes] == [d.key for d in world.drafts]  # the drafts' order
    assert Counter(o.outcome for o in outcomes) == {"posted": len(world.drafts)}
    assert all(o.total_matches for o in outcomes)
    invoice_batches = [n for kind, n in rec.batches if kind == "Invoice"]
    # Two batches in the air at once, each filled from the shared list: 33 invoices in 2 calls.
    assert sum(invoice_batches) == len(world.drafts) and max(invoice_batches) <= 30
    assert len(invoice_batches) == 2
    customer_batches = [n for kind, n in rec.batches if kind == "Customer"]
    assert sum(customer_batches) > 0 and max(customer_batches) <= 30  # new customers, in batches
    assert rec.single_creates == 0
    docs = _invoices_by_doc(world)
    assert all(docs[d.doc_number] == 1 for d in world.drafts)
    assert sum(docs.values()) == len(world.drafts)
    again, rec2 = _post(world, world.drafts)
    assert Counter(o.outcome for o in again) == {"already_posted": len(world.drafts)}
    assert not [b for b in rec2.batches if b[0] == "Invoice"] and sum(_invoices_by_doc(world).values()) == len(world.drafts)


def test_one_bad_invoice_never_holds_its_batch_mates(world: World) -> None:
    bad = world.drafts[3]
    lines = [dict(line) for line in bad.payload["Line"]]
    detail = dict(lines[0]["SalesItemLineDetail"])
    detail["ItemRef"] = {"value": "987654"}  # no such item: QuickBooks refuses this one invoice
    lines[0]["SalesItemLineDetail"] = detail
    drafts = list(world.drafts)
    drafts[3] = dataclasses.replace(bad, payload={**bad.payload, "Line": lines})
    outcomes, rec = _post(world, drafts)
    by_key = {o.key: o for o in outcomes}
    assert by_key[bad.key].outcome == "held"
    assert "QuickBooks rejected the invoice" in by_key[bad.key].reasons[0]
    assert Counter(o.outcome for o in outcomes) == {"posted": len(drafts) - 1, "held": 1}
    assert world.ledger.get_invoice(bad.key).status == "held"
    assert bad.doc_number not in _invoices_by_doc(world)


class LosingAnswers(Recording):
    """QuickBooks runs the invoice batch, and its answer never arrives (connection cut, 502)."""

    def batch(self, items: list[dict[str, Any]], request_id: str | None = None) -> dict[str, Any]:
        answers = super().batch(items, request_id)
        if any("Invoice" in item for item in items):
            raise ApiUnavailable("quickbooks", "POST", "/v3/company/x/batch", 502, api_message="lost answer")
        return answers


def test_a_lost_batch_answer_resumes_by_lookup_without_duplicates(world: World) -> None:
    with quickbooks_from_env(world.ledger.tokens, world.env, audit=world.ledger, retry=RetryPolicy.fast()) as qbo:
        first = post_drafts(world.drafts[:5], qbo=LosingAnswers(qbo, world.ledger, [d.key for d in world.drafts]),
                            ledger=world.ledger, home_currency="USD")
    assert {o.outcome for o in first} == {"failed"}
    assert {world.ledger.get_invoice(d.key).status for d in world.drafts[:5]} == {"failed"}
    assert sum(_invoices_by_doc(world).values()) == 5  # they exist in QuickBooks, unconfirmed
    again, rec = _post(world, world.drafts)
    by_key = {o.key: o.outcome for o in again}
    assert {by_key[d.key] for d in world.drafts[:5]} == {"recovered"}
    assert Counter(by_key.values()) == {"recovered": 5, "posted": len(world.drafts) - 5}
    sent = [n for kind, n in rec.batches if kind == "Invoice"]
    assert sum(sent) == len(world.drafts) - 5 and max(sent) <= 30  # the recovered ones are not re-sent
    docs = _invoices_by_doc(world)
    assert all(docs[d.doc_number] == 1 for d in world.drafts) and sum(docs.values()) == len(world.drafts)


def test_transient_item_faults_are_re_sent_in_the_same_run(world: World) -> None:
    # A 429 on a whole batch call is retried by the connector; the run ends with every invoice
    # posted once even when a quarter of all QuickBooks calls are throttled.
    world.sb.set_faults("quickbooks", rate_429=0.25, seed=7)
    outcomes, _ = _post(world, world.drafts)
    world.sb.set_faults("quickbooks")
    assert Counter(o.outcome for o in outcomes) == {"posted": len(world.drafts)}
    assert sum(_invoices_by_doc(world).values()) == len(world.drafts)


def test_batch_size_one_posts_one_call_per_invoice(world: World) -> None:
    outcomes, rec = _post(world, world.drafts[:4], batch_size=1)
    assert Counter(o.outcome for o in outcomes) == {"posted": 4}
    assert rec.single_creates == 4 and not [b for b in rec.batches if b[0] == "Invoice"]
    with pytest.raises(ValueError):
        _post(world, world.drafts[:1], batch_size=31)


@pytest.mark.parametrize("fault, kind", [
    ({"type": "ValidationFault", "Error": [{"Message": "Invalid Reference Id", "Detail": "Item 9 not found", "code": "2500"}]},
     "ApiValidationError"),
    ({"type": "ValidationFault", "Error": [{"Message": "Duplicate Document Number Error", "code": "6140"}]},
     "ApiValidationError"),
    ({"type": "SERVICE", "Error": [{"Message": "message=ThrottleExceeded; errorCode=003001", "code": "3001"}]},
     "ApiRateLimited"),
    ({"type": "SystemFault", "Error": [{"Message": "An application error has occurred", "code": "10000"}]},
     "ApiUnavailable"),
])
def test_a_batch_item_fault_becomes_the_error_a_single_call_raises(fault, kind) -> None:
    from sync_pipelines.connectors.quickbooks import batch_item_error

    assert batch_item_error({"bId": "abc", "Invoice": {"Id": "1"}}, "9130") is None
    error = batch_item_error({"bId": "abc", "Fault": fault, "intuit_tid": "tid-1"}, "9130")
    assert type(error).__name__ == kind
    assert error.code == fault["Error"][0]["code"] and error.trace_id == "tid-1"
    assert "/v3/company/9130/batch#abc" in str(error)


class StopsDuringFirstInvoiceBatch(Recording):
    """The operator's SIGTERM arrives while the first invoice batch is with QuickBooks."""

    def batch(self, items: list[dict[str, Any]], request_id: str | None = None) -> dict[str, Any]:
        if any("Invoice" in item for item in items):
            stopping.request(signal.SIGTERM)
        return super().batch(items, request_id)


def test_a_stop_request_finishes_the_batch_in_progress_and_starts_no_other(world: World) -> None:
    stopping.reset()
    try:
        with quickbooks_from_env(world.ledger.tokens, world.env, audit=world.ledger, retry=RetryPolicy.fast()) as qbo:
            rec = StopsDuringFirstInvoiceBatch(qbo, world.ledger, [d.key for d in world.drafts])
            outcomes = post_drafts(world.drafts, qbo=rec, ledger=world.ledger, home_currency="USD", concurrency=1)
    finally:
        stopping.reset()
    kinds = Counter(o.outcome for o in outcomes)
    # the batch in the air when the stop came is finished and recorded; nothing else was sent
    assert kinds == {"posted": BATCH_MAX_ITEMS, "stopped": len(world.drafts) - BATCH_MAX_ITEMS}, kinds
    assert [n for kind, n in rec.batches if kind == "Invoice"] == [BATCH_MAX_ITEMS]
    assert all(r.startswith("not attempted: the run was stopped (SIGTERM)")
               for o in outcomes if o.outcome == "stopped" for r in o.reasons)
    # nothing half-done: the stopped drafts have no ledger row, the posted ones are in QuickBooks once
    assert all(world.ledger.get_invoice(o.key) is None for o in outcomes if o.outcome == "stopped")
    assert sum(_invoices_by_doc(world).values()) == BATCH_MAX_ITEMS == len(_invoices_by_doc(world))
