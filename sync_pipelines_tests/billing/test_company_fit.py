"""Drafts fitted to the QuickBooks company (pure: no HTTP, no Dagster)."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal as D

import pytest

from sync_pipelines.billing import BillingHistory, invoice_payload, parse_rules, price_month
from sync_pipelines.billing.company import QboCompany, TaxCode, TaxRate, company_from_qbo
from sync_pipelines.billing.company_fit import expected_tax_amount
from sync_pipelines.billing.rules import RulesError

from .helpers import HEAD, catalog_frame, deals_frame, entries_frame, entry

US = QboCompany(realm_id="9130", country="US", home_currency="USD", multicurrency=False, allow_discount=True,
                custom_txn_numbers=True, class_per_txn=False, class_per_line=True)
VAT = TaxRate("3", "20.0% S", D("20"))
GB = replace(US, country="GB", home_currency="GBP",
             tax_codes=(TaxCode("2", "20.0% S", True, (VAT,)), TaxCode("8", "Retired", False, (VAT,))))
ROWS = [entry(1, "2026-10-01", "2.00"), entry(2, "2026-10-02", "1.10", task=12)]  # 3.10 h


def _price(clients_yaml: str, company: QboCompany, *, head: str = HEAD, extra_catalog=None, rows=None):
    rules = parse_rules(head + clients_yaml, "test")
    if rows is None:
        rows = [{**r, "client_currency": "GBP"} for r in ROWS] if "GBP" in head else ROWS
    r = price_month(rules, "2026-10", entries_frame(rows), deals_frame(), catalog_frame(extra=extra_catalog),
                    BillingHistory(), "9130", company=company)
    assert len(r.invoices) == 1
    inv = r.invoices.iloc[0].to_dict()
    return r, inv, invoice_payload(r, inv["invoice_key"], {"value": "58"})


ACME = """\
  acme:
    harvest_client_id: 1001
    qbo_customer: "Acme Corp"
    rates: [{rate: 150.00}]
