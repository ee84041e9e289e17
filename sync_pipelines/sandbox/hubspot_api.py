"""HubSpot CRM v3/v4 (api-contracts §2): objects, search, deal updates, associations."""

from __future__ import annotations

import datetime as dt
import json
import re
from decimal import Decimal, InvalidOperation
from typing import Any, Callable

from . import credentials
from .http import Req, Resp, iso_z, new_uuid
from .state import SandboxState

OBJECT_TYPES = ("deals", "companies", "line_items")
DEFAULT_PROPERTIES = {
    "deals": ("amount", "closedate", "createdate", "dealname", "dealstage", "hs_lastmodifieddate", "hs_object_id", "pipeline"),
    "companies": ("createdate", "domain", "hs_lastmodifieddate", "hs_object_id", "name"),
    "line_items": ("amount", "createdate", "hs_lastmodifieddate", "hs_object_id", "hs_product_id", "hs_sku", "name", "price", "quantity"),
}
ALWAYS = ("createdate", "hs_lastmodifieddate", "hs_object_id")
READ_ONLY = ("hs_object_id", "createdate", "hs_lastmodifieddate")
#: HubSpot's stage calculated properties: one pair per pipeline stage id, set by HubSpot when a
#: record enters the stage (knowledge.hubspot.com "stage calculated properties"); read only.
STAGE_ENTERED_PREFIXES = ("hs_v2_date_entered_", "hs_date_entered_")


def read_only(name: str) -> bool:
    return name in READ_ONLY or name.startswith(STAGE_ENTERED_PREFIXES)


def enter_stage(rec: dict, stage: str, when: str) -> None:
    """Move a deal to `stage` at `when` (ISO ms, UTC) the way HubSpot does: the stage's
    "date entered" properties are set on every entry (a re-entry overwrites them)."""
    rec["properties"]["dealstage"] = stage
    for prefix in STAGE_ENTERED_PREFIXES:
        rec["properties"][prefix + stage] = when
SEARCH_CAP = 10_000
TYPE_LABELS = {5: "Primary", 1: "Primary", 3: None, 341: None, 342: None, 19: None, 20: None}


def error(status: int, category: str, message: str, **extra: Any) -> Resp:
    body = {"status": "error", "message": message, "correlationId": new_uuid(), "category": category}
    body.update(extra)
    return Resp(status, body)


def check_auth(req: Req) -> Resp | None:
    auth = req.headers.get("authorization", "")
    if auth[:7].lower() != "bearer " or auth[7:].strip() != credentials.HUBSPOT_ACCESS_TOKEN:
        if not auth:
            msg = ("Authentication credentials not found. This API supports OAuth 2.0 authentication and you can find "
                   "more details at https://developers.hubspot.com/docs/methods/auth/oauth-overview")
        else:
            msg = "Authentication credentials are invalid. The access token used to make this call is not recognized."
        return error(401, "INVALID_AUTHENTICATION", msg)
    return None


def _props_param(req: Req) -> list[str] | None:
    vals = req.q_all("properties")
    if not vals:
        return None
    out: list[str] = []
    for v in vals:
        out.extend(p.strip() for p in v.split(",") if p.strip())
    return out


def _created(rec: dict) -> str:
    return rec.get("createdAt") or rec["properties"].get("createdate") or "2020-01-01T00:00:00.000Z"


def render(otype: str, rec: dict, props: list[str] | None, assoc: list[str] | None = None, st: SandboxState | None = None) -> dict:
    names = list(props) if props else list(DEFAULT_PROPERTIES[otype])
    for a in ALWAYS:
        if a not in names:
            names.append(a)
    p = rec["properties"]
    if props and st is not None:
        # a property that does not exist on the object type is left out (HubSpot ignores it)
        known = st.defined_properties(otype)
        names = [n for n in names if n in known or n in p]
    out: dict[str, Any] = {
        "id": rec["id"],
        "properties": {n: p.get(n) for n in names},
        "createdAt": _created(rec),
        "updatedAt": rec.get("updatedAt") or p.get("hs_lastmodifieddate") or _created(rec),
        "archived": bool(rec.get("archived", False)),
    }
    if assoc and st is not None:
        block: dict[str, Any] = {}
        for to in assoc:
            ids = []
            for a in st.associations:
                if a["from_type"] == otype and a["from_id"] == rec["id"] and a["to_type"] == to:
                    ids.append({"id": a["to_id"], "type": f"{otype[:-1]}_to_{to[:-1]}" if a["type_id"] != 5 else f"{otype[:-1]}_to_{to[:-1]}_primary"})
                elif a["to_type"] == otype and a["to_id"] == rec["id"] and a["from_type"] == to:
                    ids.append({"id": a["from_id"], "type": f"{otype[:-1]}_to_{to[:-1]}"})
            if ids:
                block[to] = {"results": ids}
        if block:
            out["associations"] = block
    return out


