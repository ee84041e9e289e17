"""Shared HTTP transport for every connector.

One :class:`ApiTransport` per client wraps an :class:`httpx.Client` and adds what every API needs:

* explicit timeouts (connect / read / write / pool);
* a client-side rate limiter (:class:`RateLimiter`: sliding windows plus an in-flight cap), shared
  per key (e.g. per QuickBooks realm) when built with :meth:`RateLimiter.shared`;
* retries with exponential backoff and full jitter on 429, 5xx, timeouts and connection errors
  only (never on 4xx validation errors), honouring ``Retry-After`` (seconds or HTTP date);
* an audit record for every attempt (:class:`AuditSink`), with the path only, never the query
  string;
* errors (:class:`ApiError` and subclasses) whose message names the system, method, path, status
  and the API's own error code and message, and never a token, secret or header value.

Responses are never decoded with ``response.json()`` (binary floats): use :func:`loads_response`,
which goes through :func:`sync_pipelines.money.loads` (every non-integer number a ``Decimal``).
"""

from __future__ import annotations

import email.utils
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Generic, Protocol, Self, TypeVar, runtime_checkable

import httpx
from pydantic import BaseModel, ConfigDict, SecretStr

from sync_pipelines import money

log = logging.getLogger(__name__)

T = TypeVar("T")

Sleep = Callable[[float], None]
Clock = Callable[[], float]


# --------------------------------------------------------------------------------------------
# Protocols shared with the ledger


@runtime_checkable
class AuditSink(Protocol):
    """Receives one record per HTTP attempt (the ledger's audit table implements it).

    ``path`` is the URL path without its query string; ``status`` is None when no response
    arrived (timeout, connection error); ``error`` is a short, secret-free description.
    """

    def audit(
        self,
        system: str,
        method: str,
        path: str,
        status: int | None,
        duration_ms: int,
        request_id: str | None = None,
        trace_id: str | None = None,
        error: str | None = None,
    ) -> None: ...


class TokenSet(BaseModel):
    """An OAuth token pair. ``repr``/``str`` never show the secrets (pydantic ``SecretStr``).

    Read the values with ``ts.refresh_token.get_secret_value()``. ``access_expires_at`` is a
    timezone-aware UTC datetime (None: unknown, treated as expired).
    """

    model_config = ConfigDict(frozen=True)

    refresh_token: SecretStr
    access_token: SecretStr | None = None
    access_expires_at: datetime | None = None
    refresh_expires_at: datetime | None = None

    def secret_values(self) -> dict[str, Any]:
        """Plain values for a store that must persist them (never log the result)."""
        return {
            "refresh_token": self.refresh_token.get_secret_value(),
            "access_token": self.access_token.get_secret_value() if self.access_token else None,
            "access_expires_at": self.access_expires_at,
            "refresh_expires_at": self.refresh_expires_at,
        }

    def access_valid(self, now: datetime, skew: timedelta = timedelta(seconds=120)) -> bool:
        if self.access_token is None or self.access_expires_at is None:
            return False
        expires = self.access_expires_at
        if expires.tzinfo is None:
            expires = expires.replace(tzinfo=timezone.utc)
        return now + skew < expires


@runtime_checkable
class TokenStore(Protocol):
    """Where OAuth tokens live (the ledger implements it; :class:`InMemoryTokenStore` for tests).

    ``refresh_lock(realm)`` must serialise refreshes for a realm across every thread (and, for a
    database-backed store, every process) that shares the store.
    """

    def get(self, realm: str) -> TokenSet | None: ...

    def save(self, realm: str, tokens: TokenSet) -> None: ...

    def refresh_lock(self, realm: str) -> AbstractContextManager[Any]: ...


