"""What the ledger knows, as plain data (the billing package never imports the ledger)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal


@dataclass(frozen=True)
class PostedInvoice:
    """An invoice the ledger holds as posted (voided ones must not be listed).

    `total` is the invoice total in the client's currency; `project_totals` splits the time
    charged per Harvest project (after discount share; used for deal not-to-exceed caps).
    """

    invoice_key: str
    client_key: str
    period: str  # "YYYY-MM"
    total: Decimal
    project_totals: Mapping[int, Decimal] = field(default_factory=dict)


@dataclass(frozen=True)
class BillingHistory:
    """The ledger's view needed to price a month.

    - `posted_entries`: Harvest entry id -> invoice key of the posted invoice holding it.
    - `posted_invoices`: posted invoices (for month and lifetime caps).
    - `generations`: (client_key, period, group_key) -> generation to use (default 1; the next
      one after a void).
    - `carryover_hours`: client_key -> unused included retainer hours carried INTO the period
      being priced (rollover; the previous month's `retainer_carry_forward_hours`).
    """

    posted_entries: Mapping[int, str] = field(default_factory=dict)
    posted_invoices: tuple[PostedInvoice, ...] = ()
    generations: Mapping[tuple[str, str, str], int] = field(default_factory=dict)
    carryover_hours: Mapping[str, Decimal] = field(default_factory=dict)

    def generation(self, client_key: str, period: str, group_key: str) -> int:
        return int(self.generations.get((client_key, period, group_key), 1))

    def _others(self, client_key: str, exclude_keys: Iterable[str]) -> list[PostedInvoice]:
        excluded = set(exclude_keys)
        return [p for p in self.posted_invoices if p.client_key == client_key and p.invoice_key not in excluded]

    def posted_total(self, client_key: str, period: str | None, exclude_keys: Iterable[str] = ()) -> Decimal:
        """Total posted for a client in `period` (None = lifetime up to any period), other keys only."""
        total = Decimal(0)
        for p in self._others(client_key, exclude_keys):
            if period is None or p.period == period:
                total += p.total
        return total

    def posted_project_total(self, client_key: str, project_id: int, exclude_keys: Iterable[str] = ()) -> Decimal:
        total = Decimal(0)
        for p in self._others(client_key, exclude_keys):
            total += Decimal(p.project_totals.get(int(project_id), 0))
        return total
