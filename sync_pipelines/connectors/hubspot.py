"""HubSpot CRM client: deals (list, search, update), companies, deal -> company associations.

* List: ``GET /crm/v3/objects/deals?limit=100&after=...``; a page can be short (even empty) and
  still carry ``paging.next``: we stop only when ``paging`` is absent.
* Search: ``POST /crm/v3/objects/deals/search`` with ``limit`` 200; HubSpot never returns more
  than 10,000 results for one query (``after`` >= 10,000 is a 400), so larger result sets are
  read in windows on ``hs_lastmodifieddate`` (sorted ascending; each new window starts at the
  last timestamp seen, ids de-duplicated across windows).
* Search has its own rate limit (5/s) on top of the account's 100 per 10 s.
* 423 Locked is retried after at least 2 s; 429 ``DAILY`` is not retried (it will not clear soon).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

import httpx
from pydantic import SecretStr

from .hubspot_models import Company, Deal, DealLineItem, LineItem
from .http import (
    ApiClient,
    ApiTransport,
    ApiValidationError,
    AuditSink,
    Clock,
    ErrorInfo,
    FetchResult,
    RateLimiter,
    RetryPolicy,
    Sleep,
    hubspot_limiter,
    hubspot_search_limiter,
    loads_response,
    parse_records,
)

SYSTEM = "hubspot"
LIST_LIMIT = 100
SEARCH_LIMIT = 200
SEARCH_CAP = 10_000
PRIMARY_COMPANY_TYPE_ID = 5
DEFAULT_COMPANY_TYPE_ID = 341
ASSOC_BATCH = 100
WINDOW_PROPERTY = "hs_lastmodifieddate"
BATCH_READ = 100
LINE_ITEM_PROPERTIES = ["name", "hs_sku", "price", "quantity", "amount", "hs_discount_percentage", "discount",
                        "hs_product_id"]


def _hubspot_error(response: httpx.Response, body: Any) -> ErrorInfo:
    info = ErrorInfo()
    if not isinstance(body, dict):
        return info
    msg = body.get("message")
    info.message = str(msg) if msg is not None else None
    info.request_id = body.get("correlationId") or body.get("requestId")
    errors = body.get("errors")
    if isinstance(errors, list):
        info.errors = [e for e in errors if isinstance(e, dict)]
    code = None
    if info.errors and info.errors[0].get("code"):
        code = info.errors[0].get("code")
    code = code or body.get("category") or body.get("policyName") or body.get("errorType")
    info.code = str(code) if code is not None else None
    if body.get("subCategory") and info.errors and info.errors[0].get("message"):
        info.detail = str(info.errors[0].get("message"))
    if response.status_code == 429:
        policy = body.get("policyName")
        if policy == "DAILY":
            info.retryable = False  # the daily cap resets at midnight; retrying only burns errors
        elif policy == "SECONDLY":
            info.suggested_wait = 1.0  # search: 5/s (HubSpot SDK waits 1 s x attempt)
        elif policy == "TEN_SECONDLY_ROLLING":
            info.suggested_wait = 10.0  # the burst window (capped by RetryPolicy.max_delay)
    return info


def _to_epoch_ms(value: str) -> str:
    """``hs_lastmodifieddate`` (ISO-8601 or epoch ms) as epoch-ms text for a search filter."""
    text = value.strip()
    if text.isdigit():
        return text
    when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return str(int(when.timestamp() * 1000))


def _dt_ms(when: datetime) -> str:
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return str(int(when.timestamp() * 1000))


class HubSpotClient(ApiClient):
    """HubSpot CRM v3/v4 client with a private-app / service-key bearer token.

    ``api_version`` is the one place the path version lives (``"v3"`` today; date-based
    versions such as ``"2026-03"`` use ``/crm/objects/2026-03/deals``).
    """

    def __init__(
        self,
        base_url: str,
        access_token: str | SecretStr,
        *,
        list_limit: int = LIST_LIMIT,
        search_limit: int = SEARCH_LIMIT,
        search_cap: int = SEARCH_CAP,
        batch_associations: bool = True,
        api_version: str = "v3",
        timeout: httpx.Timeout | float | None = None,
        audit: AuditSink | None = None,
        limiter: RateLimiter | None = None,
        search_limiter: RateLimiter | None = None,
        retry: RetryPolicy | None = None,
        sleep: Sleep | None = None,
        clock: Clock | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if not 1 <= list_limit <= LIST_LIMIT:
            raise ValueError(f"list_limit must be 1..{LIST_LIMIT}")
        if not 1 <= search_limit <= SEARCH_LIMIT:
            raise ValueError(f"search_limit must be 1..{SEARCH_LIMIT}")
        self.base_url = base_url.rstrip("/")
        self._token = access_token if isinstance(access_token, SecretStr) else SecretStr(access_token)
        if not self._token.get_secret_value():
            raise ValueError("HubSpot access_token is required")
        self.list_limit = list_limit
        self.search_limit = search_limit
        self.search_cap = search_cap
        self._batch_associations = batch_associations
        self.api_version = api_version
        kw: dict[str, Any] = {}
        if sleep is not None:
            kw["sleep"] = sleep
        if clock is not None:
            kw["clock"] = clock
        # HubSpot limits are per account; the token's hash keys the shared limiters (never the token)
        key = hashlib.sha256(self._token.get_secret_value().encode()).hexdigest()[:12]
        self._search_limiter = search_limiter if search_limiter is not None else hubspot_search_limiter(key, **kw)
        self._http = ApiTransport(
            SYSTEM,
            self.base_url,
            headers={"Accept": "application/json"},
            timeout=timeout,
            limiter=limiter if limiter is not None else hubspot_limiter(key, **kw),
            retry=retry,
            audit=audit,
            error_parser=_hubspot_error,
            trace_header=None,
            sleep=sleep,
            clock=clock,
            transport=transport,
            secrets=[self._token.get_secret_value()],
        )

    def __repr__(self) -> str:
        return f"HubSpotClient(base_url={self.base_url!r})"


    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._token.get_secret_value()}"}

    def _crm(self, kind: str, object_type: str) -> str:
        """``/crm/v3/{kind}/{type}`` or, with a date-based version, ``/crm/{kind}/{version}/{type}``."""
        if self.api_version.startswith("v"):
            return f"/crm/{self.api_version}/{kind}/{object_type}"
        return f"/crm/{kind}/{self.api_version}/{object_type}"

    def _objects(self, object_type: str) -> str:
        return self._crm("objects", object_type)

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._http.request(method, path, headers=self._headers(), **kwargs)
        return loads_response(response)

    # -- list
    def _list(self, object_type: str, properties: Sequence[str], *, archived: bool = False) -> Iterator[list[Any]]:
        """Yield pages of ``GET /crm/v3/objects/{type}``, following ``paging.next.after``.

        Stops only when ``paging`` (or ``paging.next``) is absent: a short or empty page with a
        cursor is followed.
        """
        after: str | None = None
        seen_cursors: set[str] = set()
        path = self._objects(object_type)
        while True:
            params: dict[str, Any] = {"limit": self.list_limit, "archived": "true" if archived else "false"}
            if properties:
                params["properties"] = ",".join(properties)
            if after is not None:
                params["after"] = after
            body = self._call("GET", path, params=params)
            results = body.get("results") if isinstance(body, dict) else None
            if not isinstance(results, list):
                raise ApiValidationError(SYSTEM, "GET", path, 200, api_message="response has no 'results' array")
            yield results
            after = _next_after(body)
            if after is None:
                return
            if after in seen_cursors:
                raise ApiValidationError(SYSTEM, "GET", path, 200,
                                         api_message="paging.next.after repeats a cursor (paging loop)")
            seen_cursors.add(after)

    def list_deals(self, properties: list[str], *, archived: bool = False) -> FetchResult[Deal]:
        """All deals with the given properties.

        Paginated: ``limit=100`` and ``paging.next.after`` until ``paging`` is absent (never
        stopping on a short page). Malformed records go to ``.rejected`` with their raw JSON.
        """
        result: FetchResult[Deal] = FetchResult()
        seen: set[str] = set()
        for page in self._list("deals", properties, archived=archived):
            _parse_unique(Deal, page, "deal", seen, result)
        return result

    def list_companies(self, properties: list[str] | None = None) -> FetchResult[Company]:
        """All companies (default properties ``name``, ``domain``), paginated like :meth:`list_deals`."""
        result: FetchResult[Company] = FetchResult()
        seen: set[str] = set()
        for page in self._list("companies", properties or ["name", "domain"]):
            _parse_unique(Company, page, "company", seen, result)
        return result

    def get_deal(self, deal_id: str, properties: list[str] | None = None) -> Deal:
        params = {"properties": ",".join(properties)} if properties else None
        body = self._call("GET", f"{self._objects('deals')}/{deal_id}", params=params)
        return Deal.model_validate(body)

    # -- search
    def search_deals(
        self,
        filter_groups: list[dict[str, Any]],
        properties: list[str],
        sorts: list[dict[str, str]] | None = None,
    ) -> FetchResult[Deal]:
        """Every deal matching ``filter_groups`` (HubSpot search syntax), however many.

        Paginated: ``limit=200`` and ``paging.next.after`` until ``paging`` is absent. To get past
        the 10,000-results-per-query cap, the search is sorted by ``hs_lastmodifieddate``
        ascending and, when a window reaches the cap, a new window starts with an extra
        ``hs_lastmodifieddate GTE <last seen>`` filter in every filter group (ids already read are
        skipped). ``sorts`` other than on ``hs_lastmodifieddate`` are honoured only while the
        result set fits under the cap; past it an :class:`ApiValidationError` explains why.
        """
        path = f"{self._objects('deals')}/search"
        props = list(properties)
        if WINDOW_PROPERTY not in props:
            props.append(WINDOW_PROPERTY)
        windowable = not sorts or (len(sorts) == 1 and sorts[0].get("propertyName") == WINDOW_PROPERTY
                                   and sorts[0].get("direction", "ASCENDING") == "ASCENDING")
        use_sorts = sorts or [{"propertyName": WINDOW_PROPERTY, "direction": "ASCENDING"}]
        result: FetchResult[Deal] = FetchResult()
        seen: set[str] = set()
        lower: str | None = None
        while True:
            groups = _with_window(filter_groups, lower)
            after: str | None = None
            read_in_window = 0
            last_stamp: str | None = None
            capped = False
            while True:
                body_req: dict[str, Any] = {
                    "filterGroups": groups,
                    "sorts": use_sorts,
                    "properties": props,
                    "limit": self.search_limit,
                }
                if after is not None:
                    body_req["after"] = after
                body = self._http.request(
                    "POST", path, headers=self._headers(), json_body=body_req,
                    extra_limiters=[self._search_limiter],
                )
                data = loads_response(body)
                results = data.get("results") if isinstance(data, dict) else None
                if not isinstance(results, list):
                    raise ApiValidationError(SYSTEM, "POST", path, 200, api_message="response has no 'results' array")
                read_in_window += len(results)
                for raw in results:
                    if isinstance(raw, dict):
                        stamp = (raw.get("properties") or {}).get(WINDOW_PROPERTY)
                        if stamp:
                            last_stamp = stamp
                _parse_unique(Deal, results, "deal", seen, result)
                nxt = _next_after(data)
                if nxt is None:
                    return result
                try:
                    reaches_cap = int(nxt) + self.search_limit > self.search_cap
                except ValueError:
                    reaches_cap = read_in_window >= self.search_cap
                if reaches_cap:
                    capped = True
                    break
                after = nxt
            if capped:
                if not windowable:
                    raise ApiValidationError(
                        SYSTEM, "POST", path, None,
                        api_message=f"more than {self.search_cap} results and sorts {use_sorts!r} prevent "
                        f"windowing on {WINDOW_PROPERTY}; narrow the filters or drop the sort",
                    )
                if last_stamp is None:
                    raise ApiValidationError(SYSTEM, "POST", path, None,
                                             api_message=f"cannot window: results carry no {WINDOW_PROPERTY}")
                new_lower = _to_epoch_ms(last_stamp)
                if new_lower == lower:
                    raise ApiValidationError(
                        SYSTEM, "POST", path, None,
                        api_message=f"more than {self.search_cap} deals share {WINDOW_PROPERTY}={last_stamp}; "
                        "cannot window further",
                    )
                lower = new_lower

    def search_deals_modified_between(
        self,
        start: datetime | None,
        end: datetime,
        properties: list[str],
        filters: list[dict[str, Any]] | None = None,
    ) -> FetchResult[Deal]:
        """Deals matching ``filters`` (ANDed) with ``start <= hs_lastmodifieddate < end``.

        For polling sensors: pass the stored cursor as ``start`` and a slightly lagged "now" as
        ``end`` (search is eventually consistent), then store ``end`` as the next cursor, so the
        cursor only ever advances over a window that was actually requested. Windowed past the
        10,000 cap like :meth:`search_deals`.
        """
        window: list[dict[str, Any]] = list(filters or [])
        if start is not None:
            window.append({"propertyName": WINDOW_PROPERTY, "operator": "GTE", "value": _dt_ms(start)})
        window.append({"propertyName": WINDOW_PROPERTY, "operator": "LT", "value": _dt_ms(end)})
        return self.search_deals([{"filters": window}], properties)

    def search_deals_page(
        self,
        filter_groups: list[dict[str, Any]],
        properties: list[str],
        *,
        after: str | None = None,
        sorts: list[dict[str, str]] | None = None,
    ) -> tuple[FetchResult[Deal], str | None]:
        """One page (``limit`` 200) of a deal search and the ``paging.next.after`` to continue
        with (None on the last page). For callers that bound their work per call (the deal
        sensor): they window on ``hs_lastmodifieddate`` themselves, and an ``after`` at or past
        the 10,000 cap is refused by HubSpot with a 400, so they must re-window before it."""
        path = f"{self._objects('deals')}/search"
        body_req: dict[str, Any] = {
            "filterGroups": filter_groups,
            "sorts": sorts or [{"propertyName": WINDOW_PROPERTY, "direction": "ASCENDING"}],
            "properties": list(properties),
            "limit": self.search_limit,
        }
        if after is not None:
            body_req["after"] = after
        response = self._http.request("POST", path, headers=self._headers(), json_body=body_req,
                                      extra_limiters=[self._search_limiter])
        data = loads_response(response)
        results = data.get("results") if isinstance(data, dict) else None
        if not isinstance(results, list):
            raise ApiValidationError(SYSTEM, "POST", path, 200, api_message="response has no 'results' array")
        page: FetchResult[Deal] = FetchResult()
        _parse_unique(Deal, results, "deal", set(), page)
        return page, _next_after(data)

    def count_deals(self) -> int | None:
        """How many (unarchived) deals the portal holds: one search call with no filter and
        ``limit=1``, its ``total``; None if HubSpot did not say."""
        path = f"{self._objects('deals')}/search"
        response = self._http.request("POST", path, headers=self._headers(), extra_limiters=[self._search_limiter],
                                      json_body={"filterGroups": [], "properties": ["hs_object_id"], "limit": 1})
        data = loads_response(response)
        total = data.get("total") if isinstance(data, dict) else None
        return total if type(total) is int and total >= 0 else None

    def batch_read_deals(self, deal_ids: Iterable[str], properties: list[str]) -> FetchResult[Deal]:
        """The current state of the given deals: ``POST /crm/v3/objects/deals/batch/read``, 100
        ids a call. Deals that do not exist (or were deleted) are simply absent from the result
        (HubSpot answers 207 with ``errors`` naming them)."""
        result: FetchResult[Deal] = FetchResult()
        seen: set[str] = set()
        for results in self._batch_read("deals", dict.fromkeys(str(d) for d in deal_ids), properties):
            _parse_unique(Deal, results, "deal", seen, result)
        return result

    def _batch_read(self, object_type: str, ids: Iterable[str], properties: Sequence[str]) -> Iterator[list[Any]]:
        """``results`` of ``POST /crm/v3/objects/{type}/batch/read``, 100 ids a call."""
        ids = list(ids)
        path = f"{self._objects(object_type)}/batch/read"
        for start in range(0, len(ids), BATCH_READ):
            chunk = ids[start:start + BATCH_READ]
            body = self._call("POST", path, json_body={"inputs": [{"id": i} for i in chunk], "properties": list(properties)})
            results = body.get("results") if isinstance(body, dict) else None
            if not isinstance(results, list):
                raise ApiValidationError(SYSTEM, "POST", path, 200, api_message="response has no 'results' array")
            yield results

    # -- write
    def update_deal(self, deal_id: str, properties: dict[str, str]) -> Deal:
        """``PATCH /crm/v3/objects/deals/{id}`` with string property values (e.g. ``qbo_invoice_id``)."""
        for key, value in properties.items():
            if not isinstance(value, str):
                raise TypeError(f"HubSpot property {key!r} must be a string, got {type(value).__name__}")
        body = self._call("PATCH", f"{self._objects('deals')}/{deal_id}", json_body={"properties": properties})
        return Deal.model_validate(body)

    def ensure_deal_property(
        self, name: str, label: str | None = None, *, type: str = "string", field_type: str = "text",
        group_name: str = "dealinformation",
    ) -> bool:
        """Create the custom deal property ``name`` if missing (e.g. ``qbo_invoice_id``).

        Returns True when it was created, False when it already existed (409).
        """
        try:
            self._call("POST", self._crm("properties", "deals"), json_body={
                "name": name, "label": label or name, "type": type, "fieldType": field_type,
                "groupName": group_name,
            })
            return True
        except ApiValidationError as exc:
            if exc.status == 409:
                return False
            raise

    # -- associations
    def deal_company_ids(self, deal_ids: Iterable[str]) -> dict[str, str]:
        """Map deal id -> its company id (v4 associations; ``toObjectId`` numbers become strings).

        The primary company (association type 5) wins over the default deal->company type 341;
        deals without a company are absent from the result. Reads through :meth:`_association_links`.
        """
        ids = list(dict.fromkeys(str(d) for d in deal_ids))
        out: dict[str, str] = {}
        for deal_id, links in self._association_links("deals", "companies", ids).items():
            company = pick_company([link for link in links if isinstance(link, dict)])
            if company is not None:
                out[deal_id] = company
        return out

    # -- line items
    def deal_line_items(self, deal_ids: Iterable[str], properties: Sequence[str] | None = None) -> LineItemsResult:
        """Every line item of the given deals (DESIGN §5 "Deals": invoices from line items).

        1. deal -> line item ids: v4 batch read ``POST /crm/v4/associations/deals/line_items/batch/read``
           (100 deals per call; a 207's ``errors`` name deals without line items), falling back to
           ``GET /crm/v4/objects/deals/{id}/associations/line_items`` (paginated, ``limit=500``,
           ``paging.next.after`` until absent) when the batch endpoint is missing (404/405) or a
           deal's associations span several pages;
        2. the line items: ``POST /crm/v3/objects/line_items/batch/read`` (100 ids per call) with
           ``name, hs_sku, price, quantity, amount, hs_discount_percentage, discount, hs_product_id``.

        Malformed line items go to ``.rejected`` with their raw JSON; ids associated but not
        returned are listed in ``.missing``. Records are in (deal id, line item id) order.
        """
        ids = list(dict.fromkeys(str(d) for d in deal_ids))
        assoc = self._associated_ids("deals", "line_items", ids)
        result = LineItemsResult(associations=assoc)
        wanted = sorted({li for lis in assoc.values() for li in lis}, key=_id_order)
        parsed: FetchResult[LineItem] = FetchResult()
        for results in self._batch_read("line_items", wanted, properties or LINE_ITEM_PROPERTIES):
            parse_records(LineItem, results, system=SYSTEM, entity="line_item", into=parsed)
        result.rejected.extend(parsed.rejected)
        by_id = {li.id: li for li in parsed.records}
        rejected_ids = {r.record_id for r in parsed.rejected}
        for deal_id in sorted(assoc, key=_id_order):
            for li_id in assoc[deal_id]:
                if li_id in by_id:
                    result.records.append(DealLineItem(deal_id=deal_id, line_item=by_id[li_id]))
                elif li_id not in rejected_ids and li_id not in result.missing:
                    result.missing.append(li_id)
        return result

    def _associated_ids(self, from_type: str, to_type: str, ids: list[str]) -> dict[str, list[str]]:
        """from id -> associated to ids, in id order; ids without any association are absent."""
        out: dict[str, list[str]] = {}
        for from_id, links in self._association_links(from_type, to_type, ids).items():
            targets = _target_ids(links)
            if targets:
                out[from_id] = targets
        return out

    def _association_links(self, from_type: str, to_type: str, ids: list[str]) -> dict[str, list[Any]]:
        """from id -> its raw v4 association results (``toObjectId``, ``associationTypes``).

        Uses the v4 batch read (``POST /crm/v4/associations/{from}/{to}/batch/read``, 100 ids per
        call) and falls back to one paginated ``GET /crm/v4/objects/{from}/{id}/associations/{to}``
        per id when the batch endpoint is not available (404/405, remembered for this client) or an
        id's associations span several pages. Ids the batch names in ``errors`` (no associations)
        are absent.
        """
        out: dict[str, list[Any]] = {}
        pending: list[str] = []
        if not self._batch_associations:
            pending = list(ids)
        for start in range(0, len(ids), ASSOC_BATCH) if self._batch_associations else ():
            chunk = ids[start:start + ASSOC_BATCH]
            try:
                body = self._call("POST", f"/crm/v4/associations/{from_type}/{to_type}/batch/read",
                                  json_body={"inputs": [{"id": i} for i in chunk]})
            except ApiValidationError as exc:
                if exc.status in (404, 405):
                    self._batch_associations = False
                    pending.extend(ids[start:])
                    break
                raise
            answered: set[str] = set()
            for item in (body or {}).get("results") or []:
                if not isinstance(item, dict):
                    continue
                from_id = str((item.get("from") or {}).get("id", ""))
                if not from_id or (isinstance(item.get("paging"), dict) and item["paging"].get("next")):
                    continue  # more than one page: read this id on its own below
                answered.add(from_id)
                out[from_id] = list(item.get("to") or [])
            errored = _error_ids(body)
            pending.extend(i for i in chunk if i not in answered and i not in errored)
        for from_id in pending:
            out[from_id] = self._links_of(from_type, to_type, from_id)
        return out

    def _links_of(self, from_type: str, to_type: str, from_id: str) -> list[Any]:
        """Paginated: ``GET /crm/v4/objects/{from}/{id}/associations/{to}`` until no ``paging.next``."""
        path = f"/crm/v4/objects/{from_type}/{from_id}/associations/{to_type}"
        after: str | None = None
        links: list[Any] = []
        seen: set[str] = set()
        while True:
            params: dict[str, Any] = {"limit": 500}
            if after is not None:
                params["after"] = after
            body = self._call("GET", path, params=params)
            results = body.get("results") if isinstance(body, dict) else None
            if isinstance(results, list):
                links.extend(results)
            after = _next_after(body)
            if after is None:
                return links
            if after in seen:
                raise ApiValidationError(SYSTEM, "GET", path, 200,
                                         api_message="paging.next.after repeats a cursor (paging loop)")
            seen.add(after)


@dataclass
class LineItemsResult(FetchResult[DealLineItem]):
    """:meth:`HubSpotClient.deal_line_items`: the records, the rejected ones, and every
    association read (deal id -> line item ids), so a caller can tell a deal whose line item was
    rejected or could not be read (``missing``: associated, not returned) from a complete one."""

    associations: dict[str, list[str]] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)


def pick_company(links: Sequence[Mapping[str, Any]]) -> str | None:
    """From v4 association results, the primary company (type 5), else type 341, else the first."""
    best: tuple[int, str] | None = None
    for link in links:
        to_id = link.get("toObjectId", link.get("id"))
        if to_id is None or isinstance(to_id, bool):
            continue
        to_text = str(int(to_id)) if not isinstance(to_id, str) else to_id
        type_ids = {t.get("typeId") for t in link.get("associationTypes") or [] if isinstance(t, dict)}
        rank = 0 if PRIMARY_COMPANY_TYPE_ID in type_ids else 1 if DEFAULT_COMPANY_TYPE_ID in type_ids else 2
        if best is None or rank < best[0]:
            best = (rank, to_text)
    return best[1] if best else None


def _target_ids(links: Sequence[Any]) -> list[str]:
    """``toObjectId`` of v4 association results as id strings, de-duplicated, in id order."""
    out: list[str] = []
    for link in links:
        if not isinstance(link, dict):
            continue
        to_id = link.get("toObjectId", link.get("id"))
        if to_id is None or isinstance(to_id, (bool, float)):
            continue
        text = str(to_id).strip()
        if text and text not in out:
            out.append(text)
    return sorted(out, key=_id_order)


def _id_order(v: str) -> tuple[int, str]:
    return (int(v), v) if v.isdigit() else (2**63, v)


def _error_ids(body: Any) -> set[str]:
    """Ids named in a 207 batch response's ``errors[].context.ids`` (e.g. no associations)."""
    out: set[str] = set()
    if not isinstance(body, dict):
        return out
    for err in body.get("errors") or []:
        ctx = err.get("context") if isinstance(err, dict) else None
        if isinstance(ctx, dict):
            for key in ("ids", "fromObjectId", "id"):
                for value in ctx.get(key) or []:
                    out.add(str(value))
    return out


def _next_after(body: Any) -> str | None:
    if not isinstance(body, dict):
        return None
    paging = body.get("paging")
    if not isinstance(paging, dict):
        return None
    nxt = paging.get("next")
    if not isinstance(nxt, dict):
        return None
    after = nxt.get("after")
    if after is None or after == "":
        return None
    return str(after)


def _with_window(filter_groups: list[dict[str, Any]], lower: str | None) -> list[dict[str, Any]]:
    if lower is None:
        return filter_groups
    window = {"propertyName": WINDOW_PROPERTY, "operator": "GTE", "value": lower}
    if not filter_groups:
        return [{"filters": [window]}]
    return [{**g, "filters": [*(g.get("filters") or []), window]} for g in filter_groups]


def _parse_unique(model: type[Deal] | type[Company], page: list[Any], entity: str,
                  seen: set[str], result: FetchResult[Any]) -> None:
    fresh = []
    for raw in page:
        rid = raw.get("id") if isinstance(raw, dict) else None
        if rid is not None:
            if str(rid) in seen:
                continue
            seen.add(str(rid))
        fresh.append(raw)
    parse_records(model, fresh, system=SYSTEM, entity=entity, into=result)


__all__ = ["HubSpotClient", "LineItemsResult", "pick_company"]