def _limit(req: Req, default: int, maximum: int) -> tuple[int, Resp | None]:
    v = req.q("limit")
    if v in (None, ""):
        return default, None
    if not re.fullmatch(r"\d+", v) or not (1 <= int(v) <= maximum):
        return 0, error(400, "VALIDATION_ERROR", f"limit must be between 1 and {maximum}, got {v}")
    return int(v), None


def _short(req: Req, page: list, can_be_empty: bool) -> int:
    """How many of `page` to return: all, or fewer under the `rate_short_page` fault.

    The cursor then points just after what was returned, so nothing is skipped, and it always
    moves on (an empty page is only served where its cursor differs from the one requested)."""
    lo = 0 if can_be_empty else 1
    if req.short_page is None or len(page) <= lo:
        return len(page)
    return lo + int(req.short_page * (len(page) - lo))  # lo .. len-1


def list_objects(otype: str) -> Callable[[SandboxState, Req], Resp]:
    def handler(st: SandboxState, req: Req) -> Resp:
        limit, err = _limit(req, 10, 100)
        if err:
            return err
        if (req.q("archived") or "false").lower() == "true":
            return Resp(200, {"results": []})
        after = req.q("after")
        recs = [r for r in st.hubspot[otype].values() if not r.get("archived")]  # ordered by numeric id
        if after:
            if not re.fullmatch(r"\d+", after):
                return error(400, "VALIDATION_ERROR", f"Invalid input: after={after!r} is not a valid paging cursor")
            a = int(after)
            recs = [r for r in recs if int(r["id"]) >= a]
        page = recs[:limit]
        cut = _short(req, page, can_be_empty=bool(page) and page[0]["id"] != after)
        props = _props_param(req)
        assoc = [x.strip() for v in req.q_all("associations") for x in v.split(",") if x.strip()]
        body: dict[str, Any] = {"results": [render(otype, r, props, assoc, st) for r in page[:cut]]}
        nxt = None
        if cut < len(page) or len(recs) > limit:
            nxt = recs[cut]["id"]
        elif req.short_page is not None and page:  # the last page still points on: the next one is empty
            nxt = str(int(page[-1]["id"]) + 1)
        if nxt is not None:
            keep = [(k, v) for k, v in req.query if k != "after"] + [("after", nxt)]
            body["paging"] = {"next": {"after": nxt, "link": req.url_with(req.path, keep)}}
        return Resp(200, body)

    return handler


def get_object(otype: str) -> Callable[..., Resp]:
    def handler(st: SandboxState, req: Req, id: str) -> Resp:
        rec = st.hubspot[otype].get(id)
        if rec is None or rec.get("archived"):
            return error(404, "OBJECT_NOT_FOUND", "Object not found.  objectId are usually numeric.", context={"id": [id]})
        assoc = [x.strip() for v in req.q_all("associations") for x in v.split(",") if x.strip()]
        return Resp(200, render(otype, rec, _props_param(req), assoc, st))

    return handler


# ---------------------------------------------------------------------------- search
_ISO = re.compile(r"^\d{4}-\d{2}-\d{2}")


def _as_ms(v: str) -> int | None:
    if re.fullmatch(r"-?\d{10,}", v):
        return int(v)
    if _ISO.match(v):
        try:
            d = dt.datetime.fromisoformat(v.replace("Z", "+00:00")) if "T" in v else dt.datetime.fromisoformat(v + "T00:00:00+00:00")
        except ValueError:
            return None
        if d.tzinfo is None:
            d = d.replace(tzinfo=dt.timezone.utc)
        return int(d.timestamp() * 1000)
    return None


