from __future__ import annotations

import pickle
import random
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import httpx
import pytest

from sync_pipelines.connectors.http import (
    ApiAuthError,
    ApiError,
    ApiRateLimited,
    ApiTransport,
    ApiUnavailable,
    ApiValidationError,
    AuditSink,
    FetchResult,
    InMemoryTokenStore,
    RateLimiter,
    RetryPolicy,
    TokenSet,
    TokenStore,
    parse_retry_after,
)

from .helpers import AuditRecorder, FakeTime, jresp


def make(handler, *, retry=None, ft=None, audit=None, secrets=(), limiter=None):
    ft = ft or FakeTime()
    return ApiTransport(
        "test", "https://api.example.com", transport=httpx.MockTransport(handler),
        retry=retry or RetryPolicy(max_attempts=5, base_delay=1.0, max_delay=8.0, max_total_wait=100),
        sleep=ft.sleep, clock=ft.clock, audit=audit, secrets=secrets, limiter=limiter,
        rng=random.Random(7),
    ), ft


def test_retry_after_seconds_is_honoured():
    calls = []

    def handler(request):
        calls.append(request)
        if len(calls) == 1:
            return jresp(429, {"message": "slow down"}, {"Retry-After": "7"})
        return jresp(200, {"ok": True})

    t, ft = make(handler)
    assert t.request("GET", "/x").status_code == 200
    assert ft.sleeps == [7.0]


def test_retry_after_http_date():
    when = datetime.now(timezone.utc) + timedelta(seconds=30)
    secs = parse_retry_after(format_datetime(when, usegmt=True))
    assert 25 <= secs <= 31
    assert parse_retry_after("garbage") is None
    assert parse_retry_after(None) is None
    past = format_datetime(datetime(2000, 1, 1, tzinfo=timezone.utc), usegmt=True)
    assert parse_retry_after(past) == 0.0


def test_no_retry_on_400_validation():
    calls = []

    def handler(request):
        calls.append(request)
        return jresp(400, {"message": "bad field", "code": "X1"})

    t, ft = make(handler)
    with pytest.raises(ApiValidationError) as ei:
        t.request("POST", "/things", json_body={"a": 1})
    assert len(calls) == 1 and ft.sleeps == []
    msg = str(ei.value)
    assert "test POST /things -> HTTP 400" in msg and "X1" in msg and "bad field" in msg


def test_5xx_retried_with_capped_full_jitter_then_raises():
    calls = []

    def handler(request):
        calls.append(request)
        return jresp(503, {"message": "down"})

    t, ft = make(handler, retry=RetryPolicy(max_attempts=6, base_delay=1.0, max_delay=2.0, max_total_wait=1000))
    with pytest.raises(ApiUnavailable) as ei:
        t.request("GET", "/x")
    assert len(calls) == 6
    assert len(ft.sleeps) == 5
    assert all(0 <= s <= 2.0 for s in ft.sleeps)  # capped at max_delay
    assert ei.value.attempts == 6 and "after 6 attempts" in str(ei.value)


def test_max_total_wait_stops_retrying():
    def handler(request):
        return jresp(429, {}, {"Retry-After": "40"})

    t, ft = make(handler, retry=RetryPolicy(max_attempts=10, max_total_wait=100, max_retry_after=60))
    with pytest.raises(ApiRateLimited):
        t.request("GET", "/x")
    assert ft.sleeps == [40.0, 40.0]  # a third wait would pass 100 s in total


def test_retry_after_longer_than_allowed_raises_immediately():
    t, ft = make(lambda r: jresp(429, {}, {"Retry-After": "3600"}),
                 retry=RetryPolicy(max_retry_after=120))
    with pytest.raises(ApiRateLimited) as ei:
        t.request("GET", "/x")
    assert ft.sleeps == [] and ei.value.retry_after == 3600


def test_timeouts_and_connection_errors_are_retried():
    calls = []

    def handler(request):
        calls.append(1)
        if len(calls) == 1:
            raise httpx.ReadTimeout("slow", request=request)
        if len(calls) == 2:
            raise httpx.ConnectError("refused", request=request)
        return jresp(200, {})

    audit = AuditRecorder()
    t, ft = make(handler, audit=audit)
    assert t.request("GET", "/x").status_code == 200
    assert len(ft.sleeps) == 2
    assert [r["status"] for r in audit.rows] == [None, None, 200]
    assert "timeout" in audit.rows[0]["error"]


