"""The HubSpot and QuickBooks extract assets refresh from their last materialisation's metadata
(Harvest's: connectors/test_harvest_month.py), over HTTP against the sandbox."""

from __future__ import annotations

import dagster as dg
import httpx
import pytest

from sync_pipelines.defs.hubspot.assets import hubspot_deals
from sync_pipelines.defs.io_manager import BillingStoreIOManager
from sync_pipelines.defs.quickbooks.assets import qbo_existing_invoices
from sync_pipelines.defs.resources import HubSpotResource, LedgerResource, QuickBooksResource, RulesResource
from sync_pipelines.sandbox import SandboxServer

from .connectors.test_sandbox_loopback import hand_fixture
from .sandbox.test_quickbooks import invoice_body


@pytest.fixture()
def setup(tmp_path, monkeypatch):
    from .sandbox.conftest import small_fixture

    fixture = small_fixture()
    fixture["hubspot"] = hand_fixture()["hubspot"]
    monkeypatch.setenv("SYNC_OUTPUT_DIR", str(tmp_path / "out"))
    with SandboxServer(fixture, rate_limits="off") as sb:
        env = sb.env()
        ledger = LedgerResource(url=f"sqlite:///{tmp_path / 'ledger.db'}")
        resources = {
            "hubspot": HubSpotResource(base_url=env["HUBSPOT_BASE_URL"], access_token=env["HUBSPOT_ACCESS_TOKEN"],
                                       ledger=ledger),
            "quickbooks": QuickBooksResource(base_url=env["QBO_BASE_URL"], token_url=env["QBO_TOKEN_URL"],
                                             realm_id=env["QBO_REALM_ID"], client_id=env["QBO_CLIENT_ID"],
                                             client_secret=env["QBO_CLIENT_SECRET"],
                                             refresh_token=env["QBO_REFRESH_TOKEN"], ledger=ledger),
            "rules": RulesResource(path=str(tmp_path / "no_rules.yaml")),
            "io_manager": BillingStoreIOManager(base_dir=str(tmp_path / "store")),
        }
        yield sb, resources


def _run(asset, instance, resources, config=None) -> dict:
    result = dg.materialize([asset], partition_key="2026-10", instance=instance, resources=resources,
                            run_config=config)
    event = result.asset_materializations_for_node(asset.key.path[-1])[0]
    return {k: v.value for k, v in event.metadata.items()}


def test_hubspot_deals_refresh_from_the_stored_materialisation(setup):
    sb, resources = setup
    with dg.instance_for_test() as instance:
        first = _run(hubspot_deals, instance, resources)
        assert first["extraction"].startswith("full") and first["dagster/row_count"] == 3
        quiet = _run(hubspot_deals, instance, resources)
        assert quiet["extraction"].startswith("incremental"), quiet["extraction"]
        assert quiet["last_full_pull_at"] == first["last_full_pull_at"]
        r = httpx.delete(f"{sb.base_url}/crm/v3/objects/deals/8801",
                         headers={"Authorization": f"Bearer {sb.env()['HUBSPOT_ACCESS_TOKEN']}"})
        assert r.status_code == 204
        after = _run(hubspot_deals, instance, resources)
        assert after["extraction"].startswith("full") and after["dagster/row_count"] == 2
        forced = _run(hubspot_deals, instance, resources, {"ops": {"hubspot_deals": {"config": {"full": True}}}})
        assert forced["extraction"] == "full: full extraction requested"


def test_qbo_existing_invoices_catch_up_through_cdc(setup):
    sb, resources = setup

    def post(**over):  # through the resource's own token store (the refresh token rotates)
        with resources["quickbooks"].client() as client:
            client.create_invoice(invoice_body(**over), request_id=over["DocNumber"])

    post(DocNumber="E-1")
    with dg.instance_for_test() as instance:
        first = _run(qbo_existing_invoices, instance, resources)
        assert first["extraction"].startswith("full") and first["dagster/row_count"] == 1
        post(DocNumber="E-2", TxnDate="2026-10-20")
        caught_up = _run(qbo_existing_invoices, instance, resources)
        assert caught_up["extraction"].startswith("cdc"), caught_up["extraction"]
        assert caught_up["dagster/row_count"] == 2
