"""Fit each draft invoice to the QuickBooks company it goes to (DESIGN §5 "The QuickBooks company
is read, never assumed").

QuickBooks either rejects what a company's settings do not allow (a non-US line without a tax
code: fault 6000) or, worse, silently changes it (a discount line dropped when discounts are off,
so the client is over-billed). So every setting is checked here, before anything is sent: what
can be fitted is (the tax code on each line, the discount as a negative line on an item, the class
on the invoice or its lines); what cannot holds the invoice with the reason.

Adds to ``result.lines``: ``tax_code_ref`` (the TaxCodeRef value for the line, None when the
company takes none: a US company without sales tax). Adds to ``result.invoices``: ``expected_tax`` (our estimate from the codes'
sales rates; None when QuickBooks' Automated Sales Tax decides), ``tax_calculation`` (the
GlobalTaxCalculation sent, None for US companies), ``discount_item_name`` / ``discount_item_id``
(discounts off: the item carrying the negative discount line), ``class_on`` (``txn`` | ``line`` |
None). Sets ``status`` ``held`` with the reasons when a setting cannot be met.
"""

from __future__ import annotations

from decimal import Decimal

import pandas as pd

from sync_pipelines import money
from sync_pipelines.billing.catalog import Catalog
from sync_pipelines.billing.company import US_NON_TAXABLE, US_TAXABLE, QboCompany
from sync_pipelines.billing.rules import RulesFile


