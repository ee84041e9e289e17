"""Several QuickBooks companies in one rules file (DESIGN §5 "Many QuickBooks companies"): the
`companies:` / `company:` keys, how a client resolves to its company, and pricing each client
against its own company (pure: no HTTP, no Dagster)."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal as D

import pandas as pd
import pytest

from sync_pipelines.billing import BillingHistory, invoice_payload, parse_rules
from sync_pipelines.billing.company import (QboCompany, TaxCode, TaxRate, companies_document,
                                            companies_from_document)
from sync_pipelines.billing.company_pricing import price_month_by_company
from sync_pipelines.billing.rules import RulesError

from .helpers import HEAD, catalog_frame, deals_frame, entries_frame, entry

US = QboCompany(realm_id="1111", country="US", home_currency="USD", multicurrency=False, allow_discount=True,
                custom_txn_numbers=True, class_per_txn=False, class_per_line=True)
UK = replace(US, realm_id="2222", country="GB", home_currency="GBP",
             tax_codes=(TaxCode("2", "20.0% S", True, (TaxRate("3", "20.0% S", D("20")),)),))

COMPANIES = 'companies: {us: {realm_id: "1111"}, uk: {realm_id: 2222, home_currency: GBP}}\n'
CLIENTS = """\
  acme:
    harvest_client_id: 1001
    qbo_customer: "Acme Corp"
    company: us
    rates: [{rate: 150.00}]
  brit:
    harvest_client_id: 1002
    qbo_customer: "Brit Ltd"
    company: uk
    rates: [{rate: 100.00}]
    qbo: {tax_code: "20.0% S"}