class InMemoryTokenStore:
    """A thread-safe :class:`TokenStore` in memory (tests, the demo)."""

    def __init__(self, initial: Mapping[str, TokenSet] | None = None) -> None:
        self._tokens: dict[str, TokenSet] = dict(initial or {})
        self._guard = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}
        self.saves: list[tuple[str, TokenSet]] = []  # history, for tests

    def get(self, realm: str) -> TokenSet | None:
        with self._guard:
            return self._tokens.get(realm)

    def save(self, realm: str, tokens: TokenSet) -> None:
        with self._guard:
            self._tokens[realm] = tokens
            self.saves.append((realm, tokens))

    @contextmanager
    def refresh_lock(self, realm: str) -> Iterator[None]:
        with self._guard:
            lock = self._locks.setdefault(realm, threading.Lock())
        with lock:
            yield


# --------------------------------------------------------------------------------------------
# Results and quarantine


@dataclass(frozen=True)
class Rejected:
    """A record an API returned that could not be parsed: kept with its raw payload and reason."""

    system: str
    entity: str
    record_id: str | None
    reason: str
    raw_json: str


@dataclass
class FetchResult(Generic[T]):
    """Parsed records plus the quarantined ones (a malformed record never stops the batch)."""

    records: list[T] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)

    def __iter__(self) -> Iterator[T]:
        return iter(self.records)

    def __len__(self) -> int:
        return len(self.records)

    def extend(self, other: FetchResult[T]) -> None:
        self.records.extend(other.records)
        self.rejected.extend(other.rejected)


def parse_records(
    model: type[BaseModel],
    raws: Iterable[Any],
    *,
    system: str,
    entity: str,
    into: FetchResult[Any] | None = None,
    id_field: str = "id",
) -> FetchResult[Any]:
    """Validate each raw dict with ``model``; failures go to ``rejected`` with the raw JSON."""
    out: FetchResult[Any] = into if into is not None else FetchResult()
    for raw in raws:
        record_id = None
        if isinstance(raw, dict) and raw.get(id_field) is not None:
            record_id = str(raw.get(id_field))
        try:
            if not isinstance(raw, dict):
                raise ValueError(f"expected a JSON object, got {type(raw).__name__}")
            out.records.append(model.model_validate(raw))
        except Exception as exc:  # pydantic.ValidationError, ValueError, TypeError
            out.rejected.append(
                Rejected(
                    system=system,
                    entity=entity,
                    record_id=record_id,
                    reason=_short_reason(exc),
                    raw_json=canonical_json(raw),
                )
            )
    return out


def _short_reason(exc: Exception) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        try:
            parts = []
            for e in errors()[:5]:
                loc = ".".join(str(p) for p in e.get("loc", ()))
                parts.append(f"{loc}: {e.get('msg')}" if loc else str(e.get("msg")))
            if parts:
                return "; ".join(parts)
        except Exception:  # pragma: no cover - defensive
            pass
    return f"{type(exc).__name__}: {exc}"[:500]


def canonical_json(raw: Any) -> str:
    """The record as sorted-key JSON (exact decimals): how a quarantined record is kept, and how two
    copies of one record are compared."""
    try:
        return money.dumps(raw, sort_keys=True)
    except Exception:
        return repr(raw)


# --------------------------------------------------------------------------------------------
# Errors


class ApiError(Exception):
    """An API call that failed. ``str(err)`` is safe to log: no token, secret or header value."""

    retryable = False

    def __init__(
        self,
        system: str,
        method: str,
        path: str,
        status: int | None,
        *,
        code: str | None = None,
        api_message: str | None = None,
        detail: str | None = None,
        request_id: str | None = None,
        trace_id: str | None = None,
        retry_after: float | None = None,
        attempts: int = 1,
        errors: list[dict[str, Any]] | None = None,
    ) -> None:
        self.system = system
        self.method = method
        self.path = path
        self.status = status
        self.code = code
        self.api_message = api_message
        self.detail = detail
        self.request_id = request_id
        self.trace_id = trace_id
        self.retry_after = retry_after
        self.attempts = attempts
        self.errors = errors or []
        super().__init__(self._format())

    def _format(self) -> str:
        status = f"HTTP {self.status}" if self.status is not None else "no response"
        text = f"{self.system} {self.method} {self.path} -> {status}"
        if self.code:
            text += f" [code {self.code}]"
        if self.api_message:
            text += f": {self.api_message}"
        if self.detail and self.detail != self.api_message:
            text += f" ({self.detail})"
        if self.trace_id:
            text += f" [trace {self.trace_id}]"
        if self.attempts > 1:
            text += f" after {self.attempts} attempts"
        return text

    def __reduce__(self):  # keep picklable (Dagster ships exceptions across processes)
        return (_rebuild_error, (type(self), self.__dict__.copy()))


