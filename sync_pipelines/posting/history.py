"""The ledger's history as the billing engine takes it (the billing package never imports the ledger)."""

from __future__ import annotations

from sync_pipelines.billing.history import BillingHistory, PostedInvoice
from sync_pipelines.ledger.types import LedgerHistory


def billing_history(history: LedgerHistory) -> BillingHistory:
    return BillingHistory(
        posted_entries=dict(history.billed_entries),
        posted_invoices=tuple(
            PostedInvoice(invoice_key=key, client_key=client, period=period, total=total)
            for key, (client, period, total) in sorted(history.posted_by_key.items())
        ),
        generations=dict(history.generations),
    )
