"""`sync-pipelines ledger status`: what the ledger holds, by state, for the operator."""

from __future__ import annotations

import sys
from typing import TextIO

from sync_pipelines import config
from sync_pipelines.ledger import Ledger

# What an operator does about each state (the README's "Operating" section says the same).
NEXT_STEP = {
    "pending": "an attempt did not finish; re-run the client's month (it checks QuickBooks first)",
    "failed": "QuickBooks was unavailable or refused; re-run the client's month",
    "held": "fix the reason (rules, QuickBooks item/customer), then re-run the client's month",
    "drift": "inputs changed after posting; review the reconciliation report (nothing was re-posted)",
    "voided": "voided in QuickBooks; the next run issues the next generation",
    "posted": "",
}


def print_status(month: str | None = None, client: str | None = None, *, out: TextIO = sys.stdout) -> int:
    ledger = Ledger(config.ledger_url())
    ledger.migrate()
    rows = ledger.status(period=month, client=client)
    if not rows:
        out.write("The ledger holds no invoices" + (f" for {month}" if month else "") + ".\n")
        return 0
    counts: dict[str, int] = {}
    for r in rows:
        counts[r.status] = counts.get(r.status, 0) + 1
    out.write("  ".join(f"{k}: {v}" for k, v in sorted(counts.items())) + "\n\n")
    out.write(f"{'status':8} {'period':7} {'client':20} {'doc number':16} {'QBO id':8} {'total':>12}  key\n")
    for r in rows:
        total = r.qbo_total_amt if r.qbo_total_amt is not None else r.expected_total
        out.write(
            f"{r.status:8} {r.period:7} {r.client_key[:20]:20} {(r.qbo_doc_number or r.doc_number or '')[:16]:16} "
            f"{(r.qbo_id or '-'):8} {str(total or ''):>12} {r.currency or ''}  {r.key}\n"
        )
        detail = r.last_error or "; ".join(r.hold_reasons)
        if r.status != "posted" and detail:
            out.write(f"         {detail}\n")
        if r.total_mismatch:
            out.write(f"         QuickBooks TotalAmt {r.qbo_total_amt} differs from our total {r.expected_total}\n")
    todo = sorted(s for s in counts if NEXT_STEP.get(s))
    if todo:
        out.write("\nNext steps:\n")
        for s in todo:
            out.write(f"  {s}: {NEXT_STEP[s]}\n")
    return 0
