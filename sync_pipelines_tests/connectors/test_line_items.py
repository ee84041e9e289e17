"""Deal line items: `HubSpotClient.deal_line_items` against the sandbox on 127.0.0.1, and the
`deal_line_items` frame (DESIGN §5 "Deals": invoices from line items)."""

from __future__ import annotations

from decimal import Decimal

import pandas as pd
import pytest

sandbox = pytest.importorskip("sync_pipelines.sandbox")

from sync_pipelines.billing import BillingHistory, parse_rules, price_month  # noqa: E402
from sync_pipelines.connectors.harvest import HarvestClient  # noqa: E402
from sync_pipelines.connectors.http import InMemoryTokenStore, RetryPolicy  # noqa: E402
from sync_pipelines.connectors.hubspot import HubSpotClient  # noqa: E402
from sync_pipelines.connectors.quickbooks import QboOAuth, QuickBooksClient  # noqa: E402
from sync_pipelines.extract.frames import LINE_ITEM_COLUMNS, line_items_frame  # noqa: E402
from sync_pipelines.extract.sources import (  # noqa: E402
    harvest_time_entries,
    hubspot_deal_line_items,
    hubspot_deals,
    qbo_catalog,
)
from sync_pipelines.posting.draft_checks import draft_problems  # noqa: E402
from sync_pipelines.posting.drafts import drafts_document  # noqa: E402

from .helpers import AuditRecorder  # noqa: E402


def _li(i: int, name: str, sku: str | None, price: str, qty: str) -> dict:
    return {"id": str(9100 + i), "properties": {"name": name, "hs_sku": sku, "price": price, "quantity": qty,
                                               "amount": None, "hs_product_id": None}}


def fixture() -> dict:
    companies = [{"id": "7000", "properties": {"name": "Acme"}}]
    deals = [{"id": str(8800 + i), "properties": {
        "dealname": f"Deal {i}", "dealstage": "ready_for_billing" if i < 3 else "closedwon", "pipeline": "default",
        "hs_lastmodifieddate": "2026-10-20T10:00:00.000Z"}} for i in range(5)]
    line_items = [
        _li(0, "Strategy workshop", "Consulting", "150.00", "2.5"),
        _li(1, "Design Services", "DS-9", "99.995", "3"),
        _li(2, "Bad price", "Consulting", "twelve", "1"),  # malformed: rejected
        _li(3, "Other deal", "Consulting", "10", "1"),
        _li(4, "Closed deal item", "Consulting", "1", "1"),
    ]
    links = [("8800", "9100"), ("8800", "9101"), ("8801", "9102"), ("8801", "9103"), ("8803", "9104")]
    assoc = [{"from_type": "deals", "from_id": "88%02d" % i, "to_type": "companies", "to_id": "7000", "type_id": 5}
             for i in range(5)]
    for d, li in links:
        assoc.append({"from_type": "deals", "from_id": d, "to_type": "line_items", "to_id": li, "type_id": 19})
        assoc.append({"from_type": "line_items", "from_id": li, "to_type": "deals", "to_id": d, "type_id": 20})
    return {
        "harvest": {"clients": [], "projects": [], "users": [], "tasks": [], "time_entries": []},
        "hubspot": {"companies": companies, "deals": deals, "line_items": line_items, "associations": assoc},
        "quickbooks": {"realm_id": "4620816365"},
    }


@pytest.fixture(scope="module")
def sb():
    with sandbox.SandboxServer(fixture()) as server:
        yield server


def client(sb, **kw) -> HubSpotClient:
    env = sb.env()
    return HubSpotClient(env["HUBSPOT_BASE_URL"], env["HUBSPOT_ACCESS_TOKEN"], retry=RetryPolicy.fast(), **kw)


def test_deal_line_items_batch_associations_and_batch_read(sb):
    audit = AuditRecorder()
    res = client(sb, audit=audit).deal_line_items(["8800", "8801", "8802"])
    assert [(r.deal_id, r.line_item.id) for r in res.records] == [("8800", "9100"), ("8800", "9101"), ("8801", "9103")]
    assert res.associations == {"8800": ["9100", "9101"], "8801": ["9102", "9103"]}  # 8802 has none
    assert [r.record_id for r in res.rejected] == ["9102"]
    assert "twelve" in res.rejected[0].raw_json and "price" in res.rejected[0].reason
    assert res.missing == []
    paths = [(r["method"], r["path"]) for r in audit.rows]
    assert paths == [("POST", "/crm/v4/associations/deals/line_items/batch/read"),
                     ("POST", "/crm/v3/objects/line_items/batch/read")]
    first = res.records[0].line_item
    assert (first.name, first.sku, first.price, first.quantity) == ("Strategy workshop", "Consulting", "150.00", "2.5")


