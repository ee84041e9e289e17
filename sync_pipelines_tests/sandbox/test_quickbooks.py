from __future__ import annotations

from decimal import Decimal

import httpx
import pytest

from .conftest import Qbo, body


def invoice_body(**over):
    b = {"CustomerRef": {"value": "58"},
         "Line": [{"Amount": Decimal("187.50"), "DetailType": "SalesItemLineDetail", "Description": "Design, 1.25 h",
                   "SalesItemLineDetail": {"ItemRef": {"value": "1"}, "Qty": Decimal("1.25"), "UnitPrice": Decimal("150.00")}},
                  {"Amount": Decimal("116.67"), "DetailType": "SalesItemLineDetail",
                   "SalesItemLineDetail": {"ItemRef": {"value": "2"}, "Qty": Decimal("0.7"), "UnitPrice": Decimal("166.67")}}],
         "TxnDate": "2026-10-31"}
    b.update(over)
    return b


def fault(r: httpx.Response) -> dict:
    b = body(r)
    assert set(b) == {"Fault", "time"}
    err = b["Fault"]["Error"][0]
    assert isinstance(err["code"], str)
    return err


@pytest.fixture
def qbo(sb):
    return Qbo(sb)


def test_create_invoice_totals_subtotal_line_and_defaults(qbo):
    r = qbo.post("invoice", invoice_body())
    assert r.status_code == 200 and r.headers.get("intuit_tid")
    inv = body(r)["Invoice"]
    assert isinstance(inv["Id"], str) and inv["SyncToken"] == "0"
    assert inv["TotalAmt"] == Decimal("304.17") and inv["Balance"] == Decimal("304.17")
    sub = [line for line in inv["Line"] if line["DetailType"] == "SubTotalLineDetail"]
    assert sub == [{"Amount": Decimal("304.17"), "DetailType": "SubTotalLineDetail", "SubTotalLineDetail": {}}]
    assert inv["DocNumber"] and inv["DueDate"] == "2026-11-30"  # Net 30 default
    assert inv["CustomerRef"] == {"value": "58", "name": "O'Brien & Sons"}
    got = body(httpx.get(f"{qbo.base}/invoice/{inv['Id']}", headers=qbo.headers()))["Invoice"]
    assert got == inv


def test_percent_discount_is_rounded_half_up(qbo):
    lines = invoice_body()["Line"] + [{"Amount": Decimal("0"), "DetailType": "DiscountLineDetail",
                                       "DiscountLineDetail": {"PercentBased": True, "DiscountPercent": Decimal("10")}}]
    inv = body(qbo.post("invoice", invoice_body(Line=lines)))["Invoice"]
    disc = [line for line in inv["Line"] if line["DetailType"] == "DiscountLineDetail"][0]
    assert disc["Amount"] == Decimal("30.42")  # 30.417 -> 30.42
    assert inv["TotalAmt"] == Decimal("273.75")


def test_amount_must_equal_qty_times_unit_price_6070(qbo):
    b = invoice_body()
    b["Line"][1]["Amount"] = Decimal("116.66")  # 0.7 * 166.67 = 116.669 -> 116.67
    r = qbo.post("invoice", b)
    assert r.status_code == 400 and r.headers.get("intuit_tid")
    assert fault(r)["code"] == "6070"


def test_amounts_beyond_10_integer_digits_are_refused(qbo):
    # Intuit: Line.Amount is "max 15 digits in 10.5 format"; 9,999,999,999.99 is the largest.
    big = invoice_body(Line=[{"Amount": Decimal("10000000000.00"), "DetailType": "SalesItemLineDetail",
                              "SalesItemLineDetail": {"ItemRef": {"value": "1"}, "Qty": Decimal("1"),
                                                      "UnitPrice": Decimal("10000000000.00")}}])
    r = qbo.post("invoice", big)
    assert r.status_code == 400 and "10.5 format" in fault(r)["Detail"]
    # two lines each within the limit whose total is not
    line = {"Amount": Decimal("6000000000.00"), "DetailType": "SalesItemLineDetail",
            "SalesItemLineDetail": {"ItemRef": {"value": "1"}, "Qty": Decimal("1"), "UnitPrice": Decimal("6000000000.00")}}
    r = qbo.post("invoice", invoice_body(Line=[line, line]))
    assert r.status_code == 400 and fault(r)["Detail"].startswith("subtotal 12000000000.00 exceeds")
    ok = invoice_body(Line=[{**line, "Amount": Decimal("9999999999.99"), "SalesItemLineDetail": {
        "ItemRef": {"value": "1"}, "Qty": Decimal("1"), "UnitPrice": Decimal("9999999999.99")}}])
    assert qbo.post("invoice", ok).status_code == 200


