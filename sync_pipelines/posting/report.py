"""The reconciliation report of one client-month: everything that was not simply billed, and why.

Rows, by section: ``excluded`` (time entries not billed, with the reason), ``held`` (invoices
not posted, with every reason), ``write_down`` (cap adjustments), ``drift`` / ``failed`` /
``posted`` / ``already_posted`` / ``recovered`` (what posting did), and ``unmatched_qbo_invoice``
(an invoice in QuickBooks for the customer and month that this run did not create).

A ``drift`` row carries the delta (``hours``: billed hours, ``amount``: money, new draft minus
posted) and, in ``adjustment``, the proposed true-up line or CreditMemo body as JSON.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from sync_pipelines import money

REPORT_COLUMNS = ["section", "invoice_key", "entry_id", "spent_date", "person", "task", "hours", "amount",
                  "currency", "qbo_id", "reason", "adjustment"]


def reconciliation_report(
    entries: pd.DataFrame,
    drafts: dict[str, Any],
    outcomes: pd.DataFrame,
    existing_invoices: pd.DataFrame,
) -> pd.DataFrame:
    rows: list[dict[str, Any]] = []
    excluded = entries[entries["status"] != "billed"]
    for e in excluded.to_dict("records"):
        rows.append({
            "section": "excluded", "entry_id": int(e["entry_id"]), "spent_date": str(e.get("spent_date")),
            "person": e.get("user_name"), "task": e.get("task_name"),
            "hours": str(money.hours_from_centi(e["hours_centi"])) if pd.notna(e.get("hours_centi")) else None,
            "reason": e["reason"],
        })
    for inv in drafts["invoices"]:
        if inv["status"] == "held":
            rows.append({"section": "held", "invoice_key": inv["invoice_key"], "amount": str(inv["total"]),
                         "currency": inv["currency"], "reason": "; ".join(inv["hold_reasons"])})
        write_down = inv.get("write_down")
        if write_down not in (None, "0", 0) and money.to_decimal(write_down) != 0:
            rows.append({"section": "write_down", "invoice_key": inv["invoice_key"], "amount": str(write_down),
                         "currency": inv["currency"], "reason": "not-to-exceed cap reached"})
    ours = set()
    for o in outcomes.to_dict("records"):
        if o.get("qbo_id"):
            ours.add(str(o["qbo_id"]))
        if o["outcome"] == "held" and any(r.get("invoice_key") == o["invoice_key"] and r["section"] == "held" for r in rows):
            continue
        row = {"section": o["outcome"], "invoice_key": o["invoice_key"],
               "amount": o["qbo_total"] or o["expected_total"], "currency": o["currency"],
               "qbo_id": o.get("qbo_id"), "reason": o.get("reasons") or None}
        if o["outcome"] == "drift" and _present(o.get("delta_amount")):
            row.update(hours=o.get("delta_hours"), amount=o["delta_amount"],
                       adjustment=o.get("adjustment") if _present(o.get("adjustment")) else None)
        rows.append(row)
    customers = {inv["customer_name"] for inv in drafts["invoices"]}
    if len(existing_invoices):
        for q in existing_invoices.to_dict("records"):
            if q["customer_name"] in customers and str(q["qbo_id"]) not in ours:
                rows.append({"section": "unmatched_qbo_invoice", "qbo_id": q["qbo_id"], "amount": q["total"],
                             "reason": f"QuickBooks invoice {q['doc_number']} dated {q['txn_date']} for this "
                                       "customer was not created by this run: check it is not a duplicate"})
    return pd.DataFrame(rows, columns=REPORT_COLUMNS, dtype=object)


def _present(value: Any) -> bool:
    # outcome frames written before drift deltas existed lack the columns (or hold NaN)
    return value is not None and not (isinstance(value, float) and pd.isna(value))
