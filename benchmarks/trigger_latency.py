"""Trigger benchmarks: `.venv/bin/python benchmarks/trigger_latency.py receiver [--duration 30 --rate 1000]`.

Part ``receiver`` (issue 8 item 7): starts the webhook receiver as a real process
(``sync-pipelines webhooks serve`` under uvicorn) on loopback with a SQLite ledger, drives
``--rate`` signed requests a second for ``--duration`` seconds from ``--workers`` load-generator
processes (asyncio, raw keep-alive HTTP/1.1 connections, every request pre-signed before the clock
starts, each sent at its scheduled time), then checks the ledger inbox: every valid event stored
exactly once, nothing else stored. It reports the achieved rate, response times (p50/p95/p99/max,
from the moment a request was written to the moment its answer was read) and errors, and appends
the result to docs/benchmarks.md (``--no-record`` to skip).

The traffic: 80 % HubSpot deliveries (1-3 events each), 20 % Intuit CloudEvents deliveries
(1-2 events); 2 % of requests are HubSpot-style retries of an earlier event (same eventId, new
attemptNumber, timestamp and signature), which must be acknowledged and not stored again.

Part ``latency`` (stage change -> invoice, webhooks vs polling only): not written yet, see
:func:`stage_change_to_invoice_latency`.

Needs nothing beyond the project's own environment (``make install``): the load generator is
Python's asyncio (uvloop when installed, as it is with uvicorn[standard]).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import platform
import random
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sync_pipelines.webhooks.signatures import hubspot_v3_signature, intuit_signature  # noqa: E402

# Benchmark-only secrets: the receiver must be configured, and nothing real is ever used here.
HUBSPOT_SECRET = "bench-hubspot-client-secret"
INTUIT_TOKEN = "bench-intuit-verifier-token"


# ---------------------------------------------------------------------------------- requests

def build_requests(n: int, host: str, port: int, seed: int = 8) -> tuple[list[bytes], set[tuple[str, str]]]:
    """``n`` pre-signed raw HTTP requests and the set of distinct (source, event id) they carry."""
    rng = random.Random(seed)
    hub_url = f"http://{host}:{port}/webhooks/hubspot"
    ts_base = time.time_ns() // 1_000_000
    requests: list[bytes] = []
    expected: set[tuple[str, str]] = set()
    hub_events: list[dict[str, Any]] = []
    next_event = 5_000_000_000
    for i in range(n):
        r = rng.random()
        if r < 0.02 and hub_events:
            # a HubSpot retry of an earlier event: same eventId, re-signed
            ev = dict(rng.choice(hub_events))
            ev["attemptNumber"] += 1
            requests.append(_hubspot(hub_url, [ev], ts_base + i, host, port))
        elif r < 0.82:
            events = []
            for _ in range(rng.choice((1, 1, 2, 3))):
                next_event += 1
                ev = {"objectId": rng.randrange(10**9), "propertyName": "dealstage", "propertyValue": "ready_for_billing",
                      "changeSource": "CRM", "eventId": next_event, "subscriptionId": 92894, "portalId": 62515,
                      "appId": 186886, "occurredAt": ts_base + i, "subscriptionType": "deal.propertyChange",
                      "attemptNumber": 0}
                events.append(ev)
                hub_events.append(ev)
                expected.add(("hubspot", str(next_event)))
            requests.append(_hubspot(hub_url, events, ts_base + i, host, port))
        else:
            events = []
            for _ in range(rng.choice((1, 2))):
                eid = str(uuid.UUID(int=rng.getrandbits(128)))
                events.append({"specversion": "1.0", "id": eid, "source": "intuit.bench", "type": "qbo.invoice.voided.v1",
                               "datacontenttype": "application/json", "time": "2026-11-02T10:00:00.000Z",
                               "intuitentityid": str(rng.randrange(10**6)), "intuitaccountid": "9341452581046783",
                               "data": {}})
                expected.add(("quickbooks", eid))
            body = json.dumps(events).encode()
            requests.append(_raw("/webhooks/quickbooks", host, port, body,
                                 {"intuit-signature": intuit_signature(INTUIT_TOKEN, body)}))
    return requests, expected


def _hubspot(url: str, events: list[dict[str, Any]], ts: int, host: str, port: int) -> bytes:
    body = json.dumps(events).encode()
    stamp = str(ts)
    return _raw("/webhooks/hubspot", host, port, body, {
        "X-HubSpot-Request-Timestamp": stamp,
        "X-HubSpot-Signature-v3": hubspot_v3_signature(HUBSPOT_SECRET, "POST", url, body, stamp)})


def _raw(path: str, host: str, port: int, body: bytes, headers: dict[str, str]) -> bytes:
    head = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}", "Content-Type: application/json",
            f"Content-Length: {len(body)}"] + [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


# ---------------------------------------------------------------------------------- load generator

async def _connection(host: str, port: int, jobs: list[tuple[float, bytes]], t0: float,
                      out: list[tuple[float, float, float, int]]) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        for at, raw in jobs:
            delay = t0 + at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            sent = time.perf_counter()
            try:
                writer.write(raw)
                head = await reader.readuntil(b"\r\n\r\n")
                status = int(head[9:12])
                length = 0
                for line in head.split(b"\r\n"):
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                if length:
                    await reader.readexactly(length)
            except (OSError, asyncio.IncompleteReadError, ValueError):
                status = -1
                writer.close()
                reader, writer = await asyncio.open_connection(host, port)
            out.append((t0 + at, sent, time.perf_counter(), status))
    finally:
        writer.close()


def _worker(host: str, port: int, requests: list[bytes], offsets: list[float], connections: int,
            start_at: float, queue: Any) -> None:
    try:
        import uvloop  # type: ignore[import-not-found]

        uvloop.install()
    except ImportError:
        pass

    async def main() -> list[tuple[float, float, float, int]]:
        out: list[tuple[float, float, float, int]] = []
        per_conn: list[list[tuple[float, bytes]]] = [[] for _ in range(connections)]
        for i, (at, raw) in enumerate(zip(offsets, requests)):
            per_conn[i % connections].append((at, raw))
        # every worker starts on the same wall-clock instant; perf_counter is per process
        t0 = time.perf_counter() + (start_at - time.time())
        await asyncio.gather(*(_connection(host, port, jobs, t0, out) for jobs in per_conn if jobs))
        return out

    results = asyncio.run(main())
    # times relative to the schedule start, so the parent can merge workers
    base = min((r[0] for r in results), default=0.0)
    queue.put([(s - base, a - base, d - base, st) for s, a, d, st in results])


# ---------------------------------------------------------------------------------- the receiver part

def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _percentile(sorted_values: list[float], p: float) -> float:
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, int(round(p / 100 * len(sorted_values) + 0.5)) - 1))
    return sorted_values[k]


def run_receiver(duration: float, rate: float, workers: int, connections: int) -> dict[str, Any]:
    host = "127.0.0.1"
    port = _free_port(host)
    tmp = Path(tempfile.mkdtemp(prefix="bench-webhooks-"))
    ledger_url = f"sqlite:///{tmp}/ledger.db"
    env = {**os.environ, "SYNC_DATABASE_URL": ledger_url, "HUBSPOT_CLIENT_SECRET": HUBSPOT_SECRET,
           "QBO_WEBHOOK_VERIFIER_TOKEN": INTUIT_TOKEN}
    env.pop("WEBHOOK_PUBLIC_URL", None)
    n = int(duration * rate)
    print(f"pre-signing {n:,} requests...", flush=True)
    requests, expected = build_requests(n, host, port)
    offsets = [i / rate for i in range(n)]

    proc = subprocess.Popen([sys.executable, "-m", "sync_pipelines.cli", "webhooks", "serve", "--host", host,
                             "--port", str(port)], env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://{host}:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the receiver did not start:\n{proc.stdout.read() if proc.stdout else ''}")
            time.sleep(0.1)
        print(f"receiver up on {host}:{port} (pid {proc.pid}); driving {rate:,.0f} req/s for {duration:.0f} s "
              f"from {workers} process(es) x {connections} connection(s)...", flush=True)
        ctx = mp.get_context("spawn")
        queue = ctx.Queue()
        start_at = time.time() + 1.5 + 0.5 * workers
        procs = []
        for w in range(workers):
            idx = list(range(w, n, workers))
            p = ctx.Process(target=_worker, args=(host, port, [requests[i] for i in idx], [offsets[i] for i in idx],
                                                  connections, start_at, queue))
            p.start()
            procs.append(p)
        results: list[tuple[float, float, float, int]] = []
        for _ in procs:
            results.extend(queue.get(timeout=duration * 4 + 120))
        for p in procs:
            p.join()
        health = httpx.get(f"http://{host}:{port}/healthz", timeout=5).json()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()

    from sync_pipelines.ledger import Ledger

    ledger = Ledger(ledger_url)
    rows = ledger.inbox_pending(limit=10 * n + 10)
    ledger.dispose()
    stored = [(r.source, r.event_id) for r in rows]
    stored_set = set(stored)

    ok = [r for r in results if r[3] == 200]
    latencies = sorted((d - a) * 1000 for _, a, d, _ in ok)
    late = sorted((d - s) * 1000 for s, _, d, _ in ok)
    first = min(r[1] for r in results)
    last = max(r[2] for r in results)
    return {
        "requests": n, "completed": len(results), "ok": len(ok),
        "errors": {str(k): v for k, v in sorted(_count(r[3] for r in results if r[3] != 200).items())},
        "achieved_rate": len(ok) / (last - first) if last > first else float("nan"),
        "wall_s": last - first,
        "p50_ms": _percentile(latencies, 50), "p95_ms": _percentile(latencies, 95),
        "p99_ms": _percentile(latencies, 99), "max_ms": latencies[-1] if latencies else float("nan"),
        "p99_from_schedule_ms": _percentile(late, 99),
        "valid_events": len(expected), "stored_rows": len(stored),
        "missing": len(expected - stored_set), "unexpected": len(stored_set - expected),
        "stored_twice": len(stored) - len(stored_set),
        "duplicates_acknowledged": sum(c["events_duplicate"] for c in health["counters"].values()),
        "rejected": {k: c["rejected"] for k, c in health["counters"].items()},
        "batches": health["inbox_writer"]["batches"], "largest_batch": health["inbox_writer"]["largest_batch"],
    }


def _count(values: Any) -> dict[Any, int]:
    out: dict[Any, int] = {}
    for v in values:
        out[v] = out.get(v, 0) + 1
    return out


def stage_change_to_invoice_latency(deals: int = 20) -> dict[str, Any]:
    """Part ``latency``: stage change -> invoice in QuickBooks, p50/p95/max over ``deals`` deals,
    once with webhooks (sandbox -> receiver -> inbox -> deal sensor -> run) and once polling only.

    TODO(lead): fill in after the inbox-draining deal sensor lands. Shape: ``serve --sandbox``-like
    setup (sandbox webhooks pointed at a receiver, daemon running the deal sensor); move ``deals``
    deals to the ready-for-billing stage through ``/_sandbox/actions/move_deal_stage`` at known
    times; poll ``/_sandbox/state`` for each deal's invoice; report p50/p95/max per mode. No
    numbers are recorded until it really runs.
    """
    raise NotImplementedError("the latency part needs the deal sensor that drains the webhook inbox (TODO lead)")


# ---------------------------------------------------------------------------------- report

def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores ({cpu}), {platform.system()} {platform.release()}, Python {platform.python_version()}"


def markdown(res: dict[str, Any], args: argparse.Namespace, load: str) -> str:
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    exactly_once = res["missing"] == 0 and res["unexpected"] == 0 and res["stored_twice"] == 0
    return "\n".join([
        f"Run {when}, {_machine()}; load average before the run: {load}.",
        "",
        "```sh",
        f".venv/bin/python benchmarks/trigger_latency.py receiver --duration {args.duration:g} --rate {args.rate:g} "
        f"--workers {args.workers} --connections {args.connections}",
        "```",
        "",
        "| measure | value |",
        "|---|---|",
        f"| requests sent / answered 200 | {res['completed']:,} / {res['ok']:,} (errors: {res['errors'] or 'none'}) |",
        f"| achieved rate | **{res['achieved_rate']:,.0f} req/s** over {res['wall_s']:.1f} s (target {args.rate:,.0f}) |",
        f"| response time p50 / p95 / **p99** / max | {res['p50_ms']:.1f} / {res['p95_ms']:.1f} / "
        f"**{res['p99_ms']:.1f}** / {res['max_ms']:.1f} ms |",
        f"| p99 from the scheduled send time (includes generator lag) | {res['p99_from_schedule_ms']:.1f} ms |",
        f"| valid events / inbox rows | {res['valid_events']:,} / {res['stored_rows']:,} |",
        f"| missing / unexpected / stored twice | {res['missing']} / {res['unexpected']} / {res['stored_twice']} "
        f"— {'**every valid event stored exactly once**' if exactly_once else '**NOT exactly once**'} |",
        f"| retries acknowledged as duplicates | {res['duplicates_acknowledged']:,} |",
        f"| rejected by the receiver | {res['rejected']} |",
        f"| group commits / largest batch (requests) | {res['batches']:,} / {res['largest_batch']} |",
    ])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("part", choices=["receiver", "latency"])
    ap.add_argument("--duration", type=float, default=30.0)
    ap.add_argument("--rate", type=float, default=1000.0)
    ap.add_argument("--workers", type=int, default=2, help="load-generator processes")
    ap.add_argument("--connections", type=int, default=32, help="keep-alive connections per process")
    ap.add_argument("--no-record", action="store_true", help="do not append the result to docs/benchmarks.md")
    args = ap.parse_args(argv)
    if args.part == "latency":
        try:
            stage_change_to_invoice_latency()
        except NotImplementedError as exc:
            print(f"latency: not run: {exc}", file=sys.stderr)
            return 2
        return 0
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    res = run_receiver(args.duration, args.rate, args.workers, args.connections)
    text = markdown(res, args, load)
    print("\n" + text)
    if not args.no_record:
        path = REPO / "docs" / "benchmarks.md"
        body = path.read_text()
        heading = "## Webhook receiver — `benchmarks/trigger_latency.py receiver`"
        if heading not in body:
            body = body.rstrip("\n") + "\n\n" + heading + "\n\n" + RECEIVER_INTRO + "\n"
        path.write_text(body.rstrip("\n") + "\n\n" + text + "\n")
        print(f"\nappended to {path}")
    ok = res["missing"] == 0 and res["unexpected"] == 0 and res["stored_twice"] == 0
    return 0 if ok else 1


RECEIVER_INTRO = """The receiver as a real process (`sync-pipelines webhooks serve`, uvicorn, one worker) on loopback
with a SQLite ledger; the load generator runs on the same 2 cores (asyncio processes, pre-signed
requests sent at their scheduled times over keep-alive connections). 80 % HubSpot deliveries of
1-3 events, 20 % Intuit CloudEvents deliveries of 1-2, 2 % HubSpot retries of an earlier event.
Afterwards the inbox is compared with the set of valid events. Response time = request written to
answer read, i.e. including the group commit that makes the events durable before the 200."""


if __name__ == "__main__":
    sys.exit(main())
