"""The month-end posting step per client-month: which drafts a run posts, and each board status."""

from __future__ import annotations

from decimal import Decimal

from sync_pipelines.posting.client_months import (
    BLOCKED,
    NEEDS_ATTENTION,
    NO_INVOICE,
    NOT_POSTED,
    POSTED,
    STOPPED_STATUS,
    client_month_status,
    month_posting,
    outcomes_by_client,
)
from sync_pipelines.posting.invoices import PostingOutcome


def _invoice(client: str, n: int, amount: str = "150.00", qty: str = "1", price: str = "150.00") -> dict:
    return {
        "invoice_key": f"r:{client}:2026-10:client:g1", "client_key": client, "currency": "USD", "status": "ready",
        "total": amount, "discount": "0", "minimum_fee": None, "cap_adjustment": "0", "entries": [[n, 100]],
        "payload": {"Line": [{"DetailType": "SalesItemLineDetail", "Amount": amount,
                              "SalesItemLineDetail": {"Qty": qty, "UnitPrice": price}}]},
    }


def _document(*invoices: dict) -> dict:
    return {"period": "2026-10", "realm_id": "r", "home_currency": "USD", "invoices": list(invoices)}


def test_only_the_selected_clients_are_posted_and_an_inconsistent_one_is_left_out() -> None:
    document = _document(_invoice("acme", 1), _invoice("globex", 2, amount="99.00"), _invoice("initech", 3))
    plan = month_posting(document, ["acme", "globex"])
    assert [i["client_key"] for i in plan.document["invoices"]] == ["acme"]
    assert list(plan.problems) == ["globex"] and "Qty x UnitPrice" in plan.problems["globex"][0]
    assert plan.document["realm_id"] == "r" and len(document["invoices"]) == 3  # the month's document is untouched


def _outcome(client: str, outcome: str) -> PostingOutcome:
    return PostingOutcome(key=f"r:{client}:2026-10:client:g1", client_key=client, period="2026-10", group_key="client",
                          outcome=outcome, expected_total=Decimal("150.00"), currency="USD")


def test_each_client_month_gets_its_own_status_worst_first() -> None:
    grouped = outcomes_by_client([_outcome("acme", "posted"), _outcome("globex", "failed"),
                                  _outcome("globex", "posted"), _outcome("initech", "held")])
    assert client_month_status(grouped["acme"]) == POSTED
    assert client_month_status(grouped["globex"]) == NOT_POSTED
    assert client_month_status(grouped["initech"]) == NEEDS_ATTENTION
    assert client_month_status([_outcome("a", "already_posted"), _outcome("a", "stopped")]) == STOPPED_STATUS
    assert client_month_status([_outcome("a", "recovered")]) == POSTED
    assert client_month_status([]) == NO_INVOICE
    assert client_month_status([], ["entry 1 is on both"]) == BLOCKED
