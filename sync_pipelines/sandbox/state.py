"""The sandbox's in-memory state, kept in the fixture format plus indexes.

The state dump (`SandboxState.dump()`) is a fixture: it loads again with `validate_fixture`.
Besides the three API sections it carries a `sandbox` section with what the simulator itself
must remember across restarts (QBO OAuth tokens, requestid replays, HubSpot properties defined).
"""

from __future__ import annotations

import copy
import datetime as dt
import os
import tempfile
import threading
from pathlib import Path
from typing import Any

from .fixture import validate_fixture
from .http import dumps
from .qbo_books import BOOK_ATTRIBUTES, QboBook, RealmView, default_refresh_token

NAME_LIST = {"customers": "DisplayName", "items": "Name", "classes": "Name", "terms": "Name", "tax_codes": "Name",
             "tax_rates": "Name"}
QBO_ENTITY = {"customers": "Customer", "items": "Item", "classes": "Class", "terms": "Term", "invoices": "Invoice",
              "payments": "Payment", "tax_codes": "TaxCode", "tax_rates": "TaxRate"}

# Deal properties the write-back may set even when no fixture deal carries them yet.
EXTRA_DEAL_PROPERTIES = ("qbo_invoice_id", "qbo_invoice_number", "billed_through", "billing_status")
HUBSPOT_DEFAULT_DEAL_PROPERTIES = (
    "amount", "closedate", "createdate", "dealname", "dealstage", "hs_lastmodifieddate", "hs_object_id", "pipeline",
    "harvest_project_id", "billing_hourly_rate", "billing_discount_percent", "billing_not_to_exceed", "po_number",
    "deal_currency_code", "hubspot_owner_id", "description",
)


def _entry_sort_key(e: dict) -> tuple:
    # newest spent_date first, then newest id first
    return (-dt.date.fromisoformat(e["spent_date"]).toordinal(), -e["id"])


