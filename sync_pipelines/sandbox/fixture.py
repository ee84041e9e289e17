"""The sandbox fixture format (DESIGN §4, normative) and its validation.

```
{"harvest":    {"clients": [...], "projects": [...], "users": [...], "tasks": [...], "time_entries": [...]},
 "hubspot":    {"companies": [...], "deals": [...], "line_items": [...], "associations": [...]},
 "quickbooks": {"realm_id": "...", "preferences": {...}, "customers": [...], "items": [...],
                "classes": [...], "terms": [...], "invoices": [...]},
 "sandbox":    {...}}   # optional, written by the sandbox itself (OAuth tokens, requestid replays)
```

Records are in each API's own response shape. Missing sections or collections mean empty.
`validate_fixture` returns a normalised deep copy (numbers as int/Decimal, never float) or raises
`FixtureError` listing every problem by path (``harvest.time_entries[3].spent_date: ...``).

Validation is structural (sections, collections being lists, ids present and unique, references
that are given pointing at records that exist) plus what the sandbox itself needs to serve a
record. Field content the real APIs can return malformed is served as given, so a fixture can
hold the records a client must quarantine (`generate_fixture(..., dirty=True)`): a Harvest time
entry's `hours` may be anything, its `task` may be missing, and its `spent_date` may be any ISO
8601 date form (the sandbox must still be able to date it: "20261015" is accepted, "2026-02-30"
is not); a QuickBooks item's `Name` may be missing.
"""

from __future__ import annotations

import copy
import datetime as dt
import re
from decimal import Decimal
from pathlib import Path
from typing import Any

from sync_pipelines import money

from . import credentials

HARVEST_COLLECTIONS = ("clients", "projects", "users", "tasks", "time_entries")
HUBSPOT_COLLECTIONS = ("companies", "deals", "line_items", "associations")
QBO_COLLECTIONS = ("customers", "items", "classes", "terms", "invoices", "payments", "tax_codes", "tax_rates")
SECTIONS = {
    "harvest": HARVEST_COLLECTIONS,
    "hubspot": HUBSPOT_COLLECTIONS,
    "quickbooks": QBO_COLLECTIONS + ("realm_id", "preferences", "company_info", "companies"),
    "sandbox": None,
}

DEFAULT_PREFERENCES: dict[str, Any] = {
    "CurrencyPrefs": {"MultiCurrencyEnabled": False, "HomeCurrency": {"value": "USD"}},
    "AccountingInfoPrefs": {"ClassTrackingPerTxn": True, "ClassTrackingPerTxnLine": True},
    # The sandbox's default company numbers its own invoices the way sync_pipelines always has
    # (custom numbers on) and allows discounts; a fixture sets either off to test that company.
    "SalesFormsPrefs": {"CustomTxnNumbers": True, "AllowDuplicateDocNum": False, "AllowDiscount": True},
    "TaxPrefs": {"UsingSalesTax": False, "PartnerTaxEnabled": False},
}
#: CompanyInfo when a fixture gives none (a US company).
DEFAULT_COMPANY_INFO: dict[str, Any] = {"CompanyName": "Sandbox Company", "LegalName": "Sandbox Company", "Country": "US"}

_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_NUMERIC_ID = re.compile(r"^[0-9]+$")


