from __future__ import annotations

import json
from decimal import Decimal

import httpx
import pytest

from sync_pipelines import money
from sync_pipelines.sandbox import FixtureError, SandboxServer, validate_fixture

from .conftest import Qbo, body, small_fixture
from .test_quickbooks import invoice_body

ENV_KEYS = {
    "HARVEST_BASE_URL", "HARVEST_ACCOUNT_ID", "HARVEST_ACCESS_TOKEN", "HUBSPOT_BASE_URL", "HUBSPOT_ACCESS_TOKEN",
    "HUBSPOT_CLIENT_SECRET", "QBO_BASE_URL", "QBO_TOKEN_URL", "QBO_REALM_ID", "QBO_CLIENT_ID", "QBO_CLIENT_SECRET",
    "QBO_REFRESH_TOKEN", "QBO_WEBHOOK_VERIFIER_TOKEN", "QBO_AUTHORIZE_URL",
}


def test_env_names_every_design_variable(sb):
    env = sb.env()
    assert set(env) == ENV_KEYS
    assert env["HARVEST_BASE_URL"] == env["HUBSPOT_BASE_URL"] == env["QBO_BASE_URL"] == sb.base_url
    assert env["QBO_TOKEN_URL"] == sb.base_url + "/oauth2/v1/tokens/bearer"
    assert env["QBO_AUTHORIZE_URL"] == sb.base_url + "/connect/oauth2"
    assert sb.base_url.startswith("http://127.0.0.1:") and not sb.base_url.endswith("/v2")
    assert env["QBO_REALM_ID"] == "4620816365312345678"


def test_empty_fixture_serves_empty_collections():
    with SandboxServer({}, rate_limits=None) as sb:
        env = sb.env()
        h = {"Authorization": f"Bearer {env['HARVEST_ACCESS_TOKEN']}", "Harvest-Account-Id": env["HARVEST_ACCOUNT_ID"], "User-Agent": "t"}
        assert httpx.get(f"{sb.base_url}/v2/time_entries", headers=h).json()["time_entries"] == []
        assert set(sb.state()) == {"harvest", "hubspot", "quickbooks", "sandbox"}


def test_fixture_validation_names_paths():
    fx = small_fixture()
    fx["harvest"]["time_entries"][2]["spent_date"] = "2026/10/02"
    fx["harvest"]["time_entries"][3]["client"]["id"] = 999
    fx["hubspot"]["deals"][0]["properties"]["amount"] = 5
    fx["quickbooks"]["customers"][1]["Id"] = 59
    fx["quickbooks"]["invoices"] = [{"Id": "1", "CustomerRef": {"value": "404"}, "Line": []}]
    fx["bogus"] = {}
    with pytest.raises(FixtureError) as ei:
        validate_fixture(fx)
    problems = ei.value.problems
    for expected in ("harvest.time_entries[2].spent_date", "harvest.time_entries[3].client.id",
                     "hubspot.deals[0].properties.amount", "quickbooks.customers[1].Id",
                     "quickbooks.invoices[0].CustomerRef.value", "bogus"):
        assert any(p.startswith(expected + ":") for p in problems), (expected, problems)


def test_state_dump_loads_again_as_a_fixture(sb):
    q = Qbo(sb)
    assert q.post("invoice", invoice_body()).status_code == 200
    r = httpx.get(f"{sb.base_url}/_sandbox/state")
    dumped = money.loads(r.content)
    assert dumped == sb.state()
    assert len(dumped["quickbooks"]["invoices"]) == 1
    validate_fixture(dumped)
    with SandboxServer(dumped, rate_limits=None) as again:
        assert again.state()["quickbooks"]["invoices"] == dumped["quickbooks"]["invoices"]
        assert again.env()["QBO_REFRESH_TOKEN"] == sb.env()["QBO_REFRESH_TOKEN"]
        q2 = Qbo(again)
        assert q2.post("invoice", invoice_body(DocNumber=dumped["quickbooks"]["invoices"][0]["DocNumber"])).status_code == 400


def test_state_file_persists_invoices_and_rotated_refresh_tokens(tmp_path):
    path = tmp_path / "state.json"
    with SandboxServer(small_fixture(), state_file=path, rate_limits=None) as a:
        q = Qbo(a)
        inv = body(q.post("invoice", invoice_body(), requestid="r-1"))["Invoice"]
        token_after = a.env()["QBO_REFRESH_TOKEN"]
        assert json.loads(path.read_text())["quickbooks"]["invoices"][0]["Id"] == inv["Id"]
    with SandboxServer(small_fixture(), state_file=path, rate_limits=None) as b:
        assert b.env()["QBO_REFRESH_TOKEN"] == token_after != "sandbox-qbo-refresh-token-0"
        q = Qbo(b)
        replay = body(q.post("invoice", invoice_body(), requestid="r-1"))["Invoice"]
        assert replay == inv
        assert [i["Id"] for i in b.state()["quickbooks"]["invoices"]] == [inv["Id"]]
        new = body(q.post("invoice", invoice_body()))["Invoice"]
        assert int(new["Id"]) > int(inv["Id"]) and new["DocNumber"] != inv["DocNumber"]


def test_reset_restores_the_fixture(sb):
    q = Qbo(sb)
    q.post("invoice", invoice_body())
    assert httpx.post(f"{sb.base_url}/_sandbox/reset").status_code == 200
    assert sb.state()["quickbooks"]["invoices"] == []


def test_fixture_floats_are_read_back_as_their_decimal_literal():
    fx = small_fixture()
    fx["harvest"]["time_entries"][0]["hours"] = 1.1
    out = validate_fixture(fx)
    assert out["harvest"]["time_entries"][0]["hours"] == Decimal("1.1")


def test_admin_actions(sb):
    q = Qbo(sb)
    inv = body(q.post("invoice", invoice_body()))["Invoice"]
    r = httpx.post(f"{sb.base_url}/_sandbox/actions/record_payment", json={"invoice_id": inv["Id"], "amount": "100.00"})
    assert r.status_code == 200 and body(r)["Invoice"]["Balance"] == Decimal("204.17")
    r = httpx.post(f"{sb.base_url}/_sandbox/actions/void_invoice", json={"invoice_id": inv["Id"]})
    assert body(r)["Invoice"]["TotalAmt"] == Decimal("0")
    r = httpx.post(f"{sb.base_url}/_sandbox/actions/move_deal_stage", json={"deal_id": "8802", "dealstage": "ready_for_billing"})
    assert r.status_code == 200 and r.json()["properties"]["dealstage"] == "ready_for_billing"


def test_reset_undoes_hubspot_and_token_changes(sb):
    h = {"Authorization": f"Bearer {sb.env()['HUBSPOT_ACCESS_TOKEN']}"}
    httpx.patch(f"{sb.base_url}/crm/v3/objects/deals/8801", json={"properties": {"qbo_invoice_id": "1"}}, headers=h)
    Qbo(sb)  # rotates the refresh token
    sb.reset()
    assert sb.state()["hubspot"]["deals"][0]["properties"].get("qbo_invoice_id") is None
    assert sb.env()["QBO_REFRESH_TOKEN"] == "sandbox-qbo-refresh-token-0"
