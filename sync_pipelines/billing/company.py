"""The QuickBooks company as billing sees it (DESIGN §5 "The QuickBooks company is read, never
assumed"): its country, currency and sales-form settings, and its tax codes with their sales rates.

Built by ``extract.sources.qbo_company`` from QuickBooks' own ``Preferences``, ``CompanyInfo``,
``TaxCode`` and ``TaxRate`` entities and stored as a JSON document (the ``qbo_company`` asset), so
that a month is billed against the settings it was read with.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

#: CompanyInfo.Country values QuickBooks uses for a US company (Intuit's samples show "US"; older
#: companies report "USA").
US_COUNTRIES = frozenset({"US", "USA"})
#: The two tax codes every US company has (Intuit: "TAX" / "NON" on each sales line).
US_TAXABLE, US_NON_TAXABLE = "TAX", "NON"


@dataclass(frozen=True)
class TaxRate:
    id: str
    name: str
    percent: Decimal  # TaxRate.RateValue, in percent (20 = 20 %)


@dataclass(frozen=True)
class TaxCode:
    id: str
    name: str
    active: bool
    sales_rates: tuple[TaxRate, ...]  # SalesTaxRateList.TaxRateDetail[].TaxRateRef, resolved

    @property
    def sales_percent(self) -> Decimal:
        """The code's combined sales rate (a Canadian GST + PST code adds both)."""
        return sum((r.percent for r in self.sales_rates), Decimal(0))


@dataclass(frozen=True)
class QboCompany:
    """What a payload must fit. Field names follow the QuickBooks settings they come from."""

    realm_id: str
    country: str  # CompanyInfo.Country
    home_currency: str  # Preferences.CurrencyPrefs.HomeCurrency
    multicurrency: bool  # CurrencyPrefs.MultiCurrencyEnabled
    allow_discount: bool  # SalesFormsPrefs.AllowDiscount
    custom_txn_numbers: bool  # SalesFormsPrefs.CustomTxnNumbers
    class_per_txn: bool  # AccountingInfoPrefs.ClassTrackingPerTxn
    class_per_line: bool  # AccountingInfoPrefs.ClassTrackingPerTxnLine
    using_sales_tax: bool = False  # TaxPrefs.UsingSalesTax
    automated_sales_tax: bool = False  # TaxPrefs.PartnerTaxEnabled (Intuit's name for AST)
    tax_codes: tuple[TaxCode, ...] = field(default_factory=tuple)

    @property
    def is_us(self) -> bool:
        return self.country.strip().upper() in US_COUNTRIES

    def tax_code(self, name_or_id: str) -> TaxCode | None:
        """The active tax code with this Name (or Id); an inactive one counts as unknown."""
        for code in self.tax_codes:
            if code.active and (code.name == name_or_id or code.id == name_or_id):
                return code
        return None

    # -- the stored document (JSON, amounts as exact text)
    def as_document(self) -> dict[str, Any]:
        return {
            "realm_id": self.realm_id, "country": self.country, "home_currency": self.home_currency,
            "multicurrency": self.multicurrency, "allow_discount": self.allow_discount,
            "custom_txn_numbers": self.custom_txn_numbers, "class_per_txn": self.class_per_txn,
            "class_per_line": self.class_per_line, "using_sales_tax": self.using_sales_tax,
            "automated_sales_tax": self.automated_sales_tax,
            "tax_codes": [
                {"id": c.id, "name": c.name, "active": c.active,
                 "sales_rates": [{"id": r.id, "name": r.name, "percent": str(r.percent)} for r in c.sales_rates]}
                for c in self.tax_codes
            ],
        }

    @classmethod
    def from_document(cls, doc: dict[str, Any]) -> "QboCompany":
        codes = tuple(
            TaxCode(str(c["id"]), str(c["name"]), bool(c["active"]),
                    tuple(TaxRate(str(r["id"]), str(r["name"]), Decimal(str(r["percent"]))) for r in c["sales_rates"]))
            for c in doc.get("tax_codes") or []
        )
        return cls(
            realm_id=str(doc["realm_id"]), country=str(doc["country"]), home_currency=str(doc["home_currency"]),
            multicurrency=bool(doc["multicurrency"]), allow_discount=bool(doc["allow_discount"]),
            custom_txn_numbers=bool(doc["custom_txn_numbers"]), class_per_txn=bool(doc["class_per_txn"]),
            class_per_line=bool(doc["class_per_line"]), using_sales_tax=bool(doc.get("using_sales_tax", False)),
            automated_sales_tax=bool(doc.get("automated_sales_tax", False)), tax_codes=codes,
        )

    def summary(self) -> str:
        """One line for the operator (the asset's UI description)."""
        tax = ("US sales tax" + (" (Automated Sales Tax)" if self.automated_sales_tax else "")) if self.is_us else (
            f"{len([c for c in self.tax_codes if c.active])} tax codes")
        return (f"{self.country}, home currency {self.home_currency}, multicurrency "
                f"{'on' if self.multicurrency else 'off'}, discounts {'on' if self.allow_discount else 'off'}, "
                f"custom invoice numbers {'on' if self.custom_txn_numbers else 'off'}, class tracking "
                f"{'per line' if self.class_per_line else 'per invoice' if self.class_per_txn else 'off'}, {tax}")


