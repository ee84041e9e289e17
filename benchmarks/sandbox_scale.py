"""Sandbox at scale: `python benchmarks/sandbox_scale.py [--clients 1000 --entries 1000000]`.

1. Generates a fixture (`generate_fixture`, column-wise) and times it.
2. Serves it with `SandboxServer(fixture, rate_limits=None)` (validation + indexing timed).
3. Pages every time entry of the month out of the server, twice:
   - `stream`: plain httpx, following `links.next` (cursor pages of `per_page` entries), each
     page decoded and dropped: the process's RSS growth over this pass is what the *server*
     holds while paging (the client keeps nothing), so a server that materialised the whole
     result would show up here;
   - `client`: the production `HarvestClient.list_time_entries` (per_page 2000, pydantic models,
     Decimal hours), with a no-op client-side limiter (the server has no limits here; with the real
     100 requests / 15 s, ~470 pages take ~70 s of waiting).
4. Prints a markdown block: command, machine (`nproc`, `free -g`, Python, date), timings, pages,
   entries/s and RSS (current and peak) after each phase.

The server runs in a thread of this process, so RSS covers server and client together.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import resource
import shlex
import subprocess
import sys
import threading
import time
import tracemalloc
from datetime import date, datetime, timezone

import httpx

from sync_pipelines import money
from sync_pipelines.connectors.harvest import HarvestClient
from sync_pipelines.connectors.http import RateLimiter, RetryPolicy
from sync_pipelines.sandbox import SandboxServer, generate_fixture


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


class RssSampler:
    """Highest VmRSS seen while a phase runs (ru_maxrss is monotonic over the whole process)."""

    def __init__(self, interval: float = 0.05) -> None:
        self.interval = interval
        self.peak = 0.0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_mb())
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self.peak = rss_mb()
        self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, rss_mb())


def month_bounds(month: str) -> tuple[date, date]:
    y, m = int(month[:4]), int(month[5:])
    first = date(y, m, 1)
    nxt = date(y + (m == 12), m % 12 + 1, 1)
    return first, date.fromordinal(nxt.toordinal() - 1)


def headers(env: dict[str, str]) -> dict[str, str]:
    return {"Authorization": f"Bearer {env['HARVEST_ACCESS_TOKEN']}", "Harvest-Account-Id": env["HARVEST_ACCOUNT_ID"],
            "User-Agent": "sync_pipelines benchmark (ops@example.com)", "Accept": "application/json"}


def stream_pass(sb: SandboxServer, first: date, last: date, per_page: int) -> tuple[int, int, int]:
    """Follow links.next with plain httpx; returns (entries, pages, largest page body in bytes)."""
    env = sb.env()
    url: str | None = f"{sb.base_url}/v2/time_entries"
    params: dict[str, str] | None = {"from": first.isoformat(), "to": last.isoformat(), "per_page": str(per_page)}
    n = pages = biggest = 0
    with httpx.Client(timeout=120, headers=headers(env)) as http:
        while url:
            with http.stream("GET", url, params=params) as r:
                r.raise_for_status()
                raw = r.read()
            biggest = max(biggest, len(raw))
            body = money.loads(raw)
            n += len(body["time_entries"])
            pages += 1
            url, params = body["links"]["next"], None
            del body, raw
    return n, pages, biggest


def handler_pass(sb: SandboxServer, first: date, last: date, per_page: int, max_pages: int,
                 ) -> tuple[int, int, float, float]:
    """The first `max_pages` pages straight through the sandbox's request handler (no HTTP, no
    client), under tracemalloc, with a fresh query (so its index is built inside the trace):
    (entries, pages, peak MB allocated while paging, MB still held afterwards)."""
    from urllib.parse import parse_qsl, urlsplit

    from sync_pipelines.sandbox.http import Req

    env = sb.env()
    h = {k.lower(): v for k, v in headers(env).items()}
    query: list[tuple[str, str]] | None = [("from", first.isoformat()), ("to", last.isoformat()), ("per_page", str(per_page)),
                                           ("is_running", "false")]
    n = pages = 0
    gc.collect()
    tracemalloc.start()
    try:
        while query is not None and pages < max_pages:
            resp = sb.sandbox.handle("harvest", Req("GET", "/v2/time_entries", query, h, base_url=sb.base_url))
            sent = len(resp.body_bytes())  # what the server sends
            assert sent > 0
            n += len(resp.body["time_entries"])
            pages += 1
            nxt = resp.body["links"]["next"]
            query = parse_qsl(urlsplit(nxt).query) if nxt else None
            del resp
        gc.collect()
        held, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return n, pages, peak / 1e6, held / 1e6


def machine() -> list[str]:
    def sh(cmd: str) -> str:
        try:
            return subprocess.run(shlex.split(cmd), capture_output=True, text=True, timeout=10).stdout.strip()
        except Exception as exc:  # noqa: BLE001
            return f"({cmd}: {exc})"

    return [f"nproc: {sh('nproc')}", "free -g:", *("    " + line for line in sh("free -g").splitlines()),
            f"python: {sys.version.split()[0]} ({platform.python_implementation()}, {platform.machine()})",
            f"date: {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M:%S UTC')}"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=1000)
    ap.add_argument("--entries", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--month", default="2026-10")
    ap.add_argument("--per-page", type=int, default=2000)
    ap.add_argument("--trace-pages", type=int, default=25, help="pages traced by tracemalloc (slow)")
    ap.add_argument("--skip-client", action="store_true", help="only the plain-httpx streaming pass")
    args = ap.parse_args()
    first, last = month_bounds(args.month)
    rows: list[tuple[str, str]] = []

    rss0 = rss_mb()
    t = time.perf_counter()
    fixture, _rules = generate_fixture(clients=args.clients, entries=args.entries, seed=args.seed, month=args.month)
    gen_s = time.perf_counter() - t
    in_month = sum(1 for e in fixture["harvest"]["time_entries"] if first.isoformat() <= e["spent_date"] <= last.isoformat())
    rows.append(("generate_fixture", f"{gen_s:.1f} s; {len(fixture['harvest']['time_entries']):,} entries "
                                     f"({in_month:,} in {args.month}), {len(fixture['harvest']['clients']):,} clients; "
                                     f"RSS {rss_mb():.0f} MB (+{rss_mb() - rss0:.0f}), peak {peak_rss_mb():.0f} MB"))

    t = time.perf_counter()
    sb = SandboxServer(fixture, rate_limits=None).start()
    start_s = time.perf_counter() - t
    gc.collect()
    rows.append(("SandboxServer start (validate + index)", f"{start_s:.1f} s; RSS {rss_mb():.0f} MB, peak {peak_rss_mb():.0f} MB"))
    try:
        before = rss_mb()
        with RssSampler() as samp:
            t = time.perf_counter()
            n, pages, biggest = stream_pass(sb, first, last, args.per_page)
            s_s = time.perf_counter() - t
        assert n == in_month, (n, in_month)
        rows.append(("page the month, plain httpx (stream pass)",
                     f"{s_s:.1f} s; {pages} pages of ≤ {args.per_page}; {n / s_s:,.0f} entries/s; "
                     f"{s_s / pages * 1000:.0f} ms/page; largest page {biggest / 1e6:.1f} MB; "
                     f"RSS during pass: max {samp.peak:.0f} MB (+{samp.peak - before:.0f} over the {before:.0f} MB before)"))
        t = time.perf_counter()
        n2, pages2, peak_mb, held_mb = handler_pass(sb, first, last, args.per_page, args.trace_pages)
        h_s = time.perf_counter() - t
        rows.append((f"first {pages2} pages through the request handler, no HTTP (tracemalloc)",
                     f"{h_s:.1f} s under tracemalloc; {n2:,} entries; server-side allocations: peak {peak_mb:.1f} MB "
                     f"while paging, {held_mb:.1f} MB still held after (the query's index: one reference per matching entry)"))
        if not args.skip_client:
            env = sb.env()
            client = HarvestClient(env["HARVEST_BASE_URL"], env["HARVEST_ACCOUNT_ID"], env["HARVEST_ACCESS_TOKEN"],
                                   per_page=args.per_page, limiter=RateLimiter([]), retry=RetryPolicy(),
                                   timeout=120)
            with RssSampler() as samp:
                t = time.perf_counter()
                res = client.list_time_entries(first, last)
                c_s = time.perf_counter() - t
            client.close()
            assert len(res.records) == in_month and not res.rejected, (len(res.records), len(res.rejected))
            rows.append(("page the month, `HarvestClient.list_time_entries` (per_page 2000)",
                         f"{c_s:.1f} s; {pages} pages; {len(res.records) / c_s:,.0f} entries/s; "
                         f"{len(res.records):,} pydantic `TimeEntry` kept; RSS max {samp.peak:.0f} MB"))
            del res
    finally:
        sb.stop()
    rows.append(("process peak RSS (ru_maxrss)", f"{peak_rss_mb():.0f} MB"))

    cmd = "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(__file__)] + sys.argv[1:])
    print("```text")
    print(f"$ {cmd}")
    for line in machine():
        print(line)
    print("```")
    print()
    print("| phase | result |")
    print("|---|---|")
    for k, v in rows:
        print(f"| {k} | {v} |")


if __name__ == "__main__":
    main()