"""


def _rules(head_extra: str = COMPANIES, clients: str = CLIENTS):
    return parse_rules(HEAD.replace("clients:\n", head_extra + "clients:\n") + clients, "test")


def _problems(head_extra: str, clients: str = CLIENTS) -> list[str]:
    with pytest.raises(RulesError) as exc:
        _rules(head_extra, clients)
    return exc.value.problems


def test_each_client_resolves_to_its_company_and_its_home_currency():
    rules = _rules()
    assert rules.company_realms("9999") == {"us": "1111", "uk": "2222"}  # an unquoted realm id is its digits
    assert rules.company_key("acme") == "us" and rules.company_key("brit") == "uk"
    # a client without `currency:` bills in its company's home currency
    assert rules.effective("acme").currency == "USD" and rules.effective("brit").currency == "GBP"
    assert rules.clients_by_company() == {"us": ["acme"], "uk": ["brit"]}


def test_without_companies_the_one_company_is_qbo_realm_id():
    rules = _rules("", CLIENTS.replace("    company: us\n", "").replace("    company: uk\n", ""))
    assert rules.company_key("acme") is None
    assert rules.company_realms("9999") == {None: "9999"}
    assert rules.company_realm(None, "9999") == "9999"


def test_one_company_listed_is_every_clients_default():
    rules = _rules('companies: {us: {realm_id: "1111"}}\n', CLIENTS.replace("    company: us\n", "")
                   .replace("    company: uk\n", ""))
    assert rules.company_key("acme") == "us" and rules.company_key("brit") == "us"


@pytest.mark.parametrize(("head", "clients", "expected"), [
    (COMPANIES, CLIENTS.replace("company: uk", "company: fr"), "clients.brit.company: unknown company 'fr' (known: us, uk)"),
    ('companies: {us: {realm_id: "1111"}, uk: {realm_id: "1111"}}\n', CLIENTS,
     "companies.uk.realm_id: duplicate realm_id 1111 (also companies.us)"),
    ('companies: {us: {realm_id: "11-11"}, uk: {realm_id: "2"}}\n', CLIENTS, "companies.us.realm_id: bad realm id '11-11'"),
    ('companies: {us: {realm_id: "1"}, uk: {realm_id: "2"}}\n', CLIENTS.replace("    company: us\n", ""),
     "clients.acme.company: required: the file bills from 2 QuickBooks companies (us, uk)"),
    ("", CLIENTS, "clients.acme.company: names company 'us' but the file has no companies: section"),
    ('companies: {us: {realm_id: "1", home_currency: XYZ}, uk: {realm_id: "2"}}\n', CLIENTS,
     "companies.us.home_currency: unknown currency 'XYZ'"),
    ('companies: {us: {realm_id: "1", vat: true}, uk: {realm_id: "2"}}\n', CLIENTS, "companies.us.vat: unknown key"),
    ('companies: {US: {realm_id: "1"}, uk: {realm_id: "2"}}\n', CLIENTS.replace("company: us", "company: uk"),
     "companies.US: company key must match [a-z0-9_-]+"),
])
def test_company_problems_are_named_by_path(head, clients, expected):
    problems = _problems(head, clients)
    assert any(p.startswith(expected) for p in problems), problems


def test_a_client_amount_is_checked_in_its_companys_currency():
    # JPY has no minor unit: a 0.50 minimum cannot be billed by a company whose home currency is JPY
    problems = _problems('companies: {us: {realm_id: "1"}, jp: {realm_id: "3", home_currency: JPY}}\n',
                         CLIENTS.replace("company: uk", "company: jp").replace("    qbo: {tax_code: \"20.0% S\"}\n",
                                                                                 "    minimum: 100.50\n"))
    assert any(p.startswith("clients.brit.minimum: 100.50 has more decimal places than JPY allows") for p in problems), problems


def test_rules_check_lists_the_company_problems(tmp_path, capsys):
    from sync_pipelines import cli

    bad = tmp_path / "bad.yaml"
    bad.write_text(HEAD.replace("clients:\n", COMPANIES + "clients:\n") + CLIENTS.replace("company: uk", "company: fr"))
    assert cli.main(["rules", "check", str(bad)]) != 0
    assert "clients.brit.company: unknown company 'fr'" in capsys.readouterr().err


def test_each_client_is_priced_against_its_own_company():
    rules = _rules()
    entries = entries_frame([entry(1, "2026-10-01", "2.00"),
                             {**entry(2, "2026-10-02", "3.35", client=1002), "client_currency": "GBP"}])
    # each company has its own catalog: the same item name is another Id in the UK company
    catalog = pd.concat([catalog_frame().assign(realm_id="1111"),
                         catalog_frame([("Item", "41", "Services"), ("Term", "50", "Net 30"), ("Customer", "77", "Brit Ltd", True, "GBP")])
                         .assign(realm_id="2222")], ignore_index=True)
    results = price_month_by_company(rules, "2026-10", entries, deals_frame(), catalog, {"us": US, "uk": UK},
                                     {"1111": BillingHistory(), "2222": BillingHistory()})
    us, uk = results["us"], results["uk"]
    assert list(us.invoices["client_key"]) == ["acme"] and list(uk.invoices["client_key"]) == ["brit"]
    a, b = us.invoices.iloc[0].to_dict(), uk.invoices.iloc[0].to_dict()
    # keys hold their company's realm
    assert a["invoice_key"].startswith("1111:acme:") and b["invoice_key"].startswith("2222:brit:")
    assert (a["currency"], a["total"], a["status"]) == ("USD", D("300.00"), "ready")
    # 3.35 h rounded up to the 6 minutes of the defaults = 3.40 h x 100.00 = 340.00 GBP; VAT 20 % = 68.00
    assert (b["currency"], b["total"], b["status"], b["expected_tax"]) == ("GBP", D("340.00"), "ready", D("68.00"))
    assert uk.home_currency == "GBP" and us.home_currency == "USD"
    payload = invoice_payload(uk, b["invoice_key"], {"value": "77"})
    assert {line["SalesItemLineDetail"]["ItemRef"]["value"] for line in payload["Line"]
            if line["DetailType"] == "SalesItemLineDetail"} == {"41"}
    assert "CurrencyRef" not in payload  # GBP is the UK company's home currency, multicurrency off


def test_a_company_not_read_is_an_error_never_another_companys_settings():
    rules = _rules()
    with pytest.raises(KeyError, match="uk"):
        price_month_by_company(rules, "2026-10", entries_frame([]), deals_frame(), catalog_frame(), {"us": US})


def test_the_companies_document_round_trips_and_reads_the_one_company_form():
    doc = companies_document({"us": US, "uk": UK})
    assert companies_from_document(doc) == {"us": US, "uk": UK}
    assert companies_from_document(US.as_document()) == {None: US}
    assert companies_from_document(companies_document({None: US})) == {None: US}


def test_a_name_only_in_another_company_holds_the_invoice():
    # the UK company has no "Net 30" term: the US company's term is never borrowed
    rules = _rules()
    entries = entries_frame([{**entry(2, "2026-10-02", "1.00", client=1002), "client_currency": "GBP"}])
    catalog = pd.concat([catalog_frame().assign(realm_id="1111"),
                         catalog_frame([("Item", "41", "Services")]).assign(realm_id="2222")], ignore_index=True)
    uk = price_month_by_company(rules, "2026-10", entries, deals_frame(), catalog, {"us": US, "uk": UK},
                                clients=["brit"])["uk"]
    inv = uk.invoices.iloc[0]
    assert inv["status"] == "held" and "unknown QuickBooks term 'Net 30'" in inv["hold_reasons"]
