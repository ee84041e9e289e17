"""Loopback tests: the real connectors against `sync_pipelines.sandbox` on 127.0.0.1."""

from __future__ import annotations

import uuid
from datetime import date
from decimal import Decimal

import pytest

sandbox = pytest.importorskip("sync_pipelines.sandbox")

from sync_pipelines.connectors.harvest import HarvestClient  # noqa: E402
from sync_pipelines.connectors.http import (  # noqa: E402
    ApiValidationError,
    InMemoryTokenStore,
    RateLimiter,
    RetryPolicy,
)
from sync_pipelines.connectors.hubspot import HubSpotClient  # noqa: E402
from sync_pipelines.connectors.quickbooks import QboOAuth, QuickBooksClient  # noqa: E402
from sync_pipelines.extract.frames import (  # noqa: E402
    DEAL_PROPERTIES,
    catalog_frame,
    deals_frame,
    rejected_frame,
    time_entries_frame,
)

from .helpers import AuditRecorder  # noqa: E402


def hand_fixture() -> dict:
    clients = [{"id": 100 + i, "name": name, "is_active": True, "currency": "USD",
                "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z"}
               for i, name in enumerate(["Amy's Bird: Café", "Zürich AG", "Plain Co"])]
    projects = [{"id": 200 + i, "name": f"Project {i}", "code": f"P{i}", "is_active": True, "is_billable": True,
                 "client": {"id": c["id"], "name": c["name"], "currency": "USD"},
                 "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z"}
                for i, c in enumerate(clients)]
    users = [{"id": 300, "first_name": "Ann", "last_name": "Lee", "is_active": True}]
    tasks = [{"id": 400, "name": "Development", "is_active": True}]
    entries = []
    for i in range(25):
        p = projects[i % 3]
        entries.append({
            "id": 5000 + i, "spent_date": f"2026-10-{1 + i % 28:02d}", "hours": Decimal("1.25") + i,
            "rounded_hours": Decimal("1.25") + i,
            "user": {"id": 300, "name": "Ann Lee"}, "client": dict(p["client"]),
            "project": {"id": p["id"], "name": p["name"], "code": p["code"]},
            "task": {"id": 400, "name": "Development"}, "billable": True, "is_running": False,
            "is_locked": False, "is_closed": False, "is_billed": False, "billable_rate": Decimal("150.00"),
            "cost_rate": None, "notes": "work", "created_at": "2026-10-01T00:00:00Z",
            "updated_at": "2026-10-05T00:00:00Z"})
    companies = [{"id": str(7000 + i), "properties": {"name": c["name"]}} for i, c in enumerate(clients)]
    deals = [{"id": str(8800 + i), "properties": {
        "dealname": f"Deal {i}", "dealstage": "closedwon", "pipeline": "default", "amount": "1000.00",
        "hs_lastmodifieddate": f"2026-10-0{1 + i}T10:00:00.000Z", "harvest_project_id": str(200 + i),
        "billing_hourly_rate": "150.00"}} for i in range(3)]
    assoc = [{"from_type": "deals", "from_id": str(8800 + i), "to_type": "companies", "to_id": str(7000 + i),
              "type_id": 341} for i in range(3)]
    assoc.append({"from_type": "deals", "from_id": "8800", "to_type": "companies", "to_id": "7002", "type_id": 5})
    return {
        "harvest": {"clients": clients, "projects": projects, "users": users, "tasks": tasks,
                    "time_entries": entries},
        "hubspot": {"companies": companies, "deals": deals, "associations": assoc},
        "quickbooks": {"realm_id": "4620816365", "customers": [
            {"Id": "1", "DisplayName": "Existing Inactive", "Active": False, "SyncToken": "0"}],
            "items": [{"Id": "1", "Name": "Services", "Type": "Service", "Active": True, "SyncToken": "0",
                       "IncomeAccountRef": {"value": "1"}}]},
    }


@pytest.fixture(scope="module")
def sb():
    with sandbox.SandboxServer(hand_fixture()) as server:
        yield server


