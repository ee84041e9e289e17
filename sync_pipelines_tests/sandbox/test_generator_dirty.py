"""`generate_fixture(..., dirty=True)` / `sandbox generate --dirty`: a few malformed records in the
APIs' own shapes, which the sandbox serves and the production clients quarantine; and the edits
after month end, which change `updated_at` only."""

from __future__ import annotations

import calendar
import datetime as dt
import hashlib
import json
from collections import Counter
from datetime import date
from decimal import Decimal
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
import yaml

from sync_pipelines import money
from sync_pipelines.billing.deals import project_terms
from sync_pipelines.commands.billing_runs import EXIT_HELD, bill_month
from sync_pipelines.cli import main
from sync_pipelines.connectors.harvest import HarvestClient
from sync_pipelines.connectors.http import InMemoryTokenStore, RetryPolicy
from sync_pipelines.connectors.hubspot import HubSpotClient
from sync_pipelines.connectors.quickbooks import QboOAuth, QuickBooksClient
from sync_pipelines.extract.frames import DEAL_PROPERTIES, deals_frame
from sync_pipelines.sandbox import SandboxServer, generate_fixture, validate_fixture
from sync_pipelines.sandbox.generator import TRIAL_DEAL_NAME
from sync_pipelines_tests._sandbox_month import point_env_at
from sync_pipelines_tests.independent_totals import expected_invoices

PERIOD = "2026-10"
ARGS = {"clients": 4, "entries": 160, "seed": 5, "month": PERIOD}


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def dirty_part(clean: dict, dirty: dict) -> dict:
    """The records `dirty=True` added (everything after the clean records)."""
    return {
        "time_entries": dirty["harvest"]["time_entries"][len(clean["harvest"]["time_entries"]):],
        "deals": dirty["hubspot"]["deals"][len(clean["hubspot"]["deals"]):],
        "items": dirty["quickbooks"]["items"][len(clean["quickbooks"]["items"]):],
    }


def entry_kind(e: dict) -> str:
    if "task" not in e:
        return "task_missing"
    if e["hours"] is None:
        return "hours_null"
    if isinstance(e["hours"], str):
        return "hours_text"
    if "-" not in e["spent_date"]:
        return "spent_date_basic"
    return "clean"


# ------------------------------------------------------------------------------ generator


def test_dirty_output_is_deterministic_per_seed() -> None:
    a = generate_fixture(**ARGS, dirty=True)
    b = generate_fixture(**ARGS, dirty=True)
    c = generate_fixture(**{**ARGS, "seed": 6}, dirty=True)
    assert money.dumps(a[0]) == money.dumps(b[0]) and a[1] == b[1]
    assert money.dumps(a[0]) != money.dumps(c[0])


# (args, sha256 of money.dumps(fixture) before late edits existed, sha256 of the rules YAML); re-pinned when
# the default sandbox company gained AllowDiscount, TaxPrefs and custom invoice numbers (issue 10)
PINNED = [
    ((4, 160, 5, "2026-10"), "55d8f1dd6552bdec52b24c58eabe8d913d47661d982306a0b4677923fc7fc002",
     "4ea4a0fa20eac771e7fcf39c01babbc67b617f4a5979f1047f881a37208c66ce"),
    ((6, 500, 11, "2026-10"), "f29355f5d70ce1bf0e693d4a95f31cec602618d102f47b8d09a1a6612de51526",
     "d68a322903f7f17bd8386d1dc9783ae98ee26e9642d472f66d59e1db1ff34277"),
]


