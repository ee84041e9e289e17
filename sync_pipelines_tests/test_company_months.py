"""One month end to end per kind of QuickBooks company (issue 10, DESIGN §5 "The QuickBooks company
is read, never assumed"): a hand-written fixture served by the sandbox over loopback HTTP, billed
by `bill_month` through the Dagster assets, the invoices read back from the sandbox's QuickBooks
API and compared to the cent with amounts worked out by hand in each case below.

Every case bills the same Harvest month for Acme: 2.50 + 1.75 + 4.00 = 8.25 h at 150.00 = 1237.50.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import dagster as dg

from sync_pipelines import money
from sync_pipelines.commands.billing_runs import EXIT_HELD, EXIT_OK, BillingRun, bill_month
from sync_pipelines.connectors.quickbooks import QboOAuth, QuickBooksClient
from sync_pipelines.ledger import Ledger
from sync_pipelines.sandbox import SandboxServer
from sync_pipelines.sandbox.fixture import DEFAULT_PREFERENCES

PERIOD = "2026-10"
D = Decimal


def _entry(i: int, day: int, hours: str, client: tuple[int, str, str], project: tuple[int, str]) -> dict:
    cid, cname, cur = client
    return {
        "id": 7000 + i, "spent_date": f"2026-10-{day:02d}", "hours": D(hours), "rounded_hours": D(hours),
        "billable": True, "is_running": False, "is_billed": False, "is_locked": False, "is_closed": False,
        "billable_rate": None, "user": {"id": 1, "name": "Jane Doe"},
        "client": {"id": cid, "name": cname, "currency": cur},
        "project": {"id": project[0], "name": project[1], "code": project[1]}, "task": {"id": 7, "name": "Design"},
        "created_at": "2026-10-01T18:00:00Z", "updated_at": "2026-10-05T18:00:00Z",
    }


ACME = (10, "Acme Corp", "USD")


def fixture(*, home: str = "USD", country: str = "US", prefs: dict | None = None, second: tuple | None = None,
            second_hours: str = "2.00", tax_codes: list | None = None, tax_rates: list | None = None,
            items: list | None = None, classes: list | None = None) -> dict:
    acme = (ACME[0], ACME[1], home)
    clients = [{"id": acme[0], "name": acme[1], "currency": home, "is_active": True}]
    projects = [{"id": 100, "name": "ACME-1", "code": "ACME-1", "client": {"id": acme[0], "name": acme[1]}}]
    entries = [_entry(1, 5, "2.50", acme, (100, "ACME-1")), _entry(2, 12, "1.75", acme, (100, "ACME-1")),
               _entry(3, 20, "4.00", acme, (100, "ACME-1"))]
    if second is not None:
        clients.append({"id": second[0], "name": second[1], "currency": second[2], "is_active": True})
        projects.append({"id": 101, "name": "TWO-1", "code": "TWO-1", "client": {"id": second[0], "name": second[1]}})
        entries.append(_entry(4, 14, second_hours, second, (101, "TWO-1")))
    p = copy.deepcopy(DEFAULT_PREFERENCES)
    p["CurrencyPrefs"]["HomeCurrency"] = {"value": home}
    for group, values in (prefs or {}).items():
        p.setdefault(group, {}).update(values)
    return {
        "harvest": {"clients": clients, "projects": projects, "users": [{"id": 1, "first_name": "Jane", "last_name": "Doe"}],
                    "tasks": [{"id": 7, "name": "Design"}], "time_entries": entries},
        "quickbooks": {
            "realm_id": "9341450000", "preferences": p, "company_info": {"CompanyName": "Firm", "Country": country},
            "customers": [], "items": items or [{"Id": "1", "Name": "Consulting", "Type": "Service"}],
            "classes": classes or [], "terms": [], "invoices": [], "tax_codes": tax_codes or [],
            "tax_rates": tax_rates or [],
        },
    }


def rules(clients: str, firm: str = "{timezone: America/New_York, home_currency: USD}") -> str:
    return f"""version: 1
