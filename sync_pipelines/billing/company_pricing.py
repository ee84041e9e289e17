"""Pricing a month for several QuickBooks companies (DESIGN §5 "Many QuickBooks companies").

Each client is billed from the company its rules name (`company:`); its drafts are priced and
fitted to THAT company: its home currency (a client without `currency:` bills in it, and a
QuickBooks customer without a currency is in it), its settings and tax codes, its catalog (the
names a rule refers to are looked up in that company's customers, items, classes and terms
only), its billing history, and its realm in every idempotency key. So `price_month` runs once
per company over that company's clients, on a view of the rules whose firm home currency is the
company's; nothing in the engine knows there are several companies.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date

import pandas as pd

from sync_pipelines.billing.company import QboCompany
from sync_pipelines.billing.engine import BillingResult, price_month
from sync_pipelines.billing.history import BillingHistory
from sync_pipelines.billing.rules import RulesFile

#: The catalog / existing-invoices column naming the realm a row was read from.
REALM_COLUMN = "realm_id"


def rules_for_company(rules: RulesFile, company_key: str | None) -> RulesFile:
    """The rules as one company bills them: `firm.home_currency` is the company's."""
    if company_key is None or not rules.companies:
        return rules
    home = rules.companies[company_key].home_currency or rules.firm.home_currency
    if home == rules.firm.home_currency:
        return rules
    return rules.model_copy(update={"firm": rules.firm.model_copy(update={"home_currency": home})})


def company_rows(frame: pd.DataFrame | None, realm_id: str) -> pd.DataFrame | None:
    """The rows of a frame read from several companies (a `realm_id` column) that are this
    realm's; a frame without the column is one company's already."""
    if frame is None or REALM_COLUMN not in frame.columns:
        return frame
    return frame[frame[REALM_COLUMN] == realm_id].reset_index(drop=True)


def price_month_by_company(
    rules: RulesFile,
    period: str,
    entries: pd.DataFrame,
    deals: pd.DataFrame | None,
    catalog: pd.DataFrame | None,
    companies: Mapping[str | None, QboCompany],
    histories: Mapping[str, BillingHistory] | None = None,
    clients: list[str] | None = None,
    line_items: pd.DataFrame | None = None,
    today: date | None = None,
    group_override: str | None = None,
) -> dict[str | None, BillingResult]:
    """`price_month` for every company with clients to bill: ``{company key: BillingResult}``.

    `companies` maps each company key of the rules (None without `companies:`) to the company
    as read from QuickBooks (`qbo_company`); a company missing here is an error, never billed
    from another. `catalog` holds every company's name lists (a `realm_id` column); `histories`
    the ledger's history per realm. `clients` None: every rules client (and, with one company
    and no `companies:`, the unmapped entries too, as `price_month` reports them).
    """
    histories = histories or {}
    groups = rules.clients_by_company(clients)
    missing = [k for k, cks in groups.items() if cks and k not in companies]
    if missing:
        raise KeyError("no QuickBooks company settings read for " + ", ".join(str(k or "the default company") for k in missing))
    results: dict[str | None, BillingResult] = {}
    for key, client_keys in groups.items():
        if key not in companies:
            continue
        company = companies[key]
        realm = company.realm_id
        one_company = not rules.companies and clients is None
        results[key] = price_month(
            rules_for_company(rules, key), period, entries, deals, company_rows(catalog, realm),
            histories.get(realm), realm, None if one_company else client_keys, line_items=line_items,
            company=company, today=today, group_override=group_override,
        )
    return results