def _rebuild_error(cls: type[ApiError], state: dict[str, Any]) -> ApiError:
    err = cls.__new__(cls)
    err.__dict__.update(state)
    Exception.__init__(err, err._format())
    return err


class ApiValidationError(ApiError):
    """4xx the caller must fix (400, 404, 409, 422 ...): never retried."""


class ApiNotFound(ApiValidationError):
    """404 (or an API-specific 'object not found')."""


class ApiAuthError(ApiError):
    """401/403: credentials missing, expired, revoked or not permitted."""


class ApiRateLimited(ApiError):
    """429 (or a throttle body): retried with backoff / Retry-After, raised when retries run out."""

    retryable = True


class ApiUnavailable(ApiError):
    """5xx, 423 Locked, timeouts and connection errors: retried, raised when retries run out."""

    retryable = True


# --------------------------------------------------------------------------------------------
# Rate limiting


class RateLimiter:
    """Sliding-window rate limiter with an optional in-flight cap, safe across threads.

    ``windows`` is a list of ``(max_requests, seconds)``; a call waits until every window has
    room. ``max_in_flight`` caps concurrent requests. ``sleep``/``clock`` are injectable.
    """

    _registry: dict[str, RateLimiter] = {}
    _registry_lock = threading.Lock()

    def __init__(
        self,
        windows: Sequence[tuple[int, float]] = (),
        *,
        max_in_flight: int | None = None,
        sleep: Sleep = time.sleep,
        clock: Clock = time.monotonic,
        name: str = "",
    ) -> None:
        self.windows = [(int(n), float(s)) for n, s in windows]
        self.name = name
        self._stamps: list[deque[float]] = [deque() for _ in self.windows]
        self._lock = threading.Lock()
        self._sem = threading.BoundedSemaphore(max_in_flight) if max_in_flight else None
        self.max_in_flight = max_in_flight
        self._sleep = sleep
        self._clock = clock
        self.waited = 0.0  # total seconds slept, for tests and metrics

    @classmethod
    def shared(cls, key: str, factory: Callable[[], RateLimiter]) -> RateLimiter:
        """The process-wide limiter for ``key`` (e.g. ``"quickbooks:<realm>"``), built once."""
        with cls._registry_lock:
            limiter = cls._registry.get(key)
            if limiter is None:
                limiter = cls._registry[key] = factory()
            return limiter

    def _reserve(self) -> float:
        """Take a slot and return 0, or return how long to wait before trying again."""
        with self._lock:
            now = self._clock()
            wait = 0.0
            for (limit, seconds), stamps in zip(self.windows, self._stamps):
                while stamps and stamps[0] <= now - seconds:
                    stamps.popleft()
                if len(stamps) >= limit:
                    wait = max(wait, stamps[0] + seconds - now)
            if wait > 0:
                return wait
            for stamps in self._stamps:
                stamps.append(now)
            return 0.0

    @contextmanager
    def acquire(self) -> Iterator[None]:
        while True:
            wait = self._reserve()
            if wait <= 0:
                break
            self.waited += wait
            self._sleep(wait)
        if self._sem is not None:
            self._sem.acquire()
        try:
            yield
        finally:
            if self._sem is not None:
                self._sem.release()