firm: {firm}
defaults:
  invoice: {{group_by: client, line_detail: task}}
  qbo: {{item: Consulting}}
clients:
{clients}"""


ACME_RULES = """  acme:
    harvest_client_id: 10
    qbo_customer: "Acme Corp"
    rates: [{rate: 150.00}]
"""


@dataclass
class Month:
    run: BillingRun
    invoices: dict[str, dict]  # by customer name, as QuickBooks holds them
    ledger: Ledger
    home: Path
    realm_of: dict[str, str]  # the realm each invoice was found in, by customer name

    def held(self) -> dict[str, list[str]]:
        return {r.client_key: list(r.hold_reasons) for r in self.ledger.status(period=PERIOD) if r.status == "held"}


def bill(tmp_path: Path, fx: dict, rules_yaml: str, prepare=None, realms: tuple[str, ...] = ()) -> Month:
    """Bill the month; `prepare(sandbox, dagster_home)` runs first; the invoices are read back
    from the default company and from each of `realms`."""
    rules_path = tmp_path / "billing_rules.yaml"
    rules_path.write_text(rules_yaml)
    home = tmp_path / "dagster_home"
    home.mkdir()
    saved = dict(os.environ)
    with SandboxServer(fx, rate_limits=None) as sandbox:
        os.environ.update(sandbox.env())
        os.environ.update({"SYNC_RULES_FILE": str(rules_path), "DAGSTER_HOME": str(home),
                           "SYNC_OUTPUT_DIR": str(tmp_path / "out")})
        os.environ.pop("SYNC_DATABASE_URL", None)
        try:
            from sync_pipelines.definitions import defs

            if prepare is not None:
                prepare(sandbox, home)

            with dg.instance_for_test(temp_dir=str(home)) as instance:
                run = bill_month(PERIOD, instance=instance, definitions=defs())
            ledger = Ledger(f"sqlite:///{home / 'sync_ledger.db'}")
            env = sandbox.env()
            rows, realm_of = [], {}
            for realm in dict.fromkeys((env["QBO_REALM_ID"], *realms)):
                oauth = QboOAuth(env["QBO_TOKEN_URL"], env["QBO_CLIENT_ID"], env["QBO_CLIENT_SECRET"], ledger.tokens,
                                 realm, seed_refresh_token=env["QBO_REFRESH_TOKEN"] if realm == env["QBO_REALM_ID"] else None)
                with QuickBooksClient(env["QBO_BASE_URL"], realm, oauth) as qbo:
                    found = qbo.query_all("Invoice")
                rows += found
                realm_of.update({inv["CustomerRef"]["name"]: realm for inv in found})
        finally:
            os.environ.clear()
            os.environ.update(saved)
    by_customer: dict[str, dict] = {}
    for inv in rows:
        name = inv["CustomerRef"]["name"]
        assert name not in by_customer, f"two invoices for {name}"
        by_customer[name] = inv
    return Month(run, by_customer, ledger, home, realm_of)


def amount(v: object) -> Decimal:
    return money.to_decimal(v)


def sales_lines(inv: dict) -> list[dict]:
    return [line for line in inv["Line"] if line["DetailType"] == "SalesItemLineDetail"]


def posted(month: Month, client_key: str):
    (record,) = [r for r in month.ledger.status(period=PERIOD) if r.client_key == client_key]
    return month.ledger.get_invoice(record.key)


# ---------------------------------------------------------------------------------------------


def test_us_multicurrency_company_with_a_foreign_client(tmp_path: Path) -> None:
    berlin = (11, "Berlin GmbH", "EUR")
    fx = fixture(prefs={"CurrencyPrefs": {"MultiCurrencyEnabled": True}}, second=berlin)
    month = bill(tmp_path, fx, rules(ACME_RULES + """  berlin:
    harvest_client_id: 11
    qbo_customer: "Berlin GmbH"
    currency: EUR
    rates: [{rate: 120.00}]
