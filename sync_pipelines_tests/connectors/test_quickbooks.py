from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from urllib.parse import parse_qs

import httpx
import pytest

from sync_pipelines.connectors.http import (
    ApiAuthError,
    ApiRateLimited,
    ApiValidationError,
    InMemoryTokenStore,
    RetryPolicy,
    TokenSet,
)
from sync_pipelines.connectors.quickbooks import (
    QboOAuth,
    QboReconnectRequired,
    QuickBooksClient,
    duplicate_txn_id,
    quote,
)

from .helpers import AuditRecorder, FakeTime, body_of, jresp

REALM = "9130"
CLIENT_SECRET = "qbo-client-secret-abc"
SEED = "seed-refresh-token-111"
TOKEN_URL = "https://oauth.platform.intuit.com/oauth2/v1/tokens/bearer"

XML_429 = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?><IntuitResponse xmlns="http://schema.intuit.com/finance/v3" '
    'time="2026-10-01T10:00:00.000-07:00"><Fault type="SERVICE"><Error code="3001"><Message>message=ThrottleExceeded; '
    'errorCode=003001; statusCode=429</Message><Detail>The request limit was reached.  Try again later</Detail>'
    '</Error></Fault></IntuitResponse>'
)
LOWER_401 = {"warnings": None, "intuitObject": None, "fault": {"error": [{
    "message": "message=AuthenticationFailed; errorCode=003200; statusCode=401",
    "detail": "Token expired: ", "code": "3200", "element": None}], "type": "AUTHENTICATION"},
    "report": None, "queryResponse": None, "batchItemResponse": [], "requestId": None, "time": 1601391072830}


def fault(code: str, message: str, detail: str = "", status: int = 400) -> httpx.Response:
    return jresp(status, {"Fault": {"Error": [{"Message": message, "Detail": detail, "code": code, "element": ""}],
                                    "type": "ValidationFault"}, "time": "2026-10-01T10:00:00-07:00"},
                 {"intuit_tid": "tid-err"})


class OAuthServer:
    """Token endpoint: rotates the refresh token every refresh; old ones give invalid_grant."""

    def __init__(self, valid=SEED):
        self.valid = {valid}
        self.n = 0
        self.calls: list[httpx.Request] = []
        self.delay = 0.0
        self.lock = threading.Lock()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.calls.append(request)
        if self.delay:
            time.sleep(self.delay)
        form = {k: v[0] for k, v in parse_qs(request.content.decode()).items()}
        assert form["grant_type"] == "refresh_token"
        assert request.headers["Authorization"].startswith("Basic ")
        with self.lock:
            if form["refresh_token"] not in self.valid:
                return jresp(400, {"error": "invalid_grant"})
            self.valid.discard(form["refresh_token"])
            self.n += 1
            new_rt = f"rotated-refresh-{self.n}"
            self.valid.add(new_rt)
        return jresp(200, {"token_type": "bearer", "access_token": f"access-{self.n}", "expires_in": 3600,
                           "refresh_token": new_rt, "x_refresh_token_expires_in": 8640000})


def build(api_handler, *, store=None, oauth_server=None, audit=None, page_size=1000, retry=None, now=None):
    oauth_server = oauth_server or OAuthServer()
    store = store if store is not None else InMemoryTokenStore()
    ft = FakeTime()

    def handler(request: httpx.Request):
        if request.url.path == "/oauth2/v1/tokens/bearer":
            return oauth_server(request)
        return api_handler(request)

    mock = httpx.MockTransport(handler)
    oauth = QboOAuth(TOKEN_URL, "client-id", CLIENT_SECRET, store, REALM, SEED, transport=mock,
                     sleep=ft.sleep, clock=ft.clock, audit=audit, retry=RetryPolicy.fast(), now=now)
    from sync_pipelines.connectors.http import RateLimiter

    qbo = QuickBooksClient("https://quickbooks.api.intuit.com", REALM, oauth, transport=mock, audit=audit,
                           sleep=ft.sleep, clock=ft.clock, page_size=page_size,
                           retry=retry or RetryPolicy.fast(rate_limit_wait=0.5),
                           limiter=RateLimiter([(500, 60.0), (10, 1.0)], max_in_flight=10,
                                               sleep=ft.sleep, clock=ft.clock))
    return qbo, oauth, store, oauth_server, ft


