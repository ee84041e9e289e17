"""The sandbox is as strict as a real QuickBooks company for each setting the payload must fit
(issue 10): tax codes outside the US, AST-like tax in the US, discounts off, custom numbers, and the
settings served back through Preferences, CompanyInfo, TaxCode and TaxRate."""

from __future__ import annotations

from decimal import Decimal

import httpx

from sync_pipelines.sandbox import SandboxServer
from sync_pipelines.sandbox.fixture import validate_fixture

from .conftest import Qbo, body, small_fixture

D = Decimal


def _line(amount: str, qty: str, price: str, **detail) -> dict:
    return {"Amount": D(amount), "DetailType": "SalesItemLineDetail",
            "SalesItemLineDetail": {"ItemRef": {"value": "1"}, "Qty": D(qty), "UnitPrice": D(price), **detail}}


def _fault(r: httpx.Response) -> dict:
    assert r.status_code == 400, r.text
    return body(r)["Fault"]["Error"][0]


def uk_fixture() -> dict:
    fx = small_fixture()
    q = fx["quickbooks"]
    q["company_info"] = {"CompanyName": "Firm Ltd", "Country": "GB"}
    q["preferences"]["CurrencyPrefs"] = {"MultiCurrencyEnabled": False, "HomeCurrency": {"value": "GBP"}}
    q["customers"][0]["CurrencyRef"] = {"value": "GBP"}
    q["tax_rates"] = [{"Id": "3", "Name": "20.0% S", "RateValue": D("20")}, {"Id": "4", "Name": "5.0% R", "RateValue": D("5")}]
    q["tax_codes"] = [
        {"Id": "2", "Name": "20.0% S", "SalesTaxRateList": {"TaxRateDetail": [{"TaxRateRef": {"value": "3"}}]}},
        {"Id": "6", "Name": "5.0% R", "SalesTaxRateList": {"TaxRateDetail": [{"TaxRateRef": {"value": "4"}}]}},
        {"Id": "9", "Name": "Old code", "Active": False, "SalesTaxRateList": {"TaxRateDetail": []}},
    ]
    return fx


def test_non_us_company_needs_a_tax_code_on_every_line_and_computes_vat_per_code() -> None:
    with SandboxServer(uk_fixture(), rate_limits=None) as sb:
        q = Qbo(sb)
        base = {"CustomerRef": {"value": "58"}, "TxnDate": "2026-10-31", "GlobalTaxCalculation": "TaxExcluded"}
        no_code = _fault(q.post("invoice", {**base, "Line": [_line("100.00", "1", "100.00")]}))
        assert no_code["code"] == "6000" and "Make sure all your transactions have a VAT rate" in no_code["Detail"]
        missing_calc = {"CustomerRef": {"value": "58"}, "Line": [_line("100.00", "1", "100.00", TaxCodeRef={"value": "2"})]}
        assert _fault(q.post("invoice", missing_calc))["code"] == "2020"
        assert _fault(q.post("invoice", {**base, "GlobalTaxCalculation": "Gross", "Line": missing_calc["Line"]}))["code"] == "2170"
        inactive = {**base, "Line": [_line("100.00", "1", "100.00", TaxCodeRef={"value": "9"})]}
        assert _fault(q.post("invoice", inactive))["code"] == "2500"
        # 20 % of (333.33 - 33.33 discount) = 60.00; 5 % of 19.99 = 0.9995 -> 1.00
        lines = [_line("333.33", "1", "333.33", TaxCodeRef={"value": "2"}), _line("19.99", "1", "19.99", TaxCodeRef={"value": "6"}),
                 {"Amount": D("33.33"), "DetailType": "DiscountLineDetail",
                  "DiscountLineDetail": {"PercentBased": False, "TaxCodeRef": {"value": "2"}}}]
        inv = body(q.post("invoice", {**base, "Line": lines}))["Invoice"]
        assert inv["TxnTaxDetail"]["TotalTax"] == D("61.00")
        assert inv["TotalAmt"] == D("380.99")  # 353.32 - 33.33 + 61.00
        assert inv["GlobalTaxCalculation"] == "TaxExcluded"
        # tax-inclusive amounts: 120.00 holds 20.00 of VAT, and the total is the amounts
        incl = body(q.post("invoice", {**base, "GlobalTaxCalculation": "TaxInclusive",
                                       "Line": [_line("120.00", "1", "120.00", TaxCodeRef={"value": "2"})]}))["Invoice"]
        assert incl["TxnTaxDetail"]["TotalTax"] == D("20.00") and incl["TotalAmt"] == D("120.00")


def test_us_company_taxes_taxable_lines_only_with_automated_sales_tax() -> None:
    fx = small_fixture()
    fx["quickbooks"]["preferences"]["TaxPrefs"] = {"UsingSalesTax": True, "PartnerTaxEnabled": True}
    lines = [_line("200.00", "2", "100.00", TaxCodeRef={"value": "TAX"}), _line("50.00", "1", "50.00", TaxCodeRef={"value": "NON"})]
    with SandboxServer(fx, rate_limits=None) as sb:
        q = Qbo(sb)
        inv = body(q.post("invoice", {"CustomerRef": {"value": "58"}, "Line": lines}))["Invoice"]
        assert inv["TxnTaxDetail"]["TotalTax"] == D("17.75")  # 8.875 % of the TAX line's 200.00
        assert inv["TotalAmt"] == D("267.75")
        bad = _fault(q.post("invoice", {"CustomerRef": {"value": "58"}, "Line": [_line("1.00", "1", "1.00", TaxCodeRef={"value": "2"})]}))
        assert bad["code"] == "2500"
    fx["quickbooks"]["preferences"]["TaxPrefs"] = {"UsingSalesTax": False, "PartnerTaxEnabled": False}
    with SandboxServer(fx, rate_limits=None) as sb:
        inv = body(Qbo(sb).post("invoice", {"CustomerRef": {"value": "58"}, "Line": lines}))["Invoice"]
        assert inv["TxnTaxDetail"]["TotalTax"] == D("0.00") and inv["TotalAmt"] == D("250.00")