"""))
    assert month.run.exit_code == EXIT_OK, [c.error for c in month.run.clients]
    acme, berlin_inv = month.invoices["Acme Corp"], month.invoices["Berlin GmbH"]
    # every invoice carries CurrencyRef once multicurrency is on, the home-currency one too
    assert acme["CurrencyRef"]["value"] == "USD" and amount(acme["TotalAmt"]) == D("1237.50")
    assert berlin_inv["CurrencyRef"]["value"] == "EUR" and amount(berlin_inv["TotalAmt"]) == D("240.00")  # 2 h x 120
    assert posted(month, "berlin").payload()["CurrencyRef"] == {"value": "EUR"}
    assert posted(month, "acme").payload()["CurrencyRef"] == {"value": "USD"}


def test_us_company_with_automated_sales_tax_on_taxable_lines(tmp_path: Path) -> None:
    zeta = (12, "Zeta Nonprofit", "USD")
    fx = fixture(prefs={"TaxPrefs": {"UsingSalesTax": True, "PartnerTaxEnabled": True}}, second=zeta)
    month = bill(tmp_path, fx, rules("""  acme:
    harvest_client_id: 10
    qbo_customer: "Acme Corp"
    rates: [{rate: 150.00}]
    qbo: {taxable: true}
  zeta:
    harvest_client_id: 12
    qbo_customer: "Zeta Nonprofit"
    rates: [{rate: 100.00}]
    qbo: {taxable: false}
"""))
    assert month.run.exit_code == EXIT_OK, [c.error for c in month.run.clients]
    acme = month.invoices["Acme Corp"]
    assert {line["SalesItemLineDetail"]["TaxCodeRef"]["value"] for line in sales_lines(acme)} == {"TAX"}
    # the sandbox's AST rate 8.875 %: 1237.50 x 0.08875 = 109.828125 -> 109.83
    assert amount(acme["TxnTaxDetail"]["TotalTax"]) == D("109.83")
    assert amount(acme["TotalAmt"]) == D("1347.33")
    record = posted(month, "acme")
    # QuickBooks' tax recorded beside our pre-tax total; only a pre-tax difference is a mismatch
    assert record.status == "posted" and not record.total_mismatch
    assert record.expected_total == D("1237.50") and record.qbo_total_tax == D("109.83")
    assert record.qbo_total_amt == D("1347.33")
    (row,) = [c.outcomes for c in month.run.clients if c.client_key == "acme"][0].to_dict("records")
    assert (row["outcome"], row["qbo_total"], row["qbo_total_tax"], row["total_matches"]) == (
        "posted", "1347.33", "109.83", True)
    zeta_inv = month.invoices["Zeta Nonprofit"]
    assert {line["SalesItemLineDetail"]["TaxCodeRef"]["value"] for line in sales_lines(zeta_inv)} == {"NON"}
    assert amount(zeta_inv["TotalAmt"]) == D("200.00") and amount(zeta_inv["TxnTaxDetail"]["TotalTax"]) == 0


UK_TAX = dict(
    tax_rates=[{"Id": "3", "Name": "20.0% S", "RateValue": D("20")}, {"Id": "4", "Name": "0.0% Z", "RateValue": D("0")}],
    tax_codes=[{"Id": "2", "Name": "20.0% S", "SalesTaxRateList": {"TaxRateDetail": [{"TaxRateRef": {"value": "3"}}]}},
               {"Id": "5", "Name": "0.0% Z", "SalesTaxRateList": {"TaxRateDetail": [{"TaxRateRef": {"value": "4"}}]}}],
)


def test_uk_vat_company(tmp_path: Path) -> None:
    yorke = (13, "Yorke Ltd", "GBP")
    fx = fixture(home="GBP", country="GB", second=yorke, **UK_TAX)
    month = bill(tmp_path, fx, rules("""  acme:
    harvest_client_id: 10
    qbo_customer: "Acme Corp"
    rates: [{rate: 150.00}]
    discount: {percent: 10}
    qbo: {tax_code: "20.0% S"}
  yorke:
    harvest_client_id: 13
    qbo_customer: "Yorke Ltd"
    rates: [{rate: 100.00}]