def test_invoice_reference_checks(qbo):
    assert fault(qbo.post("invoice", invoice_body(CustomerRef={"value": "999"})))["code"] == "2500"
    assert fault(qbo.post("invoice", invoice_body(CustomerRef={"value": "59"})))["code"] == "610"  # inactive
    b = invoice_body()
    b["Line"][0]["SalesItemLineDetail"]["ItemRef"] = {"value": "77"}
    assert fault(qbo.post("invoice", b))["code"] == "2500"
    assert fault(qbo.post("invoice", invoice_body(Line=[])))["code"] == "2020"
    assert fault(qbo.post("invoice", invoice_body(Bogus=1)))["code"] == "2010"
    assert fault(qbo.post("invoice", invoice_body(CurrencyRef={"value": "EUR"})))["code"] == "6000"  # multicurrency off


def test_duplicate_doc_number_6140_names_txn_id(qbo):
    first = body(qbo.post("invoice", invoice_body(DocNumber="SP2610-1A2B3C4D")))["Invoice"]
    r = qbo.post("invoice", invoice_body(DocNumber="SP2610-1A2B3C4D"))
    err = fault(r)
    assert err["code"] == "6140" and f"TxnId={first['Id']}" in err["Detail"]
    assert fault(qbo.post("invoice", invoice_body(DocNumber="X" * 22)))["code"] == "2050"


def test_due_date_from_customer_term(qbo):
    inv = body(qbo.post("invoice", invoice_body(CustomerRef={"value": "60"})))["Invoice"]
    assert inv["DueDate"] == "2026-11-15" and inv["SalesTermRef"]["name"] == "Net 15"


def test_requestid_replay_returns_identical_body_and_creates_nothing(qbo, sb):
    rid = "6f1c3a52-7d1e-4b8e-9a43-0c5b2f6e9d10"
    r1 = qbo.post("invoice", invoice_body(), requestid=rid)
    r2 = qbo.post("invoice", invoice_body(PrivateNote="different payload"), requestid=rid)
    assert r1.status_code == r2.status_code == 200
    assert r1.content == r2.content
    assert len(sb.state()["quickbooks"]["invoices"]) == 1
    # errors are replayed too
    bad = invoice_body(CustomerRef={"value": "999"})
    e1 = qbo.post("invoice", bad, requestid="req-err")
    e2 = qbo.post("invoice", invoice_body(), requestid="req-err")
    assert e1.status_code == e2.status_code == 400 and e1.content == e2.content
    assert len(sb.state()["quickbooks"]["invoices"]) == 1


def test_customer_display_name_unique_across_inactive_6240(qbo):
    r = qbo.post("customer", {"DisplayName": "Old Client LLC"})  # the inactive one
    assert r.status_code == 400 and fault(r)["code"] == "6240"
    assert fault(qbo.post("customer", {"DisplayName": "o'brien  & SONS"}))["code"] == "6240"
    assert fault(qbo.post("customer", {"DisplayName": "A:B"}))["code"] == "6000"
    assert fault(qbo.post("customer", {"DisplayName": "X", "CurrencyRef": {"value": "EUR"}}))["code"] == "6000"
    c = body(qbo.post("customer", {"DisplayName": "Café Zürich GmbH"}))["Customer"]
    assert c["Active"] is True and c["SyncToken"] == "0" and c["CurrencyRef"]["value"] == "USD"


