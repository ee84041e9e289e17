"""QuickBooks batch calls for posting: customers found or created, invoices created 30 at a time.

The exactly-once protocol (DESIGN §6) holds item by item inside a batch:

* every invoice's ledger row (exact payload + hash, pending, claimed by this run) is committed by
  :func:`~sync_pipelines.posting.protocol.prepare_invoice` BEFORE the batch carrying it is sent;
* each item's ``bId`` derives from its invoice key (:func:`batch_item_id`), and the batch's
  ``requestid`` from its items' request ids (:func:`batch_request_id`), so the same items re-sent
  after a lost response replay QuickBooks' first answer instead of creating anything twice;
* each item's answer is recorded on its own (:func:`~sync_pipelines.posting.protocol.finish_invoice`):
  a rejected invoice is held, a duplicate DocNumber looked up and recovered, a transient item fault
  recorded as failed and retried in a later batch of the same run -- one bad invoice never holds
  its batch-mates;
* a crash or timeout anywhere leaves the rows pending; the next run looks each one up by its
  DocNumber/PrivateNote fingerprint before anything is sent again.

Customers have a natural key (DisplayName is unique in a company: 6240 on a second create), so
their batches carry no requestid: a re-sent create is refused with 6240 and the customer looked up.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sync_pipelines.connectors.http import ApiError, ApiRateLimited, ApiUnavailable
from sync_pipelines.connectors.quickbooks import (
    BATCH_ID_MAX,
    BATCH_MAX_ITEMS,
    QboReconnectRequired,
    QuickBooksClient,
    batch_item_error,
)
from sync_pipelines.ledger import Ledger
from sync_pipelines.posting.protocol import PostOutcome, ReadyToSend, finish_invoice

log = logging.getLogger(__name__)

# Fixed forever: a batch re-sent after a crash must get the same requestid to replay its answer.
_BATCH_NAMESPACE = uuid.UUID("0b7f3c1e-5a2d-4e8f-b6a1-93d4c2e7f058")

#: How many times one run re-sends invoices whose batch item failed transiently (throttle,
#: SystemFault) before leaving them ``failed`` for the next run.
TRANSIENT_ROUNDS = 2


def batch_item_id(key: str) -> str:
    """The ``bId`` of `key` inside a batch: 10 hex characters of its SHA-256 (Intuit: ≤ 10
    characters when the batch carries a requestid). Deterministic, so a log line, a replayed
    response and the ledger row name the same item."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:BATCH_ID_MAX]


def batch_request_id(item_request_ids: Iterable[str]) -> str:
    """The batch ``requestid`` (36 characters, Intuit's batch limit) for a set of items, from
    their own request ids: the same items re-sent replay the first answer; any item re-tried
    under a fresh request id (after a QuickBooks error) makes a new batch id."""
    return str(uuid.uuid5(_BATCH_NAMESPACE, "\n".join(sorted(item_request_ids))))


