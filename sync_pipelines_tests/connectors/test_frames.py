from __future__ import annotations

from datetime import date
from decimal import Decimal

import pandas as pd
import pytest

from sync_pipelines import money
from sync_pipelines.connectors.harvest_models import TimeEntry
from sync_pipelines.connectors.http import Rejected
from sync_pipelines.connectors.hubspot_models import Deal
from sync_pipelines.extract.frames import (
    CATALOG_COLUMNS,
    DEAL_COLUMNS,
    REJECTED_COLUMNS,
    TIME_ENTRY_COLUMNS,
    catalog_frame,
    deals_frame,
    hours_to_centi,
    rejected_frame,
    time_entries_frame,
)


def _entry(i, hours, **over):
    raw = {"id": i, "spent_date": "2026-10-0%d" % i, "hours": hours, "user": {"id": 1, "name": "Ann"},
           "client": {"id": 2, "name": "Acme", "currency": "USD"}, "project": {"id": 3, "name": "P", "code": "P1"},
           "task": {"id": 4, "name": "Dev"}, "billable": True, "updated_at": "2026-10-05T10:00:00Z",
           "billable_rate": Decimal("150.00"), "notes": "did things"}
    raw.update(over)
    return TimeEntry.model_validate(raw)


def assert_dtypes(df, columns):
    assert list(df.columns) == list(columns)
    for name, dtype in columns.items():
        assert df[name].dtype == dtype, (name, df[name].dtype, dtype)
    for name in df.columns:
        assert df[name].dtype != "float64", name


@pytest.mark.parametrize("frame,columns", [
    (lambda: time_entries_frame([]), TIME_ENTRY_COLUMNS),
    (lambda: deals_frame([], {}), DEAL_COLUMNS),
    (lambda: catalog_frame([], [], [], []), CATALOG_COLUMNS),
    (lambda: rejected_frame([]), REJECTED_COLUMNS),
])
def test_empty_frames_have_all_columns_and_dtypes(frame, columns):
    df = frame()
    assert len(df) == 0
    assert_dtypes(df, columns)


def test_time_entries_frame_exact_hours():
    hours = money.loads('[2.11, 0.1, 1.255, 3, 0.29]')
    df = time_entries_frame([_entry(i + 1, h) for i, h in enumerate(hours)])
    assert_dtypes(df, TIME_ENTRY_COLUMNS)
    assert df["hours_centi"].tolist() == [211, 10, 126, 300, 29]
    assert df["hours_text"].tolist() == ["2.11", "0.1", "1.255", "3", "0.29"]
    assert df["spent_date"].iloc[0] == date(2026, 10, 1)
    assert df["harvest_billable_rate"].iloc[0] == "150.00"
    assert df["client_currency"].iloc[0] == "USD" and df["project_code"].iloc[0] == "P1"


def test_time_entries_frame_missing_optional():
    e = _entry(1, Decimal("1"), client={"id": 2, "name": "Acme"}, project={"id": 3, "name": "P"},
               notes=None, billable_rate=None)
    df = time_entries_frame([e])
    assert pd.isna(df["client_currency"].iloc[0]) and pd.isna(df["project_code"].iloc[0])
    assert pd.isna(df["notes"].iloc[0]) and pd.isna(df["harvest_billable_rate"].iloc[0])
    assert_dtypes(df, TIME_ENTRY_COLUMNS)


def test_hours_to_centi_refuses_float():
    with pytest.raises(TypeError):
        hours_to_centi(1.5)
    assert hours_to_centi(Decimal("0.005")) == 1


def test_deals_frame():
    deals = [
        Deal.model_validate({"id": "101", "properties": {
            "dealname": "Acme Oct", "dealstage": "closedwon", "pipeline": "default",
            "closedate": "2026-10-31T00:00:00.000Z", "hs_lastmodifieddate": "2026-10-01T00:00:00.000Z",
            "harvest_project_id": "3", "billing_hourly_rate": "150.00", "billing_discount_percent": "",
            "billing_not_to_exceed": None, "po_number": "PO-1"}}),
        Deal.model_validate({"id": "102", "properties": {"dealname": "X", "harvest_project_id": "abc"}}),
    ]
    df = deals_frame(deals, {"101": "7005"})
    assert_dtypes(df, DEAL_COLUMNS)
    assert df["harvest_project_id"].iloc[0] == 3 and pd.isna(df["harvest_project_id"].iloc[1])
    assert df["billing_hourly_rate"].iloc[0] == "150.00"
    # issue 13: a blank override is kept as "" (the engine holds it); a missing one is NA
    assert df["billing_discount_percent"].iloc[0] == "" and pd.isna(df["billing_not_to_exceed"].iloc[0])
    assert df["company_id"].tolist()[0] == "7005" and pd.isna(df["company_id"].iloc[1])


def test_catalog_frame_dicts_and_models():
    from sync_pipelines.connectors.quickbooks_models import Class, Item

    customers = [{"Id": "1", "DisplayName": "Amy's", "Active": False, "SyncToken": "2",
                  "CurrencyRef": {"value": "EUR", "name": "Euro"}}]
    items = [Item.model_validate({"Id": "5", "Name": "Consulting", "Sku": "CONS", "SyncToken": "0"})]
    classes = [Class.model_validate({"Id": "8", "Name": "East", "SubClass": True,
                                     "FullyQualifiedName": "Regions:East"}),
               {"Id": "9", "Name": "West", "SyncToken": "1"}]
    terms = [{"Id": "3", "Name": "Net 30", "SyncToken": "0", "Active": True}]
    df = catalog_frame(customers, items, classes, terms)
    assert_dtypes(df, CATALOG_COLUMNS)
    assert df["entity"].tolist() == ["Customer", "Item", "Class", "Class", "Term"]
    assert df["name"].tolist() == ["Amy's", "Consulting", "Regions:East", "West", "Net 30"]
    assert df["active"].tolist() == [False, True, True, True, True]
    assert df["currency"].iloc[0] == "EUR" and df["sku"].iloc[1] == "CONS"
    assert df["sync_token"].tolist() == ["2", "0", "0", "1", "0"]


def test_rejected_frame():
    df = rejected_frame([Rejected("harvest", "time_entry", "5", "project: Field required", '{"id": 5}'),
                         Rejected("hubspot", "deal", None, "bad", "[]")])
    assert_dtypes(df, REJECTED_COLUMNS)
    assert df["record_id"].iloc[0] == "5" and pd.isna(df["record_id"].iloc[1])
