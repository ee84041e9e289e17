"""Month-end run structure: `python benchmarks/month_runs.py [--clients 10 100 1000] [--entries-per-client 100]`.

For each client count: generates a fixture (`generate_fixture`), serves it with the sandbox
(no rate limits and no added latency: this measures the *structure* of the month-end, i.e. the
Dagster runs and our own steps, not QuickBooks' throttle, which `benchmarks/month_end.py`
covers), and runs `bill_month` (what `sync-pipelines bill --month` does: three runs, in process)
on a fresh embedded-SQLite Dagster instance. Reports the wall time of each run (job), the
events the instance stored for it, and the time spent in the instance's `store_event`
(Dagster's own bookkeeping), so that our own time is the difference.

Prints a markdown block (command, machine, date, load average) to paste into docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
import tempfile
import time
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path

import dagster as dg
from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage

from sync_pipelines.sandbox import SandboxServer, generate_fixture

PERIOD = "2026-10"


class Bookkeeping:
    """Time and count of the instance's `store_event` calls, by run id."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.events: dict[str, int] = defaultdict(int)
        self._real = SqliteEventLogStorage.store_event

    def __enter__(self) -> "Bookkeeping":
        real, book = self._real, self

        def store_event(storage, event):  # noqa: ANN001, ANN202
            t = time.perf_counter()
            try:
                return real(storage, event)
            finally:
                book.seconds[event.run_id] += time.perf_counter() - t
                book.events[event.run_id] += 1

        SqliteEventLogStorage.store_event = store_event
        return self

    def __exit__(self, *exc: object) -> None:
        SqliteEventLogStorage.store_event = self._real


class RunTimer:
    """Wall time of each `execute_in_process` call, by job name (run creation included)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, float]] = []
        self._real = dg.JobDefinition.execute_in_process

    def __enter__(self) -> "RunTimer":
        real, timer = self._real, self

        def execute_in_process(job, *args, **kwargs):  # noqa: ANN001, ANN202
            t = time.perf_counter()
            result = real(job, *args, **kwargs)
            timer.calls.append((job.name, result.run_id, time.perf_counter() - t))
            return result

        dg.JobDefinition.execute_in_process = execute_in_process
        return self

    def __exit__(self, *exc: object) -> None:
        dg.JobDefinition.execute_in_process = self._real


def one_month(clients: int, entries_per_client: int, seed: int) -> dict:
    from sync_pipelines.commands.billing_runs import bill_month

    t = time.perf_counter()
    # the generator's last Harvest client has no rules: +1 so that `clients` are billed
    fixture, rules_yaml = generate_fixture(clients=clients + 1, entries=clients * entries_per_client, seed=seed,
                                           month=PERIOD)
    generated = time.perf_counter() - t
    with tempfile.TemporaryDirectory(prefix="month_runs_") as tmp, \
            SandboxServer(fixture, rate_limits=None) as sandbox:
        home = Path(tmp, "home")
        home.mkdir()
        rules = Path(tmp, "rules.yaml")
        rules.write_text(rules_yaml)
        saved = dict(os.environ)
        os.environ.update(sandbox.env())
        os.environ.update({"DAGSTER_HOME": str(home), "SYNC_RULES_FILE": str(rules)})
        for name in ("SYNC_DATABASE_URL", "SYNC_OUTPUT_DIR"):
            os.environ.pop(name, None)
        try:
            from sync_pipelines.definitions import defs

            with dg.instance_for_test(temp_dir=str(home)) as instance, Bookkeeping() as book, RunTimer() as timer:
                t = time.perf_counter()
                run = bill_month(PERIOD, instance=instance, definitions=defs())
                wall = time.perf_counter() - t
        finally:
            os.environ.clear()
            os.environ.update(saved)
    invoices = sum(len(c.outcomes) for c in run.clients if c.outcomes is not None)
    return {
        "clients": len(run.clients), "entries": clients * entries_per_client, "generated_s": generated,
        "wall_s": wall, "exit_code": run.exit_code, "invoices": invoices,
        "runs": [(name, secs, book.events.get(run_id, 0), book.seconds.get(run_id, 0.0))
                 for name, run_id, secs in timer.calls],
    }


def machine() -> str:
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    return (f"{platform.node()}: {os.cpu_count()} cores, Python {platform.python_version()}, "
            f"Dagster {dg.__version__} (embedded SQLite instance), load average {load}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--entries-per-client", type=int, default=100)
    parser.add_argument("--seed", type=int, default=9)
    args = parser.parse_args(argv)
    started = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    results = []
    for n in args.clients:
        results.append(one_month(n, args.entries_per_client, args.seed))
        r = results[-1]
        print(f"{n} clients: {r['wall_s']:.1f} s, exit {r['exit_code']}", file=sys.stderr)
    cmd = "python benchmarks/month_runs.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    out = [f"Command: `{cmd.strip()}`  ", f"Machine: {machine()}, {started}", "",
           "| clients | entries | invoices | `bill --month` wall | runs | run: wall / events stored / time in store_event |",
           "|---:|---:|---:|---:|---:|---|"]
    for r in results:
        per_run = "; ".join(f"`{name}` {secs:.1f} s / {events} / {store:.1f} s" for name, secs, events, store in r["runs"])
        out.append(f"| {r['clients']} | {r['entries']} | {r['invoices']} | {r['wall_s']:.1f} s | {len(r['runs'])} | {per_run} |")
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
