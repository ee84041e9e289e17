"""`sync-pipelines ledger status`: what the ledger holds, by state, for the operator."""

from __future__ import annotations

import sys
from typing import TextIO

from sync_pipelines import config
from sync_pipelines.ledger import Ledger
from sync_pipelines.posting.drift import drift_of_record

# What an operator does about each state (the README's "Operating" section says the same).
NEXT_STEP = {
    "pending": "an attempt did not finish; `sync-pipelines ledger replay KEY` (it checks QuickBooks first; "
    "a key claimed by a crashed run is retried once its claim expires, or add --release-claim)",
    "failed": "QuickBooks was unavailable or refused; `sync-pipelines ledger replay KEY` or re-run the client's month",
    "held": "fix the reason (rules, QuickBooks item/customer), then re-run the client's month "
    "(`sync-pipelines bill --month YYYY-MM --client CLIENT`)",
    "drift": "inputs changed after posting; nothing was re-posted: add the proposed true-up line to the next "
    "invoice or post the proposed credit memo (reconciliation report, `adjustment` column)",
    "voided": "voided in QuickBooks; `sync-pipelines ledger reissue KEY` posts the next generation",
    "posted": "",
    "write-back": "CRM write-backs still to do; they are retried by every run of the month, or "
    "`sync-pipelines ledger replay KEY`",
}


def print_status(month: str | None = None, client: str | None = None, *, out: TextIO | None = None) -> int:
    out = out or sys.stdout  # resolved per call: sys.stdout may be swapped (tests, redirection)
    ledger = Ledger(config.ledger_url())
    ledger.migrate()
    rows = ledger.status(period=month, client=client)
    if not rows:
        out.write("The ledger holds no invoices" + (f" for {month}" if month else "") + ".\n")
        return 0
    counts: dict[str, int] = {}
    for r in rows:
        counts[r.status] = counts.get(r.status, 0) + 1
        if r.status in ("posted", "drift") and r.payment_status in ("paid", "partially_paid"):
            label = r.payment_status.replace("_", " ")
            counts[label] = counts.get(label, 0) + 1
    out.write("  ".join(f"{k}: {v}" for k, v in sorted(counts.items())) + "\n\n")
    out.write(f"{'status':8} {'period':7} {'client':20} {'doc number':16} {'QBO id':8} {'total':>12}  key\n")
    for r in rows:
        total = r.qbo_total_amt if r.qbo_total_amt is not None else r.expected_total
        out.write(
            f"{r.status:8} {r.period:7} {r.client_key[:20]:20} {(r.qbo_doc_number or r.doc_number or '')[:16]:16} "
            f"{(r.qbo_id or '-'):8} {str(total or ''):>12} {r.currency or ''}  {r.key}\n"
        )
        if r.status in ("posted", "drift") and r.payment_status in ("paid", "partially_paid"):
            out.write(f"         {r.payment_status.replace('_', ' ')}: {r.amount_paid} {r.currency or ''} received"
                      + (f", {r.qbo_balance} still owed" if r.qbo_balance else "") + "\n")
        if r.status == "voided" and r.voided_how == "deleted":
            out.write("         deleted in QuickBooks (not just voided)\n")
        detail = r.last_error or "; ".join(r.hold_reasons)
        if r.status != "posted" and detail:
            out.write(f"         {detail}\n")
        if r.total_mismatch:
            out.write(f"         QuickBooks TotalAmt {r.qbo_total_amt} differs from our total {r.expected_total}\n")
        drift = drift_of_record(r)
        if drift is not None:
            out.write(f"         drift: {drift.summary()}\n")
    writebacks = [w for w in ledger.pending_writebacks(limit=100_000) if w.invoice_key in {r.key for r in rows}]
    if writebacks:
        counts["write-back"] = len(writebacks)
        out.write(f"\nCRM write-backs not done yet: {len(writebacks)}\n")
        for w in writebacks[:50]:
            out.write(f"  deal {w.deal_id:14} {w.status:8} attempts {w.attempts}  {w.invoice_key}"
                      + (f"\n    {w.last_error}" if w.last_error else "") + "\n")
    todo = sorted(s for s in counts if NEXT_STEP.get(s))
    if todo:
        out.write("\nNext steps:\n")
        for s in todo:
            out.write(f"  {s}: {NEXT_STEP[s]}\n")
    return 0
