"""Harvest API v2 (api-contracts §3): read-only list endpoints with cursor paging."""

from __future__ import annotations

import bisect
import datetime as dt
import re
from typing import Any, Callable

from . import credentials
from .http import Req, Resp, decode_cursor, encode_cursor
from .state import SandboxState

INVALID_TOKEN = {
    "error": "invalid_token",
    "error_description": "The access token provided is expired, revoked, malformed or invalid for other reasons.",
}
MAX_PER_PAGE = 2000


def check_auth(req: Req) -> Resp | None:
    auth = req.headers.get("authorization", "")
    token = auth[7:] if auth[:7].lower() == "bearer " else req.q("access_token")
    account = req.headers.get("harvest-account-id") or req.q("account_id")
    if token != credentials.HARVEST_ACCESS_TOKEN or account != credentials.HARVEST_ACCOUNT_ID or not req.headers.get("user-agent"):
        return Resp(401, dict(INVALID_TOKEN))
    return None


def _err422(message: str) -> Resp:
    return Resp(422, {"message": message})


def _bool(req: Req, name: str) -> tuple[bool | None, Resp | None]:
    v = req.q(name)
    if v is None or v == "":
        return None, None
    if v.lower() in ("true", "1"):
        return True, None
    if v.lower() in ("false", "0"):
        return False, None
    return None, _err422(f"{name} must be true or false")


def _date(req: Req, name: str) -> tuple[dt.date | None, Resp | None]:
    v = req.q(name)
    if not v:
        return None, None
    try:
        if re.fullmatch(r"\d{8}", v):
            return dt.date(int(v[:4]), int(v[4:6]), int(v[6:])), None
        return dt.date.fromisoformat(v[:10]), None
    except ValueError:
        return None, _err422(f"{name} must be a date (YYYY-MM-DD)")


def _int(req: Req, name: str) -> tuple[int | None, Resp | None]:
    v = req.q(name)
    if v is None or v == "":
        return None, None
    if not re.fullmatch(r"\d+", v):
        return None, _err422(f"{name} must be an integer")
    return int(v), None


def _since(req: Req) -> tuple[str | None, Resp | None]:
    v = req.q("updated_since")
    if not v:
        return None, None
    try:
        d = dt.datetime.fromisoformat(v.replace("Z", "+00:00"))
    except ValueError:
        return None, _err422("updated_since must be an ISO 8601 date-time")
    if d.tzinfo is None:
        d = d.replace(tzinfo=dt.timezone.utc)
    return d.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"), None


