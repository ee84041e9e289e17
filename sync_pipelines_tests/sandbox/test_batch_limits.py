"""The sandbox at QuickBooks' batch limits and latency, over real HTTP: ≤ 30 items, 40 batch
calls a minute per realm, 10 a second, ≤ 10 in flight, a batch requestid ≤ 36 characters, the
per-item fault shape, and requests served side by side (latency overlaps instead of adding up)."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from sync_pipelines.sandbox import SandboxServer
from sync_pipelines.sandbox.limits import parse_latency

from .conftest import Qbo, body, small_fixture
from .test_quickbooks import invoice_body


def _query_batch(n: int) -> dict:
    return {"BatchItemRequest": [{"bId": f"q{i}", "Query": "SELECT * FROM Item"} for i in range(n)]}


def test_batch_calls_over_40_a_minute_are_throttled_per_realm():
    with SandboxServer(small_fixture(), rate_limits={"qbo_batch_per_minute": 3}) as sb:
        q = Qbo(sb)
        codes = [q.post("batch", _query_batch(2)).status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429]
        # Plain calls still pass: the batch window is on top of the 500/min one.
        assert q.query("select * from Item").status_code == 200


def test_thirty_items_pass_thirty_one_do_not(sb):
    q = Qbo(sb)
    ok = q.post("batch", _query_batch(30))
    assert ok.status_code == 200 and len(body(ok)["BatchItemResponse"]) == 30
    too_many = q.post("batch", _query_batch(31))
    assert too_many.status_code == 400
    assert "maximum is 30" in too_many.text


def test_batch_requestid_is_36_at_most_and_bids_10(sb):
    q = Qbo(sb)
    assert q.post("batch", _query_batch(1), requestid="r" * 37).status_code == 400
    assert q.post("batch", _query_batch(1), requestid="r" * 36).status_code == 200
    long_bid = {"BatchItemRequest": [{"bId": "b" * 11, "Query": "SELECT * FROM Item"}]}
    assert q.post("batch", long_bid, requestid="rid-long-bid").status_code == 400
    assert q.post("batch", long_bid).status_code == 200  # without a requestid the bId may be longer


def test_a_batch_replays_its_first_answer_for_the_same_requestid(sb):
    q = Qbo(sb)
    req = {"BatchItemRequest": [{"bId": "i1", "operation": "create", "Invoice": invoice_body()},
                                {"bId": "i2", "operation": "create", "Invoice": invoice_body(CustomerRef={"value": "999"})}]}
    first = q.post("batch", req, requestid="batch-replay-1")
    again = q.post("batch", req, requestid="batch-replay-1")
    assert first.status_code == again.status_code == 200
    assert body(first)["BatchItemResponse"] == body(again)["BatchItemResponse"]
    items = {i["bId"]: i for i in body(first)["BatchItemResponse"]}
    fault = items["i2"]["Fault"]
    assert fault["type"] == "ValidationFault" and fault["Error"][0]["code"] == "2500"
    assert set(fault["Error"][0]) == {"Message", "Detail", "code", "element"}
    assert len(sb.state()["quickbooks"]["invoices"]) == 1  # one created, once


def test_ten_a_second_per_realm():
    with SandboxServer(small_fixture(), rate_limits={"qbo_per_second": 3}) as sb:
        q = Qbo(sb)
        codes = [q.query("select * from Item").status_code for _ in range(4)]
        assert codes[:3] == [200, 200, 200] and codes[3] == 429


def test_added_latency_overlaps_and_the_in_flight_cap_holds():
    with SandboxServer(small_fixture(), rate_limits={"qbo_in_flight": 3}, qbo_latency="300-300ms") as sb:
        q = Qbo(sb)

        async def burst(n: int):
            async with httpx.AsyncClient(timeout=30) as c:
                return await asyncio.gather(*[
                    c.post(f"{q.base}/query", content=b"select * from Item", headers=q.headers("application/text"))
                    for _ in range(n)])

        codes = sorted(r.status_code for r in asyncio.run(burst(5)))
        # 3 served side by side, the 4th and 5th arrive while 3 are in flight: throttled.
        assert codes == [200, 200, 200, 429, 429]
        sb.set_qbo_latency(None)
        # Every slot is given back once the answers are out.
        assert sb.sandbox.in_flight.get(sb.realm_id, 0) == 0


@pytest.mark.parametrize("text, expected", [
    ("150-400ms", (150, 400)), ("200ms", (200, 200)), ("0.15-0.4s", (150, 400)), ("off", None), (None, None),
])
def test_latency_knob(text, expected):
    assert parse_latency(text) == expected


@pytest.mark.parametrize("text", ["400-150ms", "fast", "1-2-3ms", "-5ms"])
def test_latency_knob_refuses_nonsense(text):
    with pytest.raises(ValueError, match="latency"):
        parse_latency(text)


def test_serve_command_takes_the_latency_knob():
    from sync_pipelines.cli import build_parser

    args = build_parser().parse_args(["sandbox", "serve", "--fixture", "f.json", "--latency", "150-400ms"])
    assert args.latency == "150-400ms"
