from __future__ import annotations

import asyncio
from collections.abc import Iterator
from decimal import Decimal

import httpx
import pytest

from sync_pipelines import money
from sync_pipelines.sandbox import SandboxServer

REALM = "4620816365312345678"


def _qbo_numbers_invoices() -> dict:
    import copy

    from sync_pipelines.sandbox.fixture import DEFAULT_PREFERENCES

    prefs = copy.deepcopy(DEFAULT_PREFERENCES)
    prefs["SalesFormsPrefs"]["CustomTxnNumbers"] = False
    return prefs


def small_fixture() -> dict:
    """A hand-written fixture covering the cases the contract tests need."""
    entries = []
    dates = ["2026-10-01", "2026-10-02", "2026-10-02", "2026-10-15", "2026-10-31", "2026-09-30", "2026-11-01"]
    for i, d in enumerate(dates, start=1):
        entries.append({
            "id": 1000 + i, "spent_date": d, "hours": Decimal("1.25") if i % 2 else Decimal("2.33"),
            "billable": i != 3, "is_running": i == 4, "is_billed": False, "is_locked": i == 6,
            "locked_reason": "Item Approved and Locked for this Time Period" if i == 6 else None,
            "updated_at": f"2026-10-{min(i, 28):02d}T12:00:00Z",
            "user": {"id": 1 if i % 2 else 2, "name": "Jane Doe" if i % 2 else "Omar Haddad"},
            "client": {"id": 10 if i < 6 else 11, "name": "O'Brien & Sons" if i < 6 else "Café Zürich GmbH", "currency": "USD"},
            "project": {"id": 100 if i < 6 else 101, "name": "Web", "code": "OBR-1" if i < 6 else "CZ-1"},
            "task": {"id": 7, "name": "Design"},
            "billable_rate": Decimal("150.0"),
        })
    return {
        "harvest": {
            "clients": [{"id": 10, "name": "O'Brien & Sons", "currency": "USD", "is_active": True},
                        {"id": 11, "name": "Café Zürich GmbH", "currency": "USD", "is_active": True}],
            "projects": [{"id": 100, "name": "Web", "code": "OBR-1", "client": {"id": 10, "name": "O'Brien & Sons"}},
                         {"id": 101, "name": "Web", "code": "CZ-1", "client": {"id": 11, "name": "Café Zürich GmbH"}}],
            "users": [{"id": 1, "first_name": "Jane", "last_name": "Doe"}, {"id": 2, "first_name": "Omar", "last_name": "Haddad"}],
            "tasks": [{"id": 7, "name": "Design"}],
            "time_entries": entries,
        },
        "hubspot": {
            "companies": [{"id": "7005", "properties": {"name": "O'Brien & Sons", "domain": "obrien.example"}}],
            "deals": [
                {"id": str(8800 + i), "properties": {
                    "dealname": f"Deal {i}", "dealstage": "closedwon" if i % 2 else "contractsent",
                    "amount": str(1000 * i), "pipeline": "default",
                    "createdate": f"2026-0{1 + i % 9}-01T00:00:00.000Z", "closedate": f"2026-0{1 + i % 9}-15T00:00:00.000Z",
                    "hs_lastmodifieddate": f"2026-0{1 + i % 9}-20T10:00:00.000Z",
                    "harvest_project_id": "100" if i == 1 else None, "billing_hourly_rate": "175.00" if i == 1 else None,
                    "po_number": None}}
                for i in range(1, 8)
            ],
            "line_items": [{"id": "9901", "properties": {"name": "Workshop", "price": "500.00", "quantity": "2", "hs_sku": "WS-1"}}],
            "associations": [
                {"from_type": "deals", "from_id": "8801", "to_type": "companies", "to_id": "7005", "type_id": 5},
                {"from_type": "deals", "from_id": "8801", "to_type": "companies", "to_id": "7005", "type_id": 341},
                {"from_type": "deals", "from_id": "8801", "to_type": "line_items", "to_id": "9901", "type_id": 19},
            ],
        },
        "quickbooks": {
            "realm_id": REALM,
            # a company that numbers its own invoices (QuickBooks' default: custom numbers off)
            "preferences": _qbo_numbers_invoices(),
            "customers": [
                {"Id": "58", "DisplayName": "O'Brien & Sons", "Active": True, "CurrencyRef": {"value": "USD"}},
                {"Id": "59", "DisplayName": "Old Client LLC", "Active": False},
                {"Id": "60", "DisplayName": "Amy's Bird Sanctuary", "Active": True, "SalesTermRef": {"value": "5"}},
            ],
            "items": [{"Id": "1", "Name": "Services", "Type": "Service"}, {"Id": "2", "Name": "Consulting", "Type": "Service"},
                      {"Id": "9", "Name": "Retired", "Type": "Service", "Active": False}],
            "classes": [{"Id": "7", "Name": "Consulting"}],
            "terms": [{"Id": "4", "Name": "Net 30", "DueDays": 30}, {"Id": "5", "Name": "Net 15", "DueDays": 15}],
            "invoices": [],
        },
    }


