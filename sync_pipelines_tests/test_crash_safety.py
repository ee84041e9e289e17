"""Crash and concurrency tests of exactly-once posting (DESIGN §6, §9), on SQLite and PostgreSQL.

A child process runs the posting step (``post_drafts``, then the CRM write-back: what the
``qbo_invoices`` and ``crm_write_back`` assets do) against a sandbox served by THIS process, so
QuickBooks and HubSpot survive the kill. Each trial kills the child with SIGKILL at a point chosen
from a seed -- after ``begin_posting`` before the QuickBooks call, after QuickBooks answered and
before ``record_posted``, after posting before the write-backs are queued, after a HubSpot PATCH
and before ``record_writeback``, or at a random instant -- sometimes twice, then re-runs to
completion and checks, reading QuickBooks and HubSpot back over HTTP:

- exactly one invoice per key in QuickBooks (and nothing else), with our total;
- every billable entry billed once in the ledger, on its own invoice;
- every write-back done, and the deals hold the invoice's id and number.

Children are forked from a forkserver that preloaded the code (no interpreter start-up or
imports per child), so a trial costs about a second. Trial counts: ``CRASH_TRIALS_SQLITE`` (30)
and ``CRASH_TRIALS_POSTGRES`` (15), overridable with the environment variables of the same names
(``CRASH_SEED`` changes the seed).

Concurrency: the same month launched twice at once, as two posting processes started on one
barrier (4 rounds per backend), and once through the whole product as two `sync-pipelines bill`
processes (two Dagster instances sharing one ledger): one invoice per key either way.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import random
import shutil
import signal
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from sync_pipelines import money
from sync_pipelines.ledger import Ledger
from sync_pipelines.sandbox import SandboxServer, generate_fixture
from sync_pipelines_tests import _crash_child as child
from sync_pipelines_tests import _sandbox_month as sm

PERIOD = "2026-10"
SEED = int(os.environ.get("CRASH_SEED", "20261123"))
CRASH_TRIALS_SQLITE = int(os.environ.get("CRASH_TRIALS_SQLITE", "30"))
CRASH_TRIALS_POSTGRES = int(os.environ.get("CRASH_TRIALS_POSTGRES", "15"))
CLAIM_SECONDS = 0.25  # a crashed run's claim: the re-run waits it out, as Dagster's retry would
KILL_POINTS = (*child.POINTS, "random_time")
BATCH_SIZES = (2, 1, 30)


@pytest.fixture(scope="module")
def procs() -> Any:
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["sync_pipelines_tests._crash_child"])
    return ctx


@pytest.fixture(scope="module")
def world() -> Iterator[tuple[SandboxServer, dict[str, Any], str]]:
    # 3 billed clients (the 4th has no rules), ~60 entries: 3 invoices, 4 linked deals.
    fixture, rules_yaml = generate_fixture(clients=4, entries=60, seed=21, month=PERIOD)
    with SandboxServer(fixture, rate_limits=None, rotate_refresh_tokens="never") as sb:
        yield sb, fixture, rules_yaml


@dataclass
class Setup:
    sb: SandboxServer
    env: dict[str, str]
    month: sm.Month
    fresh_ledger: Any  # () -> ledger url, empty and migrated
    tmp: Path


def _setup(world: Any, tmp: Path, backend_url: str | None) -> Setup:
    sb, _fixture, rules_yaml = world
    sb.reset()
    env = sb.env()
    if backend_url is None:
        template = tmp / "template.db"
        led = Ledger(f"sqlite:///{template}")
        led.migrate()
        led.dispose()  # the last connection closing checkpoints the WAL into the file we copy
        counter = iter(range(10**6))

        def fresh() -> str:
            path = tmp / f"ledger-{next(counter)}.db"
            shutil.copyfile(template, path)
            return f"sqlite:///{path}"
    else:
        led = Ledger(backend_url)
        led.migrate()
        led.dispose()

        def fresh() -> str:
            sm.truncate(backend_url)
            return backend_url

    url = fresh()
    led = Ledger(url)
    month = sm.price(env, rules_yaml, PERIOD, led)
    led.dispose()
    assert len(month.drafts["invoices"]) == 3 and all(i["status"] == "ready" for i in month.drafts["invoices"])
    return Setup(sb, env, month, fresh, tmp)


def _job(s: Setup, url: str, **kw: Any) -> dict[str, Any]:
    job = dict(ledger_url=url, env=s.env, drafts=s.month.drafts, deals=s.month.deals,
               entry_projects=s.month.entry_projects, company_ids=s.month.company_ids,
               claim_seconds=CLAIM_SECONDS, crash=None, retry_busy=True, start_at=None)
    return {**job, **kw}


def _start(procs: Any, job: dict[str, Any], result: Path) -> Any:
    p = procs.Process(target=child.run, args=(job, str(result)))
    p.start()
    return p


def _run(procs: Any, job: dict[str, Any], result: Path, kill_after: float | None = None, timeout: float = 60) -> int:
    p = _start(procs, job, result)
    if kill_after is not None:
        p.join(kill_after)
        if p.is_alive():
            os.kill(p.pid, signal.SIGKILL)
    p.join(timeout)
    assert not p.is_alive(), "the posting child hung"
    return int(p.exitcode)


def check_exactly_once(s: Setup, url: str) -> None:
    """The invariants after a finished run (module docs)."""
    drafts = {i["invoice_key"]: i for i in s.month.drafts["invoices"]}
    invoices = sm.qbo_invoices(s.env)
    by_doc = Counter(i.get("DocNumber") for i in invoices)
    assert len(invoices) == len(drafts), f"QuickBooks holds {len(invoices)} invoices for {len(drafts)} keys: {by_doc}"
    ledger = Ledger(url)
    try:
        billed: dict[int, str] = {}
        for key, draft in drafts.items():
            record = ledger.get_invoice(key)
            assert record is not None and record.status == "posted", (key, record and record.status)
            assert by_doc[record.qbo_doc_number] == 1 and record.qbo_doc_number == draft["doc_number"]
            [qbo] = [i for i in invoices if i["DocNumber"] == draft["doc_number"]]
            assert str(qbo["Id"]) == record.qbo_id
            assert money.to_decimal(qbo["TotalAmt"]) == Decimal(str(draft["total"])) == record.qbo_total_amt
            assert not record.total_mismatch
            for entry_id, _, status in record.entries:
                assert status == "billed", (key, entry_id, status)
                assert entry_id not in billed, f"entry {entry_id} billed on {billed.get(entry_id)} and {key}"
                billed[entry_id] = key
        wanted = {e for d in drafts.values() for e, _ in d["entries"]}
        assert set(billed) == wanted
        planned = sm.planned_writebacks(ledger, s.month)
        assert planned, "the fixture must have deals to write back to"
        rows = {(r["invoice_key"], r["deal_id"]): r for r in sm.writeback_rows(ledger)}
        assert set(rows) == {(p.key, p.deal_id) for p in planned}
        assert all(r["status"] == "done" for r in rows.values()), rows
        deals = sm.deal_properties(s.env, sorted({p.deal_id for p in planned}))
        for p in planned:
            got = {k: deals[p.deal_id].get(k) for k in p.properties}
            assert got == p.properties, (p.deal_id, got, p.properties)
    finally:
        ledger.dispose()


def _crash_trials(procs: Any, s: Setup, trials: int, seed: int) -> Counter:
    rng = random.Random(seed)
    kills: Counter = Counter()
    clean_time = 1.0
    for trial in range(trials):
        s.sb.reset()
        url = s.fresh_ledger()
        # The first kill cycles through every point (each is covered); a second one is random.
        plan = [KILL_POINTS[trial % len(KILL_POINTS)]]
        if rng.random() < 0.4:
            plan.append(rng.choice(KILL_POINTS))
        # Each round of kill points posts another way: one call per invoice, batches of 2 (a
        # month in two batches), one batch of 30 -- the crash points sit on either path.
        batch_size = BATCH_SIZES[(trial // len(KILL_POINTS)) % len(BATCH_SIZES)]
        qbo_calls = -(-len(s.month.drafts["invoices"]) // batch_size)
        for n, point in enumerate(plan):
            result = s.tmp / f"r{trial}-{n}.json"
            if point == "random_time":
                code = _run(procs, _job(s, url, batch_size=batch_size), result, kill_after=rng.uniform(0.02, clean_time))
            else:
                nth = rng.randint(1, min(3, qbo_calls) if point != "after_hubspot_patch" else 4)
                if point == "before_writeback":
                    nth = 1
                code = _run(procs, _job(s, url, crash=f"{point}:{nth}", batch_size=batch_size), result)
            assert code in (0, -signal.SIGKILL), f"trial {trial}: child exited {code}"
            kills[point if code == -signal.SIGKILL else f"{point} (finished first)"] += 1
        started = time.monotonic()
        code = _run(procs, _job(s, url), s.tmp / f"r{trial}-final.json")
        assert code == 0, f"trial {trial}: the re-run failed ({code})"
        clean_time = max(0.3, min(1.5, 2 * (time.monotonic() - started)))
        check_exactly_once(s, url)
    for point in child.POINTS:
        assert kills[point] > 0, f"no trial died at {point}: {kills}"
    return kills


def _concurrent_rounds(procs: Any, s: Setup, rounds: int) -> None:
    """The same month launched twice at once: one invoice per key, whoever wins each key."""
    for r in range(rounds):
        s.sb.reset()
        url = s.fresh_ledger()
        start_at = time.time() + 0.3
        # A long claim: the loser of a key sees "busy" rather than waiting it out.
        jobs = [_job(s, url, start_at=start_at, retry_busy=False, claim_seconds=30.0) for _ in range(2)]
        ps = [_start(procs, j, s.tmp / f"c{r}-{i}.json") for i, j in enumerate(jobs)]
        for p in ps:
            p.join(60)
            assert p.exitcode == 0, f"round {r}: a concurrent run failed ({p.exitcode})"
        outcomes = [child.read_result(str(s.tmp / f"c{r}-{i}.json"))["outcomes"] for i in range(2)]
        # every key was posted by exactly one of the two runs
        for k in range(len(s.month.drafts["invoices"])):
            pair = sorted(o[k] for o in outcomes)
            assert pair.count("posted") == 1, (r, pair)
        check_exactly_once(s, url)


def test_crash_anywhere_then_rerun_posts_once_sqlite(procs, world, tmp_path) -> None:
    s = _setup(world, tmp_path, None)
    started = time.monotonic()
    kills = _crash_trials(procs, s, CRASH_TRIALS_SQLITE, SEED)
    print(f"\nSQLite: {CRASH_TRIALS_SQLITE} trials in {time.monotonic() - started:.1f}s; kills {dict(kills)}")


def test_same_month_twice_at_once_sqlite(procs, world, tmp_path) -> None:
    _concurrent_rounds(procs, _setup(world, tmp_path, None), rounds=4)


@pytest.mark.postgres
def test_crash_anywhere_then_rerun_posts_once_postgres(procs, world, tmp_path, postgres_url) -> None:
    s = _setup(world, tmp_path, postgres_url)
    started = time.monotonic()
    kills = _crash_trials(procs, s, CRASH_TRIALS_POSTGRES, SEED + 1)
    print(f"\nPostgreSQL: {CRASH_TRIALS_POSTGRES} trials in {time.monotonic() - started:.1f}s; kills {dict(kills)}")


@pytest.mark.postgres
def test_same_month_twice_at_once_postgres(procs, world, tmp_path, postgres_url) -> None:
    _concurrent_rounds(procs, _setup(world, tmp_path, postgres_url), rounds=4)


def _two_bill_commands_at_once(tmp: Path, ledger_url: str) -> None:
    """Two `sync-pipelines bill` processes (two Dagster instances, one shared ledger) at once."""
    import subprocess
    import sys

    from sync_pipelines.connectors.factory import quickbooks_from_env

    fixture, rules_yaml = generate_fixture(clients=3, entries=40, seed=21, month=PERIOD)  # 2 invoices
    rules = tmp / "billing_rules.yaml"
    rules.write_text(rules_yaml)
    # Refresh tokens rotate on every refresh (the default): the two processes must single-flight it.
    with SandboxServer(fixture, rate_limits=None) as sb:
        env = sb.env()
        procs = []
        for i in range(2):
            home = tmp / f"home{i}"
            home.mkdir()
            penv = {**os.environ, **env, "SYNC_RULES_FILE": str(rules), "DAGSTER_HOME": str(home),
                    "SYNC_DATABASE_URL": ledger_url}
            penv.pop("SYNC_OUTPUT_DIR", None)
            procs.append(subprocess.Popen([sys.executable, "-m", "sync_pipelines.cli", "bill", "--month", PERIOD],
                                          env=penv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        results = [p.communicate(timeout=300) for p in procs]
        for p, (out, err) in zip(procs, results):
            assert p.returncode == 0, (p.returncode, out[-2000:], err[-2000:])
        ledger = Ledger(ledger_url)
        try:
            posted = ledger.status(period=PERIOD, statuses=["posted"])
            assert len(posted) == 2 and len(ledger.status(period=PERIOD)) == 2
            with quickbooks_from_env(ledger.tokens, env) as qbo:
                invoices = qbo.query_all("Invoice")
            assert sorted(i["DocNumber"] for i in invoices) == sorted(r.qbo_doc_number for r in posted)
            billed: set[int] = set()
            for r in posted:
                entries = [e for e, _, s in ledger.get_invoice(r.key).entries if s == "billed"]
                assert not billed & set(entries)
                billed |= set(entries)
            rows = sm.writeback_rows(ledger)
            assert rows and {r["status"] for r in rows} == {"done"}
        finally:
            ledger.dispose()
        printed = "".join(out for out, _ in results)
        assert printed.count("[posted; QBO id") == 2, printed  # each invoice posted by one of the two


def test_two_bill_commands_at_once(tmp_path) -> None:
    # Through the whole product (extract, pricing, posting, write-back), once: on the default
    # SQLite ledger, shared by two Dagster instances. The fast rounds above cover both backends.
    _two_bill_commands_at_once(tmp_path, f"sqlite:///{tmp_path}/ledger.db")