@pytest.mark.parametrize("args,fixture_sha,rules_sha", PINNED)
def test_clean_output_is_unchanged_but_for_the_late_edits(args, fixture_sha, rules_sha) -> None:
    clients, entries, seed, month = args
    fx, rules = generate_fixture(clients, entries, seed, month)
    assert sha(rules) == rules_sha
    # dirty=True appends only: the clean records and the rules are the same
    dfx, drules = generate_fixture(clients, entries, seed, month, dirty=True)
    assert drules == rules
    for section, colls in (("harvest", ("time_entries",)), ("hubspot", ("deals", "associations")),
                           ("quickbooks", ("items",))):
        for coll in colls:
            n = len(fx[section][coll])
            assert money.dumps(dfx[section][coll][:n]) == money.dumps(fx[section][coll])
    # the late edits: ~2% of the month's finished entries, 1-6 days after month end, updated_at only
    year, mon = int(month[:4]), int(month[5:])
    last = dt.date(year, mon, calendar.monthrange(year, mon)[1])
    late = [e for e in fx["harvest"]["time_entries"] if e["updated_at"] != e["created_at"]]
    in_month = [e for e in fx["harvest"]["time_entries"] if e["spent_date"].startswith(month) and not e["is_running"]]
    assert 1 <= len(late) <= max(1, round(0.03 * len(in_month)))
    for e in late:
        assert e["spent_date"].startswith(month) and not e["is_running"]
        edited = dt.datetime.fromisoformat(e["updated_at"].replace("Z", "+00:00")).date()
        assert last + dt.timedelta(days=1) <= edited <= last + dt.timedelta(days=6)
    # undo them and the output is byte for byte what the generator gave before they existed
    for e in late:
        e["updated_at"] = e["created_at"]
    # ... and without the stage-entered dates of the ready-for-billing deals (added later too)
    for d in fx["hubspot"]["deals"]:
        for name in [k for k in d["properties"] if k.startswith(("hs_v2_date_entered_", "hs_date_entered_"))]:
            assert d["properties"]["dealstage"] == "ready_for_billing" and name.endswith("_ready_for_billing")
            del d["properties"][name]
    # ... and without the package left in contractsent for serve --sandbox (added later too)
    hs = fx["hubspot"]
    trial = {d["id"] for d in hs["deals"] if d["properties"]["dealname"].endswith(TRIAL_DEAL_NAME)}
    assert len(trial) <= 1 and all(d["properties"]["dealstage"] == "contractsent"
                                   for d in hs["deals"] if d["id"] in trial)
    items = {a["to_id"] for a in hs["associations"] if a["from_id"] in trial and a["to_type"] == "line_items"}
    hs["deals"] = [d for d in hs["deals"] if d["id"] not in trial]
    hs["line_items"] = [li for li in hs["line_items"] if li["id"] not in items]
    hs["associations"] = [a for a in hs["associations"] if not {a["from_id"], a["to_id"]} & (trial | items)]
    assert sha(money.dumps(fx)) == fixture_sha


def test_every_malformed_kind_is_present_with_fresh_ids() -> None:
    clean, _ = generate_fixture(**ARGS)
    fx, _ = generate_fixture(**ARGS, dirty=True)
    extra = dirty_part(clean, fx)
    kinds = Counter(entry_kind(e) for e in extra["time_entries"])
    assert set(kinds) == {"hours_null", "hours_text", "task_missing", "spent_date_basic"}
    assert all(n >= 1 for n in kinds.values())
    big, _ = generate_fixture(clients=8, entries=4000, seed=2, month=PERIOD, dirty=True)
    assert len(big["harvest"]["time_entries"]) - 4000 == 20  # 0.5 %
    for e in extra["time_entries"]:
        if entry_kind(e) == "hours_text":
            assert e["hours"] == "1:30"
        if entry_kind(e) == "spent_date_basic":
            assert len(e["spent_date"]) == 8 and e["spent_date"].startswith("202610")
    rates = [d for d in extra["deals"] if d["properties"]["billing_hourly_rate"] == "n/a"]
    codes = [d for d in extra["deals"] if d["properties"]["harvest_project_id"] == "ACME-1"]
    assert len(rates) == 1 and len(codes) == 1 and len(extra["deals"]) == 2
    project_ids = {str(p["id"]) for p in fx["harvest"]["projects"]}
    assert rates[0]["properties"]["harvest_project_id"] in project_ids
    [item] = extra["items"]
    assert "Name" not in item and item["Type"] == "Service"
    # ids: present and unique everywhere; the fixture validates and round-trips through JSON
    for section, coll, key in (("harvest", "time_entries", "id"), ("hubspot", "deals", "id"),
                               ("quickbooks", "items", "Id")):
        ids = [r[key] for r in fx[section][coll]]
        assert len(ids) == len(set(ids))
    qbo_ids = [r["Id"] for c in ("customers", "items", "classes", "terms") for r in fx["quickbooks"][c]]
    assert len(qbo_ids) == len(set(qbo_ids))
    validate_fixture(money.loads(money.dumps(fx)))


