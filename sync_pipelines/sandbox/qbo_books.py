"""The QuickBooks companies (realms) one sandbox serves, each with its own books.

Intuit keeps every company's data apart: ids, customers, invoices, preferences and tax codes
belong to one realm, and an OAuth connection (its refresh token and the access tokens it mints)
is bound to the realm the user chose on the consent screen, so a token of realm A used on
realm B is refused (403, ``ApplicationAuthorizationFailed``, errorCode 003100). A ``QboBook`` is
one realm's state; a ``RealmView`` is what a QuickBooks handler sees while serving a request to
that realm: the book's data under the names the handlers always used (``st.qbo``,
``st.preferences``, ...) and everything else (lock, replays, webhooks) from the shared state.
"""

from __future__ import annotations

from typing import Any

from . import credentials

#: Attributes a RealmView takes from the realm's book rather than the shared state.
BOOK_ATTRIBUTES = frozenset({"realm_id", "preferences", "company_info", "qbo", "invoices_by_doc", "qbo_deleted",
                             "multicurrency", "home_currency", "pref", "is_us", "refresh_token"})


class QboBook:
    """One QuickBooks company: its settings, its name lists and transactions, its refresh token."""

    def __init__(self, realm_id: str, preferences: dict, company_info: dict, qbo: dict[str, dict[str, dict]],
                 refresh_token: str, qbo_deleted: list[dict]):
        self.realm_id = realm_id
        self.preferences = preferences
        self.company_info = company_info
        self.qbo = qbo
        self.refresh_token = refresh_token
        self.qbo_deleted = qbo_deleted
        self.invoices_by_doc: dict[str, str] = {}
        for inv in self.qbo["invoices"].values():
            if inv.get("DocNumber"):
                self.invoices_by_doc.setdefault(inv["DocNumber"], inv["Id"])

    @property
    def multicurrency(self) -> bool:
        return bool((self.preferences.get("CurrencyPrefs") or {}).get("MultiCurrencyEnabled", False))

    @property
    def home_currency(self) -> str:
        hc = (self.preferences.get("CurrencyPrefs") or {}).get("HomeCurrency") or {}
        return hc.get("value") or "USD"

    def pref(self, group: str, key: str, default: Any = None) -> Any:
        return (self.preferences.get(group) or {}).get(key, default)

    @property
    def is_us(self) -> bool:
        return str(self.company_info.get("Country") or "US").strip().upper() in ("US", "USA")

    def section(self) -> dict:
        """The book in the fixture's company form (without the realm id)."""
        return {"preferences": self.preferences, "company_info": self.company_info,
                **{k: list(v.values()) for k, v in self.qbo.items()}}


def default_refresh_token(realm_id: str, primary: bool) -> str:
    # The primary realm keeps the well-known sandbox token (QBO_REFRESH_TOKEN of `sandbox env`);
    # every other realm has its own, so a token is never valid for two companies.
    return credentials.QBO_REFRESH_TOKEN if primary else f"{credentials.QBO_REFRESH_TOKEN}-{realm_id}"


class RealmView:
    """The shared sandbox state seen from one realm (module docs)."""

    def __init__(self, state: Any, book: QboBook):
        object.__setattr__(self, "_state", state)
        object.__setattr__(self, "_book", book)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._book if name in BOOK_ATTRIBUTES else self._state, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._book if name in BOOK_ATTRIBUTES else self._state, name, value)

    def qbo_event(self, entity: str, rid: str, operation: str) -> None:
        self._state.qbo_event(entity, rid, operation, realm_id=self._book.realm_id)