def test_deal_line_items_per_deal_fallback(sb):
    res = client(sb, batch_associations=False).deal_line_items(["8800", "8801", "8802"])
    assert res.associations == {"8800": ["9100", "9101"], "8801": ["9102", "9103"]}
    assert [r.line_item.id for r in res.records] == ["9100", "9101", "9103"]


def test_sources_frame_only_for_the_stage_and_unreadable_items_kept(sb):
    c = client(sb)
    deals, _ = hubspot_deals(c)
    frame, rejected = hubspot_deal_line_items(c, deals, stage="ready_for_billing")
    assert list(frame.columns) == list(LINE_ITEM_COLUMNS)
    rows = frame.astype(object).where(frame.notna(), None).to_dict("records")
    net = {"amount": None, "hs_discount_percentage": None, "discount": None}  # none set in this fixture
    assert [r for r in rows if {k: r.pop(k) for k in net} != net] == []
    assert rows == [
        {"deal_id": "8800", "line_item_id": "9100", "name": "Strategy workshop", "sku": "Consulting",
         "price": "150.00", "quantity": "2.5"},
        {"deal_id": "8800", "line_item_id": "9101", "name": "Design Services", "sku": "DS-9",
         "price": "99.995", "quantity": "3"},
        {"deal_id": "8801", "line_item_id": "9103", "name": "Other deal", "sku": "Consulting",
         "price": "10", "quantity": "1"},
        # rejected: kept without price so the engine holds deal 8801's invoice
        {"deal_id": "8801", "line_item_id": "9102", "name": None, "sku": None, "price": None, "quantity": None},
    ]
    assert list(rejected["record_id"]) == ["9102"] and list(rejected["entity"]) == ["line_item"]
    # every deal's line items without a stage
    all_frame, _ = hubspot_deal_line_items(c, deals)
    assert sorted(all_frame["line_item_id"]) == ["9100", "9101", "9102", "9103", "9104"]


def test_empty_frame_has_every_column_and_dtype():
    df = line_items_frame([])
    assert list(df.columns) == list(LINE_ITEM_COLUMNS) and len(df) == 0
    assert all(isinstance(df[c].dtype, pd.StringDtype) for c in df.columns)


def test_generated_demo_month_with_the_feature_on():
    """The generator's ready-for-billing deals, extracted over loopback and priced with a
    `hubspot:` section added to the generated rules: one invoice per deal, exact totals, and the
    time invoices exactly as with the feature off."""
    fx, rules_yaml = sandbox.generate_fixture(clients=6, entries=300, seed=11, month="2026-10")
    assert "hubspot:" not in rules_yaml  # off in the demo unless configured
    on = parse_rules(rules_yaml.replace("clients:\n", "hubspot: {ready_for_billing_stage: ready_for_billing}\nclients:\n", 1))
    off = parse_rules(rules_yaml)
    with sandbox.SandboxServer(fx) as server:
        env = server.env()
        hs = HubSpotClient(env["HUBSPOT_BASE_URL"], env["HUBSPOT_ACCESS_TOKEN"], retry=RetryPolicy.fast())
        deals, _ = hubspot_deals(hs)
        items, rejected = hubspot_deal_line_items(hs, deals, stage="ready_for_billing")
        hv = HarvestClient(env["HARVEST_BASE_URL"], env["HARVEST_ACCOUNT_ID"], env["HARVEST_ACCESS_TOKEN"],
                           retry=RetryPolicy.fast())
        entries, _ = harvest_time_entries(hv, "2026-10")
        oauth = QboOAuth(env["QBO_TOKEN_URL"], env["QBO_CLIENT_ID"], env["QBO_CLIENT_SECRET"], InMemoryTokenStore(),
                         env["QBO_REALM_ID"], env["QBO_REFRESH_TOKEN"], retry=RetryPolicy.fast())
        with QuickBooksClient(env["QBO_BASE_URL"], env["QBO_REALM_ID"], oauth, retry=RetryPolicy.fast()) as q:
            catalog, _ = qbo_catalog(q)
    assert rejected.empty and len(items) == 3
    r_on = price_month(on, "2026-10", entries, deals, catalog, BillingHistory(), "9130", line_items=items)
    r_off = price_month(off, "2026-10", entries, deals, catalog, BillingHistory(), "9130", line_items=items)
    deal_inv = r_on.invoices[r_on.invoices["group_key"].str.startswith("deal-")]
    # 3 x 150.00 + 2.5 x 95.50 = 450.00 + 238.75 = 688.75; 1 x 1200.00
    assert sorted(deal_inv["total"]) == [Decimal("688.75"), Decimal("1200.00")]
    assert set(deal_inv["status"]) == {"ready"}
    time_on = r_on.invoices[~r_on.invoices["group_key"].str.startswith("deal-")]
    assert time_on[["invoice_key", "total"]].values.tolist() == r_off.invoices[["invoice_key", "total"]].values.tolist()
    assert draft_problems(drafts_document(r_on, entries)) == []
    assert set(r_on.extras["line_item_deals"]["status"]) == {"ready"}
