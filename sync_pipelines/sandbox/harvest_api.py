"""Harvest API v2 (api-contracts §3): list endpoints with cursor paging, and time entry edits.

`PATCH /v2/time_entries/{id}` accepts only the updatable fields (§3.4); read-only ones such as
`is_billed` are rejected with 422, locked entries cannot be edited, and a successful edit bumps
`updated_at` (so `updated_since` finds edits made after month end).
"""

from __future__ import annotations

import bisect
import datetime as dt
import re
from decimal import Decimal
from typing import Any, Callable

from . import credentials
from sync_pipelines import money

from .http import Req, Resp, decode_cursor, encode_cursor, iso_s
from .state import SandboxState, _entry_sort_key

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


def _page(st: SandboxState, req: Req, key: str, rows_in_range: list[dict] | Callable[[], list[dict]],
          match: Callable[[dict], bool]) -> Resp:
    """Page `rows_in_range` (already sorted) through `match`, Harvest style, with opaque cursors.

    `rows_in_range` may be a callable: it is only called when the filtered list of this query is
    not cached yet (slicing a million entries for every page would cost as much as the page).
    """
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
        rows_all = rows_in_range() if callable(rows_in_range) else rows_in_range
        matching = [r for r in rows_all if match(r)]
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

    def rng() -> list[dict]:
        return entries[lo:hi] if lo < hi else []

    def match(e: dict) -> bool:
        return (
            # Records from a --dirty fixture may lack a nested object: they simply do not match.
            (client_id is None or (e.get("client") or {}).get("id") == client_id)
            and (project_id is None or (e.get("project") or {}).get("id") == project_id)
            and (user_id is None or (e.get("user") or {}).get("id") == user_id)
            and (task_id is None or (e.get("task") or {}).get("id") == task_id)
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


# ---------------------------------------------------------------------------- writes (§3.4)
# The fields a PATCH may change; everything else on a time entry is read-only through the API
# (notably `is_billed`: only a Harvest invoice sets it; `is_locked` / `is_closed`: approvals).
UPDATABLE = ("project_id", "task_id", "spent_date", "started_time", "ended_time", "hours", "notes",
             "external_reference")
_CLOCK_TIME = re.compile(r"^(1[0-2]|0?[1-9]):[0-5]\d\s?(am|pm)$|^([01]?\d|2[0-3]):[0-5]\d$", re.IGNORECASE)
LOCKED_DEFAULT_REASON = "Item Approved and Locked for this Time Period"


def _find_entry(st: SandboxState, entry_id: int) -> int | None:
    """Position of the entry in the (newest-first) list, or None."""
    for i, e in enumerate(st.harvest["time_entries"]):
        if e["id"] == entry_id:
            return i
    return None


def update_time_entry(st: SandboxState, req: Req, id: str) -> Resp:
    idx = _find_entry(st, int(id))
    if idx is None:
        return Resp(404, {"status": 404, "error": "Not Found"})
    try:
        body = money.loads(req.body) if req.body.strip() else {}
    except ValueError:
        return Resp(400, {"message": "Invalid JSON in the request body"})
    if not isinstance(body, dict):
        return Resp(400, {"message": "The request body must be a JSON object"})
    read_only = [k for k in body if k not in UPDATABLE]
    if read_only:
        return _err422(f"{', '.join(sorted(read_only))} cannot be updated (updatable: {', '.join(UPDATABLE)})")
    old = st.harvest["time_entries"][idx]
    if old.get("is_locked"):
        return _err422(f"This time entry is locked and cannot be edited: {old.get('locked_reason') or LOCKED_DEFAULT_REASON}")
    new = dict(old)  # copy on write: the caller's fixture (shared, never copied) stays pristine
    if "project_id" in body:
        pid = body["project_id"]
        project = next((p for p in st.harvest["projects"] if p["id"] == pid), None) if type(pid) is int else None
        if project is None:
            return _err422(f"project_id {pid!r} is not a valid project")
        new["project"] = {"id": project["id"], "name": project.get("name"), "code": project.get("code")}
        cref = project.get("client") or {}
        client = next((c for c in st.harvest["clients"] if c["id"] == cref.get("id")), None) or cref
        new["client"] = {"id": client.get("id"), "name": client.get("name"),
                         "currency": client.get("currency") or (old.get("client") or {}).get("currency")}
    if "task_id" in body:
        tid = body["task_id"]
        task = next((t for t in st.harvest["tasks"] if t["id"] == tid), None) if type(tid) is int else None
        if task is None:
            return _err422(f"task_id {tid!r} is not a valid task")
        new["task"] = {"id": task["id"], "name": task.get("name")}
    if "spent_date" in body:
        v = body["spent_date"]
        try:
            if not isinstance(v, str) or not re.fullmatch(r"\d{4}-\d{2}-\d{2}", v):
                raise ValueError
            dt.date.fromisoformat(v)
        except ValueError:
            return _err422("spent_date must be a date (YYYY-MM-DD)")
        new["spent_date"] = v
    for k in ("started_time", "ended_time"):
        if k in body:
            v = body[k]
            if v is not None and (not isinstance(v, str) or not _CLOCK_TIME.match(v.strip())):
                return _err422(f"{k} must be a time of day such as \"3:00pm\" or \"15:00\"")
            new[k] = v
    if "hours" in body:
        v = body["hours"]
        if isinstance(v, bool) or not isinstance(v, (int, Decimal)) or (isinstance(v, Decimal) and not v.is_finite()):
            return _err422("hours must be a number")
        if v < 0 or v > 24:
            return _err422("hours must be between 0 and 24")
        new["hours"] = v
        new["hours_without_timer"] = v
        new["rounded_hours"] = v  # the account's Time Rounding setting is not simulated
    if "notes" in body:
        v = body["notes"]
        if v is not None and not isinstance(v, str):
            return _err422("notes must be a string")
        new["notes"] = v
    if "external_reference" in body:
        v = body["external_reference"]
        if v is not None and not isinstance(v, dict):
            return _err422("external_reference must be an object")
        new["external_reference"] = dict(v) if v is not None else None
    new["updated_at"] = _bump(old.get("updated_at"))
    entries = st.harvest["time_entries"]
    if new["spent_date"] == old["spent_date"]:
        entries[idx] = new
    else:  # keep the newest-first order (and the ordinals used for from/to) consistent
        del entries[idx]
        del st.entry_ordinals[idx]
        pos = bisect.bisect_left(entries, _entry_sort_key(new), key=_entry_sort_key)
        entries.insert(pos, new)
        st.entry_ordinals.insert(pos, _entry_sort_key(new)[0])
    st.harvest_cache.clear()
    st.touch("harvest")
    return Resp(200, new, mutated=True)


def delete_time_entry(st: SandboxState, req: Req, id: str) -> Resp:
    """`DELETE /v2/time_entries/{id}`: Harvest answers 200 and the entry is simply gone; lists
    carry no tombstone, so `updated_since` cannot show the deletion (a reader must count).
    Harvest's reference: "only possible if it's not closed ... However, Admins can delete closed
    entries"; the sandbox, which has no roles, refuses a closed or locked entry (as it refuses to
    edit a locked one)."""
    idx = _find_entry(st, int(id))
    if idx is None:
        return Resp(404, {"status": 404, "error": "Not Found"})
    old = st.harvest["time_entries"][idx]
    if old.get("is_locked") or old.get("is_closed"):
        return _err422(f"This time entry is locked and cannot be deleted: {old.get('locked_reason') or LOCKED_DEFAULT_REASON}")
    del st.harvest["time_entries"][idx]
    del st.entry_ordinals[idx]
    st.harvest_cache.clear()
    st.touch("harvest")
    return Resp(200, {}, mutated=True)


def _bump(previous: Any) -> str:
    """Now, as Harvest writes `updated_at`; strictly later than `previous` (even a future one)."""
    now = iso_s()
    prev = _norm_ts(previous)
    if prev and now <= prev:
        d = dt.datetime.strptime(prev, "%Y-%m-%dT%H:%M:%SZ") + dt.timedelta(seconds=1)
        now = d.strftime("%Y-%m-%dT%H:%M:%SZ")
    return now


ROUTES: list[tuple[str, str, Callable[..., Resp]]] = [
    ("GET", r"/v2/time_entries", list_time_entries),
    ("GET", r"/v2/time_entries/(?P<id>\d+)", get_one("time_entries")),
    ("PATCH", r"/v2/time_entries/(?P<id>\d+)", update_time_entry),
    ("DELETE", r"/v2/time_entries/(?P<id>\d+)", delete_time_entry),
    ("GET", r"/v2/clients", _list_simple("clients")),
    ("GET", r"/v2/clients/(?P<id>\d+)", get_one("clients")),
    ("GET", r"/v2/projects", _list_simple("projects", ("client_id",))),
    ("GET", r"/v2/projects/(?P<id>\d+)", get_one("projects")),
    ("GET", r"/v2/users", _list_simple("users")),
    ("GET", r"/v2/users/(?P<id>\d+)", get_one("users")),
    ("GET", r"/v2/tasks", _list_simple("tasks")),
    ("GET", r"/v2/tasks/(?P<id>\d+)", get_one("tasks")),
]