""", firm="{timezone: Europe/London, home_currency: GBP, tax: {calculation: TaxExcluded}}"))
    # yorke names no VAT code: held, never sent (QuickBooks UK would refuse it with 6000)
    assert month.run.exit_code == EXIT_HELD
    assert "Yorke Ltd" not in month.invoices
    (reason,) = month.held()["yorke"]
    assert "no tax code" in reason and "clients.yorke.qbo.tax_code" in reason
    acme = month.invoices["Acme Corp"]
    assert acme["GlobalTaxCalculation"] == "TaxExcluded"
    assert {line["SalesItemLineDetail"]["TaxCodeRef"]["value"] for line in sales_lines(acme)} == {"2"}
    # 1237.50 - 10 % (123.75) = 1113.75; VAT 20 % = 222.75; total 1336.50
    assert amount(acme["TxnTaxDetail"]["TotalTax"]) == D("222.75")
    assert amount(acme["TotalAmt"]) == D("1336.50")
    record = posted(month, "acme")
    assert record.expected_total == D("1113.75") and record.qbo_total_tax == D("222.75") and not record.total_mismatch


def test_canadian_gst_hst_company(tmp_path: Path) -> None:
    coast = (14, "Coast Inc", "CAD")
    rates_ = [{"Id": "7", "Name": "HST ON", "RateValue": D("13")}, {"Id": "8", "Name": "GST", "RateValue": D("5")},
              {"Id": "9", "Name": "PST BC", "RateValue": D("7")}]
    codes = [{"Id": "4", "Name": "HST ON", "SalesTaxRateList": {"TaxRateDetail": [{"TaxRateRef": {"value": "7"}}]}},
             {"Id": "6", "Name": "GST/PST BC", "SalesTaxRateList": {"TaxRateDetail": [
                 {"TaxRateRef": {"value": "8"}}, {"TaxRateRef": {"value": "9"}}]}}]
    fx = fixture(home="CAD", country="CA", second=coast, second_hours="2.50", tax_codes=codes, tax_rates=rates_)
    month = bill(tmp_path, fx, rules("""  acme:
    harvest_client_id: 10
    qbo_customer: "Acme Corp"
    rates: [{rate: 150.00}]
    qbo: {tax_code: "HST ON"}
  coast:
    harvest_client_id: 14
    qbo_customer: "Coast Inc"
    rates: [{rate: 133.33}]
    qbo: {tax_code: "GST/PST BC"}
""", firm="{timezone: America/Toronto, home_currency: CAD}"))
    assert month.run.exit_code == EXIT_OK, [c.error for c in month.run.clients]
    acme, coast_inv = month.invoices["Acme Corp"], month.invoices["Coast Inc"]
    # HST 13 % of 1237.50 = 160.875 -> 160.88
    assert amount(acme["TxnTaxDetail"]["TotalTax"]) == D("160.88") and amount(acme["TotalAmt"]) == D("1398.38")
    # 2.5 h x 133.33 = 333.325 -> 333.33; GST 5 % = 16.6665 -> 16.67, PST 7 % = 23.3331 -> 23.33
    assert amount(coast_inv["TxnTaxDetail"]["TotalTax"]) == D("40.00")
    assert amount(coast_inv["TotalAmt"]) == D("373.33")
    drafts = {c.client_key: c.drafts for c in month.run.clients}
    # the preview's expected tax is what QuickBooks charged
    assert drafts["acme"]["invoices"][0]["expected_tax"] == D("160.88")
    assert drafts["coast"]["invoices"][0]["expected_tax"] == D("40.00")
    assert posted(month, "coast").qbo_total_tax == D("40.00")


def test_company_with_discounts_off(tmp_path: Path) -> None:
    beta = (15, "Beta LLC", "USD")
    items = [{"Id": "1", "Name": "Consulting", "Type": "Service"}, {"Id": "2", "Name": "Discounts given", "Type": "Service"}]
    fx = fixture(prefs={"SalesFormsPrefs": {"AllowDiscount": False}}, second=beta, items=items)
    month = bill(tmp_path, fx, rules("""  acme:
    harvest_client_id: 10
    qbo_customer: "Acme Corp"
    rates: [{rate: 150.00}]
    discount: {percent: 10}
    qbo: {discount_item: "Discounts given"}
  beta:
    harvest_client_id: 15
    qbo_customer: "Beta LLC"
    rates: [{rate: 100.00}]
    discount: {amount: 50.00}