class FixtureError(ValueError):
    """An invalid fixture; `problems` lists every problem with its path."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        shown = problems[:50]
        more = f"\n  ... and {len(problems) - 50} more" if len(problems) > 50 else ""
        super().__init__("invalid sandbox fixture:\n  " + "\n  ".join(shown) + more)


def load_fixture_file(path: str | Path) -> dict:
    """Read a fixture JSON file (numbers with a fraction become Decimal, never float)."""
    return money.loads(Path(path).read_bytes())


def _defloat(o: Any) -> Any:
    # A float in a hand-written dict is turned back into the literal it was written as
    # (repr is the shortest round-trip text); no arithmetic ever happens on the float.
    if isinstance(o, float):
        return Decimal(repr(o))
    if isinstance(o, dict):
        return {k: _defloat(v) for k, v in o.items()}
    if isinstance(o, list):
        return [_defloat(v) for v in o]
    return o


_ENTRY_NUMBERS = ("hours", "hours_without_timer", "rounded_hours", "billable_rate", "cost_rate")


def _copy_fixture(fixture: dict) -> dict:
    """Deep-copy (and de-float) everything except Harvest time entries.

    Time entries can number a million and the sandbox never changes them, so they are shared
    with the caller; only an entry with a float in a numeric field is copied and fixed.
    """
    out: dict[str, Any] = {}
    for section, value in fixture.items():
        if section == "harvest" and isinstance(value, dict):
            h = {k: (_defloat(v) if k != "time_entries" else v) for k, v in value.items()}
            entries = h.get("time_entries")
            if isinstance(entries, list):
                fixed = []
                for e in entries:
                    if isinstance(e, dict) and any(type(e.get(k)) is float for k in _ENTRY_NUMBERS):
                        e = dict(e)
                        for k in _ENTRY_NUMBERS:
                            if type(e.get(k)) is float:
                                e[k] = Decimal(repr(e[k]))
                    fixed.append(e)
                h["time_entries"] = fixed
            out[section] = h
        else:
            out[section] = _defloat(value)
    return out


class _Checker:
    def __init__(self) -> None:
        self.problems: list[str] = []

    def err(self, path: str, msg: str) -> None:
        self.problems.append(f"{path}: {msg}")

    def int_id(self, rec: dict, key: str, path: str, required: bool = True) -> Any:
        v = rec.get(key)
        if v is None:
            if required:
                self.err(f"{path}.{key}", "required (integer)")
            return None
        if isinstance(v, bool) or not isinstance(v, int):
            self.err(f"{path}.{key}", f"must be an integer, got {v!r}")
            return None
        return v

    def string(self, rec: dict, key: str, path: str, required: bool = True) -> Any:
        v = rec.get(key)
        if v is None:
            if required:
                self.err(f"{path}.{key}", "required (string)")
            return None
        if not isinstance(v, str):
            self.err(f"{path}.{key}", f"must be a string, got {v!r}")
            return None
        return v

    def boolean(self, rec: dict, key: str, path: str, required: bool = False) -> None:
        v = rec.get(key)
        if v is None:
            if required:
                self.err(f"{path}.{key}", "required (true/false)")
            return
        if not isinstance(v, bool):
            self.err(f"{path}.{key}", f"must be true or false, got {v!r}")

    def number(self, rec: dict, key: str, path: str, required: bool = False) -> None:
        v = rec.get(key)
        if v is None:
            if required:
                self.err(f"{path}.{key}", "required (number)")
            return
        if isinstance(v, bool) or not isinstance(v, (int, Decimal)):
            self.err(f"{path}.{key}", f"must be a number, got {v!r}")

    def date(self, rec: dict, key: str, path: str, required: bool = True) -> None:
        v = rec.get(key)
        if v is None:
            if required:
                self.err(f"{path}.{key}", "required (YYYY-MM-DD)")
            return
        if not isinstance(v, str) or not _DATE.match(v):
            self.err(f"{path}.{key}", f"must be a date YYYY-MM-DD, got {v!r}")
            return
        try:
            dt.date.fromisoformat(v)
        except ValueError:
            self.err(f"{path}.{key}", f"not a valid date: {v!r}")

    def ref(self, rec: dict, key: str, path: str, id_kind: str, required: bool = True) -> Any:
        v = rec.get(key)
        if v is None:
            if required:
                self.err(f"{path}.{key}", "required (object)")
            return None
        if not isinstance(v, dict):
            self.err(f"{path}.{key}", f"must be an object, got {v!r}")
            return None
        if id_kind == "int":
            return self.int_id(v, "id", f"{path}.{key}")
        # QBO reference {"value": "<Id>", "name": ...}
        return self.string(v, "value", f"{path}.{key}")


def validate_fixture(fixture: Any) -> dict:
    """Validate and normalise a fixture; raise FixtureError listing every problem by path."""
    c = _Checker()
    if not isinstance(fixture, dict):
        raise FixtureError([f"(root): must be a JSON object, got {type(fixture).__name__}"])
    fx = _copy_fixture(fixture)
    for key in fx:
        if key not in SECTIONS:
            c.err(key, f"unknown section (expected one of {', '.join(SECTIONS)})")
    out: dict[str, Any] = {}
    for section, colls in SECTIONS.items():
        sec = fx.get(section)
        if sec is None:
            sec = {}
        if not isinstance(sec, dict):
            c.err(section, "must be an object")
            sec = {}
        if colls is not None:
            for key in sec:
                if key not in colls:
                    c.err(f"{section}.{key}", f"unknown collection (expected one of {', '.join(colls)})")
        out[section] = sec
    for section, colls in (("harvest", HARVEST_COLLECTIONS), ("hubspot", HUBSPOT_COLLECTIONS), ("quickbooks", QBO_COLLECTIONS)):
        for coll in colls:
            v = out[section].get(coll)
            if v is None:
                out[section][coll] = []
            elif not isinstance(v, list):
                c.err(f"{section}.{coll}", "must be a list")
                out[section][coll] = []
            else:
                for i, rec in enumerate(v):
                    if not isinstance(rec, dict):
                        c.err(f"{section}.{coll}[{i}]", "must be an object")
                out[section][coll] = [r for r in v if isinstance(r, dict)]

    _check_harvest(c, out["harvest"])
    _check_hubspot(c, out["hubspot"])
    companies = out["quickbooks"].get("companies")
    if companies is None:
        _check_quickbooks(c, out["quickbooks"])
    else:
        out["quickbooks"] = _check_companies(c, out["quickbooks"], companies)
    if c.problems:
        raise FixtureError(c.problems)
    return out


def _unique(c: _Checker, path: str, ids: list[tuple[int, Any]], key: str = "id") -> set:
    seen: set = set()
    for i, v in ids:
        if v is None:
            continue
        if v in seen:
            c.err(f"{path}[{i}].{key}", f"duplicate {key} {v!r}")
        seen.add(v)
    return seen


def _check_harvest(c: _Checker, h: dict) -> None:
    ids: dict[str, set] = {}
    for coll in ("clients", "projects", "users", "tasks"):
        pairs = []
        for i, r in enumerate(h[coll]):
            p = f"harvest.{coll}[{i}]"
            pairs.append((i, c.int_id(r, "id", p)))
            if coll == "users":
                c.string(r, "first_name", p)
                c.string(r, "last_name", p)
            else:
                c.string(r, "name", p)
            c.boolean(r, "is_active", p)
            if coll == "clients":
                cur = c.string(r, "currency", p, required=False)
                if cur is not None:
                    try:
                        money.minor_units(cur)
                    except money.UnknownCurrencyError as exc:
                        c.err(f"{p}.currency", str(exc))
            if coll == "projects":
                cid = c.ref(r, "client", p, "int")
                c.string(r, "code", p, required=False)
                if cid is not None and ids.get("clients") is not None and cid not in ids["clients"]:
                    c.err(f"{p}.client.id", f"no harvest client with id {cid}")
        ids[coll] = _unique(c, f"harvest.{coll}", pairs)
    # time entries: a tight loop (a million of them must validate in seconds)
    seen_ids: set[int] = set()
    good_dates: set[str] = set()
    ref_sets = {"user": ids["users"], "client": ids["clients"], "project": ids["projects"], "task": ids["tasks"]}
    for i, r in enumerate(h["time_entries"]):
        rid = r.get("id")
        if type(rid) is not int:
            c.err(f"harvest.time_entries[{i}].id", f"required integer, got {rid!r}")
        elif rid in seen_ids:
            c.err(f"harvest.time_entries[{i}].id", f"duplicate id {rid!r}")
        else:
            seen_ids.add(rid)
        d = r.get("spent_date")
        if d not in good_dates:
            # the sandbox orders and filters entries by this date, so it must be one; any ISO 8601
            # form will do ("20261015": served as is, for the client to quarantine)
            if not isinstance(d, str):
                c.err(f"harvest.time_entries[{i}].spent_date", f"must be a date YYYY-MM-DD, got {d!r}")
            else:
                try:
                    dt.date.fromisoformat(d)
                    good_dates.add(d)
                except ValueError:
                    c.err(f"harvest.time_entries[{i}].spent_date", f"not a valid date: {d!r}")
        # `hours` is served as given (null or text included): malformed content is the client's
        # to quarantine
        for k in ("billable", "is_running", "is_billed"):
            v = r.get(k)
            if v is not None and type(v) is not bool:
                c.err(f"harvest.time_entries[{i}].{k}", f"must be true or false, got {v!r}")
        for ref, known in ref_sets.items():
            v = r.get(ref)
            if v is None and ref == "task":
                continue  # an entry without its task object is served as is (the client quarantines it)
            if type(v) is not dict:
                c.err(f"harvest.time_entries[{i}].{ref}", "required (object)")
                continue
            vid = v.get("id")
            if vid not in known:
                if type(vid) is not int:
                    c.err(f"harvest.time_entries[{i}].{ref}.id", f"must be an integer, got {vid!r}")
                else:
                    c.err(f"harvest.time_entries[{i}].{ref}.id", f"no harvest {ref} with id {vid}")


def _check_hubspot(c: _Checker, h: dict) -> None:
    ids: dict[str, set] = {}
    for coll in ("companies", "deals", "line_items"):
        pairs = []
        for i, r in enumerate(h[coll]):
            p = f"hubspot.{coll}[{i}]"
            rid = c.string(r, "id", p)
            if rid is not None and not _NUMERIC_ID.match(rid):
                c.err(f"{p}.id", f"must be a numeric string, got {rid!r}")
            props = r.get("properties")
            if props is None:
                r["properties"] = {}
            elif not isinstance(props, dict):
                c.err(f"{p}.properties", "must be an object")
            else:
                for k, v in props.items():
                    if v is not None and not isinstance(v, str):
                        c.err(f"{p}.properties.{k}", f"HubSpot property values are strings or null, got {v!r}")
            pairs.append((i, rid))
        ids[coll] = _unique(c, f"hubspot.{coll}", pairs)
    for i, a in enumerate(h["associations"]):
        p = f"hubspot.associations[{i}]"
        for k in ("from_type", "to_type"):
            v = c.string(a, k, p)
            if v is not None and v not in ids:
                c.err(f"{p}.{k}", f"must be one of {', '.join(ids)}, got {v!r}")
        for k, tk in (("from_id", "from_type"), ("to_id", "to_type")):
            v = c.string(a, k, p)
            if v is not None and a.get(tk) in ids and v not in ids[a[tk]]:
                c.err(f"{p}.{k}", f"no hubspot {a[tk]} record with id {v!r}")
        c.int_id(a, "type_id", p)


def _check_companies(c: _Checker, q: dict, companies: Any) -> dict:
    """`quickbooks.companies: {<realm id>: {preferences, company_info, customers, ...}}`: several
    QuickBooks companies, each validated like the one-company form (the first is the primary)."""
    others = [k for k in q if k != "companies" and (q[k] or k not in QBO_COLLECTIONS)]
    for k in others:
        c.err(f"quickbooks.{k}", "not allowed beside quickbooks.companies (put it in a company)")
    if not isinstance(companies, dict) or not companies:
        c.err("quickbooks.companies", "must be a non-empty object of realm id -> company")
        return {"companies": {}}
    out = {}
    for realm, cq in companies.items():
        p = f"quickbooks.companies.{realm}"
        if not isinstance(realm, str) or not _NUMERIC_ID.match(realm):
            c.err(p, "a realm id is a numeric string")
        if not isinstance(cq, dict):
            c.err(p, "must be an object")
            continue
        for key in cq:
            if key not in QBO_COLLECTIONS + ("preferences", "company_info"):
                c.err(f"{p}.{key}", f"unknown collection (expected one of {', '.join(QBO_COLLECTIONS)}, preferences, company_info)")
        for coll in QBO_COLLECTIONS:
            v = cq.get(coll)
            if v is None or not isinstance(v, list):
                if v is not None:
                    c.err(f"{p}.{coll}", "must be a list")
                cq[coll] = []
            else:
                for i, rec in enumerate(v):
                    if not isinstance(rec, dict):
                        c.err(f"{p}.{coll}[{i}]", "must be an object")
                cq[coll] = [r for r in v if isinstance(r, dict)]
        cq["realm_id"] = str(realm)
        _check_quickbooks(c, cq, p)
        cq.pop("realm_id", None)
        out[str(realm)] = cq
    return {"companies": out}


def _check_quickbooks(c: _Checker, q: dict, where: str = "quickbooks") -> None:
    realm = q.get("realm_id")
    if realm is None:
        q["realm_id"] = credentials.QBO_REALM_ID
    elif not isinstance(realm, str) or not realm:
        c.err(f"{where}.realm_id", f"must be a non-empty string, got {realm!r}")
    prefs = q.get("preferences")
    if prefs is None:
        q["preferences"] = copy.deepcopy(DEFAULT_PREFERENCES)
    elif not isinstance(prefs, dict):
        c.err(f"{where}.preferences", "must be an object (QBO Preferences shape)")
    else:
        cp = prefs.get("CurrencyPrefs", {})
        if not isinstance(cp, dict):
            c.err(f"{where}.preferences.CurrencyPrefs", "must be an object")
        else:
            if "MultiCurrencyEnabled" in cp and not isinstance(cp["MultiCurrencyEnabled"], bool):
                c.err(f"{where}.preferences.CurrencyPrefs.MultiCurrencyEnabled", "must be true or false")
            hc = cp.get("HomeCurrency")
            if hc is not None and not (isinstance(hc, dict) and isinstance(hc.get("value"), str)):
                c.err(f"{where}.preferences.CurrencyPrefs.HomeCurrency", 'must be {"value": "USD"}-shaped')
    info = q.get("company_info")
    if info is None:
        q["company_info"] = copy.deepcopy(DEFAULT_COMPANY_INFO)
    elif not isinstance(info, dict):
        c.err(f"{where}.company_info", "must be an object (QBO CompanyInfo shape)")
    else:
        c.string(info, "Country", f"{where}.company_info")
    for group, keys in (("SalesFormsPrefs", ("AllowDiscount", "CustomTxnNumbers")),
                        ("AccountingInfoPrefs", ("ClassTrackingPerTxn", "ClassTrackingPerTxnLine")),
                        ("TaxPrefs", ("UsingSalesTax", "PartnerTaxEnabled"))):
        sub = (q.get("preferences") or {}).get(group) if isinstance(q.get("preferences"), dict) else None
        if sub is not None and not isinstance(sub, dict):
            c.err(f"{where}.preferences.{group}", "must be an object")
            continue
        for k in keys:
            if sub is not None and k in sub and not isinstance(sub[k], bool):
                c.err(f"{where}.preferences.{group}.{k}", "must be true or false")
    ids: dict[str, set] = {}
    name_key = {"customers": "DisplayName", "items": "Name", "classes": "Name", "terms": "Name", "tax_codes": "Name",
                "tax_rates": "Name"}
    for coll in QBO_COLLECTIONS:
        pairs = []
        for i, r in enumerate(q[coll]):
            p = f"{where}.{coll}[{i}]"
            rid = c.string(r, "Id", p)
            # US companies' tax codes are "TAX" and "NON"; every other QBO id is numeric
            if rid is not None and coll != "tax_codes" and not _NUMERIC_ID.match(rid):
                c.err(f"{p}.Id", f"QBO ids are numeric strings, got {rid!r}")
            pairs.append((i, rid))
            if "SyncToken" in r and not isinstance(r["SyncToken"], str):
                c.err(f"{p}.SyncToken", "must be a string")
            if coll in name_key:
                # an item without a Name is served as is (the client quarantines it)
                c.string(r, name_key[coll], p, required=coll != "items")
                c.boolean(r, "Active", p)
            if coll == "items":
                t = c.string(r, "Type", p, required=False)
                if t is not None and t not in ("Service", "NonInventory", "Inventory", "Category", "Group"):
                    c.err(f"{p}.Type", f"unknown item Type {t!r}")
            if coll == "terms":
                c.int_id(r, "DueDays", p, required=False)
            if coll == "tax_rates":
                c.number(r, "RateValue", p, required=True)
            if coll == "tax_codes":
                details = (r.get("SalesTaxRateList") or {}).get("TaxRateDetail") if isinstance(r.get("SalesTaxRateList"), dict) else None
                if r.get("SalesTaxRateList") is not None and not isinstance(details, list):
                    c.err(f"{p}.SalesTaxRateList.TaxRateDetail", "must be a list")
                known = {str(t.get("Id")) for t in q["tax_rates"]}
                for j, d in enumerate(details or []):
                    ref = (d.get("TaxRateRef") or {}).get("value") if isinstance(d, dict) else None
                    if str(ref) not in known:
                        c.err(f"{p}.SalesTaxRateList.TaxRateDetail[{j}].TaxRateRef.value", f"no tax rate with Id {ref!r}")
            if coll == "invoices":
                cref = c.ref(r, "CustomerRef", p, "qbo")
                if cref is not None and cref not in ids["customers"]:
                    c.err(f"{p}.CustomerRef.value", f"no customer with Id {cref!r}")
                c.number(r, "TotalAmt", p)
                c.date(r, "TxnDate", p, required=False)
                lines = r.get("Line")
                if not isinstance(lines, list):
                    c.err(f"{p}.Line", "required (list of lines)")
        ids[coll] = _unique(c, f"{where}.{coll}", pairs, key="Id")


def dump_json(fixture: dict, path: str | Path | None = None) -> str:
    text = money.dumps(fixture, ensure_ascii=False)
    if path is not None:
        Path(path).write_text(text, encoding="utf-8")
    return text


__all__ = ["FixtureError", "validate_fixture", "load_fixture_file", "dump_json", "DEFAULT_PREFERENCES",
           "DEFAULT_COMPANY_INFO"]
