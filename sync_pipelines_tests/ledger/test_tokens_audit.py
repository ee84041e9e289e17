"""Token store, audit sink and the no-secrets rule."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

from sync_pipelines.connectors.http import AuditSink, TokenStore
from sync_pipelines.ledger import (
    Ledger,
    LedgerError,
    RefreshLockTimeout,
    TokenSet,
    default_ledger_url,
    ledger_url_from_env,
)
from sync_pipelines.ledger.redact import redact

from .conftest import REALM, begin, draft

REFRESH = "AB11790000000aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789"
ACCESS = "eyJlbmMiOiJBMTI4Q0JDLUhTMjU2IiwiYWxnIjoiZGlyIn0..QWERTYqwerty12345.zxcvbnmZXCVBNM0987"


def test_default_url(tmp_path) -> None:
    assert default_ledger_url("/var/dagster") == "sqlite:////var/dagster/sync_ledger.db"
    assert ledger_url_from_env({"DAGSTER_HOME": "/d"}) == "sqlite:////d/sync_ledger.db"
    assert ledger_url_from_env({"DAGSTER_HOME": "/d", "SYNC_DATABASE_URL": "postgresql://x/y"}) == "postgresql://x/y"
    with pytest.raises(LedgerError):
        ledger_url_from_env({})
    ledger = Ledger(default_ledger_url(str(tmp_path / "new" / "home")))
    try:
        ledger.migrate()  # creates the missing directory
        assert (tmp_path / "new" / "home" / "sync_ledger.db").exists()
    finally:
        ledger.dispose()


def test_protocols(ledger: Ledger) -> None:
    assert isinstance(ledger, AuditSink)
    assert isinstance(ledger.tokens, TokenStore)


def test_seed_save_rotate(ledger: Ledger, clock) -> None:
    store = ledger.tokens
    assert store.get(REALM) is None
    assert store.seed(REALM, "RT-from-env-00001")
    assert not store.seed(REALM, "RT-from-env-00002")  # never overrides what is stored
    assert store.get(REALM).refresh_token.get_secret_value() == "RT-from-env-00001"
    seeded_at = store.rotated_at(REALM)
    clock.advance(3600)
    exp = clock.now + timedelta(hours=1)
    store.save(REALM, TokenSet(refresh_token="RT-from-env-00001", access_token="AT-1-aaaaaaaa", access_expires_at=exp))
    assert store.rotated_at(REALM) == seeded_at  # same refresh token: not a rotation
    got = store.get(REALM)
    assert got.access_token.get_secret_value() == "AT-1-aaaaaaaa" and got.access_expires_at == exp
    assert got.access_valid(clock.now) and not got.access_valid(clock.now + timedelta(hours=2))
    clock.advance(60)
    refresh_exp = clock.now + timedelta(days=100)
    store.save(REALM, TokenSet(refresh_token=REFRESH, access_token=ACCESS, access_expires_at=exp,
                               refresh_expires_at=refresh_exp))
    assert store.rotated_at(REALM) == clock.now
    assert store.get(REALM).refresh_expires_at == refresh_exp
    assert not store.seed(REALM, "RT-from-env-00001")  # env var no longer wins
    assert store.get(REALM).refresh_token.get_secret_value() == REFRESH
    with pytest.raises(ValueError):
        store.save(REALM, TokenSet(refresh_token=""))


def test_refresh_lock_serialises_threads_and_times_out(ledger: Ledger) -> None:
    store = ledger.tokens
    order: list[str] = []
    entered = threading.Event()

    def holder() -> None:
        with store.refresh_lock(REALM):
            entered.set()
            order.append("a-in")
            time.sleep(0.3)
            order.append("a-out")

    t = threading.Thread(target=holder)
    t.start()
    entered.wait(5)
    with pytest.raises(RefreshLockTimeout):
        with store.refresh_lock(REALM, timeout=0.05):
            pass
    with store.refresh_lock(REALM):
        order.append("b-in")
    t.join()
    assert order == ["a-in", "a-out", "b-in"]
    with store.refresh_lock("another-realm", timeout=0.05):  # other realms are independent
        pass


def test_audit_strips_query_and_never_stores_tokens(ledger: Ledger) -> None:
    ledger.tokens.save(REALM, TokenSet(refresh_token=REFRESH, access_token=ACCESS))
    ledger.audit("quickbooks", "get", f"https://quickbooks.api.intuit.com/v3/company/{REALM}/query?query=select%20*&minorversion=75",
                 200, 35, request_id="6f1c3a52-7d1e-4b8e-9a43-0c5b2f6e9d10", trace_id="1-672a1b2c-3d4e5f")
    ledger.audit("oauth", "POST", f"/oauth2/v1/tokens/bearer?refresh_token={REFRESH}", 400, 80,
                 error=f"invalid_grant for refresh_token={REFRESH}; Authorization: Bearer {ACCESS}")
    ledger.audit("harvest", "GET", f"/v2/time_entries?access_token=1234567.pt.{'x' * 40}&page=2", 200, 10)
    ledger.audit("hubspot", "POST", f"/crm/v3/objects/deals/{ACCESS}/x", 401, 5,
                 error="pat-na1-11111111-2222-3333-4444-555555555555 rejected")
    rows = ledger.audit_records()
    assert [r.system for r in rows] == ["hubspot", "harvest", "oauth", "quickbooks"]
    q = rows[3]
    assert q.path == f"/v3/company/{REALM}/query" and q.method == "GET" and q.status == 200
    assert q.request_id == "6f1c3a52-7d1e-4b8e-9a43-0c5b2f6e9d10" and q.trace_id == "1-672a1b2c-3d4e5f"
    assert rows[2].path == "/oauth2/v1/tokens/bearer" and "invalid_grant" in rows[2].error
    assert rows[1].path == "/v2/time_entries"
    everything = repr(rows) + "".join(str(v) for r in rows for v in r.__dict__.values())
    for secret in (REFRESH, ACCESS, "1234567.pt.", "pat-na1-1111", "Bearer ey"):
        assert secret not in everything
    assert ledger.audit_records(system="oauth")[0].status == 400
    assert ledger.prune_audit(datetime.now(timezone.utc) + timedelta(days=3650)) == 4


def test_audit_never_raises(tmp_path) -> None:
    ledger = Ledger(f"sqlite:///{tmp_path}/unmigrated.db")
    try:
        ledger.audit("quickbooks", "GET", "/x", 200, 1)  # no table: logged, not raised
    finally:
        ledger.dispose()


def test_no_secret_in_any_repr(migrated_url: str) -> None:
    ledger = Ledger(migrated_url)
    try:
        ledger.tokens.save(REALM, TokenSet(refresh_token=REFRESH, access_token=ACCESS,
                                           access_expires_at=datetime.now(timezone.utc)))
        ts = ledger.tokens.get(REALM)
        d = draft()
        r = begin(ledger, d)
        ledger.record_failed(d["key"], f"boom with {REFRESH} and Bearer {ACCESS}")
        objects = [ts, ledger.tokens, ledger, r, ledger.get_invoice(d["key"]), ledger.status(),
                   ledger.history(REALM), ledger.audit_records()]
        for obj in objects:
            for text in (repr(obj), str(obj)):
                assert REFRESH not in text and ACCESS not in text, text
        assert "**********" in repr(ts)
    finally:
        ledger.dispose()


def test_password_hidden_in_ledger_repr() -> None:
    ledger = Ledger("postgresql://sync:hunter2-secret@db.example/ledger")
    try:
        assert "hunter2" not in repr(ledger) and "psycopg2" in repr(ledger)
    finally:
        ledger.dispose()


def test_redact_keeps_useful_text() -> None:
    text = 'ValidationFault errorCode=6000 statusCode=400 in sync_pipelines.connectors.http.ApiError ' \
           'request 6f1c3a52-7d1e-4b8e-9a43-0c5b2f6e9d10 amount 1500.00 {"code":"6240","element":null}'
    assert redact(text) == text
    assert "AB11571157614TwmEOoV3Lp7QS9W8Ec7Yh0oNn2rUFDnVsK3nL" not in redact(
        "/callback?code=AB11571157614TwmEOoV3Lp7QS9W8Ec7Yh0oNn2rUFDnVsK3nL&realmId=1"
    )
    assert Decimal("1500.00") == Decimal(redact("1500.00"))