def _typed(prop_value: str, filter_value: Any) -> tuple[Any, Any]:
    fv = str(filter_value).lower() if isinstance(filter_value, bool) else str(filter_value)
    if _ISO.match(prop_value):
        a, b = _as_ms(prop_value), _as_ms(fv)
        if a is not None and b is not None:
            return a, b
    try:
        return Decimal(prop_value), Decimal(fv)
    except InvalidOperation:
        return prop_value.lower(), fv.lower()


def _filter_ok(rec: dict, f: dict) -> bool:
    name, op = f.get("propertyName"), (f.get("operator") or "EQ").upper()
    v = rec["properties"].get(name)
    if name == "hs_object_id":
        v = rec["id"]
    has = v is not None and v != ""
    if op == "HAS_PROPERTY":
        return has
    if op == "NOT_HAS_PROPERTY":
        return not has
    if op in ("IN", "NOT_IN"):
        vals = f.get("values") or []
        hit = has and any(_typed(v, x)[0] == _typed(v, x)[1] for x in vals)
        return hit if op == "IN" else not hit
    if op in ("CONTAINS_TOKEN", "NOT_CONTAINS_TOKEN"):
        tok = str(f.get("value", "")).lower().strip("*")
        hit = has and tok in v.lower()
        return hit if op == "CONTAINS_TOKEN" else not hit
    if not has:
        return op == "NEQ"
    a, b = _typed(v, f.get("value", ""))
    try:
        if op == "EQ":
            return a == b
        if op == "NEQ":
            return a != b
        if op == "LT":
            return a < b
        if op == "LTE":
            return a <= b
        if op == "GT":
            return a > b
        if op == "GTE":
            return a >= b
        if op == "BETWEEN":
            _, hi = _typed(v, f.get("highValue", ""))
            return b <= a <= hi
    except TypeError:
        return False
    return False


OPERATORS = {"EQ", "NEQ", "LT", "LTE", "GT", "GTE", "BETWEEN", "IN", "NOT_IN", "HAS_PROPERTY", "NOT_HAS_PROPERTY", "CONTAINS_TOKEN", "NOT_CONTAINS_TOKEN"}


def search(otype: str) -> Callable[[SandboxState, Req], Resp]:
    def handler(st: SandboxState, req: Req) -> Resp:
        try:
            body = json.loads(req.body or b"{}")
        except ValueError:
            return error(400, "VALIDATION_ERROR", "Invalid input JSON on line 1")
        if not isinstance(body, dict):
            return error(400, "VALIDATION_ERROR", "Invalid input JSON: expected an object")
        groups = body.get("filterGroups") or []
        if len(groups) > 5:
            return error(400, "VALIDATION_ERROR", "Too many filter groups: at most 5 are allowed")
        total_filters = 0
        for g in groups:
            fs = g.get("filters") or []
            total_filters += len(fs)
            if len(fs) > 10:
                return error(400, "VALIDATION_ERROR", "Too many filters in a group: at most 10 are allowed")
            for f in fs:
                if (f.get("operator") or "EQ").upper() not in OPERATORS:
                    return error(400, "VALIDATION_ERROR", f"Invalid operator {f.get('operator')!r}")
                if not f.get("propertyName"):
                    return error(400, "VALIDATION_ERROR", "filter is missing propertyName")
        if total_filters > 25:
            return error(400, "VALIDATION_ERROR", "Too many filters: at most 25 are allowed")
        sorts = body.get("sorts") or []
        if len(sorts) > 1:
            return error(400, "VALIDATION_ERROR", "Only one sort is supported")
        limit = body.get("limit", 10)
        if not isinstance(limit, int) or isinstance(limit, bool) or not (1 <= limit <= 200):
            return error(400, "VALIDATION_ERROR", f"limit must be between 1 and 200, got {limit!r}")
        after_raw = body.get("after") or "0"
        if not re.fullmatch(r"\d+", str(after_raw)):
            return error(400, "VALIDATION_ERROR", f"Invalid after {after_raw!r}")
        after = int(after_raw)
        if after >= SEARCH_CAP or after + limit > SEARCH_CAP:
            return error(400, "VALIDATION_ERROR",
                         f"There was a problem with the request: the search API can return at most {SEARCH_CAP} results (after={after}, limit={limit})")
        recs = [r for r in st.hubspot[otype].values() if not r.get("archived")]
        if groups:
            recs = [r for r in recs if any(all(_filter_ok(r, f) for f in (g.get("filters") or [])) for g in groups)]
        if sorts:
            s = sorts[0]
            name = s.get("propertyName")
            desc = (s.get("direction") or "ASCENDING").upper() == "DESCENDING"

            def key(r: dict) -> tuple:
                v = r["id"] if name == "hs_object_id" else r["properties"].get(name)
                if v is None or v == "":
                    return (1, 0, "")
                ms = _as_ms(v) if _ISO.match(v) else None
                if ms is not None:
                    return (0, ms, "")
                try:
                    return (0, Decimal(v), "")
                except InvalidOperation:
                    return (0, 0, v.lower())

            recs.sort(key=key, reverse=desc)
        else:
            recs.sort(key=lambda r: int(r["id"]))
        total = len(recs)
        page = recs[after : after + limit]
        cut = _short(req, page, can_be_empty=False)  # `after` is an offset: an empty page could not move it
        props = body.get("properties") or None
        out: dict[str, Any] = {"total": total, "results": [render(otype, r, props, None, st) for r in page[:cut]]}
        # under the fault the last page also points on (the next one is empty, without paging)
        if cut < len(page) or after + limit < total or (req.short_page is not None and page):
            nxt = str(after + cut)
            out["paging"] = {"next": {"after": nxt, "link": f"?after={nxt}"}}
        return Resp(200, out)

    return handler


