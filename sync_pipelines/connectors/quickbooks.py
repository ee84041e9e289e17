"""QuickBooks Online Accounting API v3 client and its OAuth 2.0 token manager.

* Every request carries ``minorversion=75`` (lower versions are served as 75 since 2025-08).
* Queries are POSTed as ``application/text``; ``{"QueryResponse": {}}`` means no rows;
  :meth:`QuickBooksClient.query_all` pages with ``STARTPOSITION``/``MAXRESULTS`` (≤ 1000) until a
  page comes back short.
* Faults carry string codes (6240 duplicate name, 6140 duplicate DocNumber, 5010 stale
  SyncToken, 2500 invalid reference, 6070 Amount != Qty x UnitPrice, ...). 400 validation faults
  are never retried. A 429 is a rate limit whatever its body (often XML ``ThrottleExceeded``,
  code 3001, sometimes with a 403 status); ``Retry-After`` is honoured, and without it the
  waits follow an adaptive schedule (5 s doubling per attempt up to the 60 s Intuit asks for).
* A 401 (lowercase ``fault`` body) triggers one token refresh and one retry.
* :class:`QboOAuth` refreshes on expiry, single-flight through ``TokenStore.refresh_lock`` (the
  store is re-read after the lock is taken), and saves the rotated refresh token before the new
  access token is used. ``invalid_grant`` raises :class:`QboReconnectRequired`.
"""

from __future__ import annotations

import base64
import re
import threading
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
from pydantic import SecretStr

from .http import (
    ApiClient,
    ApiAuthError,
    ApiError,
    ApiNotFound,
    ApiRateLimited,
    ApiTransport,
    ApiUnavailable,
    ApiValidationError,
    AuditSink,
    Clock,
    ErrorInfo,
    FetchResult,
    InMemoryTokenStore,
    RateLimiter,
    RetryPolicy,
    Sleep,
    TokenSet,
    TokenStore,
    loads_response,
    parse_records,
    quickbooks_batch_limiter,
    quickbooks_limiter,
)
from .quickbooks_models import ENTITY_MODELS, Class, Customer, Item, TaxCode, TaxRate, Term

SYSTEM = "quickbooks"
OAUTH_SYSTEM = "quickbooks-oauth"
MINORVERSION = 75
MAX_RESULTS = 1000
#: Intuit's batch rules: ≤ 30 items a call; with a batch ``requestid`` (≤ 36 characters, not the
#: 50 of a single call) every ``bId`` is ≤ 10 characters.
BATCH_MAX_ITEMS = 30
BATCH_ID_MAX = 10
BATCH_REQUEST_ID_MAX = 36
QBO_RATE_LIMIT_WAIT = 60.0  # Intuit: wait 60 s after a 429: the ceiling of the schedule
QBO_RATE_LIMIT_FIRST_WAIT = 5.0  # most 429s are a burst over 10/s or 500/min, gone in seconds

__all__ = [
    "InMemoryTokenStore",
    "QboOAuth",
    "QboReconnectRequired",
    "QuickBooksClient",
    "TokenSet",
    "TokenStore",
    "duplicate_txn_id",
    "quote",
]


# --------------------------------------------------------------------------------------------
# Errors


class QboReconnectRequired(ApiAuthError):
    """The refresh token was refused (``invalid_grant``): an operator must reconnect the app."""

    def __init__(self, realm_id: str, path: str, status: int | None = 400, *, attempts: int = 1,
                 trace_id: str | None = None) -> None:
        self.realm_id = realm_id
        super().__init__(OAUTH_SYSTEM, "POST", path, status, code="invalid_grant",
                         api_message="refresh token rejected", attempts=attempts, trace_id=trace_id)

    def _format(self) -> str:
        # This text is what the operator sees (run failure, alert, CLI): it says what to do.
        return (
            f"QuickBooks refused the refresh token for realm {self.realm_id} (invalid_grant; "
            f"{self.system} {self.method} {self.path} -> HTTP {self.status}): the app must be reconnected. "
            "Re-authorise it with Intuit (OAuth 2.0 consent for this company, e.g. in the Intuit developer "
            "OAuth playground or your app's connect page), set QBO_REFRESH_TOKEN to the new refresh token "
            "in the code location's environment, then re-run this client's month."
        )


