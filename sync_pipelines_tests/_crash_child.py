"""The posting step as a child process for the crash and concurrency tests (must be importable).

`run(job, result_path)` does what one run of the `qbo_invoices` and `crm_write_back` assets
does for a month -- `post_drafts`, then enqueue and drain the CRM write-backs -- against the
sandbox (served by the parent, so QuickBooks and HubSpot outlive the child) and a ledger.

Where to die: ``SYNC_TEST_CRASH_AT=point:n`` kills the process with SIGKILL the n-th time it
reaches `point`. The points are placed by wrapping the real clients, not by branches in the
product's code:

- ``before_qbo_call``: the ledger row is pending (``begin_posting`` said "post"), QuickBooks not
  called yet;
- ``after_qbo_call``: QuickBooks created the invoice (or the batch's invoices) and answered;
  ``record_posted`` not run;
- ``mid_batch``: QuickBooks created the first half of a batch's invoices, then the process died
  before the batch was answered (the connection cut mid-batch);
- ``before_writeback``: every invoice is recorded, no write-back enqueued yet;
- ``after_hubspot_patch``: HubSpot applied the deal update; ``record_writeback`` not run.
"""

from __future__ import annotations

import json
import os
import signal
import time
from typing import Any

# Imported here so that a forkserver preloading this module pays for them once.
import pandas as pd  # noqa: F401
import sqlalchemy  # noqa: F401

from sync_pipelines import money
from sync_pipelines.connectors.factory import hubspot_from_env, quickbooks_from_env
from sync_pipelines.connectors.http import RetryPolicy
from sync_pipelines.ledger import Ledger
from sync_pipelines.ledger.call_budget import shared_call_budget
from sync_pipelines.posting.drafts import posting_drafts
from sync_pipelines.posting.invoices import post_drafts
from sync_pipelines.posting.writeback import drain_writebacks, enqueue_writebacks

CRASH_ENV = "SYNC_TEST_CRASH_AT"
POINTS = ("before_qbo_call", "after_qbo_call", "mid_batch", "before_writeback", "after_hubspot_patch")

_hits: dict[str, int] = {}


def _arrive(name: str) -> bool:
    """Count an arrival at `name`; True when SYNC_TEST_CRASH_AT=name:n and this is the n-th."""
    spec = os.environ.get(CRASH_ENV)
    if not spec:
        return False
    point, _, nth = spec.partition(":")
    if point != name:
        return False
    _hits[name] = _hits.get(name, 0) + 1
    return _hits[name] == int(nth or 1)


def crash_point(name: str) -> None:
    """SIGKILL this process on the n-th arrival at `name` when SYNC_TEST_CRASH_AT=name:n."""
    if _arrive(name):
        os.kill(os.getpid(), signal.SIGKILL)


class _Proxy:
    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class CrashingQuickBooks(_Proxy):
    def create_invoice(self, payload: dict[str, Any], request_id: str) -> dict[str, Any]:
        crash_point("before_qbo_call")
        created = self._inner.create_invoice(payload, request_id)
        crash_point("after_qbo_call")
        return created

    def batch(self, items: list[dict[str, Any]], request_id: str | None = None) -> dict[str, Any]:
        if not any("Invoice" in item for item in items):
            return self._inner.batch(items, request_id)
        crash_point("before_qbo_call")
        if _arrive("mid_batch"):
            # QuickBooks runs the items one by one: the first half exist when the line goes dead.
            self._inner.batch(items[: max(1, len(items) // 2)], None)
            os.kill(os.getpid(), signal.SIGKILL)
        answers = self._inner.batch(items, request_id)
        crash_point("after_qbo_call")
        return answers


class CrashingHubSpot(_Proxy):
    def update_deal(self, deal_id: str, properties: dict[str, str]) -> Any:
        updated = self._inner.update_deal(deal_id, properties)
        crash_point("after_hubspot_patch")
        return updated


def run(job: dict[str, Any], result_path: str) -> None:
    """One posting run. `job`: ledger_url, env, drafts (the drafts document), deals (frame),
    entry_projects, company_ids, claim_seconds, crash ("point:n" or None), retry_busy,
    start_at (wall-clock barrier or None), fast_retries (optional: short connector retries),
    batch_size (optional: ``post_drafts``' batch size, 30 by default; 1 posts one call per invoice)."""
    _hits.clear()
    if job.get("crash"):
        os.environ[CRASH_ENV] = job["crash"]
    else:
        os.environ.pop(CRASH_ENV, None)
    ledger = Ledger(job["ledger_url"], claim_seconds=job["claim_seconds"])
    # The chaos run injects 20-35 % faults: many short retries instead of production's long waits.
    fast = {"retry": RetryPolicy.fast(max_attempts=10, max_retry_after=2.0)} if job.get("fast_retries") else {}
    # The company's call budget in the ledger, shared with the other runs, as the product posts.
    budget = shared_call_budget(ledger, job["env"]["QBO_REALM_ID"])
    qbo_client = quickbooks_from_env(ledger.tokens, job["env"], audit=ledger, oauth_kwargs=fast,
                                     limiter=budget.calls, batch_limiter=budget.batches, **fast)
    hubspot_client = hubspot_from_env(job["env"], audit=ledger, **fast)
    qbo, hubspot = CrashingQuickBooks(qbo_client), CrashingHubSpot(hubspot_client)
    drafts = posting_drafts(job["drafts"])
    keys = [d.key for d in drafts]
    ledger.current_revision()  # connect before the start line
    if job.get("start_at"):
        time.sleep(max(0.0, job["start_at"] - time.time()))
    try:
        outcomes = []
        for _ in range(40):
            outcomes = post_drafts(drafts, qbo=qbo, ledger=ledger, home_currency=job["drafts"]["home_currency"],
                                   batch_size=job.get("batch_size", 30))
            # A crashed run's claim lasts claim_seconds: wait it out, as the asset's retry policy does.
            if not job.get("retry_busy") or all(o.outcome not in ("busy", "failed") for o in outcomes):
                break
            time.sleep(job["claim_seconds"] + 0.05)
        crash_point("before_writeback")
        enqueue_writebacks(ledger, keys, job["entry_projects"], job["deals"], job["company_ids"])
        results = drain_writebacks(ledger, hubspot, keys)
        summary = {
            "outcomes": [o.outcome for o in outcomes],
            "writebacks": [r.status for r in results],
        }
        with open(result_path, "w") as fh:
            fh.write(money.dumps(summary))
    finally:
        qbo_client.close()
        hubspot_client.close()
        ledger.dispose()


def read_result(path: str) -> dict[str, Any]:
    with open(path) as fh:
        return json.load(fh)

