"""What Dagster's per-partition bookkeeping costs when several run workers share one instance:
`python benchmarks/instance_event_writes.py [--writers 1,2,4] [--events 150] [--instance sqlite,postgres]`.

Each writer is its own process (as each run worker of a Docker / Kubernetes run launcher is) and
records `--events` asset materialisations of one client-month-like partition each
(`DagsterInstance.report_runless_asset_event`, the same event-log and asset-index writes a
materialisation inside a run makes), all writers at once against one fresh instance: the embedded
SQLite one (one directory) or PostgreSQL 127.0.0.1:5432 (a fresh database, dropped after).
Prints, per instance and writer count, the aggregate events/s and the mean ms per event each
writer saw, with the machine's load average; docs/scaling.md quotes the figures.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import shutil
import sys
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _writer(home: str, events: int, tag: str, start: mp.Event, out: mp.Queue) -> None:
    import dagster as dg

    os.environ["DAGSTER_HOME"] = home
    with dg.DagsterInstance.from_config(home) as instance:
        key = dg.AssetKey(["bench_partition_probe", tag])
        instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=key, partition="warmup"))
        start.wait()
        t = time.perf_counter()
        for i in range(events):
            instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=key, partition=f"2026-10|client_{i}"))
        out.put(time.perf_counter() - t)


def measure(home: Path, writers: int, events: int) -> tuple[float, float]:
    import dagster as dg

    # create the storage once: SQLite writers creating it at the same time race on its migrations
    os.environ["DAGSTER_HOME"] = str(home)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        instance.report_runless_asset_event(dg.AssetMaterialization(asset_key="bench_partition_probe_setup"))
    ctx = mp.get_context("spawn")
    start, out = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_writer, args=(str(home), events, f"w{w}", start, out)) for w in range(writers)]
    for p in procs:
        p.start()
    time.sleep(8 + 2 * writers)  # every writer imported dagster and made its first write
    t = time.perf_counter()
    start.set()
    per = [out.get(timeout=1800) for _ in procs]
    wall = time.perf_counter() - t
    for p in procs:
        p.join()
    return writers * events / wall, sum(per) / len(per) / events * 1000


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--writers", default="1,2,4")
    ap.add_argument("--events", type=int, default=150)
    ap.add_argument("--instance", default="sqlite,postgres")
    ap.add_argument("--pg-url", default=os.environ.get("SYNC_BENCH_PG_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"))
    args = ap.parse_args()
    import sqlalchemy as sa

    print(f"Run {datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC}, {os.cpu_count()} cores, load average "
          f"{', '.join(f'{x:.2f}' for x in os.getloadavg())}; {args.events} events per writer.\n")
    print("| instance | writers (processes) | aggregate events/s | ms per event (each writer) | load average after |")
    print("|---|---|---|---|---|")
    for kind in [k.strip() for k in args.instance.split(",") if k.strip()]:
        for w in [int(x) for x in args.writers.split(",")]:
            home = Path(tempfile.mkdtemp(prefix="event_writes_"))
            db = None
            admin = None
            try:
                if kind == "postgres":
                    admin = sa.create_engine(args.pg_url, isolation_level="AUTOCOMMIT")
                    db = f"bench_ev_{uuid.uuid4().hex[:10]}"
                    with admin.connect() as c:
                        c.execute(sa.text(f'CREATE DATABASE "{db}"'))
                    url = sa.engine.make_url(args.pg_url).set(database=db).render_as_string(hide_password=False)
                    (home / "dagster.yaml").write_text(f'storage:\n  postgres:\n    postgres_url: "{url}"\ntelemetry:\n  enabled: false\n')
                else:
                    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
                rate, ms = measure(home, w, args.events)
                print(f"| {kind} | {w} | {rate:.1f} | {ms:.1f} | {', '.join(f'{x:.2f}' for x in os.getloadavg())} |", flush=True)
            finally:
                shutil.rmtree(home, ignore_errors=True)
                if db and admin is not None:
                    with admin.connect() as c:
                        c.execute(sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n "
                                          "AND pid <> pg_backend_pid()"), {"n": db})
                        c.execute(sa.text(f'DROP DATABASE IF EXISTS "{db}"'))
                    admin.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
