"""One invoice batch's answers recorded item by item (`posting.batches.send_invoice_batch`), with a
fake QuickBooks: every path leaves each key posted, held or failed -- never pending and lost."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from sync_pipelines.connectors.http import ApiUnavailable
from sync_pipelines.connectors.quickbooks import QboReconnectRequired
from sync_pipelines.ledger import Ledger
from sync_pipelines.posting.batches import batch_item_id, send_invoice_batch
from sync_pipelines.posting.protocol import ReadyToSend, prepare_invoice

from .conftest import REALM, draft


class FakeQbo:
    realm_id = REALM

    def __init__(self, answer: Any) -> None:
        self.answer = answer  # a function of the items, or an exception to raise
        self.sent: list[list[dict[str, Any]]] = []

    def batch(self, items: list[dict[str, Any]], request_id: str | None = None) -> dict[str, Any]:
        self.sent.append(items)
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer(items)

    def find_invoice_by_doc_number(self, doc_number: str) -> Any:
        return None


def _ready(ledger: Ledger, clients: list[str]) -> list[ReadyToSend]:
    out = []
    for c in clients:
        d = draft(client=c)
        key = d.pop("key")
        r = prepare_invoice(ledger, FakeQbo(None), key, **d)
        assert isinstance(r, ReadyToSend)
        out.append(r)
    return out


def _created(item: dict[str, Any], qbo_id: str) -> dict[str, Any]:
    inv = item["Invoice"]
    total = sum((line["Amount"] for line in inv["Line"]), Decimal("0"))
    return {"bId": item["bId"], "Invoice": {"Id": qbo_id, "SyncToken": "0", "DocNumber": inv["DocNumber"], "TotalAmt": total}}


def test_each_item_is_recorded_on_its_own(ledger: Ledger) -> None:
    ready = _ready(ledger, ["a", "b", "c", "d"])
    fault = {"type": "ValidationFault", "Error": [{"Message": "Invalid Reference Id", "Detail": "x", "code": "2500"}]}
    system = {"type": "SystemFault", "Error": [{"Message": "An application error has occurred", "code": "10000"}]}

    def answer(items: list[dict[str, Any]]) -> dict[str, Any]:
        a, b, c, _d = items  # d gets no answer at all
        return {a["bId"]: _created(a, "501"), b["bId"]: {"bId": b["bId"], "Fault": fault},
                c["bId"]: {"bId": c["bId"], "Fault": system}}

    qbo = FakeQbo(answer)
    sent = send_invoice_batch(ledger, qbo, ready)
    assert [item["bId"] for item in qbo.sent[0]] == [batch_item_id(r.key) for r in ready]
    assert [s.outcome.outcome for s in sent] == ["posted", "held", "failed", "failed"]
    assert [s.transient for s in sent] == [False, False, True, True]
    assert [ledger.get_invoice(r.key).status for r in ready] == ["posted", "held", "failed", "failed"]
    assert ledger.get_invoice(ready[0].key).qbo_id == "501"


def test_a_whole_batch_failure_is_never_a_hold(ledger: Ledger) -> None:
    ready = _ready(ledger, ["a", "b"])
    sent = send_invoice_batch(ledger, FakeQbo(ApiUnavailable("quickbooks", "POST", "/batch", 503)), ready)
    assert [s.outcome.outcome for s in sent] == ["failed", "failed"]
    assert {ledger.get_invoice(r.key).status for r in ready} == {"failed"}


def test_reconnect_required_records_every_item_then_raises(ledger: Ledger) -> None:
    ready = _ready(ledger, ["a", "b", "c"])
    with pytest.raises(QboReconnectRequired):
        send_invoice_batch(ledger, FakeQbo(QboReconnectRequired(REALM, "/oauth2/v1/tokens/bearer")), ready)
    assert {ledger.get_invoice(r.key).status for r in ready} == {"failed"}