def harvest(sb, **kw) -> HarvestClient:
    env = sb.env()
    return HarvestClient(env["HARVEST_BASE_URL"], env["HARVEST_ACCOUNT_ID"], env["HARVEST_ACCESS_TOKEN"],
                         retry=RetryPolicy.fast(), **kw)


def qbo(sb, store=None, audit=None, **kw) -> QuickBooksClient:
    env = sb.env()
    store = store if store is not None else InMemoryTokenStore()
    oauth = QboOAuth(env["QBO_TOKEN_URL"], env["QBO_CLIENT_ID"], env["QBO_CLIENT_SECRET"], store,
                     env["QBO_REALM_ID"], env["QBO_REFRESH_TOKEN"], retry=RetryPolicy.fast(), audit=audit)
    return QuickBooksClient(env["QBO_BASE_URL"], env["QBO_REALM_ID"], oauth, retry=RetryPolicy.fast(),
                            audit=audit, limiter=RateLimiter([(500, 60.0)], max_in_flight=10), **kw)


def test_harvest_paging_across_cursor_pages(sb):
    audit = AuditRecorder()
    c = harvest(sb, per_page=7, audit=audit)
    res = c.list_time_entries(date(2026, 10, 1), date(2026, 10, 31))
    assert len(res.records) == 25 and res.rejected == []
    assert len({e.id for e in res.records}) == 25
    assert len(audit.rows) == 4  # 7 + 7 + 7 + 4
    assert all(r["path"] == "/v2/time_entries" and r["status"] == 200 for r in audit.rows)
    df = time_entries_frame(res.records)
    assert df["hours_centi"].sum() == sum(125 + 100 * i for i in range(25))
    clients = c.list_clients()
    assert {x.name for x in clients.records} >= {"Amy's Bird: Café", "Zürich AG"}
    assert len(c.list_projects().records) == 3


def test_harvest_filters_by_client(sb):
    res = harvest(sb).list_time_entries(date(2026, 10, 1), date(2026, 10, 31), client_id=100)
    assert res.records and all(e.client.id == 100 for e in res.records)


def test_hubspot_deals_companies_associations(sb):
    env = sb.env()
    c = HubSpotClient(env["HUBSPOT_BASE_URL"], env["HUBSPOT_ACCESS_TOKEN"], list_limit=2, retry=RetryPolicy.fast())
    deals = c.list_deals(DEAL_PROPERTIES)
    assert sorted(d.id for d in deals.records) == ["8800", "8801", "8802"]
    ids = c.deal_company_ids([d.id for d in deals.records])
    assert ids == {"8800": "7002", "8801": "7001", "8802": "7002"}
    df = deals_frame(deals.records, ids)
    assert df.set_index("deal_id").loc["8801", "harvest_project_id"] == 201
    found = c.search_deals([{"filters": [{"propertyName": "dealstage", "operator": "EQ", "value": "closedwon"}]}],
                           ["dealname"])
    assert len(found.records) == 3
    assert c.ensure_deal_property("qbo_invoice_id", "QBO invoice id") in (True, False)
    assert c.ensure_deal_property("qbo_invoice_id") is False
    updated = c.update_deal("8801", {"qbo_invoice_id": "266"})
    assert updated.properties.get("qbo_invoice_id") == "266"
    with pytest.raises(ApiValidationError) as ei:
        c.update_deal("8801", {"no_such_property": "x"})
    assert ei.value.code == "PROPERTY_DOESNT_EXIST"
    assert len(c.list_companies().records) == 3


def test_qbo_find_or_create_customer_with_apostrophe(sb):
    audit = AuditRecorder()
    client = qbo(sb, audit=audit)
    name = "Amy's Bird & Café d'Été"
    # colons are fine inside a query literal (QBO forbids them in a DisplayName)
    assert client.find_customer("Amy's Bird: Café") is None
    created = client.find_or_create_customer(name)
    assert created["DisplayName"] == name
    again = client.find_or_create_customer(name)
    assert again["Id"] == created["Id"]
    assert client.find_customer(name)["Id"] == created["Id"]
    # an inactive customer is found, not re-created
    assert client.find_or_create_customer("Existing Inactive")["Id"] == "1"
    # a direct create of a taken name gives the 6240 fault
    with pytest.raises(ApiValidationError) as ei:
        client.create_customer(name)
    assert ei.value.code == "6240"
    secret = sb.env()["QBO_CLIENT_SECRET"]
    assert secret not in repr(audit.rows)