def _limiter(key: str, windows: list[tuple[int, float]], max_in_flight: int | None = None,
             **kwargs: Any) -> RateLimiter:
    """Process-wide shared limiter for ``key``, unless a test injects ``sleep``/``clock``."""
    if kwargs:
        return RateLimiter(windows, max_in_flight=max_in_flight, name=key, **kwargs)
    return RateLimiter.shared(key, lambda: RateLimiter(windows, max_in_flight=max_in_flight, name=key))


def quickbooks_limiter(realm_id: str, **kwargs: Any) -> RateLimiter:
    """Per realm, shared in the process: ≤10 in flight, ≤10/s and ≤500/min (Intuit limits)."""
    return _limiter(f"quickbooks:{realm_id}", [(500, 60.0), (10, 1.0)], 10, **kwargs)


def quickbooks_batch_limiter(realm_id: str, **kwargs: Any) -> RateLimiter:
    """Per realm, shared in the process: ≤40 batch calls a minute (Intuit's batch throttle, on top of
    the 500/min every call counts against)."""
    return _limiter(f"quickbooks-batch:{realm_id}", [(40, 60.0)], **kwargs)


def harvest_limiter(account_id: str = "", **kwargs: Any) -> RateLimiter:
    """100 requests per 15 s (per token/account), shared in the process."""
    return _limiter(f"harvest:{account_id}", [(100, 15.0)], **kwargs)


def hubspot_limiter(key: str = "", **kwargs: Any) -> RateLimiter:
    """100 requests per 10 s (Free/Starter burst; pass your own limiter for higher tiers)."""
    return _limiter(f"hubspot:{key}", [(100, 10.0)], **kwargs)


def hubspot_search_limiter(key: str = "", **kwargs: Any) -> RateLimiter:
    """Search has its own limit: 5 requests per second."""
    return _limiter(f"hubspot-search:{key}", [(5, 1.0)], **kwargs)


# --------------------------------------------------------------------------------------------
# Retry policy


@dataclass(frozen=True)
class RetryPolicy:
    """When and how long to retry.

    * ``max_attempts``: total attempts including the first.
    * backoff: full jitter, ``uniform(0, min(max_delay, base_delay * 2**(attempt-1)))``.
    * ``Retry-After`` (seconds or HTTP date) wins when present (capped at ``max_retry_after``).
    * ``rate_limit_wait``: wait for a 429 without Retry-After (QuickBooks: Intuit says 60 s);
      None means use the jittered backoff. With ``rate_limit_first_wait`` set it is the ceiling
      of an adaptive schedule instead: ``first_wait``, then doubling per attempt (5, 10, 20, 40,
      60 s), so a brief burst over the limit costs seconds, not a flat minute per 429.
    * ``locked_min_wait``: minimum wait after 423 Locked (HubSpot says ≥ 2 s).
    * ``max_total_wait``: give up (raise) rather than sleep past this many seconds in total.

    For tests: ``RetryPolicy.fast()`` (tiny waits) or inject ``sleep`` into the client.
    """

    max_attempts: int = 5
    base_delay: float = 0.5
    max_delay: float = 30.0
    max_total_wait: float = 300.0
    max_retry_after: float = 120.0
    rate_limit_wait: float | None = None
    rate_limit_first_wait: float | None = None
    locked_min_wait: float = 2.0
    retry_statuses: frozenset[int] = frozenset({429, 500, 502, 503, 504, 423, 477, 524})

    @classmethod
    def fast(cls, **overrides: Any) -> RetryPolicy:
        values: dict[str, Any] = dict(
            max_attempts=4, base_delay=0.001, max_delay=0.01, max_total_wait=5.0,
            max_retry_after=1.0, rate_limit_wait=0.01, locked_min_wait=0.01,
        )
        values.update(overrides)
        return cls(**values)

    def backoff(self, attempt: int, rng: random.Random) -> float:
        cap = min(self.max_delay, self.base_delay * (2 ** max(0, attempt - 1)))
        return rng.uniform(0, cap)