# ---------------------------------------------------------------------------- update
def _to_str(v: Any) -> str | None:
    if v is None:
        return None
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, Decimal)):
        return str(v)
    return str(v)


def update_deal(st: SandboxState, req: Req, id: str) -> Resp:
    rec = st.hubspot["deals"].get(id)
    if rec is None:
        return error(404, "OBJECT_NOT_FOUND", "Object not found.  objectId are usually numeric.", context={"id": [id]})
    try:
        from sync_pipelines import money

        body = money.loads(req.body or b"{}")
    except ValueError:
        return error(400, "VALIDATION_ERROR", "Invalid input JSON on line 1")
    props = body.get("properties") if isinstance(body, dict) else None
    if not isinstance(props, dict):
        return error(400, "VALIDATION_ERROR", "Invalid input JSON: properties must be an object")
    problems = []
    for k in props:
        if k not in st.defined_deal_properties:
            problems.append({"message": f'Property "{k}" does not exist', "code": "PROPERTY_DOESNT_EXIST",
                             "context": {"propertyName": [k]}})
        elif read_only(k):
            problems.append({"message": f'"{k}" is a read only property; its value cannot be set.', "code": "READ_ONLY_VALUE",
                             "context": {"propertyName": [k]}})
    if problems:
        detail = ", ".join(
            json.dumps({"isValid": False, "message": p["message"], "error": p["code"], "name": p["context"]["propertyName"][0]})
            for p in problems
        )
        return error(400, "VALIDATION_ERROR", f"Property values were not valid: [{detail}]", errors=problems)
    now = iso_z()
    for k, v in props.items():
        new = _to_str(v)
        if rec["properties"].get(k) != new:
            st.hubspot_event("deals", rec["id"], k, new)
            if k == "dealstage" and new:
                enter_stage(rec, new, now)
        rec["properties"][k] = new
    rec["properties"]["hs_lastmodifieddate"] = now
    rec["updatedAt"] = now
    st.touch("hubspot")
    names = list(DEFAULT_PROPERTIES["deals"]) + [k for k in props if k not in DEFAULT_PROPERTIES["deals"]]
    return Resp(200, render("deals", rec, names, None, st), mutated=True)


