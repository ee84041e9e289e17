"""What the posting step needs to know about one draft invoice, independent of how it was priced."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any


@dataclass(frozen=True)
class PostingDraft:
    key: str
    realm_id: str
    client_key: str
    period: str
    group_key: str
    generation: int
    customer_name: str
    currency: str
    # The QuickBooks create body without CustomerRef (resolved at posting time: the customer may
    # not exist yet and is found or created first).
    payload: dict[str, Any]
    expected_total: Decimal
    request_id: str
    doc_number: str
    entries: tuple[tuple[int, int], ...]  # (Harvest entry id, billed centihours)
    status: str = "ready"  # ready | held
    hold_reasons: tuple[str, ...] = field(default_factory=tuple)
    # Billing facts the ledger keeps for later months: time charged per Harvest project (deal
    # not-to-exceed caps) and retainer hours carried forward (rollover).
    project_totals: dict[int, Decimal] = field(default_factory=dict)
    carry_forward_hours: Decimal | None = None

    def ledger_fields(self) -> dict[str, Any]:
        """The keyword arguments every ledger write for this draft takes."""
        return dict(
            realm_id=self.realm_id, client_key=self.client_key, period=self.period, group_key=self.group_key,
            generation=self.generation, expected_total=self.expected_total, currency=self.currency,
            request_id=self.request_id, doc_number=self.doc_number, entries=self.entries,
        )


# ---------------------------------------------------------------------------------------------
# The stored form of a client-month's drafts (the `invoice_drafts` asset): a JSON document, so
# that amounts keep their exact digits and each payload is stored byte for byte as it will be sent.


def drafts_document(result: Any, entries: Any) -> dict[str, Any]:
    """Build the drafts document from a billing result and the month's time-entries frame.

    ``result`` is a :class:`sync_pipelines.billing.engine.BillingResult`; ``entries`` the
    ``time_entries`` frame it was priced from (for the raw hours recorded per billed entry).
    """
    from sync_pipelines.billing.payload import invoice_payload

    raw_centi = dict(zip(entries["entry_id"].tolist(), entries["hours_centi"].tolist())) if len(entries) else {}
    billed = result.entries[result.entries["status"] == "billed"]
    by_invoice: dict[str, list[list[int]]] = {}
    for entry_id, key in zip(billed["entry_id"].tolist(), billed["invoice_key"].tolist()):
        by_invoice.setdefault(key, []).append([int(entry_id), int(raw_centi.get(entry_id, 0))])

    invoices = []
    for row in result.invoices.to_dict("records"):
        key = row["invoice_key"]
        payload = invoice_payload(result, key, {"name": row["customer_name"]})
        payload.pop("CustomerRef", None)
        invoices.append(
            {
                "invoice_key": key,
                "client_key": row["client_key"],
                "period": row["period"],
                "group_key": row["group_key"],
                "generation": int(row["generation"]),
                "customer_name": row["customer_name"],
                "currency": row["currency"],
                "subtotal": row["subtotal"],
                "discount": row["discount"],
                "minimum_fee": row["minimum_fee"],
                "cap_adjustment": row["cap_adjustment"],
                "write_down": row["write_down"],
                "total": row["total"],
                # our estimate of QuickBooks' tax from the company's tax codes (None: QuickBooks'
                # Automated Sales Tax decides); the total above is always pre-tax
                "expected_tax": row.get("expected_tax"),
                "tax_calculation": row.get("tax_calculation"),
                "status": row["status"],
                "hold_reasons": list(row["hold_reasons"] or []),
                "doc_number": row["doc_number"],
                "request_id": row["request_id"],
                "billed_hours": row["billed_hours"],
                "payload": payload,
                "entries": sorted(by_invoice.get(key, [])),
                # JSON object keys are strings; posting_drafts turns them back into project ids.
                "project_totals": {str(p): v for p, v in (row["project_totals"] or {}).items()},
                "carry_forward_hours": row["retainer_carry_forward_hours"],
            }
        )
    company = getattr(result, "company", None)
    return {"period": result.period, "realm_id": result.realm_id, "home_currency": result.home_currency,
            "company": None if company is None else company.summary(), "invoices": invoices}


def posting_drafts(document: dict[str, Any]) -> list[PostingDraft]:
    realm_id = document["realm_id"]
    return [
        PostingDraft(
            key=inv["invoice_key"],
            # a document of several companies names each invoice's realm (posting.company_drafts)
            realm_id=inv.get("realm_id") or realm_id,
            client_key=inv["client_key"],
            period=inv["period"],
            group_key=inv["group_key"],
            generation=int(inv["generation"]),
            customer_name=inv["customer_name"],
            currency=inv["currency"],
            payload=inv["payload"],
            expected_total=Decimal(str(inv["total"])),
            request_id=inv["request_id"],
            doc_number=inv["doc_number"],
            entries=tuple((int(e), int(c)) for e, c in inv["entries"]),
            status=inv["status"],
            hold_reasons=tuple(inv["hold_reasons"]),
            project_totals={int(p): Decimal(str(v)) for p, v in (inv.get("project_totals") or {}).items()},
            carry_forward_hours=None if inv.get("carry_forward_hours") is None else Decimal(str(inv["carry_forward_hours"])),
        )
        for inv in document["invoices"]
    ]
