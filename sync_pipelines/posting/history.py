"""The ledger's history as the billing engine takes it.

The billing package never imports the ledger and the ledger never imports billing; this is the
one place that knows both shapes.
"""

from __future__ import annotations

from sync_pipelines.billing.history import BillingHistory, PostedInvoice
from sync_pipelines.ledger.types import LedgerHistory


def billing_history(history: LedgerHistory) -> BillingHistory:
    return BillingHistory(
        posted_entries=dict(history.billed_entries),
        posted_invoices=tuple(
            PostedInvoice(
                invoice_key=key, client_key=client, period=period, total=total,
                project_totals=dict(history.project_totals.get(key, {})),
            )
            for key, (client, period, total) in sorted(history.posted_by_key.items())
        ),
        generations=dict(history.generations),
        carryover_hours=dict(history.carryover_hours),
    )