def test_qbo_create_invoice_requestid_replay_and_lookup(sb):
    client = qbo(sb)
    cust = client.find_or_create_customer("Zürich AG")
    doc = "SP2610-" + uuid.uuid4().hex[:8].upper()
    payload = {
        "CustomerRef": {"value": cust["Id"]},
        "DocNumber": doc,
        "TxnDate": "2026-10-31",
        "Line": [{"Amount": Decimal("187.50"), "DetailType": "SalesItemLineDetail", "Description": "Dev",
                  "SalesItemLineDetail": {"ItemRef": {"value": "1"}, "Qty": Decimal("1.25"),
                                          "UnitPrice": Decimal("150.00")}}],
    }
    rid = str(uuid.uuid4())
    first = client.create_invoice(payload, rid)
    second = client.create_invoice(payload, rid)
    assert first["Id"] == second["Id"]
    assert first["TotalAmt"] == Decimal("187.50") and isinstance(first["TotalAmt"], Decimal)
    assert first["intuit_tid"]
    found = client.find_invoice_by_doc_number(doc)
    assert found is not None and found["Id"] == first["Id"]
    got = client.get_invoice(first["Id"])
    assert got["DocNumber"] == doc
    invoices = client.query_all("Invoice", f"DocNumber = {client.quote(doc)}")
    assert len(invoices) == 1


def test_qbo_query_paging_and_empty(sb):
    client = qbo(sb, page_size=2)
    for i in range(5):
        client.find_or_create_customer(f"Paging Customer {i}")
    rows = client.query_all("Customer", "Active IN (true,false)")
    assert len(rows) >= 6 and len({r["Id"] for r in rows}) == len(rows)
    assert client.query("SELECT * FROM Customer WHERE DisplayName = 'Nobody at all'") == []
    cat = catalog_frame(client.list_customers().records, client.list_items().records,
                        client.list_classes().records, client.list_terms().records)
    assert "Existing Inactive" in set(cat["name"]) and not cat.set_index("name").loc["Existing Inactive", "active"]


def test_qbo_token_rotation_persisted_and_shared(sb):
    store = InMemoryTokenStore()
    a = qbo(sb, store=store)
    a.query("SELECT * FROM Item")
    first = store.get(sb.realm_id)
    assert first is not None
    # a second client on the same store uses the stored token: no new refresh
    b = qbo(sb, store=store)
    b.query("SELECT * FROM Item")
    assert store.get(sb.realm_id) == first and len(store.saves) == 1


def test_qbo_faults_retried_without_duplicates():
    """429 (XML), 500, 503, timeouts and lost responses: requestid replay keeps invoices unique."""
    import httpx

    with sandbox.SandboxServer(hand_fixture()) as server:
        audit = AuditRecorder()
        client = qbo(server, audit=audit, timeout=httpx.Timeout(5.0, read=0.5))
        client._http.retry = RetryPolicy.fast(max_attempts=10, max_total_wait=10.0)
        cust = client.find_or_create_customer("Plain Co")  # token fetched before faults start
        server.set_faults("quickbooks", rate_429=0.15, rate_500=0.1, rate_503=0.05, rate_timeout=0.05,
                          timeout_ms=1500, rate_lost_response=0.25, seed=11)
        docs = []
        for i in range(6):
            doc = f"SPFLT-{i:02d}"
            docs.append(doc)
            payload = {"CustomerRef": {"value": cust["Id"]}, "DocNumber": doc,
                       "Line": [{"Amount": Decimal("300.00"), "DetailType": "SalesItemLineDetail",
                                 "SalesItemLineDetail": {"ItemRef": {"value": "1"}, "Qty": Decimal("2"),
                                                         "UnitPrice": Decimal("150.00")}}]}
            inv = client.create_invoice(payload, f"req-fault-{i}")
            assert inv["DocNumber"] == doc
        server.set_faults("quickbooks")
        statuses = {r["status"] for r in audit.rows}
        assert statuses & {429, 500, 502, 503, 504, None}, statuses  # faults really happened
        state = server.state()
        posted = [inv["DocNumber"] for inv in state["quickbooks"]["invoices"] if inv.get("DocNumber") in docs]
        assert sorted(posted) == docs  # each exactly once