def parse_retry_after(value: str | None, *, now: Callable[[], datetime] | None = None) -> float | None:
    """``Retry-After`` as seconds (delta-seconds or an HTTP date); None when absent/unparseable."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    current = now() if now else datetime.now(timezone.utc)
    return max(0.0, (when - current).total_seconds())


# --------------------------------------------------------------------------------------------
# The transport


@dataclass
class ErrorInfo:
    """What an API-specific parser extracts from an error response."""

    code: str | None = None
    message: str | None = None
    detail: str | None = None
    request_id: str | None = None
    errors: list[dict[str, Any]] = field(default_factory=list)
    kind: type[ApiError] | None = None  # override the status-based classification
    retryable: bool | None = None  # override retry decision
    suggested_wait: float | None = None  # e.g. a policy-specific wait


ErrorParser = Callable[[httpx.Response, Any], ErrorInfo]


def default_error_parser(response: httpx.Response, body: Any) -> ErrorInfo:
    info = ErrorInfo()
    if isinstance(body, dict):
        msg = body.get("message") or body.get("error_description") or body.get("error")
        info.message = str(msg) if msg is not None else None
        code = body.get("code") or body.get("error")
        info.code = str(code) if code is not None else None
    return info


DEFAULT_TIMEOUT = httpx.Timeout(connect=10.0, read=60.0, write=30.0, pool=30.0)


def make_timeout(timeout: httpx.Timeout | float | None) -> httpx.Timeout:
    if timeout is None:
        return DEFAULT_TIMEOUT
    if isinstance(timeout, httpx.Timeout):
        return timeout
    return httpx.Timeout(float(timeout))


def loads_response(response: httpx.Response) -> Any:
    """Decode a JSON body with Decimal numbers (never ``response.json()``); None when empty.

    A 2xx body that is not JSON raises :class:`ApiValidationError` naming the API, the path and
    where the JSON breaks (never the body itself, which may hold personal data)."""
    content = response.content
    if not content or not content.strip():
        return None
    try:
        return money.loads(content)
    except ValueError as exc:
        request = response.request
        where = f"line {exc.lineno} column {exc.colno}" if hasattr(exc, "lineno") else type(exc).__name__
        raise ApiValidationError(
            request.url.host or "api", request.method, request.url.path, response.status_code,
            api_message=f"the response is not valid JSON ({where})",
        ) from None


class ApiTransport:
    """httpx with timeouts, rate limiting, retries, audit and safe errors, for one API."""

    def __init__(
        self,
        system: str,
        base_url: str,
        *,
        headers: Mapping[str, str] | None = None,
        timeout: httpx.Timeout | float | None = None,
        limiter: RateLimiter | None = None,
        retry: RetryPolicy | None = None,
        audit: AuditSink | None = None,
        error_parser: ErrorParser | None = None,
        trace_header: str | None = None,
        sleep: Sleep | None = None,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        transport: httpx.BaseTransport | None = None,
        client: httpx.Client | None = None,
        secrets: Iterable[str] = (),
    ) -> None:
        self.system = system
        self.base_url = base_url.rstrip("/")
        self.limiter = limiter
        self.retry = retry or RetryPolicy()
        self.audit_sink = audit
        self.error_parser = error_parser or default_error_parser
        self.trace_header = trace_header
        self._sleep = sleep or time.sleep
        self._clock = clock or time.monotonic
        self._rng = rng or random.Random()
        self._secrets: set[str] = {s for s in secrets if s}
        self._owns_client = client is None
        self.client = client or httpx.Client(
            base_url=self.base_url,
            headers=dict(headers or {}),
            timeout=make_timeout(timeout),
            transport=transport,
            follow_redirects=False,
        )
        self.total_slept = 0.0

    # -- lifecycle
    def close(self) -> None:
        if self._owns_client:
            self.client.close()

    def __enter__(self) -> ApiTransport:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def add_secret(self, value: str | None) -> None:
        """Register a secret value so it is scrubbed from any error text."""
        if value:
            self._secrets.add(value)

    def scrub(self, text: str | None) -> str | None:
        if text is None:
            return None
        for secret in self._secrets:
            if secret and secret in text:
                text = text.replace(secret, "***")
        return text

    # -- requests
    def request(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        content: str | bytes | None = None,
        json_body: Any = None,
        data: Mapping[str, str] | None = None,
        request_id: str | None = None,
        extra_limiters: Sequence[RateLimiter] = (),
        retry: RetryPolicy | None = None,
    ) -> httpx.Response:
        """Send with retries; return the 2xx response or raise an :class:`ApiError`.

        ``json_body`` is serialised with :func:`sync_pipelines.money.dumps` (Decimals exact,
        floats refused). ``url`` may be a path (joined to the base URL) or an absolute URL.
        """
        policy = retry or self.retry
        method = method.upper()
        req_headers = dict(headers or {})
        if json_body is not None:
            content = money.dumps(json_body)
            req_headers.setdefault("Content-Type", "application/json")
        if isinstance(content, str):
            content = content.encode("utf-8")
        full = httpx.URL(url) if "://" in url else httpx.URL(self.base_url + "/" + url.lstrip("/"))
        path = full.path  # never the query string (it may carry secrets)

        waited = 0.0
        attempt = 0
        while True:
            attempt += 1
            error: ApiError | None = None
            response: httpx.Response | None = None
            started = self._clock()
            try:
                with ExitStack() as stack:
                    # The narrower budgets first (batch calls, search), so that waiting for one
                    # never holds an in-flight slot of the general limiter.
                    for extra in extra_limiters:
                        stack.enter_context(extra.acquire())
                    if self.limiter is not None:
                        stack.enter_context(self.limiter.acquire())
                    started = self._clock()
                    response = self.client.request(
                        method, url, params=params, headers=req_headers, content=content, data=data
                    )
                    response.read()
            except httpx.TimeoutException as exc:
                error = ApiUnavailable(
                    self.system, method, path, None,
                    api_message=f"timeout ({type(exc).__name__})", attempts=attempt,
                )
            except httpx.TransportError as exc:
                error = ApiUnavailable(
                    self.system, method, path, None,
                    api_message=f"connection error ({type(exc).__name__})", attempts=attempt,
                )
            duration_ms = int(round((self._clock() - started) * 1000))

            trace_id = None
            if response is not None and self.trace_header:
                trace_id = response.headers.get(self.trace_header)
            info: ErrorInfo | None = None
            if response is not None and not (200 <= response.status_code < 300):
                info, error = self._error_from(method, path, response, trace_id, attempt)

            self._audit(method, path, response.status_code if response is not None else None,
                        duration_ms, request_id, trace_id, error)

            if error is None and response is not None:
                return response

            assert error is not None
            if info is not None and info.retryable is not None:
                retryable = info.retryable
            else:
                retryable = error.retryable and (
                    response is None
                    or response.status_code in policy.retry_statuses
                    or isinstance(error, ApiRateLimited)
                )
            if not retryable or attempt >= policy.max_attempts:
                raise error
            wait = self._wait_for(error, info, response, attempt, policy)
            if wait is None or waited + wait > policy.max_total_wait:
                raise error
            waited += wait
            self.total_slept += wait
            if isinstance(error, ApiRateLimited):
                # A budget shared with other processes (ledger-backed) pauses them all, not only us.
                told: list[Any] = []
                for budget in (self.limiter, *extra_limiters):
                    throttled = getattr(budget, "throttled", None)
                    owner = getattr(budget, "budget", budget)  # two gates of one budget: told once
                    if throttled is not None and not any(owner is o for o in told):
                        told.append(owner)
                        throttled(wait)
            log.info("%s %s %s: %s; retrying in %.2fs (attempt %d/%d)", self.system, method, path,
                     type(error).__name__, wait, attempt + 1, policy.max_attempts)
            self._sleep(wait)

    def _wait_for(
        self,
        error: ApiError,
        info: ErrorInfo | None,
        response: httpx.Response | None,
        attempt: int,
        policy: RetryPolicy,
    ) -> float | None:
        backoff = policy.backoff(attempt, self._rng)
        if error.retry_after is not None:
            if error.retry_after > policy.max_retry_after:
                return None  # the server asks for longer than we are willing to wait
            wait = error.retry_after
        elif info is not None and info.suggested_wait is not None:
            wait = min(info.suggested_wait, policy.max_delay)
        elif isinstance(error, ApiRateLimited) and policy.rate_limit_wait is not None:
            wait = policy.rate_limit_wait
            if policy.rate_limit_first_wait is not None:
                wait = min(wait, policy.rate_limit_first_wait * 2 ** max(0, attempt - 1))
        else:
            wait = backoff
        if response is not None and response.status_code == 423:
            wait = max(wait, policy.locked_min_wait)
        return wait

    def _error_from(
        self, method: str, path: str, response: httpx.Response, trace_id: str | None, attempt: int
    ) -> tuple[ErrorInfo, ApiError]:
        try:
            body = loads_response(response)
        except Exception:
            body = None
        try:
            info = self.error_parser(response, body)
        except Exception:  # a parser bug must not hide the real error
            info = ErrorInfo()
        status = response.status_code
        if info.kind is not None:
            kind = info.kind
        elif status == 429:
            kind = ApiRateLimited
        elif status in (401, 403):
            kind = ApiAuthError
        elif status == 404:
            kind = ApiNotFound
        elif status >= 500 or status in (423, 477, 524):
            kind = ApiUnavailable
        else:
            kind = ApiValidationError
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        err = kind(
            self.system, method, path, status,
            code=info.code,
            api_message=self.scrub(_clip(info.message)),
            detail=self.scrub(_clip(info.detail)),
            request_id=info.request_id,
            trace_id=trace_id,
            retry_after=retry_after,
            attempts=attempt,
            errors=info.errors,
        )
        return info, err

    def _audit(
        self,
        method: str,
        path: str,
        status: int | None,
        duration_ms: int,
        request_id: str | None,
        trace_id: str | None,
        error: ApiError | None,
    ) -> None:
        if self.audit_sink is None:
            return
        err_text = None
        if error is not None:
            err_text = type(error).__name__
            if error.code:
                err_text += f" [{error.code}]"
            if error.api_message:
                err_text += f": {error.api_message}"
            err_text = self.scrub(err_text[:500])
        try:
            self.audit_sink.audit(
                self.system, method, path, status, duration_ms,
                request_id=request_id, trace_id=trace_id, error=err_text,
            )
        except Exception:  # the audit trail must not break the call; the failure is logged
            log.exception("audit sink failed for %s %s %s", self.system, method, path)

    def request_json(self, method: str, url: str, **kwargs: Any) -> tuple[Any, httpx.Response]:
        response = self.request(method, url, **kwargs)
        return loads_response(response), response


def _clip(text: Any, limit: int = 500) -> str | None:
    if text is None:
        return None
    text = str(text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def same_origin(a: str | httpx.URL, b: str | httpx.URL) -> bool:
    ua, ub = httpx.URL(str(a)), httpx.URL(str(b))
    return (ua.scheme, ua.host, ua.port) == (ub.scheme, ub.host, ub.port)


def secret_value(value: SecretStr | str | None) -> str | None:
    if value is None:
        return None
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    return value


class ApiClient:
    """Closing behaviour shared by the three API clients (each holds one :class:`ApiTransport`)."""

    _http: ApiTransport

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
