"""The rules file: models, key-by-key defaults, Decimal amounts, whole-file validation by path."""

from __future__ import annotations

from datetime import date
from decimal import Decimal as D
from pathlib import Path

import pytest

from sync_pipelines.billing import RulesError, check_rules_file, load_rules, parse_rules

DESIGN_EXAMPLE = """\
version: 1
firm: {timezone: America/New_York, home_currency: USD}
defaults:
  rounding: {increment_minutes: 6, mode: up, scope: entry}   # mode: up|nearest|down; scope: entry|line
  invoice: {group_by: client, line_detail: task, terms: "Net 30"}
  qbo: {item: "Services"}
clients:
  acme:                                   # client key: [a-z0-9_-], stable; used in partition keys
    harvest_client_id: 1001
    qbo_customer: "Acme Corp"             # QBO DisplayName; found (inactive too) or created
    hubspot_company_id: "5001"            # optional
    currency: USD
    billing_type: time_and_materials      # time_and_materials | retainer
    rates:                                # see "rate resolution"
      - {rate: 150.00}
      - {rate: 160.00, from: 2026-07-01}
      - {rate: 175.00, task: "Design"}
      - {rate: 225.00, person: "Jane Doe", task: "Design"}
      - {rate: 180.00, project: "ACME-2", to: 2026-12-31}
    rounding: {increment_minutes: 15, mode: up, scope: entry}
    discount: {percent: 10}               # or {amount: 250.00}
    minimum: 500.00
    cap: {amount: 20000.00, period: month}        # period: month | lifetime
    invoice: {group_by: project, line_detail: task_person, memo: "PO {po_number}"}
    qbo: {item: "Consulting", items_by_task: {"Design": "Design Services"}, class: "Consulting", terms: "Net 15"}
  beta:
    harvest_client_id: 1002
    qbo_customer: "Beta"
    invoice: {line_detail: person}
  keeper:
    harvest_client_id: 1003
    qbo_customer: "Keeper"
    billing_type: retainer
    retainer: {fee: 6000.00, included_hours: 40, overage_rate: 165.00, rollover: false}
"""


def problems(text: str) -> list[str]:
    with pytest.raises(RulesError) as exc:
        parse_rules(text)
    return exc.value.problems


def head(clients: str) -> str:
    return "version: 1\ndefaults: {qbo: {item: Services}}\nclients:\n" + clients


def test_design_example_parses_with_exact_decimals_and_dates():
    rules = parse_rules(DESIGN_EXAMPLE)
    acme = rules.effective("acme")
    assert [r.rate for r in acme.rates] == [D("150.00"), D("160.00"), D("175.00"), D("225.00"), D("180.00")]
    assert all(type(r.rate) is D for r in acme.rates)
    assert acme.rates[1].from_ == date(2026, 7, 1) and acme.rates[4].to == date(2026, 12, 31)
    assert acme.minimum == D("500.00") and acme.cap.amount == D("20000.00") and acme.discount.percent == D("10")
    assert acme.rounding.increment_minutes == 15 and acme.rounding.increment_centi == 25
    assert acme.invoice.group_by == "project" and acme.qbo.terms == "Net 15" and acme.qbo.class_ == "Consulting"
    assert rules.client_for_harvest_client(1002) == "beta" and rules.client_for_harvest_client(1) is None
    assert rules.effective("keeper").retainer.included_hours == D("40")


def test_client_sections_override_defaults_key_by_key():
    rules = parse_rules(DESIGN_EXAMPLE)
    beta = rules.effective("beta")
    assert beta.invoice.line_detail == "person" and beta.invoice.group_by == "client"  # default kept
    assert beta.rounding.increment_minutes == 6 and beta.rounding.mode == "up" and beta.rounding.scope == "entry"
    assert beta.qbo.item == "Services" and beta.qbo.terms == "Net 30"
    assert beta.billing_type == "time_and_materials" and beta.currency == "USD"
    partial = parse_rules(head("  c:\n    harvest_client_id: 1\n    qbo_customer: C\n    rounding: {mode: nearest}\n"))
    r = partial.effective("c").rounding
    assert (r.increment_minutes, r.mode, r.scope) == (0, "nearest", "entry")


def test_every_problem_is_listed_by_path():
    text = """\
version: 1
firm: {timezone: America/New_York, home_currency: USD}
defaults:
  qbo: {item: Services}
clients:
  acme:
    harvest_client_id: 1001
    qbo_customer: "Acme Corp"
    currency: ZZZ
    rates:
      - {rate: 150.00}
      - {rate: 160.00, from: 2026-07-01}
      - {rate: 170.00, from: x}
      - {rate: 180.00, from: 2026-08-01, to: 2026-07-01}
    rounding: {increment_minutes: 7, mode: sideways, scope: entry}
    discount: {percent: 10, amount: 5.00}
    cap: {amount: 100.00, period: year}
    colour: blue
  beta:
    harvest_client_id: 1002
    qbo_customer: Beta
    rates:
      - {rate: 100.00, task: Design}
      - {rate: 110.00, task: Design}
      - {rate: 120.00, task: 12}
      - {rate: 130.00, task: Dev}
    minimum: 10.005
    invoice: {memo: "PO {po}"}
  Bad Key:
    harvest_client_id: 1003
    qbo_customer: X
"""
    got = problems(text)
    assert got == [
        "clients.acme.currency: unknown currency 'ZZZ'",
        "clients.acme.rates[2].from: invalid date 'x'",
        "clients.acme.rounding.increment_minutes: Input should be 0, 3, 6, 12, 15, 30 or 60 (got 7)",
        "clients.acme.rounding.mode: Input should be 'up', 'nearest' or 'down' (got 'sideways')",
        "clients.acme.discount: set exactly one of 'percent' or 'amount'",
        "clients.acme.cap.period: Input should be 'month' or 'lifetime' (got 'year')",
        "clients.acme.colour: unknown key",
        "clients.Bad Key: client key must match [a-z0-9_-]+",
        "clients.beta.rates[1]: could tie with rates[0] (same filters, score 1 and 'from'); set different filters or dates",
        "clients.beta.rates[2]: could tie with rates[0] (same filters, score 1 and 'from'); set different filters or dates",
        "clients.beta.rates[2]: could tie with rates[1] (same filters, score 1 and 'from'); set different filters or dates",
        "clients.beta.rates[3]: could tie with rates[2] (same filters, score 1 and 'from'); set different filters or dates",
        "clients.beta.minimum: 10.005 has more decimal places than USD allows (2)",
        "clients.beta.invoice.memo: unknown field {po} (known: po_number, client_key, customer, period, period_start, period_end)",
    ]