def test_query_parsing_escaped_quotes_in_and_like(qbo):
    b = body(qbo.query("SELECT * FROM Customer WHERE DisplayName = 'Amy\\'s Bird Sanctuary'"))
    assert [c["Id"] for c in b["QueryResponse"]["Customer"]] == ["60"]
    assert b["QueryResponse"]["startPosition"] == 1 and b["QueryResponse"]["maxResults"] == 1
    b = body(qbo.query("select * from Customer where DisplayName = 'O\\'Brien & Sons'", method="GET"))
    assert b["QueryResponse"]["Customer"][0]["Id"] == "58"
    # name lists are Active = true by default
    assert body(qbo.query("SELECT * FROM Customer WHERE DisplayName = 'Old Client LLC'")) ["QueryResponse"] == {}
    b = body(qbo.query("SELECT * FROM Customer WHERE Active IN (true, false) AND DisplayName = 'Old Client LLC'"))
    assert b["QueryResponse"]["Customer"][0]["Active"] is False
    b = body(qbo.query("SELECT * FROM Item WHERE Name LIKE '%ult%'"))
    assert [i["Name"] for i in b["QueryResponse"]["Item"]] == ["Consulting"]
    assert body(qbo.query("SELECT COUNT(*) FROM Customer"))["QueryResponse"] == {"totalCount": 2}


def test_query_empty_result_paging_and_errors(qbo):
    b = body(qbo.query("SELECT * FROM Invoice WHERE DocNumber = 'nope'"))
    assert b["QueryResponse"] == {} and "time" in b
    for _ in range(3):
        qbo.post("invoice", invoice_body())
    p1 = body(qbo.query("SELECT * FROM Invoice ORDERBY Id STARTPOSITION 1 MAXRESULTS 2"))["QueryResponse"]
    p2 = body(qbo.query("SELECT * FROM Invoice ORDERBY Id STARTPOSITION 3 MAXRESULTS 2"))["QueryResponse"]
    assert len(p1["Invoice"]) == 2 and len(p2["Invoice"]) == 1 and p2["startPosition"] == 3
    assert {i["Id"] for i in p1["Invoice"]}.isdisjoint({i["Id"] for i in p2["Invoice"]})
    q = "SELECT * FROM Invoice WHERE CustomerRef = '58' AND TxnDate >= '2026-10-01' AND MetaData.LastUpdatedTime > '2020-01-01T00:00:00Z'"
    assert len(body(qbo.query(q))["QueryResponse"]["Invoice"]) == 3
    r = qbo.query("SELECT * FROM Invoice MAXRESULTS 1001")
    assert r.status_code == 400 and fault(r)["code"] in ("4000", "4001")
    assert fault(qbo.query("SELECT * FROM Invoice WHERE PrivateNote = 'x'"))["code"] == "4001"  # not filterable
    assert fault(qbo.query("SELECT * FROM Customer WHERE Id = '1' OR Id = '2'"))["code"] == "4000"
    assert fault(qbo.query("SELECT DisplayName FROM Customer"))["code"] == "4000"


def test_missing_or_expired_access_token_is_lowercase_401(sb, qbo):
    url = f"{qbo.base}/query"
    r = httpx.get(url, params={"query": "select * from Item"})
    assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("Bearer") and r.headers.get("intuit_tid")
    b = r.json()
    assert b["fault"]["error"][0]["code"] == "3200" and b["fault"]["type"] == "AUTHENTICATION"
    assert httpx.get(url, params={"query": "select * from Item"}, headers=qbo.headers()).status_code == 200
    assert httpx.post(f"{sb.base_url}/_sandbox/expire_tokens").status_code == 200
    r = httpx.get(url, params={"query": "select * from Item"}, headers=qbo.headers())
    assert r.status_code == 401 and "expired" in r.json()["fault"]["error"][0]["detail"].lower()


def test_oauth_refresh_rotates_and_old_token_is_invalid_grant(sb):
    env = sb.env()
    auth = (env["QBO_CLIENT_ID"], env["QBO_CLIENT_SECRET"])
    r1 = httpx.post(env["QBO_TOKEN_URL"], auth=auth, data={"grant_type": "refresh_token", "refresh_token": env["QBO_REFRESH_TOKEN"]})
    assert r1.status_code == 200
    t1 = r1.json()
    assert t1["token_type"] == "bearer" and t1["expires_in"] == 3600 and t1["x_refresh_token_expires_in"] == 8640000
    assert t1["refresh_token"] != env["QBO_REFRESH_TOKEN"] and sb.env()["QBO_REFRESH_TOKEN"] == t1["refresh_token"]
    r2 = httpx.post(env["QBO_TOKEN_URL"], auth=auth, data={"grant_type": "refresh_token", "refresh_token": env["QBO_REFRESH_TOKEN"]})
    assert r2.status_code == 400 and r2.json() == {"error": "invalid_grant"}
    r3 = httpx.post(env["QBO_TOKEN_URL"], auth=("x", "y"), data={"grant_type": "refresh_token", "refresh_token": t1["refresh_token"]})
    assert r3.status_code == 401 and r3.json()["error"] == "invalid_client"
    r4 = httpx.post(env["QBO_TOKEN_URL"], auth=auth, data={"grant_type": "refresh_token", "refresh_token": t1["refresh_token"]})
    assert r4.status_code == 200