def test_cli_generate_dirty(tmp_path: Path) -> None:
    out, rules = tmp_path / "fx.json", tmp_path / "rules.yaml"
    assert main(["sandbox", "generate", "--clients", "4", "--entries", "160", "--seed", "5", "--month", PERIOD,
                 "--out", str(out), "--rules-out", str(rules), "--dirty"]) == 0
    fx, rules_yaml = generate_fixture(**ARGS, dirty=True)
    assert money.loads(out.read_bytes()) == money.loads(money.dumps(fx))
    assert rules.read_text() == rules_yaml
    clean_out = tmp_path / "clean.json"
    assert main(["sandbox", "generate", "--clients", "4", "--entries", "160", "--seed", "5", "--month", PERIOD,
                 "--out", str(clean_out)]) == 0
    assert len(money.loads(clean_out.read_bytes())["harvest"]["time_entries"]) == 160


# ------------------------------------------------------------------------------ served, read by the real clients


def _clients(sb: SandboxServer) -> tuple[HarvestClient, HubSpotClient, QuickBooksClient]:
    env = sb.env()
    harvest = HarvestClient(env["HARVEST_BASE_URL"], env["HARVEST_ACCOUNT_ID"], env["HARVEST_ACCESS_TOKEN"],
                            retry=RetryPolicy.fast(), per_page=50)
    hubspot = HubSpotClient(env["HUBSPOT_BASE_URL"], env["HUBSPOT_ACCESS_TOKEN"], retry=RetryPolicy.fast())
    oauth = QboOAuth(env["QBO_TOKEN_URL"], env["QBO_CLIENT_ID"], env["QBO_CLIENT_SECRET"], InMemoryTokenStore(),
                     env["QBO_REALM_ID"], env["QBO_REFRESH_TOKEN"], retry=RetryPolicy.fast())
    qbo = QuickBooksClient(env["QBO_BASE_URL"], env["QBO_REALM_ID"], oauth, retry=RetryPolicy.fast())
    return harvest, hubspot, qbo


def test_the_clients_quarantine_exactly_the_malformed_records_and_return_the_rest() -> None:
    clean, _ = generate_fixture(**ARGS)
    fx, _ = generate_fixture(**ARGS, dirty=True)
    extra = dirty_part(clean, fx)
    bad_entries = {e["id"]: e for e in extra["time_entries"]}
    with SandboxServer(fx, rate_limits=None) as sb:
        harvest, hubspot, qbo = _clients(sb)
        with harvest, hubspot, qbo:
            res = harvest.list_time_entries(date(2026, 10, 1), date(2026, 10, 31))
            deals = hubspot.list_deals(DEAL_PROPERTIES)
            items = qbo.list_items()

    # Harvest: every malformed entry (all dated in the month) is rejected with its reason and raw
    # payload; every well-formed entry of the month comes back
    assert {int(r.record_id) for r in res.rejected} == set(bad_entries)
    want_fields = {"hours_null": "hours", "hours_text": "hours", "task_missing": "task",
                   "spent_date_basic": "spent_date"}
    for r in res.rejected:
        assert (r.system, r.entity) == ("harvest", "time_entry")
        raw = money.loads(r.raw_json)
        sent = bad_entries[int(r.record_id)]
        assert raw["id"] == sent["id"] and raw.get("spent_date") == sent["spent_date"]
        assert want_fields[entry_kind(sent)] in r.reason, r.reason
    in_month = [e for e in clean["harvest"]["time_entries"] if e["spent_date"].startswith(PERIOD)]
    assert sorted(e.id for e in res.records) == sorted(e["id"] for e in in_month)

    # HubSpot: property values are strings or null, so the Deal model takes both deals as they
    # are; the billing steps judge their content (see the next test)
    assert deals.rejected == []
    assert {d.id for d in deals.records} == {d["id"] for d in fx["hubspot"]["deals"]}
    frame = deals_frame(deals.records, {})
    by_id = frame.set_index("deal_id")
    [na_deal] = [d for d in extra["deals"] if d["properties"]["billing_hourly_rate"] == "n/a"]
    [code_deal] = [d for d in extra["deals"] if d["properties"]["harvest_project_id"] == "ACME-1"]
    assert pd.isna(by_id.loc[code_deal["id"], "harvest_project_id"])  # not a project id: not linked
    pid = int(na_deal["properties"]["harvest_project_id"])
    terms = project_terms(frame, "America/New_York")[pid]
    assert any(na_deal["id"] in p and "n/a" in p for p in terms.problems), terms.problems

    # QuickBooks: the item without a Name is rejected; the three real ones come back
    [rej] = items.rejected
    assert rej.record_id == extra["items"][0]["Id"] and "Name" in rej.reason
    assert json.loads(rej.raw_json)["Sku"] == "LEGACY-01"
    assert sorted(i.name for i in items.records) == ["Consulting", "Design Services", "Services"]


