"""The sandbox serving several QuickBooks companies (realms) in one process: each with its own
data, settings and OAuth connection; a token of one realm refused on another (Intuit binds the
access token to the company the user connected: 403, errorCode 003100)."""

from __future__ import annotations

import copy

import httpx
import pytest

from sync_pipelines import money
from sync_pipelines.sandbox import SandboxServer
from sync_pipelines.sandbox.fixture import DEFAULT_PREFERENCES, FixtureError, validate_fixture

US, UK = "1234500001", "1234500002"


def two_companies() -> dict:
    uk_prefs = copy.deepcopy(DEFAULT_PREFERENCES)
    uk_prefs["CurrencyPrefs"]["HomeCurrency"] = {"value": "GBP"}
    return {"quickbooks": {"companies": {
        US: {"customers": [{"Id": "58", "DisplayName": "Acme Corp"}], "items": [{"Id": "1", "Name": "Consulting", "Type": "Service"}]},
        UK: {"preferences": uk_prefs, "company_info": {"CompanyName": "Firm Ltd", "Country": "GB"},
             "customers": [{"Id": "58", "DisplayName": "Yorke Ltd"}],
             "items": [{"Id": "41", "Name": "Consulting", "Type": "Service"}]},
    }}}


def tokens(sb: SandboxServer, refresh_token: str) -> httpx.Response:
    env = sb.env()
    return httpx.post(env["QBO_TOKEN_URL"], auth=(env["QBO_CLIENT_ID"], env["QBO_CLIENT_SECRET"]),
                      data={"grant_type": "refresh_token", "refresh_token": refresh_token})


def query(sb: SandboxServer, realm: str, access: str, sql: str) -> httpx.Response:
    return httpx.get(f"{sb.base_url}/v3/company/{realm}/query", params={"query": sql},
                     headers={"Authorization": f"Bearer {access}", "Accept": "application/json"})


@pytest.fixture
def sb():
    with SandboxServer(two_companies(), rate_limits=None) as server:
        yield server


def test_each_realm_has_its_own_data_and_settings(sb):
    st = sb.sandbox.st
    us_access = tokens(sb, st.books[US].refresh_token).json()["access_token"]
    uk_access = tokens(sb, st.books[UK].refresh_token).json()["access_token"]
    us = money.loads(query(sb, US, us_access, "select * from Customer").content)
    uk = money.loads(query(sb, UK, uk_access, "select * from Customer").content)
    assert [c["DisplayName"] for c in us["QueryResponse"]["Customer"]] == ["Acme Corp"]
    assert [c["DisplayName"] for c in uk["QueryResponse"]["Customer"]] == ["Yorke Ltd"]
    prefs = money.loads(httpx.get(f"{sb.base_url}/v3/company/{UK}/preferences",
                                  headers={"Authorization": f"Bearer {uk_access}", "Accept": "application/json"}).content)
    assert prefs["Preferences"]["CurrencyPrefs"]["HomeCurrency"]["value"] == "GBP"
    # the primary company is the first listed: `sandbox env` names it
    assert sb.env()["QBO_REALM_ID"] == US


def test_a_token_of_one_realm_is_refused_on_another(sb):
    st = sb.sandbox.st
    assert st.books[US].refresh_token != st.books[UK].refresh_token
    us_access = tokens(sb, st.books[US].refresh_token).json()["access_token"]
    r = query(sb, UK, us_access, "select * from Customer")
    assert r.status_code == 403 and "003100" in r.text


def test_revoking_one_companys_connection_leaves_the_others(sb):
    st = sb.sandbox.st
    us_rt, uk_rt = st.books[US].refresh_token, st.books[UK].refresh_token
    r = httpx.post(f"{sb.base_url}/_sandbox/expire_tokens", json={"realm_id": UK, "refresh_token": True})
    assert r.json()["refresh_token_revoked"] is True
    assert tokens(sb, uk_rt).json() == {"error": "invalid_grant"}
    assert tokens(sb, us_rt).status_code == 200


def test_faults_can_hit_one_realm_only(sb):
    st = sb.sandbox.st
    us_access = tokens(sb, st.books[US].refresh_token).json()["access_token"]
    uk_access = tokens(sb, st.books[UK].refresh_token).json()["access_token"]
    httpx.post(f"{sb.base_url}/_sandbox/faults", json={"api": "quickbooks", "rate_503": 1, "realm_id": UK}).raise_for_status()
    assert query(sb, UK, uk_access, "select * from Item").status_code == 503
    assert query(sb, US, us_access, "select * from Item").status_code == 200