def fit_to_company(invoices: pd.DataFrame, lines: pd.DataFrame, rules: RulesFile, company: QboCompany,
                   catalog: Catalog) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(invoices, lines) with the company's columns and holds (see the module docs)."""
    # copy-on-write (pandas 3): the caller's frames stay as they were without copying every column
    invoices = invoices.copy(deep=False)
    lines = lines.copy(deep=False)
    tax_refs: list[str | None] = [None] * len(lines)
    cols: dict[str, list] = {k: [] for k in ("expected_tax", "tax_calculation", "discount_item_name",
                                              "discount_item_id", "class_on")}
    statuses, reasons_out = [], []
    # one pass over the frame: per invoice, its lines' positions and the three fields read here
    positions = lines.groupby("invoice_key", sort=False).indices if len(lines) else {}
    detail_types = lines["detail_type"].tolist()
    item_names = lines["item_name"].tolist()
    amounts = lines["amount"].tolist()
    for inv in invoices.to_dict("records"):
        key, ck = inv["invoice_key"], inv["client_key"]
        eff = rules.effective(ck)
        qbo = eff.qbo
        holds: list[str] = list(inv["hold_reasons"] or [])
        mine = positions.get(key, [])
        cur = inv["currency"]
        p = f"clients.{ck}.qbo"

        if company.home_currency != rules.firm.home_currency:
            holds.append(f"the QuickBooks company's home currency is {company.home_currency}, the rules' "
                         f"firm.home_currency is {rules.firm.home_currency}")
        if cur != company.home_currency and not company.multicurrency:
            holds.append(f"the invoice is in {cur} but multicurrency is off in QuickBooks "
                         f"(home currency {company.home_currency})")

        # discounts off: QuickBooks ignores a DiscountLineDetail, so the discount becomes a
        # negative line on an item the firm chose
        d_name = d_id = None
        has_discount_line = any(detail_types[i] == "DiscountLineDetail" for i in mine)
        if has_discount_line and not company.allow_discount:
            d_name = qbo.discount_item  # type: ignore[union-attr]
            if d_name is None:
                holds.append(f"discounts are off in QuickBooks (SalesFormsPrefs.AllowDiscount) and {p}.discount_item "
                             "is not set: name the item that carries the discount as a negative line")
            else:
                ref, problem = catalog.resolve("Item", d_name, "item")
                d_id = ref.id if ref else None
                if problem:
                    holds.append(f"{problem} ({p}.discount_item)")

        # class: on the invoice or on each line, as the company tracks it
        class_on = None
        if inv["class_name"]:
            if company.class_per_line:
                class_on = "line"
            elif company.class_per_txn:
                class_on = "txn"
            else:
                holds.append(f"class tracking is off in QuickBooks but {p}.class names {inv['class_name']!r}")

        # tax
        expected_tax: Decimal | None = Decimal(0)
        calculation = None
        codes: list[str | None] = []
        if company.is_us:
            taxable = bool(qbo.taxable)  # type: ignore[union-attr]
            if qbo.tax_code is not None or qbo.tax_codes_by_item:  # type: ignore[union-attr]
                holds.append(f"{p}.tax_code / tax_codes_by_item name non-US tax codes, but this QuickBooks company "
                             f"is in {company.country}: mark the client qbo.taxable true or false instead")
            if taxable and not company.using_sales_tax:
                holds.append(f"{p}.taxable is true but sales tax is not set up in QuickBooks (TaxPrefs.UsingSalesTax)")
            elif taxable and not company.automated_sales_tax:
                holds.append("this QuickBooks company uses manual sales tax (no Automated Sales Tax); taxable "
                             "invoices need a transaction tax code, which sync_pipelines does not send yet")
            # Without sales tax set up the codes mean nothing to QuickBooks; leaving them out keeps
            # the payload of such a company what it was before companies were read (no drift).
            codes = [US_TAXABLE if taxable else US_NON_TAXABLE] * len(mine) if company.using_sales_tax else [None] * len(mine)
            expected_tax = None if taxable else Decimal(0)
        else:
            calculation = rules.firm.tax.calculation
            by_item = qbo.tax_codes_by_item or {}  # type: ignore[union-attr]
            base: dict[str, Decimal] = {}
            pct: dict[str, list[Decimal]] = {}
            missing: set[str] = set()
            for row in ({"detail_type": detail_types[i], "item_name": item_names[i], "amount": amounts[i]} for i in mine):
                item = d_name if row["detail_type"] == "DiscountLineDetail" and d_name else row["item_name"]
                name = by_item.get(item) if item else None
                name = name or qbo.tax_code  # type: ignore[union-attr]
                if name is None:
                    missing.add(item or "the discount")
                    codes.append(None)
                    continue
                code = company.tax_code(name)
                if code is None:
                    holds.append(f"unknown QuickBooks tax code {name!r} ({p}.tax_code"
                                 f"{'s_by_item' if item in by_item else ''})")
                    codes.append(None)
                    continue
                codes.append(code.id)
                sign = -1 if row["detail_type"] == "DiscountLineDetail" else 1
                base[code.id] = base.get(code.id, Decimal(0)) + sign * row["amount"]
                pct[code.id] = [r.percent for r in code.sales_rates]
            for item in sorted(missing):
                holds.append(f"no tax code for {item}: QuickBooks in {company.country} needs one on every line "
                             f"(set {p}.tax_code or {p}.tax_codes_by_item)")
            expected_tax = expected_tax_amount(base, pct, calculation, cur)
        for i, code_ref in zip(mine, codes):
            tax_refs[i] = code_ref

        holds = list(dict.fromkeys(holds))
        statuses.append("held" if holds else inv["status"])
        reasons_out.append(holds)
        for k, v in (("expected_tax", expected_tax), ("tax_calculation", calculation), ("discount_item_name", d_name),
                     ("discount_item_id", d_id), ("class_on", class_on)):
            cols[k].append(v)
    lines["tax_code_ref"] = pd.Series(tax_refs, dtype=object, index=lines.index)
    invoices["status"] = statuses
    invoices["hold_reasons"] = pd.Series(reasons_out, dtype=object, index=invoices.index)
    for k, v in cols.items():
        invoices[k] = pd.Series(v, dtype=object, index=invoices.index)
    return invoices, lines


def expected_tax_amount(base: dict[str, Decimal], rates: dict[str, list[Decimal]], calculation: str,
                        currency: str) -> Decimal:
    """Tax on the net amount of each code's lines, per sales rate of the code (a Canadian GST +
    PST code charges both), half-up to the minor unit, summed.

    ``TaxInclusive``: the amounts contain the tax, so a rate's share is ``amount × r / (100 + Σr)``.
    QuickBooks computes the real figure; this is the preview's estimate (and the sandbox's rule).
    """
    total = Decimal(0)
    if calculation != "NotApplicable":
        for code, amount in sorted(base.items()):
            combined = sum(rates.get(code, []), Decimal(0))
            for r in rates.get(code, []):
                share = amount * r / (100 + combined) if calculation == "TaxInclusive" else amount * r / 100
                total += money.quantize(share, currency)
    return money.quantize(total, currency)