def test_quote_escapes_apostrophes():
    assert quote("Amy's Bird") == "'Amy\\'s Bird'"
    assert quote("Café: Zürich d'Été") == "'Café: Zürich d\\'Été'"
    assert quote("a\\") == "'a\\\\'"
    with pytest.raises(ValueError):
        quote("a\nb")


def test_query_post_application_text_and_empty_response():
    seen = []

    def api(request):
        seen.append(request)
        return jresp(200, {"QueryResponse": {}, "time": "2026-10-01T10:00:00-07:00"})

    qbo, *_ = build(api)
    assert qbo.query("SELECT * FROM Customer WHERE DisplayName = 'Nobody'") == []
    r = seen[0]
    assert r.method == "POST" and r.url.path == f"/v3/company/{REALM}/query"
    assert r.headers["Content-Type"] == "application/text"
    assert r.url.params["minorversion"] == "75"
    assert r.content.decode() == "SELECT * FROM Customer WHERE DisplayName = 'Nobody'"
    assert r.headers["Authorization"] == "Bearer access-1"
    assert r.headers["Accept"] == "application/json"


def test_query_all_pages_by_startposition_until_short_page():
    rows = [{"Id": str(i), "DisplayName": f"C{i}", "Balance": Decimal("1.10")} for i in range(1, 8)]
    sqls = []

    def api(request):
        sql = request.content.decode()
        sqls.append(sql)
        parts = sql.split()
        start = int(parts[parts.index("STARTPOSITION") + 1])
        maxr = int(parts[parts.index("MAXRESULTS") + 1])
        page = rows[start - 1:start - 1 + maxr]
        if not page:
            return jresp(200, {"QueryResponse": {}})
        return jresp(200, {"QueryResponse": {"Customer": page, "startPosition": start, "maxResults": len(page)}})

    qbo, *_ = build(api, page_size=3)
    out = qbo.query_all("Customer", "Active IN (true,false)")
    assert [r["Id"] for r in out] == [str(i) for i in range(1, 8)]
    assert out[0]["Balance"] == Decimal("1.10")
    assert sqls == [
        "SELECT * FROM Customer WHERE Active IN (true,false) STARTPOSITION 1 MAXRESULTS 3",
        "SELECT * FROM Customer WHERE Active IN (true,false) STARTPOSITION 4 MAXRESULTS 3",
        "SELECT * FROM Customer WHERE Active IN (true,false) STARTPOSITION 7 MAXRESULTS 3",
    ]
    # exactly a multiple of the page size: one more (empty) page is read
    sqls.clear()
    qbo.page_size = 7
    assert len(qbo.query_all("Customer")) == 7 and len(sqls) == 2


def test_find_or_create_customer_apostrophe_and_6240_race():
    state = {"created": False}
    sqls = []

    def api(request):
        if request.url.path.endswith("/query"):
            sql = request.content.decode()
            sqls.append(sql)
            if state["created"]:
                return jresp(200, {"QueryResponse": {"Customer": [
                    {"Id": "58", "DisplayName": "Amy's Bird: Café", "Active": False, "SyncToken": "0"}]}})
            return jresp(200, {"QueryResponse": {}})
        assert request.url.path.endswith("/customer")
        assert body_of(request) == {"DisplayName": "Amy's Bird: Café", "CurrencyRef": {"value": "EUR"}}
        state["created"] = True  # someone else created it in between
        return fault("6240", "Duplicate Name Exists Error", "The name supplied already exists. : Id=58")

    qbo, *_ = build(api)
    c = qbo.find_or_create_customer("Amy's Bird: Café", currency="EUR")
    assert c["Id"] == "58"
    assert sqls[0] == ("SELECT * FROM Customer WHERE DisplayName = 'Amy\\'s Bird: Café' "
                       "AND Active IN (true,false)")
    assert len(sqls) == 2