def test_the_consent_screen_connects_the_company_the_user_picks(sb):
    env = sb.env()
    httpx.post(f"{sb.base_url}/_sandbox/consent", json={"realm_id": UK}).raise_for_status()
    r = httpx.get(env["QBO_AUTHORIZE_URL"], params={
        "client_id": env["QBO_CLIENT_ID"], "response_type": "code", "scope": "com.intuit.quickbooks.accounting",
        "redirect_uri": "http://127.0.0.1:9/callback", "state": "s1"})
    assert r.status_code == 302 and f"realmId={UK}" in r.headers["location"]
    code = httpx.URL(r.headers["location"]).params["code"]
    t = httpx.post(env["QBO_TOKEN_URL"], auth=(env["QBO_CLIENT_ID"], env["QBO_CLIENT_SECRET"]),
                   data={"grant_type": "authorization_code", "code": code, "redirect_uri": "http://127.0.0.1:9/callback"})
    access = t.json()["access_token"]
    assert query(sb, UK, access, "select * from Item").status_code == 200
    assert query(sb, US, access, "select * from Item").status_code == 403
    assert httpx.post(f"{sb.base_url}/_sandbox/consent", json={"realm_id": "42"}).status_code == 400


def test_the_state_dump_keeps_every_company_and_loads_again(sb):
    st = sb.sandbox.st
    uk_access = tokens(sb, st.books[UK].refresh_token).json()["access_token"]
    created = httpx.post(f"{sb.base_url}/v3/company/{UK}/item", content=money.dumps({"Name": "Training", "Type": "Service"}),
                         headers={"Authorization": f"Bearer {uk_access}", "Accept": "application/json",
                                  "Content-Type": "application/json"})
    assert created.status_code == 200
    dump = validate_fixture(money.loads(st.dump_json()))
    names = {realm: [i["Name"] for i in c["items"]] for realm, c in dump["quickbooks"]["companies"].items()}
    assert names == {US: ["Consulting"], UK: ["Consulting", "Training"]}
    assert dump["sandbox"]["oauth"]["refresh_tokens"][UK] == st.books[UK].refresh_token


def test_the_companies_form_is_validated_by_path():
    bad = two_companies()
    bad["quickbooks"]["companies"]["not-a-realm"] = {"items": [{"Id": "x"}]}
    bad["quickbooks"]["realm_id"] = US
    with pytest.raises(FixtureError) as exc:
        validate_fixture(bad)
    text = "\n".join(exc.value.problems)
    assert "quickbooks.companies.not-a-realm: a realm id is a numeric string" in text
    assert "quickbooks.companies.not-a-realm.items[0].Id: QBO ids are numeric strings" in text
    assert "quickbooks.realm_id: not allowed beside quickbooks.companies" in text


def test_the_one_company_form_is_still_valid():
    fx = validate_fixture({"quickbooks": {"realm_id": US, "items": [{"Id": "1", "Name": "Consulting"}]}})
    assert fx["quickbooks"]["realm_id"] == US and "companies" not in fx["quickbooks"]


def test_changes_are_notified_and_fed_per_realm(sb):
    """A change in the UK company comes as a webhook under the UK realmId and in the UK CDC feed
    only (Intuit: each notification names its company's realmId)."""
    import datetime as dt
    import json

    from .test_batch_cdc_webhooks import _Receiver

    receiver = _Receiver()
    try:
        sb.set_webhooks(quickbooks_url=receiver.url + "/intuit")
        st = sb.sandbox.st
        access = {realm: tokens(sb, st.books[realm].refresh_token).json()["access_token"] for realm in (US, UK)}
        r = httpx.post(f"{sb.base_url}/v3/company/{UK}/item", content=json.dumps({"Name": "Training", "Type": "Service"}),
                       headers={"Authorization": f"Bearer {access[UK]}", "Accept": "application/json",
                                "Content-Type": "application/json"})
        assert r.status_code == 200, r.text
        assert sb.wait_webhooks(10)
        (event,) = [json.loads(raw) for _, _, raw in receiver.requests]
        assert [e["intuitaccountid"] for e in event] == [UK]
        since = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
        feeds = {}
        for realm in (US, UK):
            cdc = httpx.get(f"{sb.base_url}/v3/company/{realm}/cdc", params={"entities": "Item", "changedSince": since},
                            headers={"Authorization": f"Bearer {access[realm]}", "Accept": "application/json"})
            assert cdc.status_code == 200, cdc.text
            blocks = money.loads(cdc.content)["CDCResponse"][0]["QueryResponse"]
            feeds[realm] = [row["Name"] for b in blocks for row in b.get("Item", [])]
        assert "Training" in feeds[UK] and "Training" not in feeds[US]
    finally:
        sb.set_webhooks()
        receiver.close()