def _page(st: SandboxState, req: Req, key: str, rows_in_range: list[dict], match: Callable[[dict], bool]) -> Resp:
    """Page `rows_in_range` (already sorted) through `match`, Harvest style, with opaque cursors."""
    per_page_raw = req.q("per_page")
    per_page = MAX_PER_PAGE
    if per_page_raw not in (None, ""):
        if not re.fullmatch(r"-?\d+", per_page_raw) or not (1 <= int(per_page_raw) <= MAX_PER_PAGE):
            return _err422(f"per_page must be between 1 and {MAX_PER_PAGE}")
        per_page = int(per_page_raw)
    # Harvest data never changes while serving, so the filtered list of a query is cached
    # (paging a million entries must not rescan them for every page).
    ckey = (key, tuple(sorted((k, v) for k, v in req.query if k not in ("page", "cursor", "ref", "per_page"))))
    cache = st.harvest_cache
    matching = cache.get(ckey)
    if matching is None:
        matching = [r for r in rows_in_range if match(r)]
        if len(cache) > 64:
            cache.clear()
        cache[ckey] = matching
    total = len(matching)
    total_pages = max(1, -(-total // per_page))
    cursor_raw = req.q("cursor")
    if cursor_raw:
        cur = decode_cursor(cursor_raw)
        if cur is None or not isinstance(cur.get("o"), int) or cur.get("k") != key:
            return _err422("cursor is invalid")
        offset, page_no = cur["o"], None
    else:
        page_s = req.q("page") or "1"
        if not re.fullmatch(r"\d+", page_s) or int(page_s) < 1:
            return _err422("page must be a positive integer")
        page_no = int(page_s)
        offset = (page_no - 1) * per_page
    rows = matching[offset : offset + per_page]
    has_next = offset + per_page < total
    path = req.path
    keep = [(k, v) for k, v in req.query if k not in ("page", "cursor", "ref", "per_page")]
    links = {
        "first": req.url_with(path, keep + [("page", "1"), ("per_page", str(per_page))]),
        "last": req.url_with(path, keep + [("page", str(total_pages)), ("per_page", str(per_page))]),
        "next": req.url_with(path, keep + [("cursor", encode_cursor({"k": key, "o": offset + per_page})), ("per_page", str(per_page)), ("ref", "next_cursor")]) if has_next else None,
        "previous": req.url_with(path, keep + [("cursor", encode_cursor({"k": key, "o": max(0, offset - per_page)})), ("per_page", str(per_page)), ("ref", "previous_cursor")]) if offset > 0 else None,
    }
    body: dict[str, Any] = {
        key: rows,
        "per_page": per_page,
        "total_pages": total_pages,
        "total_entries": total,
        "next_page": (page_no + 1 if has_next else None) if page_no is not None else None,
        "previous_page": (page_no - 1 if page_no > 1 else None) if page_no is not None else None,
        "page": page_no,
        "links": links,
    }
    return Resp(200, body)


def list_time_entries(st: SandboxState, req: Req) -> Resp:
    d_from, e1 = _date(req, "from")
    d_to, e2 = _date(req, "to")
    client_id, e3 = _int(req, "client_id")
    project_id, e4 = _int(req, "project_id")
    user_id, e5 = _int(req, "user_id")
    task_id, e6 = _int(req, "task_id")
    is_billed, e7 = _bool(req, "is_billed")
    is_running, e8 = _bool(req, "is_running")
    since, e9 = _since(req)
    for e in (e1, e2, e3, e4, e5, e6, e7, e8, e9):
        if e is not None:
            return e
    entries = st.harvest["time_entries"]
    ords = st.entry_ordinals  # ascending (-ordinal): newest first
    lo, hi = 0, len(entries)
    if d_to is not None:
        lo = bisect.bisect_left(ords, -d_to.toordinal())
    if d_from is not None:
        hi = bisect.bisect_right(ords, -d_from.toordinal())
    rng = entries[lo:hi] if lo < hi else []

    def match(e: dict) -> bool:
        return (
            (client_id is None or e["client"]["id"] == client_id)
            and (project_id is None or e["project"]["id"] == project_id)
            and (user_id is None or e["user"]["id"] == user_id)
            and (task_id is None or e["task"]["id"] == task_id)
            and (is_billed is None or bool(e.get("is_billed")) == is_billed)
            and (is_running is None or bool(e.get("is_running")) == is_running)
            and (since is None or _norm_ts(e.get("updated_at")) >= since)
        )

    return _page(st, req, "time_entries", rng, match)


def _norm_ts(v: Any) -> str:
    if not v:
        return ""
    try:
        d = dt.datetime.fromisoformat(str(v).replace("Z", "+00:00"))
    except ValueError:
        return str(v)
    if d.tzinfo is None:
        d = d.replace(tzinfo=dt.timezone.utc)
    return d.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _list_simple(coll: str, extra: tuple[str, ...] = ()) -> Callable[[SandboxState, Req], Resp]:
    def handler(st: SandboxState, req: Req) -> Resp:
        is_active, e1 = _bool(req, "is_active")
        since, e2 = _since(req)
        client_id, e3 = _int(req, "client_id") if "client_id" in extra else (None, None)
        for e in (e1, e2, e3):
            if e is not None:
                return e

        def match(r: dict) -> bool:
            return (
                (is_active is None or bool(r.get("is_active", True)) == is_active)
                and (since is None or _norm_ts(r.get("updated_at")) >= since)
                and (client_id is None or (r.get("client") or {}).get("id") == client_id)
            )

        return _page(st, req, coll, st.harvest[coll], match)

    return handler


def get_one(coll: str) -> Callable[..., Resp]:
    def handler(st: SandboxState, req: Req, id: str) -> Resp:
        for r in st.harvest[coll]:
            if str(r["id"]) == id:
                return Resp(200, r)
        return Resp(404, {"status": 404, "error": "Not Found"})

    return handler


ROUTES: list[tuple[str, str, Callable[..., Resp]]] = [
    ("GET", r"/v2/time_entries", list_time_entries),
    ("GET", r"/v2/time_entries/(?P<id>\d+)", get_one("time_entries")),
    ("GET", r"/v2/clients", _list_simple("clients")),
    ("GET", r"/v2/clients/(?P<id>\d+)", get_one("clients")),
    ("GET", r"/v2/projects", _list_simple("projects", ("client_id",))),
    ("GET", r"/v2/projects/(?P<id>\d+)", get_one("projects")),
    ("GET", r"/v2/users", _list_simple("users")),
    ("GET", r"/v2/users/(?P<id>\d+)", get_one("users")),
    ("GET", r"/v2/tasks", _list_simple("tasks")),
    ("GET", r"/v2/tasks/(?P<id>\d+)", get_one("tasks")),
]