def test_find_or_create_customer_creates():
    def api(request):
        if request.url.path.endswith("/query"):
            return jresp(200, {"QueryResponse": {}})
        return jresp(200, {"Customer": {"Id": "9", "DisplayName": "New", "SyncToken": "0"}, "time": "x"})

    qbo, *_ = build(api)
    assert qbo.find_or_create_customer("New")["Id"] == "9"


def test_create_invoice_requestid_decimal_body_and_trace():
    seen = []
    payload = {"CustomerRef": {"value": "58"}, "Line": [{"Amount": Decimal("150.00"), "DetailType": "SalesItemLineDetail",
               "SalesItemLineDetail": {"ItemRef": {"value": "1"}, "Qty": Decimal("1.25"), "UnitPrice": Decimal("120")}}]}

    def api(request):
        seen.append(request)
        return jresp(200, {"Invoice": {"Id": "130", "SyncToken": "0", "TotalAmt": Decimal("150.00"),
                                       "DocNumber": "SP2610-ABC"}, "time": "x"}, {"intuit_tid": "1-abc-tid"})

    audit = AuditRecorder()
    qbo, *_ = build(api, audit=audit)
    inv = qbo.create_invoice(payload, "6f1c0b1e-0000-5000-8000-000000000001")
    assert inv["Id"] == "130" and inv["TotalAmt"] == Decimal("150.00") and inv["intuit_tid"] == "1-abc-tid"
    r = seen[0]
    assert r.url.params["requestid"] == "6f1c0b1e-0000-5000-8000-000000000001"
    assert r.url.params["minorversion"] == "75"
    assert b'"Amount": 150.00' in r.content and b'"Qty": 1.25' in r.content
    api_rows = [a for a in audit.rows if a["system"] == "quickbooks"]
    assert api_rows[-1]["request_id"] == "6f1c0b1e-0000-5000-8000-000000000001"
    assert api_rows[-1]["trace_id"] == "1-abc-tid"
    assert api_rows[-1]["path"] == f"/v3/company/{REALM}/invoice"
    with pytest.raises(ValueError):
        qbo.create_invoice(payload, "x" * 51)


def test_400_validation_fault_not_retried_and_code_kept():
    calls = []

    def api(request):
        calls.append(1)
        return fault("6140", "Duplicate Document Number Error",
                     "Duplicate Document Number Error : You must specify a different number. This number has "
                     "already been used. DocNumber=SP1 is assigned to TxnType=Invoice with TxnId=111")

    qbo, *_ = build(api)
    with pytest.raises(ApiValidationError) as ei:
        qbo.create_invoice({"CustomerRef": {"value": "1"}, "Line": []}, "rid")
    assert len(calls) == 1
    assert ei.value.code == "6140" and duplicate_txn_id(ei.value) == "111"
    assert "quickbooks POST /v3/company/9130/invoice -> HTTP 400 [code 6140]" in str(ei.value)
    assert ei.value.trace_id == "tid-err"


@pytest.mark.parametrize("code", ["6070", "5010", "2500", "6240"])
def test_other_validation_codes(code):
    qbo, *_ = build(lambda r: fault(code, "Some Error", "detail"))
    with pytest.raises(ApiValidationError) as ei:
        qbo.void_invoice("1", "0")
    assert ei.value.code == code


def test_xml_429_recognised_and_retried_with_default_wait():
    calls = []

    def api(request):
        calls.append(1)
        if len(calls) <= 2:
            return httpx.Response(429, content=XML_429.encode(), headers={"Content-Type": "application/xml"})
        return jresp(200, {"QueryResponse": {"Item": [{"Id": "1", "Name": "Services"}]}})

    qbo, _, _, _, ft = build(api)
    assert qbo.query("SELECT * FROM Item")[0]["Name"] == "Services"
    assert ft.sleeps.count(0.5) == 2  # rate_limit_wait, no Retry-After