def company_from_qbo(
    realm_id: str,
    preferences: dict[str, Any],
    company_info: dict[str, Any],
    tax_codes: list[dict[str, Any]],
    tax_rates: list[dict[str, Any]],
) -> QboCompany:
    """Read the settings out of QuickBooks' entities (shapes as the API returns them; numbers
    already Decimals). A missing flag takes QuickBooks' own default for a new company."""

    def pref(group: str, key: str, default: Any) -> Any:
        value = (preferences.get(group) or {}).get(key)
        return default if value is None else value

    rates = {}
    for r in tax_rates:
        rid = str(r.get("Id"))
        value = r.get("RateValue")
        rates[rid] = TaxRate(rid, str(r.get("Name") or rid), Decimal(str(value)) if value is not None else Decimal(0))
    codes = []
    for c in tax_codes:
        details = ((c.get("SalesTaxRateList") or {}).get("TaxRateDetail")) or []
        sales = tuple(
            rates.get(str((d.get("TaxRateRef") or {}).get("value")))
            or TaxRate(str((d.get("TaxRateRef") or {}).get("value")), str((d.get("TaxRateRef") or {}).get("name")), Decimal(0))
            for d in details
        )
        codes.append(TaxCode(str(c.get("Id")), str(c.get("Name") or c.get("Id")), c.get("Active", True) is not False, sales))
    home = (pref("CurrencyPrefs", "HomeCurrency", {}) or {}).get("value") or "USD"
    return QboCompany(
        realm_id=realm_id,
        country=str(company_info.get("Country") or "US"),
        home_currency=str(home),
        multicurrency=bool(pref("CurrencyPrefs", "MultiCurrencyEnabled", False)),
        allow_discount=bool(pref("SalesFormsPrefs", "AllowDiscount", True)),
        custom_txn_numbers=bool(pref("SalesFormsPrefs", "CustomTxnNumbers", False)),
        class_per_txn=bool(pref("AccountingInfoPrefs", "ClassTrackingPerTxn", False)),
        class_per_line=bool(pref("AccountingInfoPrefs", "ClassTrackingPerTxnLine", False)),
        using_sales_tax=bool(pref("TaxPrefs", "UsingSalesTax", False)),
        automated_sales_tax=bool(pref("TaxPrefs", "PartnerTaxEnabled", False)),
        tax_codes=tuple(codes),
    )


def companies_document(companies: dict[str | None, QboCompany]) -> dict[str, Any]:
    """The `qbo_company` asset's JSON: one document per company (key None: the company of
    QBO_REALM_ID, stored as ""), in the rules' order."""
    return {"companies": [{"company": key or "", **c.as_document()} for key, c in companies.items()]}


def companies_from_document(doc: dict[str, Any]) -> dict[str | None, QboCompany]:
    """{company key: QboCompany} from `companies_document` (or the one-company document of
    earlier months, `QboCompany.as_document`, read as the default company)."""
    if "companies" not in doc:
        return {None: QboCompany.from_document(doc)}
    return {(d.get("company") or None): QboCompany.from_document(d) for d in doc["companies"]}