"""))
    assert month.run.exit_code == EXIT_HELD
    acme = month.invoices["Acme Corp"]
    # QuickBooks would drop a DiscountLineDetail: the discount is a negative line on the item
    assert not [line for line in acme["Line"] if line["DetailType"] == "DiscountLineDetail"]
    (disc,) = [line for line in sales_lines(acme) if line["SalesItemLineDetail"]["ItemRef"]["value"] == "2"]
    assert amount(disc["Amount"]) == D("-123.75")
    assert amount(acme["TotalAmt"]) == D("1113.75")  # 1237.50 - 123.75
    assert not posted(month, "acme").total_mismatch
    (reason,) = month.held()["beta"]
    assert "discounts are off in QuickBooks" in reason and "clients.beta.qbo.discount_item" in reason
    assert "Beta LLC" not in month.invoices


def test_company_tracking_class_per_transaction(tmp_path: Path) -> None:
    fx = fixture(prefs={"AccountingInfoPrefs": {"ClassTrackingPerTxn": True, "ClassTrackingPerTxnLine": False}},
                 classes=[{"Id": "30", "Name": "Advisory"}])
    month = bill(tmp_path, fx, rules(ACME_RULES + """    qbo: {class: "Advisory"}
"""))
    assert month.run.exit_code == EXIT_OK, [c.error for c in month.run.clients]
    acme = month.invoices["Acme Corp"]
    assert acme["ClassRef"]["value"] == "30"
    assert all("ClassRef" not in line["SalesItemLineDetail"] for line in sales_lines(acme))
    assert amount(acme["TotalAmt"]) == D("1237.50")


def test_company_with_class_tracking_off_holds_a_client_with_a_class(tmp_path: Path) -> None:
    fx = fixture(prefs={"AccountingInfoPrefs": {"ClassTrackingPerTxn": False, "ClassTrackingPerTxnLine": False}},
                 classes=[{"Id": "30", "Name": "Advisory"}])
    month = bill(tmp_path, fx, rules(ACME_RULES + """    qbo: {class: "Advisory"}
"""))
    assert month.run.exit_code == EXIT_HELD and month.invoices == {}
    assert month.held()["acme"] == ["class tracking is off in QuickBooks but clients.acme.qbo.class names 'Advisory'"]


def test_company_numbering_its_own_invoices(tmp_path: Path) -> None:
    fx = fixture(prefs={"SalesFormsPrefs": {"CustomTxnNumbers": False}})
    month = bill(tmp_path, fx, rules(ACME_RULES))
    assert month.run.exit_code == EXIT_OK, [c.error for c in month.run.clients]
    acme = month.invoices["Acme Corp"]
    record = posted(month, "acme")
    assert "DocNumber" not in record.payload()  # QuickBooks numbers it
    assert acme["DocNumber"] == "1001" == record.qbo_doc_number
    (row,) = month.run.clients[0].outcomes.to_dict("records")
    assert row["doc_number"] == "1001"  # the report names QuickBooks' number, not our fingerprint
    assert acme["PrivateNote"].startswith(record.key)
    assert amount(acme["TotalAmt"]) == D("1237.50")


# ---------------------------------------------------------------------------------------------
# Two QuickBooks companies in one rules file (DESIGN §5 "Many QuickBooks companies"): a US company
# in USD bills Acme, a UK VAT company in GBP bills Yorke; the sandbox serves both realms.

US_REALM, UK_REALM = "9341450000", "9341450777"
YORKE = (13, "Yorke Ltd", "GBP")

TWO_COMPANY_RULES = f"""version: 1
firm: {{timezone: Europe/London, home_currency: USD, tax: {{calculation: TaxExcluded}}}}
companies:
  us: {{realm_id: "{US_REALM}"}}
  uk: {{realm_id: "{UK_REALM}", home_currency: GBP}}