def test_xml_throttle_403_is_rate_limit_and_exhausts():
    qbo, *_ = build(lambda r: httpx.Response(403, content=XML_429.encode()))
    with pytest.raises(ApiRateLimited) as ei:
        qbo.query("SELECT * FROM Item")
    assert ei.value.code == "3001" and "ThrottleExceeded" in str(ei.value)


def test_qbo_429s_back_off_adaptively_not_a_flat_minute():
    """Issue 13: each 429 used to wait a flat 60 s; now 5 s doubling, capped at Intuit's 60 s."""
    calls = []

    def api(request):
        calls.append(1)
        if len(calls) <= 4:
            return httpx.Response(429, content=XML_429.encode())
        return jresp(200, {"QueryResponse": {}})

    store = InMemoryTokenStore()
    ft = FakeTime()

    def handler(request):
        if request.url.path.endswith("/bearer"):
            return OAuthServer()(request)
        return api(request)

    mock = httpx.MockTransport(handler)
    oauth = QboOAuth(TOKEN_URL, "cid", CLIENT_SECRET, store, REALM, SEED, transport=mock)
    qbo = QuickBooksClient("https://q", REALM, oauth, transport=mock, sleep=ft.sleep, clock=ft.clock)
    qbo.query("SELECT * FROM Item")
    assert ft.sleeps == [5.0, 10.0, 20.0, 40.0]


def test_qbo_429_retry_after_is_honoured_over_the_schedule():
    calls = []

    def handler(request):
        if request.url.path.endswith("/bearer"):
            return OAuthServer()(request)
        calls.append(1)
        if len(calls) == 1:
            return httpx.Response(429, headers={"Retry-After": "2"}, content=XML_429.encode())
        return jresp(200, {"QueryResponse": {}})

    ft = FakeTime()
    mock = httpx.MockTransport(handler)
    oauth = QboOAuth(TOKEN_URL, "cid", CLIENT_SECRET, InMemoryTokenStore(), REALM, SEED, transport=mock)
    qbo = QuickBooksClient("https://q", REALM, oauth, transport=mock, sleep=ft.sleep, clock=ft.clock)
    qbo.query("SELECT * FROM Item")
    assert ft.sleeps == [2.0]


def test_401_refreshes_once_and_retries():
    tokens_seen = []

    def api(request):
        tokens_seen.append(request.headers["Authorization"])
        if len(tokens_seen) == 1:
            return jresp(401, LOWER_401, {"WWW-Authenticate": 'Bearer realm="Intuit", error="invalid_token"'})
        return jresp(200, {"Invoice": {"Id": "5", "SyncToken": "0"}})

    qbo, oauth, store, server, _ = build(api)
    assert qbo.get_invoice("5")["Id"] == "5"
    assert tokens_seen == ["Bearer access-1", "Bearer access-2"]
    assert store.get(REALM).refresh_token.get_secret_value() == "rotated-refresh-2"


def test_401_twice_raises_auth_error_with_code():
    qbo, *_ = build(lambda r: jresp(401, LOWER_401))
    with pytest.raises(ApiAuthError) as ei:
        qbo.get_invoice("5")
    assert ei.value.code == "3200" and ei.value.status == 401


def test_refresh_on_expiry_not_per_call():
    clock = {"now": datetime(2026, 10, 1, 12, 0, tzinfo=timezone.utc)}
    qbo, oauth, store, server, _ = build(lambda r: jresp(200, {"QueryResponse": {}}), now=lambda: clock["now"])
    for _ in range(5):
        qbo.query("SELECT * FROM Term")
    assert len(server.calls) == 1
    clock["now"] += timedelta(minutes=59)  # within the 5-minute skew of expiry
    qbo.query("SELECT * FROM Term")
    assert len(server.calls) == 2