def archive_deal(st: SandboxState, req: Req, id: str) -> Resp:
    """`DELETE /crm/v3/objects/deals/{id}` archives the deal (HubSpot answers 204): from then on
    lists, search and reads by id leave it out, and nothing marks it in what they return."""
    rec = st.hubspot["deals"].get(id)
    if rec is None or rec.get("archived"):
        return error(404, "OBJECT_NOT_FOUND", "Object not found.  objectId are usually numeric.", context={"id": [id]})
    now = iso_z()
    rec["archived"], rec["archivedAt"] = True, now
    st.touch("hubspot")
    return Resp(204, b"", mutated=True)


def define_deal_property(st: SandboxState, req: Req) -> Resp:
    try:
        body = json.loads(req.body or b"{}")
    except ValueError:
        return error(400, "VALIDATION_ERROR", "Invalid input JSON on line 1")
    name = body.get("name") if isinstance(body, dict) else None
    if not isinstance(name, str) or not re.fullmatch(r"[a-z][a-z0-9_]*", name):
        return error(400, "VALIDATION_ERROR", "Property name must be lowercase letters, digits and underscores")
    if name in st.defined_deal_properties:
        return error(409, "OBJECT_ALREADY_EXISTS", f"A property named '{name}' already exists.")
    st.defined_deal_properties.add(name)
    now = iso_z()
    out = {"name": name, "label": body.get("label", name), "type": body.get("type", "string"),
           "fieldType": body.get("fieldType", "text"), "groupName": body.get("groupName", "dealinformation"),
           "createdAt": now, "updatedAt": now, "archived": False}
    return Resp(201, out, mutated=True)


# ---------------------------------------------------------------------------- v4 associations
def associations_v4(st: SandboxState, req: Req, from_type: str, id: str, to_type: str) -> Resp:
    if from_type not in st.hubspot or to_type not in st.hubspot:
        return error(400, "VALIDATION_ERROR", f"Unknown object type {from_type if from_type not in st.hubspot else to_type!r}")
    if id not in st.hubspot[from_type]:
        return error(404, "OBJECT_NOT_FOUND", "Object not found.  objectId are usually numeric.", context={"id": [id]})
    by_target: dict[str, list[dict]] = {}
    for a in st.associations:
        if a["from_type"] == from_type and a["from_id"] == id and a["to_type"] == to_type:
            by_target.setdefault(a["to_id"], []).append(
                {"category": a.get("category", "HUBSPOT_DEFINED"), "typeId": a["type_id"], "label": a.get("label", TYPE_LABELS.get(a["type_id"]))}
            )
    results = [{"toObjectId": int(t), "associationTypes": types} for t, types in sorted(by_target.items(), key=lambda kv: int(kv[0]))]
    return Resp(200, {"results": results})


def _json_body(req: Req) -> Any:
    from sync_pipelines import money

    try:
        return money.loads(req.body or b"{}")
    except ValueError:
        return None


def _inputs(body: Any, limit: int = 100) -> tuple[list[str] | None, Resp | None]:
    inputs = body.get("inputs") if isinstance(body, dict) else None
    if not isinstance(inputs, list) or not all(isinstance(i, dict) and "id" in i for i in inputs):
        return None, error(400, "VALIDATION_ERROR", 'Invalid input JSON: expected {"inputs": [{"id": ...}]}')
    if len(inputs) > limit:
        return None, error(400, "VALIDATION_ERROR", f"Too many inputs: at most {limit} are allowed, got {len(inputs)}")
    return [str(i["id"]) for i in inputs], None


def _batch_envelope(results: list, errors: list) -> Resp:
    now = iso_z()
    body: dict[str, Any] = {"status": "COMPLETE", "results": results, "startedAt": now, "completedAt": now}
    if errors:
        body["numErrors"] = len(errors)
        body["errors"] = errors
    return Resp(207 if errors else 200, body)