# ------------------------------------------------------------------ generated fixture (generate_fixture)


@pytest.fixture(scope="module")
def gen():
    fixture, _rules = sandbox.generate_fixture(clients=3, entries=300, seed=1, month="2026-10")
    with sandbox.SandboxServer(fixture) as server:
        yield server, fixture


def test_generated_harvest_paging_all_entries(gen):
    server, fixture = gen
    audit = AuditRecorder()
    c = harvest(server, per_page=50, audit=audit)
    res = c.list_time_entries(date(2026, 9, 1), date(2026, 11, 30))
    expected = {e["id"] for e in fixture["harvest"]["time_entries"]}
    assert {e.id for e in res.records} == expected and res.rejected == []
    assert len(audit.rows) == -(-len(expected) // 50)  # ceil: several cursor pages
    df = time_entries_frame(res.records)
    assert len(df) == len(expected)
    exact = sum(int(Decimal(str(e["hours"])) * 100) for e in fixture["harvest"]["time_entries"])
    assert int(df["hours_centi"].sum()) == exact
    assert df["is_running"].sum() == 1
    october = c.list_time_entries(date(2026, 10, 1), date(2026, 10, 31))
    assert all(date(2026, 10, 1) <= e.spent_date <= date(2026, 10, 31) for e in october.records)
    assert 0 < len(october.records) < len(expected)
    assert rejected_frame(res.rejected).empty


def test_generated_hubspot_and_frames(gen):
    server, fixture = gen
    env = server.env()
    c = HubSpotClient(env["HUBSPOT_BASE_URL"], env["HUBSPOT_ACCESS_TOKEN"], retry=RetryPolicy.fast())
    deals = c.list_deals(DEAL_PROPERTIES)
    assert len(deals.records) == len(fixture["hubspot"]["deals"]) and deals.rejected == []
    ids = c.deal_company_ids([d.id for d in deals.records])
    df = deals_frame(deals.records, ids)
    assert df["company_id"].notna().any()
    linked = df["harvest_project_id"].dropna()
    project_ids = {p["id"] for p in fixture["harvest"]["projects"]}
    assert set(int(x) for x in linked) <= project_ids


def test_generated_qbo_customer_and_invoice_replay(gen):
    server, fixture = gen
    client = qbo(server)
    existing = client.find_or_create_customer("O'Brien & Sons")
    want = [c for c in fixture["quickbooks"]["customers"] if c["DisplayName"] == "O'Brien & Sons"]
    assert want and existing["Id"] == want[0]["Id"]
    new = client.find_or_create_customer("D'Angelo Café Zürich")
    assert new["DisplayName"] == "D'Angelo Café Zürich"
    assert client.find_or_create_customer("D'Angelo Café Zürich")["Id"] == new["Id"]
    payload = {"CustomerRef": {"value": existing["Id"]},
               "Line": [{"Amount": Decimal("412.50"), "DetailType": "SalesItemLineDetail",
                         "SalesItemLineDetail": {"ItemRef": {"value": "1"}, "Qty": Decimal("2.75"),
                                                 "UnitPrice": Decimal("150.00")}}]}
    rid = "gen-" + uuid.uuid4().hex
    first = client.create_invoice(payload, rid)
    second = client.create_invoice(payload, rid)
    assert first["Id"] == second["Id"] and first["TotalAmt"] == Decimal("412.50")
    assert len(client.query_all("Invoice", f"CustomerRef = {client.quote(existing['Id'])}")) >= 1
    cat = catalog_frame(client.list_customers().records, client.list_items().records,
                        client.list_classes().records, client.list_terms().records)
    assert {"Services", "Consulting", "Net 30"} <= set(cat["name"])
    assert (~cat["active"]).sum() >= 1  # the inactive customer is included


def test_expired_access_token_refreshes_once_and_void(gen):
    import httpx

    server, _ = gen
    store = InMemoryTokenStore()
    client = qbo(server, store=store)
    cust = client.find_or_create_customer("O'Brien & Sons")
    inv = client.create_invoice(
        {"CustomerRef": {"value": cust["Id"]},
         "Line": [{"Amount": Decimal("150.00"), "DetailType": "SalesItemLineDetail",
                   "SalesItemLineDetail": {"ItemRef": {"value": "1"}, "Qty": Decimal("1"),
                                           "UnitPrice": Decimal("150.00")}}]},
        "void-" + uuid.uuid4().hex)
    saves_before = len(store.saves)
    httpx.post(server.base_url + "/_sandbox/expire_tokens", json={}).raise_for_status()
    got = client.get_invoice(inv["Id"])  # 401 -> one refresh -> retry
    assert got["Id"] == inv["Id"] and len(store.saves) == saves_before + 1
    with pytest.raises(ApiValidationError) as ei:
        client.void_invoice(inv["Id"], str(int(got["SyncToken"]) + 5))
    assert ei.value.code == "5010"
    voided = client.void_invoice(inv["Id"], got["SyncToken"])
    assert voided["Id"] == inv["Id"] and voided["SyncToken"] != got["SyncToken"]


def test_extract_sources_against_generated_sandbox(gen):
    from sync_pipelines.connectors.factory import harvest_from_env, hubspot_from_env, quickbooks_from_env
    from sync_pipelines.extract.sources import harvest_time_entries, hubspot_deals, month_bounds, qbo_catalog

    server, fixture = gen
    env = server.env()
    assert month_bounds("2026-10") == (date(2026, 10, 1), date(2026, 10, 31))
    entries, rejected = harvest_time_entries(harvest_from_env(env, retry=RetryPolicy.fast()), "2026-10")
    october = [e for e in fixture["harvest"]["time_entries"] if e["spent_date"].startswith("2026-10")]
    assert len(entries) == len(october) and rejected.empty
    deals, rejected = hubspot_deals(hubspot_from_env(env, retry=RetryPolicy.fast()))
    assert len(deals) == len(fixture["hubspot"]["deals"]) and rejected.empty
    catalog, rejected = qbo_catalog(quickbooks_from_env(InMemoryTokenStore(), env, retry=RetryPolicy.fast()))
    assert {"Customer", "Item", "Term"} <= set(catalog["entity"]) and rejected.empty


def test_with_ledger_token_store_and_audit(gen, tmp_path):
    """QboOAuth + QuickBooksClient against the real ledger (TokenStore + AuditSink) and sandbox."""
    ledger_mod = pytest.importorskip("sync_pipelines.ledger")
    from sync_pipelines.connectors.factory import quickbooks_from_env

    server, _ = gen
    env = server.env()
    ledger = ledger_mod.Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    ledger.migrate()
    try:
        client = quickbooks_from_env(ledger.tokens, env, audit=ledger, retry=RetryPolicy.fast())
        assert client.query_all("Term")
        stored = ledger.tokens.get(env["QBO_REALM_ID"])
        assert stored is not None and stored.refresh_token.get_secret_value() != env["QBO_REFRESH_TOKEN"]
        # a second client (another worker) reuses the stored access token: no refresh
        other = quickbooks_from_env(ledger.tokens, env, audit=ledger, retry=RetryPolicy.fast())
        other.query("SELECT * FROM Item")
        assert ledger.tokens.get(env["QBO_REALM_ID"]) == stored
        rows = ledger.audit_records(limit=50)
        assert any(r.system == "quickbooks-oauth" for r in rows)
        text = repr(rows)
        assert stored.refresh_token.get_secret_value() not in text
        assert stored.access_token.get_secret_value() not in text
    finally:
        ledger.dispose()