defaults:
  invoice: {{group_by: client, line_detail: task}}
  qbo: {{item: Consulting}}
clients:
  acme:
    harvest_client_id: 10
    qbo_customer: "Acme Corp"
    company: us
    rates: [{{rate: 150.00}}]
  yorke:
    harvest_client_id: 13
    qbo_customer: "Yorke Ltd"
    company: uk
    rates: [{{rate: 100.00}}]
    discount: {{percent: 10}}
    qbo: {{tax_code: "20.0% S"}}
"""


def two_company_fixture() -> dict:
    fx = fixture(second=YORKE, second_hours="3.35")
    us = fx.pop("quickbooks")
    us.pop("realm_id")
    uk_prefs = copy.deepcopy(DEFAULT_PREFERENCES)
    uk_prefs["CurrencyPrefs"]["HomeCurrency"] = {"value": "GBP"}
    uk = {"preferences": uk_prefs, "company_info": {"CompanyName": "Firm Ltd", "Country": "GB"},
          # the UK company has its own catalog: the same item name, another Id
          "items": [{"Id": "41", "Name": "Consulting", "Type": "Service"}], **UK_TAX}
    fx["quickbooks"] = {"companies": {US_REALM: us, UK_REALM: uk}}
    return fx


def connect_company(sandbox, home: Path, company: str, realm: str) -> None:
    """`sync-pipelines qbo connect --company KEY` against the sandbox, the user picking `realm`."""
    import io

    import httpx

    from sync_pipelines.commands.qbo_connect import connect_main

    env = sandbox.env()
    httpx.post(env["QBO_BASE_URL"] + "/_sandbox/consent", json={"realm_id": realm}).raise_for_status()
    saved = dict(os.environ)
    os.environ["SYNC_DATABASE_URL"] = f"sqlite:///{home / 'sync_ledger.db'}"
    out = io.StringIO()
    try:
        import sync_pipelines.commands.qbo_connect as qc

        real = qc.webbrowser.open
        qc.webbrowser.open = lambda url: httpx.get(url, follow_redirects=True, timeout=10)
        try:
            code = connect_main(port=0, open_browser=True, out=out, company=company)
        finally:
            qc.webbrowser.open = real
    finally:
        os.environ.clear()
        os.environ.update(saved)
    assert code == 0, out.getvalue()
    assert f"company {company} (realm {realm})" in out.getvalue()


def test_two_companies_in_one_rules_file(tmp_path: Path) -> None:
    month = bill(tmp_path, two_company_fixture(), TWO_COMPANY_RULES,
                 prepare=lambda sandbox, home: connect_company(sandbox, home, "uk", UK_REALM), realms=(UK_REALM,))
    assert month.run.exit_code == EXIT_OK, month.run
    # each invoice landed in its own company
    assert month.realm_of == {"Acme Corp": US_REALM, "Yorke Ltd": UK_REALM}
    # US company: Acme in USD, no tax, 8.25 h x 150.00 = 1237.50, on the US company's item
    acme = month.invoices["Acme Corp"]
    assert amount(acme["TotalAmt"]) == D("1237.50") and "GlobalTaxCalculation" not in acme
    assert {line["SalesItemLineDetail"]["ItemRef"]["value"] for line in sales_lines(acme)} == {"1"}
    # UK company: Yorke in GBP, 3.35 h x 100.00 = 335.00 - 10 % (33.50) = 301.50, VAT 20 % = 60.30,
    # on the UK company's own item and VAT code
    yorke = month.invoices["Yorke Ltd"]
    assert amount(yorke["TotalAmt"]) == D("361.80") and amount(yorke["TxnTaxDetail"]["TotalTax"]) == D("60.30")
    assert yorke["GlobalTaxCalculation"] == "TaxExcluded"
    assert {line["SalesItemLineDetail"]["ItemRef"]["value"] for line in sales_lines(yorke)} == {"41"}
    assert {line["SalesItemLineDetail"]["TaxCodeRef"]["value"] for line in sales_lines(yorke)} == {"2"}
    # each key holds its own company's realm
    keys = {r.client_key: r.key for r in month.ledger.status(period=PERIOD)}
    assert keys["acme"].startswith(US_REALM + ":acme:") and keys["yorke"].startswith(UK_REALM + ":yorke:")
    record = posted(month, "yorke")
    assert record.expected_total == D("301.50") and record.qbo_total_tax == D("60.30") and not record.total_mismatch
    assert record.currency == "GBP"
    assert posted(month, "acme").expected_total == D("1237.50")


def test_one_company_down_leaves_the_other_posted(tmp_path: Path) -> None:
    """The UK company answers 503 to everything (an outage of that realm only): it cannot be
    read, so Yorke's month fails naming the company, and the US company's invoice is posted."""
    import httpx

    def prepare(sandbox, home):
        connect_company(sandbox, home, "uk", UK_REALM)
        # every UK request fails; the US company is untouched
        httpx.post(sandbox.env()["QBO_BASE_URL"] + "/_sandbox/faults",
                   json={"api": "quickbooks", "rate_503": 1, "realm_id": UK_REALM}).raise_for_status()

    rules_yaml = TWO_COMPANY_RULES
    month = bill(tmp_path, two_company_fixture(), rules_yaml, prepare=prepare)
    assert month.run.exit_code != EXIT_OK
    assert set(month.invoices) == {"Acme Corp"} and amount(month.invoices["Acme Corp"]["TotalAmt"]) == D("1237.50")
    status = {r.client_key: r.status for r in month.ledger.status(period=PERIOD)}
    assert status.get("acme") == "posted" and status.get("yorke") != "posted"
    clients = {c.client_key: c for c in month.run.clients}
    assert clients["acme"].success and not clients["yorke"].success
    assert "company 'uk'" in (clients["yorke"].error or ""), clients["yorke"].error


def test_a_company_refusing_its_token_leaves_the_other_posted(tmp_path: Path) -> None:
    """The UK company's connection is revoked (refresh token refused, access tokens expired):
    the UK company cannot be read, so Yorke is not billed (the run fails naming the company),
    and the US company's invoice is posted."""
    import httpx

    def prepare(sandbox, home):
        connect_company(sandbox, home, "uk", UK_REALM)
        r = httpx.post(sandbox.env()["QBO_BASE_URL"] + "/_sandbox/expire_tokens",
                       json={"realm_id": UK_REALM, "refresh_token": True})
        assert r.json()["refresh_token_revoked"] is True

    month = bill(tmp_path, two_company_fixture(), TWO_COMPANY_RULES, prepare=prepare)
    assert month.run.exit_code != EXIT_OK
    assert set(month.invoices) == {"Acme Corp"} and amount(month.invoices["Acme Corp"]["TotalAmt"]) == D("1237.50")
    status = {r.client_key: r.status for r in month.ledger.status(period=PERIOD)}
    assert status.get("acme") == "posted" and "yorke" not in status
    clients = {c.client_key: c for c in month.run.clients}
    assert clients["acme"].success and "company 'uk'" in (clients["yorke"].error or "")
    # no token in anything the operator is shown
    assert "sbx-rt-" not in (clients["yorke"].error or "") and "sbx-at-" not in (clients["yorke"].error or "")