def test_rotation_persisted_before_new_token_used():
    events = []

    class Store(InMemoryTokenStore):
        def save(self, realm, tokens):
            events.append(("save", tokens.access_token.get_secret_value(),
                           tokens.refresh_token.get_secret_value()))
            super().save(realm, tokens)

    def api(request):
        events.append(("use", request.headers["Authorization"].removeprefix("Bearer ")))
        return jresp(200, {"QueryResponse": {}})

    qbo, *_ = build(api, store=Store())
    qbo.query("SELECT * FROM Class")
    assert events == [("save", "access-1", "rotated-refresh-1"), ("use", "access-1")]


def test_stored_token_wins_over_seed():
    server = OAuthServer(valid="stored-rt")
    store = InMemoryTokenStore({REALM: TokenSet(refresh_token="stored-rt")})
    qbo, *_ = build(lambda r: jresp(200, {"QueryResponse": {}}), store=store, oauth_server=server)
    qbo.query("SELECT * FROM Class")
    assert "refresh_token=stored-rt" in server.calls[0].content.decode()


def test_invalid_grant_tells_operator_to_reconnect_without_token():
    server = OAuthServer(valid="something-else")
    audit = AuditRecorder()
    qbo, *_ = build(lambda r: jresp(200, {}), oauth_server=server, audit=audit)
    with pytest.raises(QboReconnectRequired) as ei:
        qbo.query("SELECT * FROM Customer")
    msg = str(ei.value)
    assert "reconnect" in msg.lower() and "QBO_REFRESH_TOKEN" in msg and REALM in msg
    assert SEED not in msg and CLIENT_SECRET not in msg and SEED not in repr(ei.value)
    assert SEED not in repr(audit.rows) and CLIENT_SECRET not in repr(audit.rows)
    assert len(server.calls) == 1  # invalid_grant is not retried


def test_invalid_stored_token_falls_back_to_new_seed():
    # the operator reconnected: the store still has a dead token, QBO_REFRESH_TOKEN is new
    server = OAuthServer(valid=SEED)
    store = InMemoryTokenStore({REALM: TokenSet(refresh_token="dead-rt")})
    qbo, *_ = build(lambda r: jresp(200, {"QueryResponse": {}}), store=store, oauth_server=server)
    qbo.query("SELECT * FROM Customer")
    assert store.get(REALM).refresh_token.get_secret_value() == "rotated-refresh-1"


