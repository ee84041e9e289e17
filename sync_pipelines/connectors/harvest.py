"""Harvest API v2 client (time entries, clients, projects).

Every request carries ``Authorization: Bearer``, ``Harvest-Account-Id`` and ``User-Agent``
(Harvest answers 401 without the account id). Lists follow ``links.next`` until it is null and
never build page URLs (Harvest is moving to opaque cursors). 100 requests per 15 s are allowed;
429 comes with ``Retry-After`` in seconds, which the transport honours.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import date, datetime, timezone
from typing import Any, Generic, TypeVar

import httpx
from pydantic import BaseModel, SecretStr

from .harvest_models import Client, Project, TimeEntry
from .http import (
    ApiClient,
    ApiTransport,
    ApiValidationError,
    AuditSink,
    Clock,
    ErrorInfo,
    FetchResult,
    RateLimiter,
    Rejected,
    RetryPolicy,
    Sleep,
    harvest_limiter,
    loads_response,
    parse_records,
    same_origin,
)
from .repeated_records import RepeatedRecords

M = TypeVar("M", bound=BaseModel)

SYSTEM = "harvest"
MAX_PER_PAGE = 2000


def _harvest_error(response: httpx.Response, body: Any) -> ErrorInfo:
    info = ErrorInfo()
    if isinstance(body, dict):
        # {"error":"invalid_token","error_description":"..."} or {"message":"..."}
        code = body.get("error") or body.get("code")
        info.code = str(code) if code is not None else None
        msg = body.get("error_description") or body.get("message")
        info.message = str(msg) if msg is not None else None
    return info


def _iso_datetime(value: datetime | str) -> str:
    if isinstance(value, str):
        return value
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class HarvestClient(ApiClient):
    """Read-only Harvest v2 client.

    ``base_url`` carries no version path (``https://api.harvestapp.com``; a trailing ``/v2`` is
    tolerated). ``per_page`` (1..2000) exists so tests can force many pages.
    """

    def __init__(
        self,
        base_url: str,
        account_id: str,
        access_token: str | SecretStr,
        user_agent: str = "sync_pipelines (ops@example.com)",
        *,
        per_page: int = MAX_PER_PAGE,
        timeout: httpx.Timeout | float | None = None,
        audit: AuditSink | None = None,
        limiter: RateLimiter | None = None,
        retry: RetryPolicy | None = None,
        sleep: Sleep | None = None,
        clock: Clock | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if not 1 <= per_page <= MAX_PER_PAGE:
            raise ValueError(f"per_page must be 1..{MAX_PER_PAGE} (Harvest answers 422 above), got {per_page}")
        base = base_url.rstrip("/")
        if base.endswith("/v2"):
            base = base[:-3]
        self.base_url = base
        self.account_id = str(account_id)
        self._token = access_token if isinstance(access_token, SecretStr) else SecretStr(access_token)
        self.user_agent = user_agent
        self.per_page = per_page
        #: HTTP requests this client has made (retries of one request count once): what a
        #: refresh costs, reported in the extract's metadata.
        self.requests_made = 0
        self._http = ApiTransport(
            SYSTEM,
            base,
            headers={"Accept": "application/json", "User-Agent": user_agent},
            timeout=timeout,
            limiter=limiter if limiter is not None else harvest_limiter(self.account_id, **_clock_kwargs(sleep, clock)),
            retry=retry,
            audit=audit,
            error_parser=_harvest_error,
            sleep=sleep,
            clock=clock,
            transport=transport,
            secrets=[self._token.get_secret_value()],
        )

    def __repr__(self) -> str:
        return f"HarvestClient(base_url={self.base_url!r}, account_id={self.account_id!r})"


    def _headers(self) -> dict[str, str]:
        return {
            "Authorization": f"Bearer {self._token.get_secret_value()}",
            "Harvest-Account-Id": self.account_id,
            "User-Agent": self.user_agent,
        }

    # -- paging
    def _pages(self, path: str, key: str, params: Mapping[str, Any],
               first_body: dict[str, Any] | None = None) -> Iterator[list[Any]]:
        """Yield each page's ``key`` array, following ``links.next`` until it is null.

        The next URL is used verbatim (opaque cursor). It must point at the same origin as
        ``base_url``: the bearer token is never sent anywhere else. ``first_body``, if given, is
        filled with the first page's paging fields (``total_entries`` ...).
        """
        url: str = f"/v2/{path}"
        query: Mapping[str, Any] | None = {k: v for k, v in params.items() if v is not None}
        seen: set[str] = set()
        while True:
            response = self._http.request("GET", url, params=query, headers=self._headers())
            self.requests_made += 1
            body = loads_response(response)
            if not isinstance(body, dict) or not isinstance(body.get(key), list):
                raise ApiValidationError(
                    SYSTEM, "GET", f"/v2/{path}", response.status_code,
                    api_message=f"response has no '{key}' array",
                )
            if first_body is not None and not seen:
                first_body.update({k: v for k, v in body.items() if k != key})
            page = body.pop(key)
            links = body.get("links") or {}
            del body
            yield page
            del page
            nxt = links.get("next") if isinstance(links, dict) else None
            if not nxt:
                return
            nxt_url = httpx.URL(str(nxt))
            if nxt_url.is_relative_url:
                nxt_url = httpx.URL(self.base_url).join(nxt_url)
            if not same_origin(nxt_url, self.base_url):
                raise ApiValidationError(
                    SYSTEM, "GET", f"/v2/{path}", response.status_code,
                    api_message=f"links.next points at another origin ({nxt_url.host}); refusing to send credentials",
                )
            if str(nxt_url) in seen:
                raise ApiValidationError(
                    SYSTEM, "GET", f"/v2/{path}", response.status_code,
                    api_message="links.next repeats a page already read (paging loop)",
                )
            seen.add(str(nxt_url))
            url, query = str(nxt_url), None

    # -- public API
    def time_entry_pages(
        self,
        from_: date | str,
        to: date | str,
        *,
        client_id: int | None = None,
        project_id: int | None = None,
        updated_since: datetime | str | None = None,
        is_billed: bool | None = None,
        is_running: bool | None = None,
    ) -> ParsedPages[TimeEntry]:
        """Time entries with ``spent_date`` in ``[from_, to]`` (both inclusive), one parsed page at a time.

        ``GET /v2/time_entries?from=&to=&per_page=2000`` then ``links.next`` until null (cursor
        pages; page URLs are never built). Optional filters: ``client_id``, ``project_id``,
        ``updated_since`` (datetime, sent as ISO-8601 UTC), ``is_billed``, ``is_running``. Iterate
        the result for each page's records and rejected ones; only then read its ``conflicts()``
        (ids Harvest sent with two different contents, to be quarantined, see ``_collect``).
        """
        return ParsedPages(self, "time_entries", "time_entries", "time_entry", TimeEntry,
                           self._time_entry_params(from_, to, client_id=client_id, project_id=project_id,
                                                   updated_since=updated_since, is_billed=is_billed,
                                                   is_running=is_running))

    def count_time_entries(self, from_: date | str, to: date | str) -> int | None:
        """How many time entries Harvest holds with ``spent_date`` in ``[from_, to]``: one call
        (``per_page=1``, its ``total_entries``); None if Harvest did not say."""
        params = self._time_entry_params(from_, to)
        params["per_page"] = 1
        body: dict[str, Any] = {}
        pages = self._pages("time_entries", "time_entries", params, first_body=body)
        next(pages)
        pages.close()
        total = body.get("total_entries")
        return total if type(total) is int and total >= 0 else None

    def _time_entry_params(self, from_: date | str, to: date | str, **filters: Any) -> dict[str, Any]:
        from_ = date.fromisoformat(from_) if isinstance(from_, str) else from_
        to = date.fromisoformat(to) if isinstance(to, str) else to
        if to < from_:
            raise ValueError(f"to ({to}) is before from_ ({from_})")
        since = filters.get("updated_since")
        return {
            "from": from_.isoformat(),
            "to": to.isoformat(),
            "per_page": self.per_page,
            "client_id": filters.get("client_id"),
            "project_id": filters.get("project_id"),
            "updated_since": _iso_datetime(since) if since is not None else None,
            "is_billed": _flag(filters.get("is_billed")),
            "is_running": _flag(filters.get("is_running")),
        }

    def list_time_entries(
        self,
        from_: date,
        to: date,
        *,
        client_id: int | None = None,
        project_id: int | None = None,
        updated_since: datetime | str | None = None,
        is_billed: bool | None = None,
    ) -> FetchResult[TimeEntry]:
        """All time entries with ``spent_date`` in ``[from_, to]`` (both inclusive), as models.

        For a few entries (one project, one deal); a whole month goes through
        :meth:`time_entry_pages` into a frame page by page instead. Records that do not validate
        are returned in ``.rejected`` with their raw JSON; the rest go on.
        """
        return self._collect(self.time_entry_pages(from_, to, client_id=client_id, project_id=project_id,
                                                   updated_since=updated_since, is_billed=is_billed))

    def list_clients(self, *, is_active: bool | None = None) -> FetchResult[Client]:
        """All clients (``GET /v2/clients``), following ``links.next`` until null."""
        params = {"per_page": self.per_page, "is_active": _flag(is_active)}
        return self._collect(ParsedPages(self, "clients", "clients", "client", Client, params))

    def list_projects(
        self, *, client_id: int | None = None, is_active: bool | None = None
    ) -> FetchResult[Project]:
        """All projects (``GET /v2/projects``), following ``links.next`` until null."""
        params = {"per_page": self.per_page, "client_id": client_id, "is_active": _flag(is_active)}
        return self._collect(ParsedPages(self, "projects", "projects", "project", Project, params))

    @staticmethod
    def _collect(pages: ParsedPages[Any]) -> FetchResult[Any]:
        """Every page into one result: a record repeated with the same content is read once
        (cursor pages can overlap), but two *different* records under one id are both
        quarantined: neither can be trusted, and keeping the first would silently drop the
        other's hours."""
        result: FetchResult[Any] = FetchResult()
        for page in pages:
            result.extend(page)
        conflicting = pages.conflicts()
        if conflicting:
            ids = {str(rid) for rid in conflicting}
            result.records = [r for r in result.records if str(getattr(r, "id", "")) not in ids]
            result.rejected = [r for r in result.rejected if r.record_id not in ids]
            result.rejected.extend(conflict_rejections(pages.entity, conflicting))
        return result


