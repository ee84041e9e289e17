from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal

import httpx
import pytest
import yaml

from sync_pipelines import money
from sync_pipelines.sandbox import SandboxServer, generate_fixture, validate_fixture


def test_deterministic_per_seed():
    a = generate_fixture(clients=6, entries=300, seed=7, month="2026-10")
    b = generate_fixture(clients=6, entries=300, seed=7, month="2026-10")
    c = generate_fixture(clients=6, entries=300, seed=8, month="2026-10")
    assert money.dumps(a[0]) == money.dumps(b[0]) and a[1] == b[1]
    assert money.dumps(a[0]) != money.dumps(c[0])


def test_generated_fixture_shape():
    fx, _ = generate_fixture(clients=8, entries=2000, seed=3, month="2026-10")
    validate_fixture(fx)
    h = fx["harvest"]
    names = [c["name"] for c in h["clients"]]
    assert "O'Brien & Sons" in names and "Café Zürich GmbH" in names
    assert {t["name"] for t in h["tasks"]} == {"Design", "Development", "Project Management", "Meetings"}
    entries = h["time_entries"]
    assert len(entries) == 2000
    in_month = [e for e in entries if e["spent_date"].startswith("2026-10")]
    assert 0.85 * len(entries) < len(in_month) < len(entries)  # a few outside the month
    assert any(e["spent_date"].startswith("2026-09") for e in entries) and any(e["spent_date"].startswith("2026-11") for e in entries)
    weekdays = sum(dt.date.fromisoformat(e["spent_date"]).weekday() < 5 for e in entries)
    assert weekdays > 0.9 * len(entries)
    assert sum(e["is_running"] for e in entries) == 1
    non_billable = sum(not e["billable"] for e in entries) / len(entries)
    assert 0.05 < non_billable < 0.25
    for e in entries:
        assert isinstance(e["hours"], Decimal) and e["hours"] == e["hours"].quantize(Decimal("0.01")) and e["hours"] > 0
    q = fx["quickbooks"]
    assert {i["Name"] for i in q["items"]} == {"Services", "Consulting", "Design Services"}
    assert {"Net 30", "Net 15"} <= {t["Name"] for t in q["terms"]}
    assert [c["Name"] for c in q["classes"]] == ["Consulting"]
    assert sorted(c["Active"] for c in q["customers"]) == [False, True]
    assert q["preferences"]["CurrencyPrefs"]["MultiCurrencyEnabled"] is False
    deals = fx["hubspot"]["deals"]
    assert any(d["properties"].get("harvest_project_id") for d in deals)
    assert any(d["properties"].get("billing_hourly_rate") for d in deals)
    assert any(d["properties"].get("po_number") for d in deals)
    assert all(v is None or isinstance(v, str) for d in deals for v in d["properties"].values())


def test_rules_yaml_follows_design_syntax():
    fx, rules_text = generate_fixture(clients=12, entries=500, seed=11, month="2026-10")
    rules = yaml.safe_load(rules_text)
    assert rules["version"] == 1
    assert rules["firm"] == {"timezone": "America/New_York", "home_currency": "USD"}
    assert rules["defaults"] == {"rounding": {"increment_minutes": 6, "mode": "up", "scope": "entry"},
                                 "invoice": {"group_by": "client", "line_detail": "task", "terms": "Net 30"},
                                 "qbo": {"item": "Services"}}
    clients = rules["clients"]
    harvest_ids = {c["id"] for c in fx["harvest"]["clients"]}
    mapped = {c["harvest_client_id"] for c in clients.values()}
    assert len(harvest_ids - mapped) == 1  # one Harvest client without rules: unassigned time
    people = {f"{u['first_name']} {u['last_name']}" for u in fx["harvest"]["users"]}
    allowed = {"harvest_client_id", "qbo_customer", "hubspot_company_id", "currency", "rates", "rounding", "discount", "qbo"}
    for key, c in clients.items():
        assert re.fullmatch(r"[a-z0-9_-]+", key)
        assert set(c) <= allowed and c["currency"] == "USD"
        assert c["rates"][0].keys() == {"rate"}
        for row in c["rates"][1:]:
            if "from" in row:
                assert isinstance(row["from"], dt.date) and row["from"].strftime("%Y-%m") <= "2026-10"
            if "person" in row:
                assert row["person"] in people
        assert c.get("rounding", {"increment_minutes": 15})["increment_minutes"] == 15
        assert c.get("discount", {"percent": 10}) == {"percent": 10}
        assert c.get("qbo", {"item": "Consulting"}) == {"item": "Consulting"}
    for feature in ("discount", "rounding", "qbo"):
        assert any(feature in c for c in clients.values()), feature
    assert any(any("task" in r and "person" not in r for r in c["rates"]) for c in clients.values())
    assert any(any("from" in r for r in c["rates"]) for c in clients.values())
    assert sum(any("person" in r for r in c["rates"]) for c in clients.values()) == 1
    names = {c["qbo_customer"] for c in clients.values()}
    assert "O'Brien & Sons" in names and "Café Zürich GmbH" in names
    active = [c["DisplayName"] for c in fx["quickbooks"]["customers"] if c["Active"]]
    assert active and set(active) <= names
    # rates are written as in DESIGN §5 (two decimals)
    assert re.search(r"\{rate: \d+\.00\}", rules_text)


def test_generated_fixture_serves(tmp_path):
    fx, _ = generate_fixture(clients=5, entries=250, seed=1, month="2026-10")
    path = tmp_path / "fx.json"
    path.write_text(money.dumps(fx, ensure_ascii=False), encoding="utf-8")
    with SandboxServer(money.loads(path.read_bytes()), rate_limits=None) as sb:
        env = sb.env()
        h = {"Authorization": f"Bearer {env['HARVEST_ACCESS_TOKEN']}", "Harvest-Account-Id": env["HARVEST_ACCOUNT_ID"], "User-Agent": "t"}
        url, n = f"{sb.base_url}/v2/time_entries?from=2026-10-01&to=2026-10-31&per_page=100", 0
        while url:
            b = httpx.get(url, headers=h).json()
            n += len(b["time_entries"])
            url = b["links"]["next"]
        assert n == sum(e["spent_date"].startswith("2026-10") for e in fx["harvest"]["time_entries"])


def test_rules_yaml_passes_the_billing_rules_validator():
    rules_mod = pytest.importorskip("sync_pipelines.billing.rules")
    for seed in (1, 2, 3):
        fx, rules_text = generate_fixture(clients=15, entries=300, seed=seed, month="2026-10")
        rules = rules_mod.parse_rules(rules_text, source=f"generated seed {seed}")
        assert len(rules.clients) == 14


def test_unassigned_client_and_person_rate_always_have_time():
    for clients, entries in ((2, 10), (50, 300), (200, 1000)):
        fx, rules_text = generate_fixture(clients=clients, entries=entries, seed=5, month="2026-10")
        rules = yaml.safe_load(rules_text)
        mapped = {c["harvest_client_id"] for c in rules["clients"].values()}
        unassigned = [e for e in fx["harvest"]["time_entries"] if e["client"]["id"] not in mapped]
        assert unassigned, (clients, entries)
        person_rows = [(key, r) for key, c in rules["clients"].items() for r in c["rates"] if "person" in r]
        assert len(person_rows) == 1
        key, row = person_rows[0]
        cid = rules["clients"][key]["harvest_client_id"]
        assert any(e["client"]["id"] == cid and e["user"]["name"] == row["person"] and e["task"]["name"] == row["task"]
                   for e in fx["harvest"]["time_entries"])