@pytest.fixture(scope="module")
def server() -> Iterator[SandboxServer]:
    with SandboxServer(small_fixture(), rate_limits=None) as sb:
        yield sb


@pytest.fixture
def sb(server: SandboxServer) -> SandboxServer:
    server.reset()
    server.set_faults("all")
    return server


def harvest_headers(sb: SandboxServer) -> dict[str, str]:
    env = sb.env()
    return {"Authorization": f"Bearer {env['HARVEST_ACCESS_TOKEN']}", "Harvest-Account-Id": env["HARVEST_ACCOUNT_ID"],
            "User-Agent": "sync_pipelines tests (ops@example.com)"}


def hubspot_headers(sb: SandboxServer) -> dict[str, str]:
    return {"Authorization": f"Bearer {sb.env()['HUBSPOT_ACCESS_TOKEN']}"}


class Qbo:
    """A minimal QBO caller for tests: refreshes once and posts JSON written from Decimals."""

    def __init__(self, sb: SandboxServer):
        self.sb = sb
        self.token = sb.qbo_access_token()
        self.base = f"{sb.base_url}/v3/company/{sb.realm_id}"

    def headers(self, content_type: str = "application/json") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}", "Accept": "application/json", "Content-Type": content_type}

    def post(self, entity: str, body: dict, **params: str) -> httpx.Response:
        params.setdefault("minorversion", "75")
        return httpx.post(f"{self.base}/{entity}", params=params, content=money.dumps(body), headers=self.headers())

    def query(self, sql: str, method: str = "POST") -> httpx.Response:
        if method == "POST":
            return httpx.post(f"{self.base}/query", params={"minorversion": "75"}, content=sql.encode(),
                              headers=self.headers("application/text"))
        return httpx.get(f"{self.base}/query", params={"query": sql, "minorversion": "75"}, headers=self.headers())

    def burst(self, n: int) -> list[httpx.Response]:
        """`n` GET queries sent at once (for the in-flight limits)."""
        async def send() -> list[httpx.Response]:
            async with httpx.AsyncClient() as c:
                return await asyncio.gather(*[
                    c.get(f"{self.base}/query", params={"query": "select * from Item"}, headers=self.headers())
                    for _ in range(n)])

        return asyncio.run(send())


def body(r: httpx.Response):
    return money.loads(r.content)


@pytest.fixture(scope="session")
def _http_client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=30) as client:
        yield client


@pytest.fixture(autouse=True)
def _shared_http_client(monkeypatch, _http_client):
    """httpx.get/post/... build a new client (and TLS context, ~150 ms) per call; share one."""
    for name in ("get", "post", "patch", "put", "delete"):
        monkeypatch.setattr(httpx, name, getattr(_http_client, name))
