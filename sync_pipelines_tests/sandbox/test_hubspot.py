from __future__ import annotations

import httpx

from .conftest import hubspot_headers


def test_auth_required_with_hubspot_error_body(sb):
    r = httpx.get(f"{sb.base_url}/crm/v3/objects/deals")
    assert r.status_code == 401
    b = r.json()
    assert b["status"] == "error" and b["category"] == "INVALID_AUTHENTICATION" and b["correlationId"]
    r = httpx.get(f"{sb.base_url}/crm/v3/objects/deals", headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401 and r.json()["category"] == "INVALID_AUTHENTICATION"


def test_list_deals_paging_and_properties(sb):
    h = hubspot_headers(sb)
    url = f"{sb.base_url}/crm/v3/objects/deals?limit=3&properties=dealname,harvest_project_id&properties=billing_hourly_rate"
    ids, pages = [], 0
    while url:
        b = httpx.get(url, headers=h).json()
        pages += 1
        for d in b["results"]:
            assert set(d["properties"]) == {"dealname", "harvest_project_id", "billing_hourly_rate",
                                            "createdate", "hs_lastmodifieddate", "hs_object_id"}
            assert all(v is None or isinstance(v, str) for v in d["properties"].values())
            assert isinstance(d["id"], str)
        ids += [d["id"] for d in b["results"]]
        nxt = b.get("paging", {}).get("next")
        url = nxt["link"] if nxt else None
    assert pages == 3 and len(ids) == 7 and len(set(ids)) == 7
    first = httpx.get(f"{sb.base_url}/crm/v3/objects/deals/8801", headers=h).json()
    assert set(first["properties"]) == {"amount", "closedate", "createdate", "dealname", "dealstage",
                                        "hs_lastmodifieddate", "hs_object_id", "pipeline"}
    assert httpx.get(f"{sb.base_url}/crm/v3/objects/deals?limit=101", headers=h).status_code == 400


def test_search_filters_sort_and_paging(sb):
    h = hubspot_headers(sb)
    req = {"filterGroups": [{"filters": [{"propertyName": "dealstage", "operator": "EQ", "value": "closedwon"}]}],
           "sorts": [{"propertyName": "amount", "direction": "DESCENDING"}], "properties": ["dealname", "amount"], "limit": 2}
    results, after, total = [], None, None
    while True:
        if after:
            req["after"] = after
        b = httpx.post(f"{sb.base_url}/crm/v3/objects/deals/search", json=req, headers=h).json()
        total = b["total"]
        results += b["results"]
        after = b.get("paging", {}).get("next", {}).get("after")
        if not after:
            break
    assert total == 4
    assert [r["properties"]["amount"] for r in results] == ["7000", "5000", "3000", "1000"]

    def search(filters):
        b = httpx.post(f"{sb.base_url}/crm/v3/objects/deals/search", json={"filterGroups": [{"filters": filters}], "limit": 100}, headers=h).json()
        return sorted(r["id"] for r in b["results"])

    assert search([{"propertyName": "amount", "operator": "BETWEEN", "value": "2000", "highValue": "4000"}]) == ["8802", "8803", "8804"]
    assert search([{"propertyName": "hs_lastmodifieddate", "operator": "GTE", "value": "1780000000000"}]) == ["8805", "8806", "8807"]
    assert search([{"propertyName": "harvest_project_id", "operator": "HAS_PROPERTY"}]) == ["8801"]
    assert search([{"propertyName": "dealstage", "operator": "IN", "values": ["contractsent"]},
                   {"propertyName": "amount", "operator": "LT", "value": "5000"}]) == ["8802", "8804"]
    assert len(search([{"propertyName": "dealstage", "operator": "NOT_IN", "values": ["closedwon"]}])) == 3


def test_search_limits_and_10k_cap(sb):
    h = hubspot_headers(sb)
    url = f"{sb.base_url}/crm/v3/objects/deals/search"
    assert httpx.post(url, json={"limit": 201}, headers=h).status_code == 400
    r = httpx.post(url, json={"limit": 100, "after": "10000"}, headers=h)
    assert r.status_code == 400 and r.json()["category"] == "VALIDATION_ERROR"
    assert httpx.post(url, json={"sorts": [{"propertyName": "a"}, {"propertyName": "b"}]}, headers=h).status_code == 400


def test_patch_deal_writes_back_and_rejects_unknown_property(sb):
    h = hubspot_headers(sb)
    url = f"{sb.base_url}/crm/v3/objects/deals/8801"
    before = httpx.get(url, headers=h).json()["properties"]["hs_lastmodifieddate"]
    r = httpx.patch(url, json={"properties": {"qbo_invoice_id": "266", "qbo_invoice_number": "SP2610-1A2B3C4D"}}, headers=h)
    assert r.status_code == 200
    assert r.json()["properties"]["qbo_invoice_id"] == "266"
    after = httpx.get(url + "?properties=qbo_invoice_id", headers=h).json()
    assert after["properties"]["qbo_invoice_id"] == "266" and after["properties"]["hs_lastmodifieddate"] > before
    r = httpx.patch(url, json={"properties": {"no_such_prop": "x"}}, headers=h)
    assert r.status_code == 400
    b = r.json()
    assert b["category"] == "VALIDATION_ERROR" and b["errors"][0]["code"] == "PROPERTY_DOESNT_EXIST"
    assert httpx.patch(f"{sb.base_url}/crm/v3/objects/deals/1", json={"properties": {}}, headers=h).status_code == 404
    assert sb.state()["hubspot"]["deals"][0]["properties"]["qbo_invoice_id"] == "266"


def test_companies_line_items_and_v4_associations(sb):
    h = hubspot_headers(sb)
    c = httpx.get(f"{sb.base_url}/crm/v3/objects/companies/7005?properties=name", headers=h).json()
    assert c["properties"]["name"] == "O'Brien & Sons"
    assert len(httpx.get(f"{sb.base_url}/crm/v3/objects/companies", headers=h).json()["results"]) == 1
    li = httpx.get(f"{sb.base_url}/crm/v3/objects/line_items?properties=hs_sku,price,quantity", headers=h).json()
    assert li["results"][0]["properties"]["hs_sku"] == "WS-1"
    a = httpx.get(f"{sb.base_url}/crm/v4/objects/deals/8801/associations/companies", headers=h).json()
    assert a["results"][0]["toObjectId"] == 7005 and isinstance(a["results"][0]["toObjectId"], int)
    assert {t["typeId"] for t in a["results"][0]["associationTypes"]} == {5, 341}
    assert httpx.get(f"{sb.base_url}/crm/v4/objects/deals/8802/associations/companies", headers=h).json() == {"results": []}


def test_batch_read_update_and_v4_batch_associations(sb):
    h = hubspot_headers(sb)
    r = httpx.post(f"{sb.base_url}/crm/v4/associations/deals/companies/batch/read",
                   json={"inputs": [{"id": "8801"}, {"id": "8802"}]}, headers=h)
    assert r.status_code == 207
    b = r.json()
    assert b["results"][0]["from"] == {"id": "8801"} and b["results"][0]["to"][0]["toObjectId"] == 7005
    assert b["errors"][0]["context"]["fromObjectId"] == ["8802"]
    r = httpx.post(f"{sb.base_url}/crm/v3/objects/deals/batch/read", json={"inputs": [{"id": "8801"}], "properties": ["dealname"]}, headers=h)
    assert r.status_code == 200 and r.json()["results"][0]["properties"]["dealname"] == "Deal 1"
    r = httpx.post(f"{sb.base_url}/crm/v3/objects/deals/batch/update",
                   json={"inputs": [{"id": "8801", "properties": {"billing_status": "invoiced"}}]}, headers=h)
    assert r.status_code == 200 and r.json()["results"][0]["properties"]["billing_status"] == "invoiced"
    r = httpx.post(f"{sb.base_url}/crm/v3/objects/deals/batch/update",
                   json={"inputs": [{"id": "8801", "properties": {"nope": "x"}}]}, headers=h)
    assert r.status_code == 400


def test_unknown_properties_in_reads_are_left_out(sb):
    h = hubspot_headers(sb)
    d = httpx.get(f"{sb.base_url}/crm/v3/objects/deals/8801?properties=dealname,not_a_property", headers=h).json()
    assert "dealname" in d["properties"] and "not_a_property" not in d["properties"]
    c = httpx.get(f"{sb.base_url}/crm/v3/objects/companies/7005?properties=name,bogus", headers=h).json()
    assert set(c["properties"]) == {"name", "createdate", "hs_lastmodifieddate", "hs_object_id"}