def test_timeout_exhausted_raises_unavailable_without_status():
    def handler(request):
        raise httpx.ConnectTimeout("x", request=request)

    t, _ = make(handler, retry=RetryPolicy(max_attempts=2, base_delay=0.01))
    with pytest.raises(ApiUnavailable) as ei:
        t.request("GET", "/x")
    assert ei.value.status is None and "no response" in str(ei.value)


def test_401_not_retried_by_transport():
    calls = []
    t, _ = make(lambda r: calls.append(1) or jresp(401, {"message": "nope"}))
    with pytest.raises(ApiAuthError):
        t.request("GET", "/x")
    assert len(calls) == 1


def test_423_waits_at_least_locked_min_wait():
    calls = []

    def handler(request):
        calls.append(1)
        return jresp(423, {}) if len(calls) == 1 else jresp(200, {})

    t, ft = make(handler, retry=RetryPolicy(base_delay=0.001, max_delay=0.001, locked_min_wait=2.0))
    t.request("PATCH", "/deal", json_body={})
    assert ft.sleeps[0] >= 2.0


def test_audit_path_has_no_query_and_secrets_are_scrubbed():
    secret = "s3cr3t-token-value"

    def handler(request):
        return jresp(400, {"message": f"token {secret} is wrong"})

    audit = AuditRecorder()
    t, _ = make(handler, audit=audit, secrets=[secret])
    with pytest.raises(ApiError) as ei:
        t.request("GET", f"/v2/things?access_token={secret}&x=1",
                  headers={"Authorization": f"Bearer {secret}"}, request_id="rid-1")
    assert secret not in str(ei.value) and secret not in repr(ei.value)
    row = audit.rows[0]
    assert row["path"] == "/v2/things"
    assert row["request_id"] == "rid-1"
    assert secret not in repr(audit.rows)


def test_audit_sink_failure_does_not_break_the_call():
    class Broken:
        def audit(self, *a, **k):
            raise RuntimeError("db down")

    t, _ = make(lambda r: jresp(200, {}), audit=Broken())
    assert t.request("GET", "/x").status_code == 200


def test_decimal_bodies_and_float_refused():
    from decimal import Decimal

    seen = []
    t, _ = make(lambda r: seen.append(r.content) or jresp(200, {}))
    t.request("POST", "/x", json_body={"Amount": Decimal("100.10")})
    assert seen[0] == b'{"Amount": 100.10}'
    with pytest.raises(TypeError):
        t.request("POST", "/x", json_body={"Amount": 1.1})


def test_rate_limiter_sliding_window_waits():
    ft = FakeTime()
    lim = RateLimiter([(3, 10.0)], sleep=ft.sleep, clock=ft.clock)
    for _ in range(3):
        with lim.acquire():
            pass
    assert ft.sleeps == []
    with lim.acquire():
        pass
    assert ft.sleeps == [10.0]


def test_rate_limiter_multiple_windows():
    ft = FakeTime()
    lim = RateLimiter([(500, 60.0), (10, 1.0)], sleep=ft.sleep, clock=ft.clock)
    for _ in range(25):
        with lim.acquire():
            pass
    assert ft.now - 1000.0 >= 2.0  # 25 calls at 10/s need at least two waits of ~1 s


def test_shared_limiter_is_one_per_key():
    a = RateLimiter.shared("k-test", lambda: RateLimiter([(1, 1.0)]))
    b = RateLimiter.shared("k-test", lambda: RateLimiter([(9, 1.0)]))
    assert a is b


def test_tokenset_repr_hides_secrets():
    ts = TokenSet(refresh_token="rt-very-secret", access_token="at-very-secret",
                  access_expires_at=datetime.now(timezone.utc))
    text = repr(ts) + str(ts) + repr(ts.model_dump())
    assert "rt-very-secret" not in text and "at-very-secret" not in text
    assert ts.refresh_token.get_secret_value() == "rt-very-secret"
    plain = ts.secret_values()
    assert plain["access_token"] == "at-very-secret" and TokenSet(**plain) == ts


def test_protocols_are_runtime_checkable():
    assert isinstance(InMemoryTokenStore(), TokenStore)
    assert isinstance(AuditRecorder(), AuditSink)


def test_errors_pickle():
    err = ApiValidationError("quickbooks", "POST", "/v3/x", 400, code="6240", api_message="dup")
    back = pickle.loads(pickle.dumps(err))
    assert str(back) == str(err) and back.code == "6240"


def test_fetch_result_iterates():
    r = FetchResult(records=[1, 2])
    assert list(r) == [1, 2] and len(r) == 2