def test_single_flight_refresh_two_threads():
    server = OAuthServer()
    server.delay = 0.2
    store = InMemoryTokenStore()
    mock = httpx.MockTransport(server)
    oauth_a = QboOAuth(TOKEN_URL, "cid", CLIENT_SECRET, store, REALM, SEED, transport=mock)
    oauth_b = QboOAuth(TOKEN_URL, "cid", CLIENT_SECRET, store, REALM, SEED, transport=mock)
    results, errors = [], []

    def worker(o):
        try:
            results.append(o.access_token())
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(o,)) for o in (oauth_a, oauth_b, oauth_a, oauth_b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(server.calls) == 1  # one refresh; the others re-read the store after the lock
    assert results == ["access-1"] * 4
    assert len(store.saves) == 1


def test_concurrent_401s_refresh_once():
    server = OAuthServer()
    store = InMemoryTokenStore()
    mock = httpx.MockTransport(server)
    oauth = QboOAuth(TOKEN_URL, "cid", CLIENT_SECRET, store, REALM, SEED, transport=mock)
    first = oauth.access_token()
    barrier = threading.Barrier(3)
    out = []

    def worker():
        barrier.wait()
        out.append(oauth.refresh(rejected_access_token=first).access_token.get_secret_value())

    threads = [threading.Thread(target=worker) for _ in range(3)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert out == ["access-2"] * 3 and len(server.calls) == 2


def test_secrets_absent_from_every_error_and_audit_record():
    audit = AuditRecorder()

    def api(request):
        # an API that echoes the bearer token back in its error detail
        return fault("2010", "Request has invalid or unsupported property",
                     f"Authorization {request.headers['Authorization']} was used")

    qbo, oauth, store, *_ = build(api, audit=audit)
    with pytest.raises(ApiValidationError) as ei:
        qbo.create_invoice({"X": 1}, "rid-1")
    secrets = ["access-1", "rotated-refresh-1", SEED, CLIENT_SECRET]
    text = str(ei.value) + repr(ei.value) + repr(audit.rows) + repr(store.get(REALM)) + repr(oauth) + repr(qbo)
    for s in secrets:
        assert s not in text, s
    assert "***" in str(ei.value)


def test_catalog_lists_include_inactive_and_quarantine():
    sqls = []

    def api(request):
        sql = request.content.decode()
        sqls.append(sql)
        if "FROM Customer" in sql:
            return jresp(200, {"QueryResponse": {"Customer": [
                {"Id": "1", "DisplayName": "A", "Active": True, "SyncToken": "3", "CurrencyRef": {"value": "USD"}},
                {"Id": "2", "Active": False}]}})
        return jresp(200, {"QueryResponse": {}})

    qbo, *_ = build(api)
    res = qbo.list_customers()
    assert [c.Id for c in res.records] == ["1"] and res.rejected[0].record_id == "2"
    assert "Active IN (true,false)" in sqls[0]
    assert qbo.list_terms().records == []


def test_find_invoice_by_doc_number_get_and_void():
    def api(request):
        if request.url.path.endswith("/query"):
            assert "DocNumber = 'SP2610-AB\\'C'" in request.content.decode()
            return jresp(200, {"QueryResponse": {"Invoice": [{"Id": "7", "DocNumber": "SP2610-AB'C",
                                                              "SyncToken": "2"}]}})
        if request.method == "GET":
            assert request.url.path.endswith("/invoice/7")
            return jresp(200, {"Invoice": {"Id": "7", "SyncToken": "2"}})
        assert request.url.params["operation"] == "void"
        assert body_of(request) == {"Id": "7", "SyncToken": "2"}
        return jresp(200, {"Invoice": {"Id": "7", "SyncToken": "3", "PrivateNote": "Voided"}})

    qbo, *_ = build(api)
    assert qbo.find_invoice_by_doc_number("SP2610-AB'C")["Id"] == "7"
    assert qbo.get_invoice("7")["SyncToken"] == "2"
    assert qbo.void_invoice("7", "2")["SyncToken"] == "3"


def test_no_token_anywhere_means_reconnect():
    store = InMemoryTokenStore()
    oauth = QboOAuth(TOKEN_URL, "cid", CLIENT_SECRET, store, REALM, None,
                     transport=httpx.MockTransport(lambda r: pytest.fail("no call expected")))
    with pytest.raises(QboReconnectRequired, match="QBO_REFRESH_TOKEN"):
        oauth.access_token()


def test_traceback_text_has_no_secrets():
    import traceback

    def api(request):
        raise httpx.ConnectError("boom", request=request)

    qbo, *_ = build(api)
    with pytest.raises(Exception) as ei:
        qbo.query("SELECT * FROM Item")
    text = "".join(traceback.format_exception(ei.value))
    for s in ("access-1", "rotated-refresh-1", SEED, CLIENT_SECRET, "Bearer"):
        assert s not in text, s
    assert ei.value.__context__ is None and ei.value.__cause__ is None


def test_store_with_lock_method_only_is_accepted():
    # docs/architecture.md names the store's lock `lock(realm)`; `refresh_lock` is preferred
    class LockStore:
        def __init__(self):
            self.inner = InMemoryTokenStore()
            self.locked = 0

        def get(self, realm):
            return self.inner.get(realm)

        def save(self, realm, tokens):
            self.inner.save(realm, tokens)

        def lock(self, realm):
            self.locked += 1
            return self.inner.refresh_lock(realm)

    store = LockStore()
    oauth = QboOAuth(TOKEN_URL, "cid", CLIENT_SECRET, store, REALM, SEED,
                     transport=httpx.MockTransport(OAuthServer()))
    assert oauth.access_token() == "access-1" and store.locked == 1