# ------------------------------------------------------------------------------ a billing run


@pytest.fixture
def dirty_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    clean, rules_yaml = generate_fixture(**ARGS)
    fixture, _ = generate_fixture(**ARGS, dirty=True)
    home = tmp_path / "home"
    home.mkdir()
    rules_path = tmp_path / "rules.yaml"
    rules_path.write_text(rules_yaml)
    with SandboxServer(fixture) as sandbox:
        point_env_at(monkeypatch, sandbox, home, rules_path)
        yield clean, fixture, rules_yaml, home, sandbox


def test_a_billing_run_on_a_dirty_fixture_quarantines_holds_and_bills_the_rest_exactly(dirty_env) -> None:
    clean, fixture, rules_yaml, home, sandbox = dirty_env
    extra = dirty_part(clean, fixture)
    from sync_pipelines.definitions import defs

    with dg.instance_for_test(temp_dir=str(home)) as instance:
        run = bill_month(PERIOD, instance=instance, definitions=defs())
    assert all(c.error is None for c in run.clients), [c.error for c in run.clients]

    # the malformed Harvest entries and QBO item are in the quarantine files, reason and raw payload
    out = home / "output" / PERIOD
    harvest_q = pd.read_csv(out / "quarantine_harvest.csv", dtype=str)
    assert sorted(harvest_q["record_id"].astype(int)) == sorted(e["id"] for e in extra["time_entries"])
    assert harvest_q["reason"].str.len().min() > 0
    for rid, raw in zip(harvest_q["record_id"], harvest_q["raw_json"]):
        assert money.loads(raw)["id"] == int(rid)
    qbo_q = pd.read_csv(out / "quarantine_quickbooks.csv", dtype=str)
    assert list(qbo_q["record_id"]) == [extra["items"][0]["Id"]]
    assert "Name" in qbo_q["reason"].iloc[0] and "LEGACY-01" in qbo_q["raw_json"].iloc[0]

    # the deal rate "n/a" holds its client's invoice (nothing of it posted) and says why
    [na_deal] = [d for d in extra["deals"] if d["properties"]["billing_hourly_rate"] == "n/a"]
    pid = int(na_deal["properties"]["harvest_project_id"])
    harvest_client = next(p["client"]["id"] for p in fixture["harvest"]["projects"] if p["id"] == pid)
    rules = yaml.safe_load(rules_yaml)["clients"]
    [held_key] = [k for k, c in rules.items() if c["harvest_client_id"] == harvest_client]
    assert run.exit_code == EXIT_HELD
    held = next(c for c in run.clients if c.client_key == held_key)
    [invoice] = held.drafts["invoices"]
    assert invoice["status"] == "held"
    assert any(na_deal["id"] in r and "n/a" in r for r in invoice["hold_reasons"]), invoice["hold_reasons"]
    qbo_invoices = sandbox.state()["quickbooks"]["invoices"]
    assert invoice["doc_number"] not in {i.get("DocNumber") for i in qbo_invoices}
    report = (out / held_key / "reconciliation_report.csv").read_text()
    assert "held" in report and "n/a" in report

    # every other client is billed exactly what the clean fixture says (the quarantined entries
    # and the "ACME-1" deal, which links to no project, change no amount)
    expected = expected_invoices(clean, rules_yaml, PERIOD)
    held_name = rules[held_key]["qbo_customer"]
    posted = {i["CustomerRef"]["name"]: i for i in qbo_invoices
              if str(i.get("DocNumber", "")).startswith("SP" + PERIOD.replace("-", "")[2:])}
    assert held_name not in posted
    assert set(posted) == set(expected) - {held_name} and posted
    for name, inv in posted.items():
        assert money.to_decimal(inv["TotalAmt"]) == expected[name]["total"], name
    others = [c for c in run.clients if c.client_key != held_key]
    assert others and all(set(c.outcomes["outcome"]) == {"posted"} for c in others)
    assert Decimal(0) not in {expected[n]["total"] for n in posted}