"""


def test_multicurrency_puts_currency_ref_on_a_home_currency_invoice():
    _, inv, body = _price(ACME, replace(US, multicurrency=True))
    assert inv["status"] == "ready" and body["CurrencyRef"] == {"value": "USD"}
    _, _, body = _price(ACME, US)
    assert "CurrencyRef" not in body


def test_a_foreign_invoice_needs_multicurrency_and_the_home_currencies_must_agree():
    beta = ACME.replace("1001", "1002").replace("Acme Corp", "Beta GmbH") + "    currency: EUR\n"
    eur_rows = [{**r, "client_id": 1002, "client_currency": "EUR"} for r in ROWS]
    _, inv, _ = _price(beta, US, rows=eur_rows)
    assert inv["hold_reasons"] == ["the invoice is in EUR but multicurrency is off in QuickBooks (home currency USD)"]
    _, inv, body = _price(beta, replace(US, multicurrency=True), rows=eur_rows)
    assert inv["status"] == "ready" and body["CurrencyRef"] == {"value": "EUR"}
    _, inv, _ = _price(ACME, replace(US, home_currency="CAD", multicurrency=True))
    assert inv["hold_reasons"] == ["the QuickBooks company's home currency is CAD, the rules' firm.home_currency is USD"]


def test_discounts_off_become_a_negative_line_on_the_discount_item_or_hold():
    yaml = ACME + '    discount: {percent: 10}\n    qbo: {discount_item: "Discounts given"}\n'
    _, inv, body = _price(yaml, replace(US, allow_discount=False), extra_catalog=[("Item", "44", "Discounts given")])
    assert inv["status"] == "ready"
    last = body["Line"][-1]
    # 3.10 h x 150.00 = 465.00; 10 % = 46.50
    assert last["DetailType"] == "SalesItemLineDetail" and last["Amount"] == D("-46.50")
    assert last["SalesItemLineDetail"]["ItemRef"] == {"value": "44", "name": "Discounts given"}
    assert not [line for line in body["Line"] if line["DetailType"] == "DiscountLineDetail"]
    _, inv, _ = _price(ACME + "    discount: {percent: 10}\n", replace(US, allow_discount=False))
    assert inv["status"] == "held"
    assert inv["hold_reasons"] == ["discounts are off in QuickBooks (SalesFormsPrefs.AllowDiscount) and "
                                   "clients.acme.qbo.discount_item is not set: name the item that carries the "
                                   "discount as a negative line"]
    _, inv, _ = _price(yaml, replace(US, allow_discount=False))  # the item is not in QuickBooks
    assert inv["hold_reasons"] == ["unknown QuickBooks item 'Discounts given' (clients.acme.qbo.discount_item)"]


def test_class_goes_on_the_invoice_or_the_lines_by_tracking_mode():
    yaml = ACME + "    qbo: {class: Consulting}\n"
    _, _, body = _price(yaml, replace(US, class_per_line=False, class_per_txn=True))
    assert body["ClassRef"] == {"value": "10", "name": "Consulting"}
    assert all("ClassRef" not in line["SalesItemLineDetail"] for line in body["Line"])
    _, _, body = _price(yaml, US)
    assert "ClassRef" not in body and all(line["SalesItemLineDetail"]["ClassRef"]["value"] == "10" for line in body["Line"])
    _, inv, _ = _price(yaml, replace(US, class_per_line=False))
    assert inv["hold_reasons"] == ["class tracking is off in QuickBooks but clients.acme.qbo.class names 'Consulting'"]


def test_custom_numbers_off_sends_no_doc_number_but_keeps_the_fingerprint():
    r, inv, body = _price(ACME, replace(US, custom_txn_numbers=False))
    assert "DocNumber" not in body and body["PrivateNote"].startswith(inv["invoice_key"])


def test_us_lines_are_tax_or_non_and_manual_sales_tax_holds_taxable_invoices():
    ast = replace(US, using_sales_tax=True, automated_sales_tax=True)
    _, inv, body = _price(ACME + "    qbo: {taxable: true}\n", ast)
    assert {line["SalesItemLineDetail"]["TaxCodeRef"]["value"] for line in body["Line"]} == {"TAX"}
    assert inv["expected_tax"] is None and "GlobalTaxCalculation" not in body  # AST decides
    _, inv, body = _price(ACME, ast)
    assert {line["SalesItemLineDetail"]["TaxCodeRef"]["value"] for line in body["Line"]} == {"NON"}
    assert inv["expected_tax"] == 0
    _, inv, body = _price(ACME, US)  # no sales tax in the company: no codes sent at all
    assert all("TaxCodeRef" not in line["SalesItemLineDetail"] for line in body["Line"])
    _, inv, _ = _price(ACME + "    qbo: {taxable: true}\n", replace(US, using_sales_tax=True))
    assert inv["status"] == "held" and "manual sales tax" in inv["hold_reasons"][0]
    _, inv, _ = _price(ACME + '    qbo: {tax_code: "20.0% S"}\n', US)
    assert inv["status"] == "held" and "this QuickBooks company is in US" in inv["hold_reasons"][0]


GB_HEAD = HEAD.replace("firm: {timezone: America/New_York, home_currency: USD}",
                       "firm: {timezone: Europe/London, home_currency: GBP, tax: {calculation: TaxExcluded}}")
GB_ACME = ACME + "    currency: GBP\n"


def test_non_us_lines_carry_the_named_tax_code_and_the_preview_shows_the_vat():
    r, inv, body = _price(GB_ACME + '    discount: {percent: 10}\n    qbo: {tax_code: "20.0% S"}\n', GB, head=GB_HEAD)
    assert inv["status"] == "ready", inv["hold_reasons"]
    assert body["GlobalTaxCalculation"] == "TaxExcluded"
    assert [line["SalesItemLineDetail"]["TaxCodeRef"] for line in body["Line"][:-1]] == [{"value": "2"}] * 2
    assert body["Line"][-1]["DiscountLineDetail"]["TaxCodeRef"] == {"value": "2"}
    # (465.00 - 46.50) x 20 % = 83.70
    assert inv["expected_tax"] == D("83.70")
    assert "tax_code_ref" in r.lines.columns


def test_non_us_unknown_inactive_or_missing_tax_codes_hold():
    _, inv, _ = _price(GB_ACME, GB, head=GB_HEAD)
    assert inv["hold_reasons"] == ["no tax code for Services: QuickBooks in GB needs one on every line "
                                   "(set clients.acme.qbo.tax_code or clients.acme.qbo.tax_codes_by_item)"]
    _, inv, _ = _price(GB_ACME + '    qbo: {tax_code: "Retired"}\n', GB, head=GB_HEAD)
    assert inv["hold_reasons"] == ["unknown QuickBooks tax code 'Retired' (clients.acme.qbo.tax_code)"]
    _, inv, body = _price(GB_ACME + '    qbo: {tax_code: "Nope", tax_codes_by_item: {Services: "20.0% S"}}\n', GB,
                          head=GB_HEAD)
    assert inv["status"] == "ready" and body["Line"][0]["SalesItemLineDetail"]["TaxCodeRef"] == {"value": "2"}


def test_expected_tax_rounds_per_rate_and_handles_inclusive_amounts():
    # GST 5 % + PST 7 % on 333.33: 16.6665 -> 16.67 and 23.3331 -> 23.33
    assert expected_tax_amount({"6": D("333.33")}, {"6": [D("5"), D("7")]}, "TaxExcluded", "CAD") == D("40.00")
    assert expected_tax_amount({"2": D("120.00")}, {"2": [D("20")]}, "TaxInclusive", "GBP") == D("20.00")
    assert expected_tax_amount({"2": D("120.00")}, {"2": [D("20")]}, "NotApplicable", "GBP") == D("0.00")


def test_company_is_read_from_quickbooks_shapes_and_round_trips_as_a_document():
    company = company_from_qbo(
        "123",
        {"CurrencyPrefs": {"MultiCurrencyEnabled": True, "HomeCurrency": {"value": "CAD"}},
         "SalesFormsPrefs": {"AllowDiscount": False, "CustomTxnNumbers": True},
         "AccountingInfoPrefs": {"ClassTrackingPerTxn": True}, "TaxPrefs": {"UsingSalesTax": True}},
        {"Country": "CA"},
        [{"Id": "6", "Name": "GST/PST BC", "SalesTaxRateList": {"TaxRateDetail": [
            {"TaxRateRef": {"value": "8"}}, {"TaxRateRef": {"value": "9"}}]}}],
        [{"Id": "8", "Name": "GST", "RateValue": D("5")}, {"Id": "9", "Name": "PST BC", "RateValue": D("7")}],
    )
    assert (company.country, company.home_currency, company.multicurrency, company.allow_discount) == ("CA", "CAD", True, False)
    assert company.class_per_txn and not company.class_per_line and not company.is_us
    assert company.tax_code("GST/PST BC").sales_percent == D("12")
    assert QboCompany.from_document(company.as_document()) == company


def test_rules_validate_the_tax_and_discount_keys_by_path():
    with pytest.raises(RulesError) as exc:
        parse_rules(HEAD.replace("home_currency: USD}", "home_currency: USD, tax: {calculation: Gross}}")
                    + ACME + '    qbo: {taxable: maybe, tax_code: "", tax_codes_by_item: {Services: 7}, discount_item: ""}\n',
                    "test")
    problems = "\n".join(exc.value.problems)
    for path in ("firm.tax.calculation", "clients.acme.qbo.taxable", "clients.acme.qbo.tax_code",
                 "clients.acme.qbo.tax_codes_by_item.Services", "clients.acme.qbo.discount_item"):
        assert path + ":" in problems, path


def test_rules_check_command_covers_the_company_keys(tmp_path, capsys):
    from sync_pipelines import cli

    good = tmp_path / "good.yaml"
    good.write_text(GB_HEAD + GB_ACME + '    discount: {percent: 10}\n'
                    '    qbo: {tax_code: "20.0% S", tax_codes_by_item: {Training: "0.0% Z"}, discount_item: "Discounts given"}\n')
    assert cli.main(["rules", "check", str(good)]) == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text(GB_HEAD + GB_ACME + "    company: uk\n    qbo: {taxable: sometimes}\n")
    assert cli.main(["rules", "check", str(bad)]) == 1
    err = capsys.readouterr().err
    # `company:` without a `companies:` section names a company the file does not have
    assert "clients.acme.qbo.taxable:" in err and "clients.acme.company: names company 'uk' but the file has no companies" in err