_XML_ERROR = re.compile(r"<Error[^>]*\bcode=\"([^\"]*)\"[^>]*>(.*?)</Error>", re.S | re.I)
_XML_TAG = {name: re.compile(rf"<{name}>(.*?)</{name}>", re.S | re.I) for name in ("Message", "Detail")}
_TXN_ID = re.compile(r"TxnId\s*=\s*(\d+)")


def _qbo_error(response: httpx.Response, body: Any) -> ErrorInfo:
    info = ErrorInfo()
    errors: list[dict[str, Any]] = []
    if isinstance(body, dict):
        fault = body.get("Fault")
        if isinstance(fault, dict):
            errs = fault.get("Error") or []
            fault_type = fault.get("type")
        else:
            fault = body.get("fault")  # the lowercase 401 shape
            errs = fault.get("error") if isinstance(fault, dict) else []
            fault_type = fault.get("type") if isinstance(fault, dict) else None
        for e in errs or []:
            if isinstance(e, dict):
                errors.append({
                    "code": None if e.get("code") is None else str(e.get("code")),
                    "message": e.get("Message", e.get("message")),
                    "detail": e.get("Detail", e.get("detail")),
                    "element": e.get("element"),
                    "type": fault_type,
                })
        if not errors and body.get("error"):  # OAuth-style {"error": "...", "error_description": ...}
            errors.append({"code": str(body["error"]), "message": body.get("error_description"), "detail": None})
    else:
        text = response.text if response.content else ""
        for code, inner in _XML_ERROR.findall(text):
            msg = _XML_TAG["Message"].search(inner)
            det = _XML_TAG["Detail"].search(inner)
            errors.append({
                "code": code,
                "message": msg.group(1).strip() if msg else None,
                "detail": det.group(1).strip() if det else None,
            })
    info.errors = errors
    if errors:
        first = errors[0]
        info.code = first.get("code")
        info.message = None if first.get("message") is None else str(first.get("message"))
        info.detail = None if first.get("detail") is None else str(first.get("detail"))
    throttled = any(
        e.get("code") == "3001" or "ThrottleExceeded" in str(e.get("message") or "") for e in errors
    )
    if response.status_code == 429 or throttled:
        info.kind = ApiRateLimited
        info.retryable = True
    elif response.status_code == 400 and info.code == "610":
        info.kind = ApiNotFound
    return info


def duplicate_txn_id(error: ApiError) -> str | None:
    """For a 6140 duplicate-DocNumber fault, the existing transaction's Id (parsed from Detail)."""
    for e in error.errors or [{"detail": error.detail}]:
        match = _TXN_ID.search(str(e.get("detail") or ""))
        if match:
            return match.group(1)
    return None


def quote(value: str) -> str:
    """A QuickBooks query string literal: single quotes, apostrophes escaped with a backslash.

    ``quote("Amy's Bird") == "'Amy\\\\'s Bird'"``. Colons, ``%`` and non-ASCII letters need no
    escaping inside the literal. Backslashes are doubled so a value cannot end the literal.
    """
    if not isinstance(value, str):
        raise TypeError(f"quote() takes a string, got {type(value).__name__}")
    if any(c in value for c in "\r\n\t\x00"):
        raise ValueError("QuickBooks query literals cannot contain control characters")
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


# --------------------------------------------------------------------------------------------
# OAuth


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


