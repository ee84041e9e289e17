"""Peak memory and wall time of the Harvest month extraction, before vs after streaming.

    .venv/bin/python benchmarks/extract_memory.py                      # 200,000 and 1,000,000 entries
    .venv/bin/python benchmarks/extract_memory.py --entries 200000 --before-ref main

1. A sandbox process generates the fixture (`generate_fixture`, 1,000 clients) and serves it over
   loopback HTTP with its rate limits off, so its memory is apart from the extraction's.
2. For each source tree (this checkout = "after"; `--before-ref`, exported with `git archive`
   to a temporary directory = "before"), a fresh Python process extracts the month exactly as
   the asset does (`sources.harvest_time_entries(client, month)`: per_page 2000, links.next)
   and reports its wall time, peak RSS (`ru_maxrss`) and HTTP calls. The client-side limiter is
   a no-op: Harvest's real 100 requests / 15 s would add ~7 s of waiting per 100 pages, the
   same before and after, and this measures our own cost.
3. "after" also runs a quiet-day refresh (`harvest_month.extract_month` with the stored result):
   the calls it makes and its wall time.

Prints a markdown block (command, machine, date, load) to paste into docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SANDBOX = r"""
import json, sys
from sync_pipelines.sandbox import SandboxServer, generate_fixture
fixture, _ = generate_fixture(clients=int(sys.argv[1]), entries=int(sys.argv[2]), seed=7, month=sys.argv[3])
server = SandboxServer(fixture, rate_limits="off")
del fixture
server.bind()
print(json.dumps(server.env()), flush=True)
server.serve_forever()
"""

EXTRACT = r"""
import json, resource, sys, time
from sync_pipelines.connectors.harvest import HarvestClient
from sync_pipelines.connectors.http import RateLimiter, RetryPolicy
from sync_pipelines.extract import sources

env, month, refresh = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3] == "refresh"

class Calls:
    n = 0
    def audit(self, *args, **kwargs):
        Calls.n += 1

client = HarvestClient(env["HARVEST_BASE_URL"], env["HARVEST_ACCOUNT_ID"], env["HARVEST_ACCESS_TOKEN"],
                       limiter=RateLimiter([]), retry=RetryPolicy(), audit=Calls(), timeout=300)
t0 = time.perf_counter()
frame, rejected = sources.harvest_time_entries(client, month)
out = {"wall_s": time.perf_counter() - t0, "calls": Calls.n, "entries": len(frame), "rejected": len(rejected),
       "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
       "frame_mb": frame.memory_usage(deep=True).sum() / 2**20}
if refresh:
    from datetime import datetime, timezone
    from sync_pipelines.extract.harvest_month import StoredMonth, extract_month
    stored = StoredMonth(frame, rejected, datetime.now(timezone.utc))
    before = Calls.n
    t0 = time.perf_counter()
    again = extract_month(client, month, stored)
    out.update(refresh_s=time.perf_counter() - t0, refresh_calls=Calls.n - before, refresh_mode=again.mode,
               refresh_entries_read=again.entries_read, refresh_same=bool(again.frame.equals(frame)))
print(json.dumps(out), flush=True)
"""


def sh(cmd: str) -> str:
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=10).stdout.strip()
    except Exception:  # noqa: BLE001 - machine facts are best effort
        return "?"


def start_sandbox(clients: int, entries: int, month: str) -> tuple[subprocess.Popen, dict]:
    proc = subprocess.Popen([sys.executable, "-c", SANDBOX, str(clients), str(entries), month],
                            stdout=subprocess.PIPE, text=True, cwd=ROOT)
    line = proc.stdout.readline() if proc.stdout else ""
    if not line:
        proc.kill()
        raise SystemExit("the sandbox process did not start")
    return proc, json.loads(line)


def rss_of(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def run_extract(tree: Path, env: dict, month: str, refresh: bool) -> dict:
    child_env = {**os.environ, "PYTHONPATH": str(tree)}
    proc = subprocess.run([sys.executable, "-c", EXTRACT, json.dumps(env), month, "refresh" if refresh else "full"],
                          capture_output=True, text=True, cwd=tree, env=child_env)
    if proc.returncode != 0:
        raise SystemExit(f"extraction in {tree} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, nargs="+", default=[200_000, 1_000_000])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--month", default="2026-10")
    parser.add_argument("--before-ref", default="main", help="git ref of the 'before' tree ('' to skip)")
    parser.add_argument("--before-max-entries", type=int, default=200_000,
                        help="run 'before' only up to this size (it held ~9 KB per entry)")
    args = parser.parse_args()

    before_tree: Path | None = None
    before_sha = ""
    tmp = tempfile.TemporaryDirectory(prefix="extract_memory_before_")
    if args.before_ref:
        before_tree = Path(tmp.name)
        archive = subprocess.run(["git", "archive", args.before_ref, "sync_pipelines"], cwd=ROOT,
                                 capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(before_tree)], input=archive, check=True)
        before_sha = sh(f"git -C {ROOT} rev-parse --short {shlex.quote(args.before_ref)}")
    after_sha = sh(f"git -C {ROOT} rev-parse --short HEAD")

    rows = []
    for n in args.entries:
        t0 = time.perf_counter()
        proc, env = start_sandbox(args.clients, n, args.month)
        try:
            start_s = time.perf_counter() - t0
            result = {"entries_generated": n, "sandbox_start_s": start_s, "sandbox_rss_mb": rss_of(proc.pid)}
            if before_tree is not None and n <= args.before_max_entries:
                result["before"] = run_extract(before_tree, env, args.month, refresh=False)
            result["after"] = run_extract(ROOT, env, args.month, refresh=True)
            result["sandbox_rss_after_mb"] = rss_of(proc.pid)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        rows.append(result)
        print(json.dumps(result), file=sys.stderr, flush=True)

    now = datetime.now(timezone.utc)
    print("```sh")
    print(".venv/bin/python benchmarks/extract_memory.py " + " ".join(shlex.quote(a) for a in sys.argv[1:]))
    print("```")
    print()
    mem_gib = sh("free -g | awk '/Mem:/{print $2}'")
    print(f"Run {now:%Y-%m-%d %H:%M} UTC; {os.cpu_count()} cores, {mem_gib} GiB, "
          f"Python {platform.python_version()}, load average {os.getloadavg()[0]:.1f} at the end; "
          f"after = {after_sha}" + (f", before = {args.before_ref} ({before_sha})" if before_tree else "") + ".")
    print()
    print("| entries in the month | tree | wall time | peak RSS (extraction process) | frame in memory | calls |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        for tree in ("before", "after"):
            if tree in r:
                x = r[tree]
                print(f"| {x['entries']:,} | {tree} | {x['wall_s']:.1f} s | {x['peak_rss_mb']:,.0f} MiB | "
                      f"{x['frame_mb']:,.0f} MiB | {x['calls']} |")
    print()
    print("| entries in the month | quiet-day refresh: calls | wall time | mode | records read | same frame | sandbox RSS |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        x = r["after"]
        print(f"| {x['entries']:,} | {x['refresh_calls']} | {x['refresh_s']:.2f} s | {x['refresh_mode']} | "
              f"{x['refresh_entries_read']} | {x['refresh_same']} | {r['sandbox_rss_after_mb']:,.0f} MiB |")
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
