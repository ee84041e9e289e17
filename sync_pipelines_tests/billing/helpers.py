"""Builders for the engine's input frames (columns exactly as docs/architecture.md "Frames")."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

import pandas as pd

from sync_pipelines.billing import BillingHistory, parse_rules, price_month

ENTRY_COLUMNS = [
    "entry_id", "spent_date", "hours_centi", "hours_text", "billable", "is_running", "is_locked", "user_id",
    "user_name", "client_id", "client_name", "client_currency", "project_id", "project_name", "project_code",
    "task_id", "task_name", "notes", "harvest_billable_rate", "updated_at",
]
DEAL_COLUMNS = [
    "deal_id", "dealname", "dealstage", "pipeline", "closedate", "createdate", "hs_lastmodifieddate",
    "harvest_project_id", "billing_hourly_rate", "billing_discount_percent", "billing_not_to_exceed",
    "po_number", "company_id", "deal_currency_code",
]
CATALOG_COLUMNS = ["entity", "id", "name", "active", "currency", "sku", "sync_token"]

USERS = {1: "Jane Doe", 2: "Bob Smith", 3: "Ann Lee"}
TASKS = {11: "Design", 12: "Development", 13: "Meetings"}
PROJECTS = {4001: ("ACME-1", "Website"), 4002: ("ACME-2", "Mobile app"), 4003: (None, "Support")}
CLIENTS = {1001: ("Acme", "USD"), 1002: ("Beta GmbH", "EUR"), 1003: ("Kaisha", "JPY"), 1009: ("Unknown Co", "USD")}


def entry(entry_id: int, day: str | date, hours: str, *, user: int = 1, task: int = 11, project: int = 4001,
          client: int = 1001, billable: bool = True, running: bool = False, notes: str | None = None,
          currency: Any = "default") -> dict[str, Any]:
    d = date.fromisoformat(day) if isinstance(day, str) else day
    h = Decimal(hours)
    code, pname = PROJECTS.get(project, (f"P-{project}", f"Project {project}"))
    cname, ccur = CLIENTS.get(client, (f"Client {client}", "USD"))
    return {
        "entry_id": entry_id, "spent_date": d, "hours_centi": int(h * 100), "hours_text": hours,
        "billable": billable, "is_running": running, "is_locked": False, "user_id": user,
        "user_name": USERS.get(user, f"User {user}"), "client_id": client, "client_name": cname,
        "client_currency": ccur if currency == "default" else currency, "project_id": project,
        "project_name": pname, "project_code": code, "task_id": task, "task_name": TASKS.get(task, f"Task {task}"),
        "notes": notes, "harvest_billable_rate": None, "updated_at": "2026-11-01T00:00:00Z",
    }


def entries_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=ENTRY_COLUMNS)
    for c in ("entry_id", "hours_centi", "user_id", "client_id", "project_id", "task_id"):
        df[c] = df[c].astype("int64")
    for c in ("billable", "is_running", "is_locked"):
        df[c] = df[c].astype(bool)
    return df


def deal(deal_id: str, project: int | None, *, rate: str | None = None, discount: str | None = None,
         nte: str | None = None, po: str | None = None, closedate: str | None = "2026-01-15T12:00:00Z",
         createdate: str | None = "2026-01-01T12:00:00Z") -> dict[str, Any]:
    return {
        "deal_id": deal_id, "dealname": f"Deal {deal_id}", "dealstage": "closedwon", "pipeline": "default",
        "closedate": closedate, "createdate": createdate, "hs_lastmodifieddate": "2026-01-01T00:00:00Z",
        "harvest_project_id": project, "billing_hourly_rate": rate, "billing_discount_percent": discount,
        "billing_not_to_exceed": nte, "po_number": po, "company_id": "5001",
    }


def deals_frame(rows: list[dict[str, Any]] | None = None) -> pd.DataFrame:
    df = pd.DataFrame(rows or [], columns=DEAL_COLUMNS)
    df["harvest_project_id"] = df["harvest_project_id"].astype("Int64")
    return df


STANDARD_CATALOG = [
    ("Item", "1", "Services"), ("Item", "2", "Consulting"), ("Item", "3", "Design Services"),
    ("Class", "10", "Consulting"), ("Term", "20", "Net 30"), ("Term", "21", "Net 15"),
    ("Customer", "58", "Acme Corp"),
]


def catalog_frame(rows: list[tuple] | None = None, *, extra: list[tuple] | None = None) -> pd.DataFrame:
    out = []
    for r in (STANDARD_CATALOG if rows is None else rows) + (extra or []):
        entity, id_, name = r[:3]
        active = r[3] if len(r) > 3 else True
        currency = r[4] if len(r) > 4 else None
        out.append({"entity": entity, "id": id_, "name": name, "active": active, "currency": currency,
                    "sku": None, "sync_token": "0"})
    return pd.DataFrame(out, columns=CATALOG_COLUMNS)


HEAD = """\
version: 1
firm: {timezone: America/New_York, home_currency: USD}
defaults:
  rounding: {increment_minutes: 6, mode: up, scope: entry}
  invoice: {group_by: client, line_detail: task, terms: "Net 30"}
  qbo: {item: "Services"}
clients:
"""


def rules_for(clients_yaml: str):
    return parse_rules(HEAD + clients_yaml, "test")


def run(clients_yaml: str, rows: list[dict[str, Any]], *, deals: list[dict[str, Any]] | None = None,
        catalog: pd.DataFrame | None = None, history: BillingHistory | None = None, period: str = "2026-10",
        clients: list[str] | None = None):
    return price_month(rules_for(clients_yaml), period, entries_frame(rows), deals_frame(deals),
                       catalog_frame() if catalog is None else catalog, history or BillingHistory(), "9130",
                       clients=clients)


def only_invoice(result) -> dict[str, Any]:
    assert len(result.invoices) == 1, result.invoices
    return result.invoices.iloc[0].to_dict()


def lines_of(result, key: str | None = None) -> list[dict[str, Any]]:
    df = result.lines if key is None else result.lines[result.lines["invoice_key"] == key]
    return df.sort_values(["invoice_key", "line_no"]).to_dict("records")


ACME = """\
  acme:
    harvest_client_id: 1001
    qbo_customer: "Acme Corp"
    currency: USD
"""