class ParsedPages(Generic[M]):
    """One list endpoint read page by page: iterating yields each page's parsed records (a record
    repeated with the same content on a later page is left out) and its rejected ones; after the
    last page, :meth:`conflicts` gives the ids sent with different contents. Only one page of
    API models is alive at a time."""

    def __init__(self, client: HarvestClient, path: str, key: str, entity: str, model: type[M],
                 params: Mapping[str, Any]) -> None:
        self._client, self.path, self.key, self.entity, self.model = client, path, key, entity, model
        self.params = params
        self.first_page: dict[str, Any] = {}
        self._conflicts: dict[Any, list[str]] = {}
        self._done = False

    def __iter__(self) -> Iterator[FetchResult[M]]:
        with RepeatedRecords() as repeats:
            for raw_page in self._client._pages(self.path, self.key, self.params, first_body=self.first_page):
                fresh = repeats.fresh(raw_page)
                del raw_page
                yield parse_records(self.model, fresh, system=SYSTEM, entity=self.entity)
            self._conflicts = repeats.conflicts()
            self._done = True

    def conflicts(self) -> dict[Any, list[str]]:
        if not self._done:
            raise RuntimeError("conflicts() is known only after the last page has been read")
        return self._conflicts


def conflict_rejections(entity: str, conflicting: Mapping[Any, list[str]]) -> list[Rejected]:
    """Each distinct copy of each id Harvest sent with different contents, quarantined with why."""
    return [
        Rejected(
            system=SYSTEM, entity=entity, record_id=str(rid), raw_json=raw,
            reason=f"Harvest returned {len(raws)} different records with id {rid}; none is billed "
                   "(if it was edited during the read, the next run reads it once)",
        )
        for rid, raws in conflicting.items() for raw in raws
    ]


def _flag(value: bool | None) -> str | None:
    return None if value is None else ("true" if value else "false")


def _clock_kwargs(sleep: Sleep | None, clock: Clock | None) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    if sleep is not None:
        kwargs["sleep"] = sleep
    if clock is not None:
        kwargs["clock"] = clock
    return kwargs