def associations_v4_batch(st: SandboxState, req: Req, from_type: str, to_type: str) -> Resp:
    """POST /crm/v4/associations/{from}/{to}/batch/read: 207 with errors for ids without any."""
    if from_type not in st.hubspot or to_type not in st.hubspot:
        return error(400, "VALIDATION_ERROR", "Unknown object type")
    ids, err = _inputs(_json_body(req), 1000)
    if err:
        return err
    results, errors = [], []
    for i in ids or []:
        single = associations_v4(st, req, from_type, i, to_type)
        found = single.body.get("results") if single.status == 200 else None
        if found:
            results.append({"from": {"id": i}, "to": found})
        else:
            errors.append({"status": "error", "category": "OBJECT_NOT_FOUND",
                           "subCategory": "crm.associations.NO_ASSOCIATIONS_FOUND",
                           "message": f"No {to_type[:-1]} is associated with {from_type[:-1]} {i}.",
                           "context": {"fromObjectId": [i]}})
    return _batch_envelope(results, errors)


def batch_read(otype: str) -> Callable[[SandboxState, Req], Resp]:
    def handler(st: SandboxState, req: Req) -> Resp:
        body = _json_body(req)
        ids, err = _inputs(body)
        if err:
            return err
        props = body.get("properties") or None
        results, missing = [], []
        for i in ids or []:
            rec = st.hubspot[otype].get(i)
            if rec is None or rec.get("archived"):
                missing.append(i)
            else:
                results.append(render(otype, rec, props, None, st))
        errors = [{"status": "error", "category": "OBJECT_NOT_FOUND", "message": "Could not get some "
                   f"{otype.upper()} objects, they may be deleted or not exist.", "context": {"ids": missing}}] if missing else []
        return _batch_envelope(results, errors)

    return handler


def batch_update_deals(st: SandboxState, req: Req) -> Resp:
    body = _json_body(req)
    inputs = body.get("inputs") if isinstance(body, dict) else None
    if not isinstance(inputs, list) or not inputs:
        return error(400, "VALIDATION_ERROR", 'Invalid input JSON: expected {"inputs": [{"id": ..., "properties": {...}}]}')
    if len(inputs) > 100:
        return error(400, "VALIDATION_ERROR", f"Too many inputs: at most 100 are allowed, got {len(inputs)}")
    # all-or-nothing validation first, as HubSpot rejects the whole batch on a bad property
    for item in inputs:
        if not isinstance(item, dict) or str(item.get("id")) not in st.hubspot["deals"]:
            return error(404, "OBJECT_NOT_FOUND", "Object not found.", context={"id": [str((item or {}).get("id"))]})
        for k in (item.get("properties") or {}):
            if k not in st.defined_deal_properties or read_only(k):
                return error(400, "VALIDATION_ERROR", f'Property values were not valid: "{k}"',
                             errors=[{"message": f'Property "{k}" does not exist', "code": "PROPERTY_DOESNT_EXIST",
                                      "context": {"propertyName": [k]}}])
    results = []
    for item in inputs:
        from sync_pipelines import money

        sub = Req("PATCH", req.path, [], req.headers, money.dumps({"properties": item.get("properties") or {}}).encode(), req.base_url)
        results.append(update_deal(st, sub, str(item["id"])).body)
    resp = _batch_envelope(results, [])
    resp.mutated = True
    return resp


ROUTES: list[tuple[str, str, Callable[..., Resp]]] = []
for _t in OBJECT_TYPES:
    ROUTES += [
        ("GET", rf"/crm/v3/objects/{_t}", list_objects(_t)),
        ("POST", rf"/crm/v3/objects/{_t}/search", search(_t)),
        ("GET", rf"/crm/v3/objects/{_t}/(?P<id>\d+)", get_object(_t)),
        ("POST", rf"/crm/v3/objects/{_t}/batch/read", batch_read(_t)),
    ]
ROUTES += [
    ("PATCH", r"/crm/v3/objects/deals/(?P<id>\d+)", update_deal),
    ("DELETE", r"/crm/v3/objects/deals/(?P<id>\d+)", archive_deal),
    ("POST", r"/crm/v3/objects/deals/batch/update", batch_update_deals),
    ("POST", r"/crm/v3/properties/deals", define_deal_property),
    ("POST", r"/crm/v4/associations/(?P<from_type>[a-z_]+)/(?P<to_type>[a-z_]+)/batch/read", associations_v4_batch),
    ("GET", r"/crm/v4/objects/(?P<from_type>[a-z_]+)/(?P<id>\d+)/associations/(?P<to_type>[a-z_]+)", associations_v4),
]