def chunks(items: Sequence[Any], size: int = BATCH_MAX_ITEMS) -> Iterable[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


# -------------------------------------------------------------------------------------------
# customers


def resolve_customers(
    qbo: QuickBooksClient, wanted: dict[str, str | None], *, batch_size: int = BATCH_MAX_ITEMS,
    concurrency: int = 3,
) -> dict[str, dict[str, Any] | ApiError]:
    """Every customer in `wanted` ({DisplayName: currency to create it in, or None}), found
    (inactive ones too, ``DisplayName IN`` queries of 50 names) or created in batches; or the
    error that kept it from existing (a refused name, an outage). Up to `concurrency` queries or
    batches at once (the company's budget caps them further). ``QboReconnectRequired`` is raised."""
    names = sorted(wanted)
    lookups = [names[i : i + 50] for i in range(0, len(names), 50)]
    found: dict[str, dict[str, Any] | ApiError] = {}
    for part in _each(concurrency, lambda part: _find_customers(qbo, part), lookups):
        found.update(part)
    missing = [n for n in names if n not in found]
    for created in _each(concurrency, lambda part: _create_customers(qbo, wanted, part), list(chunks(missing, batch_size))):
        found.update(created)
    return found


def _find_customers(qbo: QuickBooksClient, part: Sequence[str]) -> dict[str, dict[str, Any] | ApiError]:
    try:
        return dict(qbo.find_customers(part))
    except QboReconnectRequired:
        raise
    except ApiError as exc:  # an outage: these drafts fail (not held), the next run retries
        return {name: exc for name in part}


def _each(concurrency: int, fn: Any, parts: list[Any]) -> list[Any]:
    if concurrency <= 1 or len(parts) <= 1:
        return [fn(p) for p in parts]
    with ThreadPoolExecutor(max_workers=min(concurrency, len(parts)), thread_name_prefix="qbo-customers") as pool:
        return list(pool.map(fn, parts))


def _create_customers(qbo: QuickBooksClient, wanted: dict[str, str | None],
                      part: Sequence[str]) -> dict[str, dict[str, Any] | ApiError]:
    found: dict[str, dict[str, Any] | ApiError] = {}
    by_bid = {batch_item_id("customer:" + name): name for name in part}
    items = []
    for bid, name in by_bid.items():
        body: dict[str, Any] = {"DisplayName": name}
        if wanted[name]:
            body["CurrencyRef"] = {"value": wanted[name]}
        items.append({"bId": bid, "operation": "create", "Customer": body})
    try:
        answers = qbo.batch(items)
    except QboReconnectRequired:
        raise
    except ApiError as exc:
        return {name: exc for name in part}
    for bid, name in by_bid.items():
        answer = answers.get(bid)
        error = batch_item_error(answer, qbo.realm_id) if answer is not None else _no_answer(qbo, bid)
        if error is None and isinstance(answer.get("Customer"), dict):  # type: ignore[union-attr]
            found[name] = dict(answer["Customer"])  # type: ignore[index]
            continue
        if error is not None and error.code == "6240":  # the name exists (created meanwhile?)
            try:
                row = qbo.find_customer(name)
            except QboReconnectRequired:
                raise
            except ApiError as exc:
                row, error = None, exc
            if row is not None:
                found[name] = row
                continue
        found[name] = error or _no_answer(qbo, bid)
    return found


def _no_answer(qbo: QuickBooksClient, bid: str) -> ApiError:
    return ApiUnavailable("quickbooks", "POST", f"/v3/company/{qbo.realm_id}/batch#{bid}", 200,
                          api_message="the batch response has no item for this bId")


# -------------------------------------------------------------------------------------------
# invoices


@dataclass(frozen=True)
class SentItem:
    ready: ReadyToSend
    outcome: PostOutcome
    transient: bool  # failed on a throttle/system fault of its own item: worth re-sending


def send_invoice_batch(
    ledger: Ledger, qbo: QuickBooksClient, ready: Sequence[ReadyToSend],
) -> list[SentItem]:
    """One batch call creating `ready` (≤ 30 keys whose ledger rows are already pending), then
    each item's answer recorded on its own -- in one ledger transaction, except the duplicate
    DocNumber items (6140), whose invoice is looked up first. A whole-batch failure (outage,
    timeout after the retries) records every item failed: the next run looks each one up before
    re-sending. ``QboReconnectRequired`` is raised after every item is recorded failed."""
    bids = [batch_item_id(r.key) for r in ready]
    if len(set(bids)) != len(bids):
        raise ValueError("two invoice keys share a bId in one batch; split them")
    items = [{"bId": bid, "operation": "create", "Invoice": r.body} for bid, r in zip(bids, ready)]
    try:
        answers = qbo.batch(items, batch_request_id(r.request_id for r in ready))
    except QboReconnectRequired as exc:
        with ledger.one_transaction():
            for r in ready:
                _failed_then(ledger, r, exc)
        raise
    except ApiError as exc:
        with ledger.one_transaction():
            # The batch as a whole failed: not these invoices' fault, so never "held".
            return [SentItem(r, finish_invoice(ledger, qbo, r, error=exc, is_rejection=lambda _e: False), False)
                    for r in ready]
    answered: list[tuple[ReadyToSend, ApiError | None, dict[str, Any] | None]] = []
    for bid, r in zip(bids, ready):
        answer = answers.get(bid)
        error = batch_item_error(answer, qbo.realm_id) if answer is not None else _no_answer(qbo, bid)
        invoice = answer.get("Invoice") if answer is not None and error is None else None
        if error is None and not isinstance(invoice, dict):
            error = _no_answer(qbo, bid)
        created = None if error is not None else {**invoice, "intuit_tid": answer.get("intuit_tid")}  # type: ignore[union-attr,dict-item]
        answered.append((r, error, created))

    def record(r: ReadyToSend, error: ApiError | None, created: dict[str, Any] | None) -> SentItem:
        if error is None:
            return SentItem(r, finish_invoice(ledger, qbo, r, created=created), transient=False)
        outcome = finish_invoice(ledger, qbo, r, error=error)
        return SentItem(r, outcome, transient=isinstance(error, (ApiRateLimited, ApiUnavailable))
                        and outcome.outcome == "failed")

    out: dict[int, SentItem] = {}
    with ledger.one_transaction():
        for n, (r, error, created) in enumerate(answered):
            if error is None or error.code != "6140":
                out[n] = record(r, error, created)
    for n, (r, error, created) in enumerate(answered):
        if n not in out:  # 6140: our invoice exists; looked up (an API call) and recovered
            out[n] = record(r, error, created)
    return [out[n] for n in range(len(answered))]


def _failed_then(ledger: Ledger, r: ReadyToSend, exc: Exception) -> PostOutcome:
    from sync_pipelines.posting.protocol import _message

    ledger.record_failed(r.key, _message(exc))
    return PostOutcome(r.key, "failed", r.begin, message=_message(exc), error_class=type(exc).__name__)
