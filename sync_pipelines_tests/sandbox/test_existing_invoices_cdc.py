"""The month's existing QuickBooks invoices caught up through CDC, over HTTP against the sandbox."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pandas as pd

from sync_pipelines.connectors.http import InMemoryTokenStore, RateLimiter, RetryPolicy
from sync_pipelines.connectors.quickbooks import QboOAuth, QuickBooksClient
from sync_pipelines.extract.qbo_existing_invoices import existing_invoices

from ..connectors.helpers import AuditRecorder
from .conftest import Qbo, body
from .test_quickbooks import invoice_body


def _client(sb, audit) -> QuickBooksClient:
    env = sb.env()
    oauth = QboOAuth(env["QBO_TOKEN_URL"], env["QBO_CLIENT_ID"], env["QBO_CLIENT_SECRET"], InMemoryTokenStore(),
                     env["QBO_REALM_ID"], env["QBO_REFRESH_TOKEN"], retry=RetryPolicy.fast())
    return QuickBooksClient(env["QBO_BASE_URL"], env["QBO_REALM_ID"], oauth, retry=RetryPolicy.fast(), audit=audit,
                            limiter=RateLimiter([(500, 60.0)], max_in_flight=10))


def _by_id(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values("qbo_id").reset_index(drop=True)


def test_cdc_catch_up_adds_changes_drops_deleted_and_redated_and_equals_a_full_query(sb):
    q = Qbo(sb)
    kept = body(q.post("invoice", invoice_body(DocNumber="K-1")))["Invoice"]
    doomed = body(q.post("invoice", invoice_body(DocNumber="D-1")))["Invoice"]
    moved = body(q.post("invoice", invoice_body(DocNumber="M-1")))["Invoice"]
    body(q.post("invoice", invoice_body(DocNumber="N-1", TxnDate="2026-11-02")))  # another month
    audit = AuditRecorder()
    client = _client(sb, audit)
    first = existing_invoices(client, "2026-10")
    assert first.mode == "full" and sorted(first.frame["doc_number"]) == ["D-1", "K-1", "M-1"]

    q.post("invoice", {"Id": doomed["Id"], "SyncToken": doomed["SyncToken"]}, operation="delete")
    q.post("invoice", {"Id": moved["Id"], "SyncToken": moved["SyncToken"], "sparse": True, "TxnDate": "2026-11-01"})
    q.post("invoice", {"Id": kept["Id"], "SyncToken": kept["SyncToken"], "sparse": True, "PrivateNote": "edited"})
    added = body(q.post("invoice", invoice_body(DocNumber="A-1", TxnDate="2026-10-15")))["Invoice"]

    calls = len(audit.rows)
    caught_up = existing_invoices(client, "2026-10", first.frame, first.extracted_at)
    assert caught_up.mode == "cdc", caught_up.reason
    assert [r["path"] for r in audit.rows[calls:]] == [f"/v3/company/{sb.realm_id}/cdc"]  # one call
    assert sorted(caught_up.frame["doc_number"]) == ["A-1", "K-1"]
    assert caught_up.frame.loc[caught_up.frame["qbo_id"] == kept["Id"], "private_note"].item() == "edited"
    assert added["Id"] in set(caught_up.frame["qbo_id"])
    full = existing_invoices(client, "2026-10", full=True)
    pd.testing.assert_frame_equal(_by_id(caught_up.frame), _by_id(full.frame))


def test_outside_the_cdc_window_or_a_full_response_the_month_is_queried(sb, monkeypatch):
    client = _client(sb, AuditRecorder())
    first = existing_invoices(client, "2026-10")
    old = datetime.now(timezone.utc) - timedelta(days=29)
    stale = existing_invoices(client, "2026-10", first.frame, old)
    assert stale.mode == "full" and "CDC window" in stale.reason
    monkeypatch.setattr(client, "cdc", lambda entities, since: {"Invoice": [{"Id": str(i)} for i in range(1000)]})
    full = existing_invoices(client, "2026-10", first.frame, first.extracted_at)
    assert full.mode == "full" and "maximum of 1000" in full.reason