def test_discounts_off_drops_the_discount_line_silently() -> None:
    fx = small_fixture()
    fx["quickbooks"]["preferences"]["SalesFormsPrefs"]["AllowDiscount"] = False
    discount = {"Amount": D("25.00"), "DetailType": "DiscountLineDetail", "DiscountLineDetail": {"PercentBased": False}}
    with SandboxServer(fx, rate_limits=None) as sb:
        r = Qbo(sb).post("invoice", {"CustomerRef": {"value": "58"}, "Line": [_line("100.00", "1", "100.00"), discount]})
        inv = body(r)["Invoice"]
        assert r.status_code == 200 and inv["TotalAmt"] == D("100.00")
        assert not [line for line in inv["Line"] if line["DetailType"] == "DiscountLineDetail"]
        # a negative sales line on an item is how the discount survives
        neg = {"Amount": D("-25.00"), "DetailType": "SalesItemLineDetail", "SalesItemLineDetail": {"ItemRef": {"value": "2"}}}
        inv = body(Qbo(sb).post("invoice", {"CustomerRef": {"value": "58"}, "Line": [_line("100.00", "1", "100.00"), neg]}))["Invoice"]
        assert inv["TotalAmt"] == D("75.00")


def test_custom_numbers_on_keep_what_is_sent_and_off_numbers_invoices() -> None:
    fx = small_fixture()
    fx["quickbooks"]["preferences"]["SalesFormsPrefs"]["CustomTxnNumbers"] = True
    with SandboxServer(fx, rate_limits=None) as sb:
        q = Qbo(sb)
        sent = body(q.post("invoice", {"CustomerRef": {"value": "58"}, "DocNumber": "SP2610-1", "Line": [_line("1.00", "1", "1.00")]}))
        assert sent["Invoice"]["DocNumber"] == "SP2610-1"
        unsent = body(q.post("invoice", {"CustomerRef": {"value": "58"}, "Line": [_line("1.00", "1", "1.00")]}))["Invoice"]
        assert "DocNumber" not in unsent  # Intuit: "If no value is supplied, the resulting DocNumber is null"
    fx["quickbooks"]["preferences"]["SalesFormsPrefs"]["CustomTxnNumbers"] = False
    with SandboxServer(fx, rate_limits=None) as sb:
        q = Qbo(sb)
        first = body(q.post("invoice", {"CustomerRef": {"value": "58"}, "Line": [_line("1.00", "1", "1.00")]}))["Invoice"]
        second = body(q.post("invoice", {"CustomerRef": {"value": "58"}, "Line": [_line("1.00", "1", "1.00")]}))["Invoice"]
        assert (first["DocNumber"], second["DocNumber"]) == ("1001", "1002")


def test_settings_are_served_and_the_state_loads_again_as_a_fixture() -> None:
    with SandboxServer(uk_fixture(), rate_limits=None) as sb:
        q = Qbo(sb)
        info = body(httpx.get(f"{q.base}/companyinfo/{sb.realm_id}", headers=q.headers()))["CompanyInfo"]
        assert info["Country"] == "GB"
        prefs = body(httpx.get(f"{q.base}/preferences", headers=q.headers()))["Preferences"]
        assert prefs["CurrencyPrefs"]["HomeCurrency"] == {"value": "GBP"}
        codes = body(q.query("SELECT * FROM TaxCode"))["QueryResponse"]["TaxCode"]
        assert [c["Name"] for c in codes] == ["20.0% S", "5.0% R"]  # inactive codes need Active IN (true,false)
        rates = body(q.query("SELECT * FROM TaxRate WHERE Active IN (true,false)"))["QueryResponse"]["TaxRate"]
        assert {r["Id"]: r["RateValue"] for r in rates} == {"3": D("20"), "4": D("5")}
        state = sb.state()
        again = validate_fixture(state)
        assert again["quickbooks"]["company_info"]["Country"] == "GB"
        assert again["quickbooks"]["tax_codes"] == state["quickbooks"]["tax_codes"]


def test_fixture_errors_name_the_company_setting() -> None:
    fx = uk_fixture()
    fx["quickbooks"]["preferences"]["SalesFormsPrefs"]["AllowDiscount"] = "no"
    fx["quickbooks"]["tax_codes"][0]["SalesTaxRateList"]["TaxRateDetail"][0]["TaxRateRef"]["value"] = "77"
    fx["quickbooks"]["tax_rates"][1].pop("RateValue")
    try:
        validate_fixture(fx)
    except ValueError as exc:
        problems = exc.problems  # type: ignore[attr-defined]
    else:
        raise AssertionError("fixture accepted")
    assert "quickbooks.preferences.SalesFormsPrefs.AllowDiscount: must be true or false" in problems
    assert any(p.startswith("quickbooks.tax_codes[0].SalesTaxRateList.TaxRateDetail[0].TaxRateRef.value") for p in problems)
    assert any(p.startswith("quickbooks.tax_rates[1].RateValue") for p in problems)