def test_dirty_records_never_crash_filters_or_name_checks() -> None:
    import httpx

    from sync_pipelines.sandbox import SandboxServer, generate_fixture as gen

    fixture, _ = gen(clients=3, entries=200, seed=4, month="2026-10", dirty=True)
    with SandboxServer(fixture, rate_limits=None) as sb:
        env = sb.env()
        headers = {"Authorization": f"Bearer {env['HARVEST_ACCESS_TOKEN']}", "Harvest-Account-Id": env["HARVEST_ACCOUNT_ID"],
                   "User-Agent": "tests (ops@example.com)"}
        task_id = next(e["task"]["id"] for e in fixture["harvest"]["time_entries"] if e.get("task"))
        r = httpx.get(f"{sb.base_url}/v2/time_entries", params={"task_id": task_id}, headers=headers)
        assert r.status_code == 200 and all(e["task"]["id"] == task_id for e in r.json()["time_entries"])
        token = sb.qbo_access_token() if hasattr(sb, "qbo_access_token") else None
        if token is None:
            auth = (env["QBO_CLIENT_ID"], env["QBO_CLIENT_SECRET"])
            token = httpx.post(env["QBO_TOKEN_URL"], auth=auth, data={
                "grant_type": "refresh_token", "refresh_token": env["QBO_REFRESH_TOKEN"]}).json()["access_token"]
        r = httpx.post(f"{sb.base_url}/v3/company/{env['QBO_REALM_ID']}/item",
                       headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
                       json={"Name": "Brand New Item", "Type": "Service", "IncomeAccountRef": {"value": "1"}})
        assert r.status_code == 200, r.text


def test_a_deal_linked_by_project_code_is_reported_not_silently_unlinked() -> None:
    from sync_pipelines.connectors.hubspot import HubSpotClient
    from sync_pipelines.extract import sources
    from sync_pipelines.sandbox import SandboxServer, generate_fixture as gen

    fixture, _ = gen(clients=3, entries=200, seed=4, month="2026-10", dirty=True)
    bad = [d for d in fixture["hubspot"]["deals"] if d["properties"].get("harvest_project_id") == "ACME-1"]
    assert bad
    with SandboxServer(fixture, rate_limits=None) as sb:
        env = sb.env()
        with HubSpotClient(env["HUBSPOT_BASE_URL"], env["HUBSPOT_ACCESS_TOKEN"]) as client:
            frame, rejected = sources.hubspot_deals(client)
    assert bad[0]["id"] in set(frame["deal_id"])  # kept, unlinked
    row = rejected[rejected["record_id"] == bad[0]["id"]]
    assert len(row) == 1 and "'ACME-1' is not a Harvest project id" in row.iloc[0]["reason"]
