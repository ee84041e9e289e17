"""Connector models -> the DataFrames the billing engine takes (docs/architecture.md, "Frames").

No binary floats anywhere: hours become integer centihours computed from the Decimal, rates and
amounts stay Decimal text. Text columns use pandas' ``str`` dtype (missing values are NaN, test
with ``pd.isna``; this is also what a Parquet round trip gives back), ``spent_date`` is an object
column of ``datetime.date``. Empty inputs give frames with every column and dtype.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import numpy as np
import pandas as pd

from sync_pipelines.connectors.harvest_models import TimeEntry
from sync_pipelines.connectors.http import Rejected
from sync_pipelines.connectors.hubspot_models import Deal, DealLineItem
from sync_pipelines.connectors.hubspot_stages import entered_properties

STR = pd.StringDtype(na_value=np.nan)  # pandas 3's default "str" dtype

TIME_ENTRY_COLUMNS: dict[str, Any] = {
    "entry_id": "int64",
    "spent_date": "object",
    "hours_centi": "int64",
    "hours_text": STR,
    "billable": "bool",
    "is_running": "bool",
    "is_locked": "bool",
    "user_id": "int64",
    "user_name": STR,
    "client_id": "int64",
    "client_name": STR,
    "client_currency": STR,
    "project_id": "int64",
    "project_name": STR,
    "project_code": STR,
    "task_id": "int64",
    "task_name": STR,
    "notes": STR,
    "harvest_billable_rate": STR,
    "updated_at": STR,
}

DEAL_COLUMNS: dict[str, Any] = {
    "deal_id": STR,
    "dealname": STR,
    "dealstage": STR,
    "pipeline": STR,
    "closedate": STR,
    "createdate": STR,
    "hs_lastmodifieddate": STR,
    "harvest_project_id": "Int64",
    "billing_hourly_rate": STR,
    "billing_discount_percent": STR,
    "billing_not_to_exceed": STR,
    "po_number": STR,
    "company_id": STR,
    "deal_currency_code": STR,
    # when the deal entered its current stage, if it is the rules' ready-for-billing stage
    # (HubSpot's hs_v2_date_entered_<stage>, else hs_date_entered_<stage>; ISO text)
    "stage_entered_at": STR,
}

#: HubSpot properties to request for :func:`deals_frame`.
DEAL_PROPERTIES: list[str] = [
    "dealname", "dealstage", "pipeline", "closedate", "createdate", "hs_lastmodifieddate",
    "harvest_project_id", "billing_hourly_rate", "billing_discount_percent", "billing_not_to_exceed",
    "po_number", "deal_currency_code",
]

LINE_ITEM_COLUMNS: dict[str, Any] = {
    "deal_id": STR,
    "line_item_id": STR,
    "name": STR,
    "sku": STR,
    "price": STR,
    "quantity": STR,
    # the line item's net (DESIGN §5 "Deal line items bill their net"): `amount` after the
    # percentage or per-unit discount, all Decimal text as HubSpot sends them
    "amount": STR,
    "hs_discount_percentage": STR,
    "discount": STR,
}

CATALOG_COLUMNS: dict[str, Any] = {
    "entity": STR,
    "id": STR,
    "name": STR,
    "active": "bool",
    "currency": STR,
    "sku": STR,
    "sync_token": STR,
}

REJECTED_COLUMNS: dict[str, Any] = {
    "system": STR,
    "entity": STR,
    "record_id": STR,
    "reason": STR,
    "raw_json": STR,
}


def _frame(rows: list[dict[str, Any]], columns: Mapping[str, Any]) -> pd.DataFrame:
    data = {}
    for name, dtype in columns.items():
        values = [row[name] for row in rows]
        if dtype == "object":
            series = pd.Series(values, dtype="object")
        else:
            series = pd.Series(values, dtype=dtype)
        data[name] = series
    frame = pd.DataFrame(data, columns=list(columns))
    return frame.reset_index(drop=True)


def hours_to_centi(hours: Decimal) -> int:
    """Hours -> integer hundredths of an hour, half-up beyond 2 dp (exact from the Decimal)."""
    if isinstance(hours, float):
        raise TypeError("hours must be a Decimal, not a float")
    return int((Decimal(hours) * 100).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def _dec_text(value: Decimal | None) -> str | None:
    if value is None:
        return None
    return format(value, "f")


def time_entries_frame(entries: Iterable[TimeEntry]) -> pd.DataFrame:
    """One row per Harvest time entry (columns and dtypes: ``TIME_ENTRY_COLUMNS``)."""
    rows = []
    for e in entries:
        rows.append({
            "entry_id": e.id,
            "spent_date": e.spent_date,
            "hours_centi": hours_to_centi(e.hours),
            "hours_text": str(e.hours),
            "billable": bool(e.billable),
            "is_running": bool(e.is_running),
            "is_locked": bool(e.is_locked),
            "user_id": e.user.id,
            "user_name": e.user.name if e.user.name is not None else "",
            "client_id": e.client.id,
            "client_name": e.client.name,
            "client_currency": e.client.currency or None,
            "project_id": e.project.id,
            "project_name": e.project.name,
            "project_code": e.project.code or None,
            "task_id": e.task.id,
            "task_name": e.task.name if e.task.name is not None else "",
            "notes": e.notes,
            "harvest_billable_rate": _dec_text(e.billable_rate),
            "updated_at": e.updated_at,
        })
    return _frame(rows, TIME_ENTRY_COLUMNS)


def _project_id(value: str | None) -> Any:
    if value is None:
        return pd.NA
    text = value.strip()
    if text.isdigit():
        return int(text)
    return pd.NA


def deals_frame(deals: Iterable[Deal], company_ids: Mapping[str, str], stage: str | None = None) -> pd.DataFrame:
    """One row per HubSpot deal (columns and dtypes: ``DEAL_COLUMNS``).

    Property values stay strings (``""`` becomes missing, except on the three billing overrides,
    where a blank is kept as ``""`` so the engine can hold it instead of silently falling back to
    the client's rules); ``harvest_project_id`` is a nullable
    Int64 (missing or non-numeric -> NA); ``company_id`` comes from ``company_ids`` (see
    :meth:`HubSpotClient.deal_company_ids`). With `stage` (the ready-for-billing stage id),
    ``stage_entered_at`` is when a deal in that stage entered it (read those properties too:
    ``stage_entry.entered_properties(stage)``).
    """
    rows = []
    for d in deals:
        entered = None
        if stage is not None and d.prop("dealstage") == stage:
            entered = next((v for v in (d.prop(n) for n in entered_properties(stage)) if v), None)
        rows.append({
            "deal_id": d.id,
            "dealname": d.prop("dealname") or "",
            "dealstage": d.prop("dealstage") or "",
            "pipeline": d.prop("pipeline") or "",
            "closedate": d.prop("closedate"),
            "createdate": d.prop("createdate"),
            "hs_lastmodifieddate": d.prop("hs_lastmodifieddate"),
            "harvest_project_id": _project_id(d.prop("harvest_project_id")),
            "billing_hourly_rate": _strip_keep_blank(d.properties.get("billing_hourly_rate")),
            "billing_discount_percent": _strip_keep_blank(d.properties.get("billing_discount_percent")),
            "billing_not_to_exceed": _strip_keep_blank(d.properties.get("billing_not_to_exceed")),
            "po_number": d.prop("po_number"),
            "company_id": company_ids.get(d.id),
            "deal_currency_code": _strip(d.prop("deal_currency_code")),
            "stage_entered_at": entered,
        })
    return _frame(rows, DEAL_COLUMNS)


def line_items_frame(records: Iterable[DealLineItem],
                     unreadable: Iterable[tuple[str, str]] = ()) -> pd.DataFrame:
    """One row per (deal, line item) (columns and dtypes: ``LINE_ITEM_COLUMNS``).

    ``sku`` is ``hs_sku``; ``price`` and ``quantity`` stay Decimal text (validated by the
    connector). ``unreadable`` (deal id, line item id) pairs, for line items associated with a
    deal but rejected or not returned, become rows with no name, sku, price or quantity, so the
    billing engine holds that deal's invoice instead of invoicing it without them.
    """
    rows = []
    for r in records:
        li = r.line_item
        rows.append({
            "deal_id": r.deal_id,
            "line_item_id": li.id,
            "name": li.name,
            "sku": _strip(li.sku),
            "price": _strip(li.price),
            "quantity": _strip(li.quantity),
            "amount": _strip(li.prop("amount")),
            "hs_discount_percentage": _strip(li.prop("hs_discount_percentage")),
            "discount": _strip(li.prop("discount")),
        })
    for deal_id, li_id in unreadable:
        rows.append({"deal_id": str(deal_id), "line_item_id": str(li_id), "name": None, "sku": None,
                     "price": None, "quantity": None, "amount": None, "hs_discount_percentage": None,
                     "discount": None})
    return _frame(rows, LINE_ITEM_COLUMNS)


def _strip_keep_blank(value: str | None) -> str | None:
    return None if value is None else value.strip()


def _strip(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip()
    return value or None


def _get(obj: Any, name: str, default: Any = None) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(name, default)
    value = getattr(obj, name, default)
    if value is default and getattr(obj, "model_extra", None):
        return obj.model_extra.get(name, default)
    return value


def _ref_value(ref: Any) -> str | None:
    if ref is None:
        return None
    value = _get(ref, "value")
    return None if value in (None, "") else str(value)


def _catalog_row(entity: str, obj: Any) -> dict[str, Any]:
    if entity == "Customer":
        name = _get(obj, "DisplayName")
        currency = _ref_value(_get(obj, "CurrencyRef"))
    elif entity == "Class" and _get(obj, "SubClass") and _get(obj, "FullyQualifiedName"):
        name = _get(obj, "FullyQualifiedName")
        currency = None
    else:
        name = _get(obj, "Name")
        currency = None
    active = _get(obj, "Active", True)
    sync_token = _get(obj, "SyncToken", "0")
    return {
        "entity": entity,
        "id": str(_get(obj, "Id")),
        "name": "" if name is None else str(name),
        "active": True if active is None else bool(active),
        "currency": currency,
        "sku": (_get(obj, "Sku") or None) if entity == "Item" else None,
        "sync_token": "0" if sync_token is None else str(sync_token),
    }


def catalog_frame(
    customers: Iterable[Any], items: Iterable[Any], classes: Iterable[Any], terms: Iterable[Any]
) -> pd.DataFrame:
    """QuickBooks name-list entities, active and inactive (columns: ``CATALOG_COLUMNS``).

    Accepts QBO dicts or the models of :mod:`sync_pipelines.connectors.quickbooks_models`.
    """
    rows = []
    for entity, objs in (("Customer", customers), ("Item", items), ("Class", classes), ("Term", terms)):
        for obj in objs:
            rows.append(_catalog_row(entity, obj))
    return _frame(rows, CATALOG_COLUMNS)


def rejected_frame(rejected: Iterable[Rejected]) -> pd.DataFrame:
    """Quarantined records (``system, entity, record_id, reason, raw_json``), all text."""
    rows = [
        {"system": r.system, "entity": r.entity, "record_id": r.record_id,
         "reason": r.reason, "raw_json": r.raw_json}
        for r in rejected
    ]
    return _frame(rows, REJECTED_COLUMNS)