def test_from_after_to_and_untied_dated_rows():
    got = problems(head("  c:\n    harvest_client_id: 1\n    qbo_customer: C\n    rates:\n"
                        "      - {rate: 1.00, from: 2026-08-01, to: 2026-07-01}\n"))
    assert got == ["clients.c.rates[0].from: 2026-08-01 is after to 2026-07-01"]
    ok = head("  c:\n    harvest_client_id: 1\n    qbo_customer: C\n    rates:\n"
              "      - {rate: 1.00, task: Design, from: 2026-01-01}\n      - {rate: 2.00, task: Design, from: 2026-02-01}\n"
              "      - {rate: 3.00, person: 7, task: Design}\n      - {rate: 3.00, person: 8, task: Design}\n")
    parse_rules(ok)


def test_unknown_keys_and_top_level_problems():
    got = problems("version: 2\nfirm: {timezone: Mars/Olympus, home_currency: XXX}\nextra: 1\nclients:\n"
                   "  c:\n    harvest_client_id: 1\n    qbo_customer: C\n")
    assert got == [
        "version: Input should be 1 (got 2)",
        "firm.timezone: unknown time zone 'Mars/Olympus'",
        "firm.home_currency: unknown currency 'XXX'",
        "extra: unknown key",
        "clients.c.qbo.item: no QuickBooks item (set defaults.qbo.item or clients.c.qbo.item)",
    ]


def test_retainer_consistency_and_duplicates():
    got = problems(head(
        "  a:\n    harvest_client_id: 1\n    qbo_customer: A\n    billing_type: retainer\n"
        "  b:\n    harvest_client_id: 1\n    qbo_customer: B\n    retainer: {fee: 1.00, included_hours: 1.005}\n"
        "  c:\n    harvest_client_id: 3\n    qbo_customer: C\n    billing_type: retainer\n"
        "    retainer: {fee: 10.00, included_hours: 4}\n    invoice: {group_by: project}\n"))
    assert got == [
        "clients.b.retainer.included_hours: included_hours 1.005 has more than 2 decimal places",
        "clients.a.retainer: required when billing_type is retainer",
        "clients.c.invoice.group_by: a retainer client is invoiced once a month (group_by must be client)",
    ]
    got = problems(head("  a:\n    harvest_client_id: 1\n    qbo_customer: A\n  b:\n    harvest_client_id: 1\n    qbo_customer: B\n"))
    assert got == ["clients.b.harvest_client_id: 1 is already mapped by clients.a"]


def test_yaml_errors_and_duplicate_keys():
    assert problems("version: [1\n")[0].startswith("line 2, column 1: invalid YAML")
    got = problems(head("  a:\n    harvest_client_id: 1\n    harvest_client_id: 2\n    qbo_customer: A\n"))
    assert got == ["line 6: duplicate key 'harvest_client_id' (first at line 5)"]
    assert problems("") == ["<file>: empty rules file"]


def test_floats_never_reach_the_model():
    rules = parse_rules(head("  a:\n    harvest_client_id: 1\n    qbo_customer: A\n    rates: [{rate: 0.1}, {rate: 1e2, task: X}]\n"))
    assert rules.clients["a"].rates[0].rate == D("0.1") and rules.clients["a"].rates[1].rate == D("1E+2")


def test_jpy_amounts_must_be_whole():
    got = problems(head("  k:\n    harvest_client_id: 1\n    qbo_customer: K\n    currency: JPY\n    minimum: 500.5\n"))
    assert got == ["clients.k.minimum: 500.5 has more decimal places than JPY allows (0)"]


def test_load_and_check_file(tmp_path: Path):
    good = tmp_path / "rules.yaml"
    good.write_text(DESIGN_EXAMPLE)
    assert load_rules(good).source == str(good)
    assert check_rules_file(good) == []
    bad = tmp_path / "bad.yaml"
    bad.write_text(head("  a:\n    harvest_client_id: x\n    qbo_customer: A\n"))
    assert check_rules_file(bad) == [
        "clients.a.harvest_client_id: Input should be a valid integer, unable to parse string as an integer (got 'x')"]
    assert check_rules_file(tmp_path / "missing.yaml")[0].startswith("<file>: cannot read")