class QboOAuth:
    """Access tokens for one realm, refreshed on expiry through a shared :class:`TokenStore`.

    ``seed_refresh_token`` (``QBO_REFRESH_TOKEN``) is used when the store has no token for the
    realm, and once more if the stored token is refused and the seed differs from it (the operator
    reconnected and set a new one).
    """

    def __init__(
        self,
        token_url: str,
        client_id: str,
        client_secret: str | SecretStr,
        token_store: TokenStore,
        realm_id: str,
        seed_refresh_token: str | SecretStr | None = None,
        *,
        expiry_skew: timedelta = timedelta(seconds=300),
        timeout: httpx.Timeout | float | None = None,
        audit: AuditSink | None = None,
        retry: RetryPolicy | None = None,
        sleep: Sleep | None = None,
        clock: Clock | None = None,
        now: Callable[[], datetime] | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.token_url = token_url
        self.client_id = client_id
        self._client_secret = client_secret if isinstance(client_secret, SecretStr) else SecretStr(client_secret)
        if seed_refresh_token is not None and not isinstance(seed_refresh_token, SecretStr):
            seed_refresh_token = SecretStr(seed_refresh_token) if seed_refresh_token else None
        self._seed: SecretStr | None = seed_refresh_token
        self.store = token_store
        self.realm_id = str(realm_id)
        self.expiry_skew = expiry_skew
        self._now = now or _utcnow
        self._cached: TokenSet | None = None
        self._local = threading.Lock()
        url = httpx.URL(token_url)
        self._token_path = url.path
        self._http = ApiTransport(
            OAUTH_SYSTEM,
            f"{url.scheme}://{url.netloc.decode('ascii')}",
            headers={"Accept": "application/json"},
            timeout=timeout,
            retry=retry,
            audit=audit,
            error_parser=_qbo_error,
            trace_header="intuit_tid",
            sleep=sleep,
            clock=clock,
            transport=transport,
            secrets=[self._client_secret.get_secret_value(),
                     self._seed.get_secret_value() if self._seed else ""],
        )
        self._scrubbers: list[ApiTransport] = [self._http]
        self.refresh_count = 0

    def __repr__(self) -> str:
        return f"QboOAuth(token_url={self.token_url!r}, client_id={self.client_id!r}, realm_id={self.realm_id!r})"

    def close(self) -> None:
        self._http.close()

    def _register(self, ts: TokenSet) -> None:
        for transport in self._scrubbers:
            transport.add_secret(ts.refresh_token.get_secret_value())
            if ts.access_token is not None:
                transport.add_secret(ts.access_token.get_secret_value())

    def attach(self, transport: ApiTransport) -> None:
        """Have ``transport`` scrub every token this manager sees from its error texts."""
        self._scrubbers.append(transport)
        transport.add_secret(self._client_secret.get_secret_value())
        if self._cached is not None:
            self._register(self._cached)

    def _lock(self):
        lock = getattr(self.store, "refresh_lock", None) or getattr(self.store, "lock")
        return lock(self.realm_id)

    def access_token(self) -> str:
        """A valid access token, refreshing (single-flight) only when the current one expires."""
        cached = self._cached
        if cached is not None and cached.access_valid(self._now(), self.expiry_skew):
            return cached.access_token.get_secret_value()  # type: ignore[union-attr]
        stored = self.store.get(self.realm_id)
        if stored is not None and stored.access_valid(self._now(), self.expiry_skew):
            self._cached = stored
            self._register(stored)
            return stored.access_token.get_secret_value()  # type: ignore[union-attr]
        return self.refresh().access_token.get_secret_value()  # type: ignore[union-attr]

    def refresh(self, rejected_access_token: str | None = None) -> TokenSet:
        """Refresh under the store's lock, unless another worker already did.

        After the lock is taken the store is read again: if it now holds a valid access token
        that is not ``rejected_access_token`` (the one a 401 refused), that token is used and no
        refresh happens. Otherwise the refresh token is exchanged and the new set is saved
        before anything uses it.
        """
        with self._local, self._lock():
            stored = self.store.get(self.realm_id)
            if stored is not None and stored.access_valid(self._now(), self.expiry_skew):
                token = stored.access_token.get_secret_value()  # type: ignore[union-attr]
                if rejected_access_token is None or token != rejected_access_token:
                    self._cached = stored
                    self._register(stored)
                    return stored
            if stored is not None:
                refresh_token = stored.refresh_token
            elif self._seed is not None:
                refresh_token = self._seed
            else:
                raise QboReconnectRequired(self.realm_id, self._token_path, status=None)
            try:
                fresh = self._exchange(refresh_token, previous=stored)
            except QboReconnectRequired:
                seed = self._seed
                if stored is None or seed is None or seed.get_secret_value() == refresh_token.get_secret_value():
                    raise
                fresh = self._exchange(seed, previous=None)  # the operator set a new QBO_REFRESH_TOKEN
            self.store.save(self.realm_id, fresh)  # persisted BEFORE the new access token is used
            self._cached = fresh
            self.refresh_count += 1
            return fresh

    def _exchange(self, refresh_token: SecretStr, previous: TokenSet | None) -> TokenSet:
        secret = refresh_token.get_secret_value()
        self._http.add_secret(secret)
        return self._token_request({"grant_type": "refresh_token", "refresh_token": secret}, keep_refresh=secret)

    def exchange_authorization_code(self, code: str, redirect_uri: str) -> TokenSet:
        """The OAuth 2.0 authorization-code grant (``sync-pipelines qbo connect``): the code the
        user's consent redirected back, for this realm's first tokens. Saved in the store before
        it is returned. A refused code (used, expired, another redirect URI) raises
        ``QboReconnectRequired``: start the connection again."""
        self._http.add_secret(code)
        with self._local, self._lock():
            fresh = self._token_request(
                {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri}, keep_refresh=None)
            self.store.save(self.realm_id, fresh)
            self._cached = fresh
        return fresh

    def _token_request(self, data: dict[str, str], keep_refresh: str | None) -> TokenSet:
        basic = base64.b64encode(
            f"{self.client_id}:{self._client_secret.get_secret_value()}".encode()
        ).decode("ascii")
        try:
            response = self._http.request(
                "POST",
                self.token_url,
                headers={"Authorization": f"Basic {basic}",
                         "Content-Type": "application/x-www-form-urlencoded"},
                data=data,
            )
        except ApiError as exc:
            if exc.status == 400 and (exc.code == "invalid_grant" or "invalid_grant" in str(exc.api_message or "")):
                raise QboReconnectRequired(self.realm_id, self._token_path, exc.status,
                                           attempts=exc.attempts, trace_id=exc.trace_id) from None
            raise
        body = loads_response(response)
        if not isinstance(body, dict) or not body.get("access_token"):
            raise ApiAuthError(OAUTH_SYSTEM, "POST", self._token_path, response.status_code,
                               api_message="token response has no access_token")
        now = self._now()
        expires_in = int(body.get("expires_in") or 3600)
        refresh_expires = body.get("x_refresh_token_expires_in")
        new_refresh = body.get("refresh_token") or keep_refresh
        if not new_refresh:
            raise ApiAuthError(OAUTH_SYSTEM, "POST", self._token_path, response.status_code,
                               api_message="token response has no refresh_token")
        ts = TokenSet(
            refresh_token=str(new_refresh),
            access_token=str(body["access_token"]),
            access_expires_at=now + timedelta(seconds=expires_in),
            refresh_expires_at=(now + timedelta(seconds=int(refresh_expires))) if refresh_expires else None,
        )
        self._register(ts)
        return ts


# --------------------------------------------------------------------------------------------
# The API client


class QuickBooksClient(ApiClient):
    """QuickBooks Online Accounting API v3 for one realm.

    ``base_url`` carries no path (``https://quickbooks.api.intuit.com``). ``page_size`` (≤ 1000)
    is the MAXRESULTS of :meth:`query_all` (tests use small values to force paging).
    """

    def __init__(
        self,
        base_url: str,
        realm_id: str,
        oauth: QboOAuth,
        minorversion: int = MINORVERSION,
        *,
        page_size: int = MAX_RESULTS,
        timeout: httpx.Timeout | float | None = None,
        audit: AuditSink | None = None,
        limiter: RateLimiter | None = None,
        batch_limiter: RateLimiter | None = None,
        retry: RetryPolicy | None = None,
        sleep: Sleep | None = None,
        clock: Clock | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if not 1 <= page_size <= MAX_RESULTS:
            raise ValueError(f"page_size must be 1..{MAX_RESULTS}")
        self.base_url = base_url.rstrip("/")
        self.realm_id = str(realm_id)
        self.oauth = oauth
        self.minorversion = minorversion
        self.page_size = page_size
        kw: dict[str, Any] = {}
        if sleep is not None:
            kw["sleep"] = sleep
        if clock is not None:
            kw["clock"] = clock
        self._http = ApiTransport(
            SYSTEM,
            self.base_url,
            headers={"Accept": "application/json"},
            timeout=timeout,
            limiter=limiter if limiter is not None else quickbooks_limiter(self.realm_id, **kw),
            retry=retry or RetryPolicy(rate_limit_wait=QBO_RATE_LIMIT_WAIT,
                                             rate_limit_first_wait=QBO_RATE_LIMIT_FIRST_WAIT,
                                             max_retry_after=120.0),
            audit=audit,
            error_parser=_qbo_error,
            trace_header="intuit_tid",
            sleep=sleep,
            clock=clock,
            transport=transport,
        )
        self._batch_limiter = batch_limiter if batch_limiter is not None else quickbooks_batch_limiter(
            self.realm_id, **kw)
        oauth.attach(self._http)

    def __repr__(self) -> str:
        return f"QuickBooksClient(base_url={self.base_url!r}, realm_id={self.realm_id!r})"


    @property
    def _prefix(self) -> str:
        return f"/v3/company/{self.realm_id}"

    def _request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json_body: Any = None,
        content: str | None = None,
        content_type: str | None = None,
        request_id: str | None = None,
        extra_limiters: Sequence[RateLimiter] = (),
    ) -> tuple[Any, httpx.Response]:
        """One API call with the bearer token; a 401 refreshes the token once and retries once."""
        query: dict[str, Any] = dict(params or {})
        if request_id is not None:
            query["requestid"] = request_id
        query["minorversion"] = self.minorversion
        url = self._prefix + path
        retried_auth = False
        while True:
            token = self.oauth.access_token()
            headers = {"Authorization": f"Bearer {token}"}
            if content_type:
                headers["Content-Type"] = content_type
            try:
                response = self._http.request(
                    method, url, params=query, headers=headers, json_body=json_body,
                    content=content, request_id=request_id, extra_limiters=extra_limiters,
                )
            except ApiAuthError as exc:
                if exc.status == 401 and not retried_auth:
                    retried_auth = True
                    self.oauth.refresh(rejected_access_token=token)
                    continue
                raise
            return loads_response(response), response

    # -- queries
    def query(self, sql: str) -> list[dict[str, Any]]:
        """Run one query (``POST .../query``, ``application/text``); the rows of its entity.

        ``{"QueryResponse": {}}`` (no rows) gives ``[]``.
        """
        body, _ = self._request("POST", "/query", content=sql, content_type="application/text")
        qr = body.get("QueryResponse") if isinstance(body, dict) else None
        if not isinstance(qr, dict):
            raise ApiValidationError(SYSTEM, "POST", self._prefix + "/query", 200,
                                     api_message="response has no QueryResponse")
        for key, value in qr.items():
            if isinstance(value, list) and key[:1].isupper():
                return [v for v in value if isinstance(v, dict)]
        return []

    def count(self, entity: str, where: str | None = None) -> int:
        body, _ = self._request(
            "POST", "/query", content=f"SELECT COUNT(*) FROM {entity}" + (f" WHERE {where}" if where else ""),
            content_type="application/text",
        )
        qr = (body or {}).get("QueryResponse") or {}
        return int(qr.get("totalCount") or 0)

    def query_all(self, entity: str, where: str | None = None, *, order_by: str | None = None) -> list[dict[str, Any]]:
        """Every row of ``SELECT * FROM entity [WHERE where]``.

        Paginated: ``STARTPOSITION`` (1-based) and ``MAXRESULTS`` (``page_size``, ≤ 1000), until a
        page returns fewer rows than ``MAXRESULTS``. Rows repeated across pages (data changing
        mid-read) are kept once, by Id.
        """
        if not re.fullmatch(r"[A-Za-z]+", entity):
            raise ValueError(f"not a QuickBooks entity name: {entity!r}")
        rows: list[dict[str, Any]] = []
        seen: set[str] = set()
        start = 1
        while True:
            sql = f"SELECT * FROM {entity}"
            if where:
                sql += f" WHERE {where}"
            if order_by:
                sql += f" ORDERBY {order_by}"
            sql += f" STARTPOSITION {start} MAXRESULTS {self.page_size}"
            page = self.query(sql)
            for row in page:
                rid = row.get("Id")
                if rid is not None:
                    if str(rid) in seen:
                        continue
                    seen.add(str(rid))
                rows.append(row)
            if len(page) < self.page_size:
                return rows
            start += self.page_size

    quote = staticmethod(quote)

    # -- catalog
    def list_entities(self, entity: str) -> FetchResult[Any]:
        """Every Customer/Item/Class/Term, active and inactive, validated (malformed -> rejected)."""
        model = ENTITY_MODELS[entity]
        rows = self.query_all(entity, "Active IN (true,false)")
        return parse_records(model, rows, system=SYSTEM, entity=entity, id_field="Id")

    def list_customers(self) -> FetchResult[Customer]:
        return self.list_entities("Customer")

    def list_items(self) -> FetchResult[Item]:
        return self.list_entities("Item")

    def list_classes(self) -> FetchResult[Class]:
        return self.list_entities("Class")

    def list_terms(self) -> FetchResult[Term]:
        return self.list_entities("Term")

    # -- customers
    def find_customer(self, display_name: str) -> dict[str, Any] | None:
        """The customer with exactly this DisplayName, active or not (inactive ones keep their name)."""
        rows = self.query(
            f"SELECT * FROM Customer WHERE DisplayName = {quote(display_name)} AND Active IN (true,false)"
        )
        for row in rows:
            if row.get("DisplayName") == display_name:
                return row
        return rows[0] if rows else None

    def create_customer(self, display_name: str, currency: str | None = None, **fields: Any) -> dict[str, Any]:
        body: dict[str, Any] = {"DisplayName": display_name, **fields}
        if currency:
            body["CurrencyRef"] = {"value": currency}
        data, _ = self._request("POST", "/customer", json_body=body)
        return _entity(data, "Customer", self._prefix + "/customer")

    def find_or_create_customer(self, display_name: str, currency: str | None = None) -> dict[str, Any]:
        """Find by DisplayName (inactive too), else create; on 6240 (name taken) query again.

        If the name is taken by a Vendor or Employee (QuickBooks names are unique across all
        three) the 6240 error is raised.
        """
        found = self.find_customer(display_name)
        if found is not None:
            return found
        try:
            return self.create_customer(display_name, currency)
        except ApiValidationError as exc:
            if exc.code != "6240":
                raise
            found = self.find_customer(display_name)
            if found is not None:
                return found
            raise

    def find_customers(self, display_names: Sequence[str], *, chunk: int = 50) -> dict[str, dict[str, Any]]:
        """The customers (active or not) among `display_names`, by exact DisplayName; one
        ``DisplayName IN (...)`` query per `chunk` names (a first month looks up ~1,000)."""
        names = sorted(set(display_names))
        out: dict[str, dict[str, Any]] = {}
        for i in range(0, len(names), chunk):
            part = names[i : i + chunk]
            where = "DisplayName IN (" + ", ".join(quote(n) for n in part) + ") AND Active IN (true,false)"
            for row in self.query_all("Customer", where):
                name = row.get("DisplayName")
                if name in part and name not in out:
                    out[name] = row
        return out

    # -- batch
    def batch(self, items: Sequence[dict[str, Any]], request_id: str | None = None) -> dict[str, dict[str, Any]]:
        """``POST .../batch``: up to 30 independent items; each item's response by its ``bId``.

        HTTP 200 comes back even when items fail: an item is ``{"bId", "<Entity>": {...}}``,
        ``{"bId", "QueryResponse": {...}}`` or ``{"bId", "Fault": {"type", "Error": [...]}}``
        (see :func:`batch_item_error`). A ``request_id`` replayed returns the first response,
        items and faults alike. Each item dict also gets the response's ``intuit_tid``. Counts
        against both the realm's 500 calls a minute and its 40 batch calls a minute.
        """
        if not 1 <= len(items) <= BATCH_MAX_ITEMS:
            raise ValueError(f"a batch holds 1..{BATCH_MAX_ITEMS} items, not {len(items)}")
        bids = [str(item.get("bId") or "") for item in items]
        if len(set(bids)) != len(bids) or any(not b or len(b) > BATCH_ID_MAX for b in bids):
            raise ValueError(f"every bId must be unique and 1..{BATCH_ID_MAX} characters")
        if request_id is not None and not 1 <= len(request_id) <= BATCH_REQUEST_ID_MAX:
            raise ValueError(f"a batch requestid is 1..{BATCH_REQUEST_ID_MAX} characters")
        data, response = self._request("POST", "/batch", json_body={"BatchItemRequest": list(items)},
                                       request_id=request_id, extra_limiters=[self._batch_limiter])
        answers = data.get("BatchItemResponse") if isinstance(data, dict) else None
        if not isinstance(answers, list):
            raise ApiValidationError(SYSTEM, "POST", self._prefix + "/batch", 200,
                                     api_message="response has no BatchItemResponse")
        tid = response.headers.get("intuit_tid")
        out: dict[str, dict[str, Any]] = {}
        for answer in answers:
            if isinstance(answer, dict) and answer.get("bId") in bids:
                out[str(answer["bId"])] = {**answer, "intuit_tid": tid}
        return out

    # -- invoices
    def create_invoice(self, payload: dict[str, Any], request_id: str) -> dict[str, Any]:
        """``POST .../invoice?requestid=...&minorversion=75``; the created Invoice dict.

        The body is written with :func:`sync_pipelines.money.dumps` (Decimals exact; floats
        refused). The same ``request_id`` replayed returns the original response (QuickBooks
        idempotency). The returned dict has Decimal numbers and an extra ``"intuit_tid"`` key
        (the response's trace id header, or None) that is not part of the Invoice.
        """
        if not request_id or len(request_id) > 50:
            raise ValueError("request_id must be 1..50 characters (QuickBooks requestid limit)")
        data, response = self._request("POST", "/invoice", json_body=payload, request_id=request_id)
        invoice = _entity(data, "Invoice", self._prefix + "/invoice")
        invoice["intuit_tid"] = response.headers.get("intuit_tid")
        return invoice

    def find_invoice_by_doc_number(self, doc_number: str) -> dict[str, Any] | None:
        rows = self.query(f"SELECT * FROM Invoice WHERE DocNumber = {quote(doc_number)}")
        for row in rows:
            if row.get("DocNumber") == doc_number:
                return row
        return rows[0] if rows else None

    def find_invoice_by_private_note(self, customer_id: str, txn_date: str, private_note: str) -> dict[str, Any] | None:
        """Our invoice by its PrivateNote fingerprint. PrivateNote is not filterable in QuickBooks
        queries, so this reads the customer's invoices of that TxnDate (both filterable) and
        matches the note exactly here."""
        rows = self.query_all("Invoice", f"CustomerRef = {quote(customer_id)} AND TxnDate = {quote(txn_date)}")
        for row in rows:
            if row.get("PrivateNote") == private_note:
                return row
        return None

    # -- the company's settings (DESIGN §5 "The QuickBooks company is read, never assumed")
    def preferences(self) -> dict[str, Any]:
        """``GET .../preferences``: the company's Preferences entity."""
        data, _ = self._request("GET", "/preferences")
        return _entity(data, "Preferences", self._prefix + "/preferences")

    def company_info(self) -> dict[str, Any]:
        """``GET .../companyinfo/{realm}``: the CompanyInfo entity (``Country``)."""
        data, _ = self._request("GET", f"/companyinfo/{self.realm_id}")
        return _entity(data, "CompanyInfo", self._prefix + "/companyinfo")

    def list_tax_codes(self) -> FetchResult[TaxCode]:
        """Every TaxCode, active and inactive, validated (malformed -> rejected)."""
        rows = self.query_all("TaxCode", "Active IN (true,false)")
        return parse_records(TaxCode, rows, system=SYSTEM, entity="TaxCode", id_field="Id")

    def list_tax_rates(self) -> FetchResult[TaxRate]:
        rows = self.query_all("TaxRate", "Active IN (true,false)")
        return parse_records(TaxRate, rows, system=SYSTEM, entity="TaxRate", id_field="Id")

    def get_invoice(self, invoice_id: str) -> dict[str, Any]:
        data, _ = self._request("GET", f"/invoice/{invoice_id}")
        return _entity(data, "Invoice", self._prefix + "/invoice")

    def get_payment(self, payment_id: str) -> dict[str, Any]:
        data, _ = self._request("GET", f"/payment/{payment_id}")
        return _entity(data, "Payment", self._prefix + "/payment")

    def invoices_by_id(self, invoice_ids: Sequence[str], *, chunk: int = 100) -> dict[str, dict[str, Any]]:
        """The invoices among `invoice_ids` that exist now (``Id IN (...)`` queries); a deleted
        invoice is simply absent."""
        ids = sorted({str(i) for i in invoice_ids}, key=lambda s: (len(s), s))
        out: dict[str, dict[str, Any]] = {}
        for i in range(0, len(ids), chunk):
            part = ids[i : i + chunk]
            for row in self.query_all("Invoice", "Id IN (" + ", ".join(quote(x) for x in part) + ")"):
                out[str(row.get("Id"))] = row
        return out

    def void_invoice(self, invoice_id: str, sync_token: str) -> dict[str, Any]:
        data, _ = self._request(
            "POST", "/invoice", params={"operation": "void"},
            json_body={"Id": str(invoice_id), "SyncToken": str(sync_token)},
        )
        return _entity(data, "Invoice", self._prefix + "/invoice")

    def update_invoice_sparse(self, invoice_id: str, sync_token: str, fields: dict[str, Any]) -> dict[str, Any]:
        body = {**fields, "Id": str(invoice_id), "SyncToken": str(sync_token), "sparse": True}
        data, _ = self._request("POST", "/invoice", json_body=body)
        return _entity(data, "Invoice", self._prefix + "/invoice")

    # -- change data capture
    def cdc(self, entities: Sequence[str], changed_since: datetime) -> dict[str, list[dict[str, Any]]]:
        """``GET .../cdc``: changed records per entity (deleted ones have ``status: "Deleted"``)."""
        if changed_since.tzinfo is None:
            changed_since = changed_since.replace(tzinfo=timezone.utc)
        data, _ = self._request(
            "GET", "/cdc",
            params={"entities": ",".join(entities), "changedSince": changed_since.isoformat()},
        )
        out: dict[str, list[dict[str, Any]]] = {e: [] for e in entities}
        for block in (data or {}).get("CDCResponse") or []:
            for qr in block.get("QueryResponse") or []:
                if not isinstance(qr, dict):
                    continue
                for key, value in qr.items():
                    if isinstance(value, list):
                        out.setdefault(key, []).extend(v for v in value if isinstance(v, dict))
        return out


def batch_item_error(answer: dict[str, Any], realm_id: str) -> ApiError | None:
    """The error a batch item answered with (None when it succeeded), as the same
    :class:`ApiError` a single call would have raised: a ``ValidationFault`` is an
    :class:`ApiValidationError` (never retried), a throttle (3001) :class:`ApiRateLimited`, and
    any other fault (SystemFault, ...) :class:`ApiUnavailable`."""
    fault = answer.get("Fault")
    if not isinstance(fault, dict):
        return None
    errors = [{"code": None if e.get("code") is None else str(e.get("code")), "message": e.get("Message"),
               "detail": e.get("Detail"), "element": e.get("element"), "type": fault.get("type")}
              for e in fault.get("Error") or [] if isinstance(e, dict)]
    first = errors[0] if errors else {}
    code = first.get("code")
    fault_type = str(fault.get("type") or "")
    if code == "3001" or "ThrottleExceeded" in str(first.get("message") or ""):
        kind: type[ApiError] = ApiRateLimited
    elif fault_type.lower() == "validationfault" or (code or "").isdigit() and 2000 <= int(code or 0) < 10000:
        kind = ApiValidationError
    elif code == "610":
        kind = ApiNotFound
    else:
        kind = ApiUnavailable
    return kind(SYSTEM, "POST", f"/v3/company/{realm_id}/batch#{answer.get('bId')}", 200, code=code,
                api_message=None if first.get("message") is None else str(first["message"])[:500],
                detail=None if first.get("detail") is None else str(first["detail"])[:500],
                trace_id=answer.get("intuit_tid"), errors=errors)


def _entity(data: Any, name: str, path: str) -> dict[str, Any]:
    if not isinstance(data, dict) or not isinstance(data.get(name), dict):
        raise ApiValidationError(SYSTEM, "POST", path, 200, api_message=f"response has no {name} object")
    return dict(data[name])