def test_void_with_stale_sync_token_is_5010(qbo):
    inv = body(qbo.post("invoice", invoice_body()))["Invoice"]
    r = qbo.post("invoice", {"Id": inv["Id"], "SyncToken": "7"}, operation="void")
    assert fault(r)["code"] == "5010"
    v = body(qbo.post("invoice", {"Id": inv["Id"], "SyncToken": inv["SyncToken"]}, operation="void"))["Invoice"]
    assert v["SyncToken"] == "1" and v["TotalAmt"] == Decimal("0") and v["PrivateNote"].startswith("Voided")


def test_sparse_update_bumps_sync_token(qbo):
    inv = body(qbo.post("invoice", invoice_body()))["Invoice"]
    r = qbo.post("invoice", {"Id": inv["Id"], "SyncToken": "0", "sparse": True, "PrivateNote": "hello"})
    upd = body(r)["Invoice"]
    assert upd["SyncToken"] == "1" and upd["PrivateNote"] == "hello" and upd["TotalAmt"] == inv["TotalAmt"]
    assert fault(qbo.post("invoice", {"Id": inv["Id"], "SyncToken": "0", "sparse": True, "PrivateNote": "x"}))["code"] == "5010"


def test_wrong_realm_is_rejected(sb, qbo):
    r = httpx.get(f"{sb.base_url}/v3/company/123/query", params={"query": "select * from Item"}, headers=qbo.headers())
    assert r.status_code == 403


def test_revoked_refresh_token_gives_invalid_grant(sb):
    env = sb.env()
    assert httpx.post(f"{sb.base_url}/_sandbox/expire_tokens", json={"refresh_token": True}).json()["refresh_token_revoked"]
    r = httpx.post(env["QBO_TOKEN_URL"], auth=(env["QBO_CLIENT_ID"], env["QBO_CLIENT_SECRET"]),
                   data={"grant_type": "refresh_token", "refresh_token": env["QBO_REFRESH_TOKEN"]})
    assert r.status_code == 400 and r.json() == {"error": "invalid_grant"}


def test_multicurrency_requires_matching_currency_and_rounds_to_its_minor_unit():
    from sync_pipelines.sandbox import SandboxServer

    from .conftest import small_fixture

    fx = small_fixture()
    fx["quickbooks"]["preferences"] = {"CurrencyPrefs": {"MultiCurrencyEnabled": True, "HomeCurrency": {"value": "USD"}}}
    with SandboxServer(fx, rate_limits=None) as sb:
        q = Qbo(sb)
        jp = body(q.post("customer", {"DisplayName": "Tokyo KK", "CurrencyRef": {"value": "JPY"}}))["Customer"]
        assert jp["CurrencyRef"]["value"] == "JPY"
        line = {"Amount": Decimal("18750"), "DetailType": "SalesItemLineDetail",
                "SalesItemLineDetail": {"ItemRef": {"value": "1"}, "Qty": Decimal("1.25"), "UnitPrice": Decimal("15000")}}
        base = {"CustomerRef": {"value": jp["Id"]}, "Line": [line]}
        assert fault(q.post("invoice", base))["code"] == "2020"  # CurrencyRef required
        assert fault(q.post("invoice", {**base, "CurrencyRef": {"value": "USD"}}))["code"] == "6000"
        inv = body(q.post("invoice", {**base, "CurrencyRef": {"value": "JPY"}, "ExchangeRate": Decimal("0.0067")}))["Invoice"]
        assert inv["TotalAmt"] == Decimal("18750") and inv["HomeTotalAmt"] == Decimal("125.63")
        odd = {**line, "Amount": Decimal("18750.40"), "SalesItemLineDetail": {**line["SalesItemLineDetail"], "UnitPrice": Decimal("15000.32")}}
        assert fault(q.post("invoice", {**base, "CurrencyRef": {"value": "JPY"}, "Line": [odd]}))["code"] == "6070"