class SandboxState:
    def __init__(self, fixture: dict, *, validated: bool = False):
        self.lock = threading.RLock()
        self.initial_fixture = fixture if validated else validate_fixture(fixture)
        self.load(self.initial_fixture)

    # ------------------------------------------------------------------ load / dump
    def load(self, fx: dict) -> None:
        # Everything the sandbox can change is copied, so `initial_fixture` stays pristine for
        # reset(); Harvest data is never changed and is shared (it can be a million entries).
        fx = {**fx, **{k: copy.deepcopy(fx.get(k) or {}) for k in ("hubspot", "quickbooks", "sandbox")}}
        with self.lock:
            self._dump_cache: dict[str, str] = {}
            self.harvest_cache: dict[tuple, list] = {}
            self._defined_cache: dict[str, set[str]] = {}
            h = fx["harvest"]
            self.harvest: dict[str, list[dict]] = {k: list(h.get(k, [])) for k in ("clients", "projects", "users", "tasks")}
            for k in self.harvest:
                self.harvest[k].sort(key=lambda r: -r["id"])
            entries = list(h.get("time_entries", []))
            entries.sort(key=_entry_sort_key)
            self.harvest["time_entries"] = entries
            self.entry_ordinals = [-dt.date.fromisoformat(e["spent_date"]).toordinal() for e in entries]

            hs = fx["hubspot"]
            self.hubspot: dict[str, dict[str, dict]] = {}
            for k in ("companies", "deals", "line_items"):
                recs = sorted(hs.get(k, []), key=lambda r: int(r["id"]))
                for r in recs:
                    r.setdefault("properties", {})
                    r["properties"].setdefault("hs_object_id", r["id"])
                    r.setdefault("archived", False)
                self.hubspot[k] = {r["id"]: r for r in recs}
            self.associations: list[dict] = list(hs.get("associations", []))

            q = fx["quickbooks"]
            sb = fx.get("sandbox") or {}
            oauth = sb.get("oauth") or {}
            # a fixture is one company (realm_id, preferences, ... at the top of `quickbooks`) or
            # several (`quickbooks.companies: {realm: {...}}`); the first listed is the primary
            companies = q.get("companies") or {q["realm_id"]: q}
            deleted = list(sb.get("qbo_deleted") or [])
            tokens = dict(oauth.get("refresh_tokens") or {})
            self.books: dict[str, QboBook] = {}
            max_id = 0
            for n, (realm, cq) in enumerate(companies.items()):
                qbo: dict[str, dict[str, dict]] = {}
                for k in QBO_ENTITY:
                    recs = sorted(cq.get(k, []), key=lambda r: (not r["Id"].isdigit(), int(r["Id"]) if r["Id"].isdigit() else 0, r["Id"]))
                    for r in recs:
                        r.setdefault("SyncToken", "0")
                        r.setdefault("domain", "QBO")
                        if k in NAME_LIST:
                            r.setdefault("Active", True)
                        if r["Id"].isdigit():
                            max_id = max(max_id, int(r["Id"]))
                    qbo[k] = {r["Id"]: r for r in recs}
                token = tokens.get(realm) or (oauth.get("refresh_token") if n == 0 else None) \
                    or default_refresh_token(realm, primary=n == 0)
                self.books[realm] = QboBook(realm, cq["preferences"], cq["company_info"], qbo, token,
                                            [d for d in deleted if d.get("realm_id", realm if n == 0 else None) == realm])
            self.realm_id: str = next(iter(self.books))

            self.next_qbo_id = max(int(sb.get("next_qbo_id", 0) or 0), max_id + 1)
            self.refresh_serial: int = int(oauth.get("refresh_serial", 0) or 0)
            self.access_tokens: dict[str, int] = dict(oauth.get("access_tokens") or {})
            # the realm each access token was minted for (Intuit binds a token to its company)
            self.access_token_realms: dict[str, str] = dict(oauth.get("access_token_realms") or {})
            # authorization codes issued by /connect/oauth2: code -> {"redirect_uri", "expires", "realm_id"}
            self.auth_codes: dict[str, dict] = dict(oauth.get("auth_codes") or {})
            # the company the sandbox's user picks on the next consent screen (None: the primary)
            self.consent_realm: str | None = oauth.get("consent_realm")
            self.replays: dict[str, list] = dict(sb.get("qbo_requests") or {})  # "realm|requestid" -> [status, body]
            # webhook subscriptions: {"hubspot_url", "quickbooks_url", "quickbooks_format"}
            self.webhooks: dict = dict(sb.get("webhooks") or {})
            self.hubspot_event_seq: int = int(sb.get("hubspot_event_seq", 0) or 0)
            self.pending_events: list[tuple[str, dict]] = []  # drained by the webhook sender
            self.defined_deal_properties: set[str] = set(sb.get("hubspot_deal_properties") or [])
            self.defined_deal_properties |= set(EXTRA_DEAL_PROPERTIES) | set(HUBSPOT_DEFAULT_DEAL_PROPERTIES)
            for d in self.hubspot["deals"].values():
                self.defined_deal_properties |= set(d["properties"])

    def reset(self) -> None:
        self.load(self.initial_fixture)

    def touch(self, section: str) -> None:
        self._dump_cache.pop(section, None)

    def dump(self) -> dict:
        with self.lock:
            return {
                "harvest": {k: list(v) for k, v in self.harvest.items()},
                "hubspot": {
                    "companies": list(self.hubspot["companies"].values()),
                    "deals": list(self.hubspot["deals"].values()),
                    "line_items": list(self.hubspot["line_items"].values()),
                    "associations": list(self.associations),
                },
                "quickbooks": ({"realm_id": self.realm_id, **self.primary.section()} if len(self.books) == 1 else
                               {"companies": {r: b.section() for r, b in self.books.items()}}),
                "sandbox": {
                    "next_qbo_id": self.next_qbo_id,
                    "oauth": {
                        "refresh_token": self.refresh_token,
                        "refresh_tokens": {r: b.refresh_token for r, b in self.books.items()},
                        "refresh_serial": self.refresh_serial,
                        "access_tokens": dict(self.access_tokens),
                        "access_token_realms": dict(self.access_token_realms),
                        "auth_codes": dict(self.auth_codes),
                        "consent_realm": self.consent_realm,
                    },
                    "qbo_requests": dict(self.replays),
                    "qbo_deleted": [{**d, "realm_id": r} for r, b in self.books.items() for d in b.qbo_deleted],
                    "webhooks": dict(self.webhooks),
                    "hubspot_event_seq": self.hubspot_event_seq,
                    "hubspot_deal_properties": sorted(self.defined_deal_properties),
                },
            }

    def dump_json(self) -> str:
        """The state as JSON; immutable sections (Harvest) are serialised once and cached."""
        with self.lock:
            d = self.dump()
            parts = []
            for section in ("harvest", "hubspot", "quickbooks", "sandbox"):
                cached = self._dump_cache.get(section)
                if cached is None:
                    cached = dumps(d[section], ensure_ascii=False)
                    if section == "harvest":
                        self._dump_cache[section] = cached
                parts.append(f'"{section}": {cached}')
            return "{" + ", ".join(parts) + "}"

    def save(self, path: Path) -> None:
        text = self.dump_json()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=str(path.parent))
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise

    def defined_properties(self, otype: str) -> set[str]:
        """Property names that exist for an object type (reads leave out the others)."""
        if otype == "deals":
            return self.defined_deal_properties
        from .hubspot_api import DEFAULT_PROPERTIES

        cache = self._defined_cache.get(otype)
        if cache is None:
            cache = set(DEFAULT_PROPERTIES.get(otype, ()))
            for r in self.hubspot[otype].values():
                cache |= set(r["properties"])
            self._defined_cache[otype] = cache
        return cache

    # ------------------------------------------------------------------ change events (webhooks)
    def qbo_event(self, entity: str, rid: str, operation: str, realm_id: str | None = None) -> None:
        """Record a QuickBooks data change (Create, Update, Delete, Void, Emailed) of a realm
        (None: the primary)."""
        ts = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.datetime.now().microsecond // 1000:03d}Z"
        self.pending_events.append(("quickbooks", {"name": entity, "id": rid, "operation": operation, "lastUpdated": ts},
                                    realm_id or self.realm_id))

    def hubspot_event(self, object_type: str, object_id: str, prop: str | None, value: str | None, kind: str = "propertyChange") -> None:
        self.hubspot_event_seq += 1
        ev: dict[str, Any] = {"objectId": int(object_id), "eventId": 1_000_000 + self.hubspot_event_seq,
                              "subscriptionType": f"{object_type[:-1]}.{kind}", "changeSource": "CRM",
                              "occurredAt": int(dt.datetime.now(dt.timezone.utc).timestamp() * 1000)}
        if prop is not None:
            ev["propertyName"] = prop
            ev["propertyValue"] = value
        self.pending_events.append(("hubspot", ev))

    # ------------------------------------------------------------------ QBO helpers
    def new_qbo_id(self) -> str:
        i = self.next_qbo_id
        self.next_qbo_id += 1
        return str(i)

    # -- the companies (realms); the attributes below are the primary company's, for the
    # sandbox's own admin actions and the single-company callers
    @property
    def primary(self) -> QboBook:
        return self.books[self.realm_id]

    def for_realm(self, realm_id: str) -> RealmView | None:
        """The state as a handler serving `realm_id` sees it; None for a realm not served."""
        book = self.books.get(realm_id)
        return None if book is None else RealmView(self, book)

    def book_of_refresh_token(self, token: str | None) -> QboBook | None:
        for book in self.books.values():
            if token and book.refresh_token == token:
                return book
        return None

    def __getattr__(self, name: str) -> Any:
        # only reached for names not set on the state: the primary book's data
        if name in BOOK_ATTRIBUTES and "books" in self.__dict__:
            return getattr(self.primary, name)
        raise AttributeError(name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in BOOK_ATTRIBUTES and name != "realm_id" and "books" in self.__dict__:
            setattr(self.primary, name, value)
        else:
            object.__setattr__(self, name, value)
