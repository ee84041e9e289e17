"""Month-end at scale: `python benchmarks/month_end.py [--clients 10,100,1000] [--entries 200000]
[--instance sqlite,postgres] [--latency 150-400]`.

For each client count (entries scale with it: `--entries` is the count at the largest size, so
200,000 entries over 1,000 clients is 200 per client at every size):

1. generates a first month (`generate_fixture`: no QuickBooks customer exists yet except one, so
   the month-end creates them) and serves it from the sandbox **in its own process**
   (`sync-pipelines sandbox serve`) with the real rate limits and the added QuickBooks latency;
2. runs the month-end as a user does: `sync-pipelines bill --month M --json` in a subprocess, on a
   fresh DAGSTER_HOME whose dagster.yaml is the embedded SQLite instance, or PostgreSQL
   127.0.0.1:5432 (a fresh database for the instance and another for the ledger, dropped after);
3. reads, from the instance, every run's event log: wall time by stage (the steps' own
   STEP_START..STEP_SUCCESS windows, grouped as extraction / pricing / posting / write-back /
   reports), Dagster's own bookkeeping apart (time inside runs outside any step, plus the events
   written inside steps times the instance's cost per event write: the median spacing of events it
   writes back to back in the same runs), and the time outside any run (process start-up, loading
   definitions, between runs); from the sandbox
   (`GET /_sandbox/stats`) the API calls per system and endpoint, the 429s and the QuickBooks
   in-flight peak; the peak RSS of the `bill` process tree (sampled from /proc every 0.1 s);
   posting throughput against the company's throttle ceiling (30 items x 40 batch calls/min);
4. against the same sandbox process, reset to the same first month: the same customers and
   invoices posted the way python-quickbooks users do it (`QuickBooks.create_object`, one create
   call per object, one after another), asserted to give the same invoice totals, as a ratio of
   wall times;
5. prints the tables and the goals of issue 9 item 6 next to the figures, and appends them to
   docs/benchmarks.md (command, machine, date, load average) unless `--no-record`.

It uses what the code under test offers and says which: `--latency` / `--rate-limits` on
`sandbox serve` when the sandbox has them (else the latency goes through `POST /_sandbox/faults`
as a fixed `latency_ms`, the range's midpoint), and whatever runs `bill` launches.
`--json-out FILE` writes every figure as JSON (the test reads it).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sync_pipelines import money  # noqa: E402
from sync_pipelines.serving import free_port, sandbox_env, stop_process  # noqa: E402

BIN = Path(sys.executable).parent
SYNC = [str(BIN / "sync-pipelines")] if (BIN / "sync-pipelines").exists() else [sys.executable, "-m", "sync_pipelines.cli"]

#: QuickBooks Online's documented throttle per company (realm): batch calls of at most 30 items,
#: at most 40 batch calls a minute, 500 requests a minute, 10 in flight.
QBO_BATCH_ITEMS = 30
QBO_BATCH_PER_MIN = 40
QBO_REQUESTS_PER_MIN = 500
CEILING_ITEMS_PER_S = QBO_BATCH_ITEMS * QBO_BATCH_PER_MIN / 60  # 20 items/s

STAGES = ("extraction", "pricing", "posting", "write-back", "reports")

_SQLITE_YAML = """\
telemetry:
  enabled: false
"""

_PG_YAML = """\
storage:
  postgres:
    postgres_url: "{url}"
telemetry:
  enabled: false
"""


def stage_of(step_key: str) -> str:
    """Which stage of the month-end a Dagster step belongs to (by the asset it materialises)."""
    k = step_key.lower()
    if "write_back" in k or "writeback" in k:
        return "write-back"
    if k.startswith("qbo_invoices") or "post" in k or "customer" in k:
        return "posting"
    if k.startswith(("harvest_", "hubspot_", "qbo_", "billing_rules", "month_extract", "extract")):
        return "extraction"
    if "report" in k or "preview" in k:
        return "reports"
    return "pricing"


# ---------------------------------------------------------------------------------------- machine
def load_avg() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def machine() -> str:
    def sh(cmd: str) -> str:
        try:
            return subprocess.run(shlex.split(cmd), capture_output=True, text=True, timeout=10).stdout.strip()
        except Exception as exc:  # noqa: BLE001
            return f"({cmd}: {exc})"

    mem = sh("free -g").splitlines()
    total = mem[1].split()[1] if len(mem) > 1 else "?"
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor() or "?")
    return (f"{sh('nproc')} cores ({cpu}), {total} GB RAM, Python {sys.version.split()[0]}, "
            f"{platform.system()} {platform.release()}")


# ---------------------------------------------------------------------------------------- RSS
def _tree_rss_mb(root: int) -> float:
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{d}/statm") as f:
                rss[int(d)] = int(f.read().split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(d))
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += rss.get(pid, 0)
        todo.extend(children.get(pid, []))
    return total * os.sysconf("SC_PAGE_SIZE") / 2**20


class TreeRss:
    """Highest summed RSS of a process and its descendants, sampled every `interval` seconds."""

    def __init__(self, pid: int, interval: float = 0.1) -> None:
        self.pid, self.interval, self.peak = pid, interval, 0.0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _tree_rss_mb(self.pid))
            self._stop.wait(self.interval)

    def stop(self) -> float:
        self._stop.set()
        self._t.join()
        return self.peak


# ---------------------------------------------------------------------------------------- sandbox
def sandbox_capabilities() -> dict[str, bool]:
    """Which options `sync-pipelines sandbox serve` offers in the code under test."""
    out = subprocess.run([*SYNC, "sandbox", "serve", "--help"], capture_output=True, text=True, timeout=120).stdout
    return {"latency": "--latency" in out, "rate_limits": "--rate-limits" in out}


class SandboxProcess:
    """`sync-pipelines sandbox serve` in its own process, on a free port."""

    def __init__(self, fixture: Path, work: Path, latency: tuple[int, int] | None, caps: dict[str, bool]) -> None:
        self.stderr_path = work / f"sandbox-{uuid.uuid4().hex[:6]}.err"
        self.stderr = open(self.stderr_path, "w")  # noqa: SIM115
        use = dict(caps)
        while True:
            self.port = free_port()
            cmd = [*SYNC, "sandbox", "serve", "--fixture", str(fixture), "--port", str(self.port)]
            if use["rate_limits"]:
                cmd += ["--rate-limits", "real"]
            if latency and use["latency"]:
                cmd += ["--latency", f"{latency[0]}-{latency[1]}ms"]
            if self._start(cmd, work):
                break
            if not (use["latency"] or use["rate_limits"]):
                self.stderr.close()
                raise RuntimeError(f"the sandbox did not start: {self.stderr_path.read_text()[-2000:]}")
            # an option spelt differently from what this harness passes: fall back to the admin API
            print(f"note: `{' '.join(cmd[2:])}` did not start; retrying without --latency/--rate-limits", file=sys.stderr)
            use = {"latency": False, "rate_limits": False}
        caps = use
        self.base = self.env["QBO_BASE_URL"]
        self.http = httpx.Client(base_url=self.base, timeout=600)
        self.latency_how = "none"
        if latency and caps["latency"]:
            self.latency_how = f"`sandbox serve --latency {latency[0]}-{latency[1]}` (per QuickBooks call)"
        elif latency and latency[1] > 0:
            mid = (latency[0] + latency[1]) // 2
            self.http.post("/_sandbox/faults", json={"api": "quickbooks", "latency_ms": mid}).raise_for_status()
            self.latency_how = f"fixed {mid} ms per QuickBooks call (`/_sandbox/faults latency_ms`: no `--latency` here)"
        self.limits = self.http.get("/_sandbox/rate_limits").json()

    def _start(self, cmd: list[str], work: Path) -> bool:
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.stderr, text=True, cwd=work)
        env = sandbox_env(self.proc)
        self.env = env or {}
        if env is not None:
            return "QBO_BASE_URL" in env
        stop_process(self.proc)
        return False

    def stats(self) -> dict:
        return self.http.get("/_sandbox/stats").json()

    def clear_stats(self) -> None:
        self.http.delete("/_sandbox/stats").raise_for_status()

    def state(self) -> dict:
        r = self.http.get("/_sandbox/state")
        r.raise_for_status()
        return money.loads(r.content)

    def reset(self) -> None:
        self.http.post("/_sandbox/reset").raise_for_status()

    def stop(self) -> None:
        try:
            self.http.close()
        except Exception:  # noqa: BLE001
            pass
        stop_process(self.proc)
        self.stderr.close()


# ---------------------------------------------------------------------------------------- instances
@dataclass
class Instance:
    kind: str
    home: Path
    env: dict[str, str]
    databases: list[str] = field(default_factory=list)


def _pg_admin(url: str):
    import sqlalchemy as sa

    if url.startswith("postgresql://"):
        url = "postgresql+psycopg2://" + url.split("://", 1)[1]
    return sa, sa.create_engine(url, isolation_level="AUTOCOMMIT")


def make_instance(kind: str, work: Path, pg_url: str) -> Instance:
    home = work / f"dagster_home_{kind}_{uuid.uuid4().hex[:6]}"
    home.mkdir(parents=True)
    env = {"DAGSTER_HOME": str(home), "SYNC_OUTPUT_DIR": str(home / "output")}
    if kind == "sqlite":
        (home / "dagster.yaml").write_text(_SQLITE_YAML)
        return Instance(kind, home, env)
    sa, admin = _pg_admin(pg_url)
    names = [f"bench_me_{uuid.uuid4().hex[:10]}", f"bench_ledger_{uuid.uuid4().hex[:10]}"]
    with admin.connect() as c:
        for n in names:
            c.execute(sa.text(f'CREATE DATABASE "{n}"'))
    admin.dispose()
    base = sa.engine.make_url(pg_url.replace("postgresql://", "postgresql+psycopg2://", 1))
    inst_url, ledger_url = (base.set(database=n).render_as_string(hide_password=False) for n in names)
    (home / "dagster.yaml").write_text(_PG_YAML.format(url=inst_url))
    env["SYNC_DATABASE_URL"] = ledger_url
    return Instance(kind, home, env, names)


def drop_instance(inst: Instance, pg_url: str) -> None:
    if inst.databases:
        sa, admin = _pg_admin(pg_url)
        with admin.connect() as c:
            for n in inst.databases:
                c.execute(sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n "
                                  "AND pid <> pg_backend_pid()"), {"n": n})
                c.execute(sa.text(f'DROP DATABASE IF EXISTS "{n}"'))
        admin.dispose()


def _union(intervals: list[tuple[float, float]]) -> float:
    total, end = 0.0, float("-inf")
    for a, b in sorted(intervals):
        if b <= end:
            continue
        total += b - max(a, end)
        end = b
    return total


def instance_breakdown(home: Path) -> dict[str, Any]:
    """Runs, events and time by stage, from the instance's own event log."""
    import dagster as dg

    os.environ["DAGSTER_HOME"] = str(home)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        runs = instance.get_runs()
        stage_iv: dict[str, list[tuple[float, float]]] = {s: [] for s in STAGES}
        in_runs_outside_steps = 0.0
        run_iv: list[tuple[float, float]] = []
        events = in_step_events = materializations = planned = 0
        gaps: list[float] = []
        for run in runs:
            logs = instance.all_logs(run.run_id)
            if not logs:
                continue
            ts = [e.timestamp for e in logs]
            r0, r1 = min(ts), max(ts)
            run_iv.append((r0, r1))
            events += len(logs)
            open_steps: dict[str, float] = {}
            steps: list[tuple[str, float, float]] = []
            for prev, e in zip(logs, logs[1:]):
                pt = prev.dagster_event.event_type_value if prev.dagster_event else None
                if pt in BACK_TO_BACK and e.dagster_event and e.dagster_event.event_type_value == pt:
                    gaps.append(e.timestamp - prev.timestamp)
            for e in logs:
                de = e.dagster_event
                if de is None:
                    continue
                t = de.event_type_value
                if t == "ASSET_MATERIALIZATION":
                    materializations += 1
                elif t == "ASSET_MATERIALIZATION_PLANNED":
                    planned += 1
                if t == "STEP_START" and de.step_key:
                    open_steps[de.step_key] = e.timestamp
                elif t in ("STEP_SUCCESS", "STEP_FAILURE") and de.step_key in open_steps:
                    steps.append((de.step_key, open_steps.pop(de.step_key), e.timestamp))
            for key, a, b in steps:
                stage_iv[stage_of(key)].append((a, b))
                in_step_events += sum(1 for e in logs if a <= e.timestamp < b)
            in_runs_outside_steps += (r1 - r0) - _union([(a, b) for _, a, b in steps])
        if gaps:
            gaps.sort()
            write_ms, how = gaps[len(gaps) // 2] * 1000, f"median gap of {len(gaps):,} back-to-back events"
        else:
            write_ms, how = _event_write_ms(instance), "runless-write probe"
    return {
        "runs": len(runs), "events": events, "materializations": materializations, "planned": planned,
        "in_step_events": in_step_events, "event_write_ms": write_ms, "event_write_how": how,
        "stage_s": {s: _union(iv) for s, iv in stage_iv.items()},
        "in_runs_outside_steps_s": in_runs_outside_steps,
        "in_runs_s": _union(run_iv),
        "first_event_ts": min((a for a, _ in run_iv), default=None),
    }


#: Events Dagster writes one right after another with no user code between (a step's inputs, a run's
#: planned materialisations, a vectorised step's materialisations): their spacing is the cost of one
#: event write on this instance, measured inside the run itself.
BACK_TO_BACK = {"STEP_INPUT", "ASSET_MATERIALIZATION_PLANNED", "ASSET_MATERIALIZATION", "ASSET_CHECK_EVALUATION"}


def _event_write_ms(instance, n: int = 60) -> float:
    """The instance's cost of one event write: n runless materialisations of a probe asset, timed."""
    import dagster as dg

    for i in range(3):  # the first write creates the runless shard
        instance.report_runless_asset_event(dg.AssetMaterialization(asset_key="bench_event_write_probe", partition=f"w{i}"))
    t = time.perf_counter()
    for i in range(n):
        instance.report_runless_asset_event(dg.AssetMaterialization(asset_key="bench_event_write_probe", partition=str(i)))
    return (time.perf_counter() - t) / n * 1000


# ---------------------------------------------------------------------------------------- one month-end
def run_bill(month: str, env: dict[str, str], work: Path, timeout: float) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:6]
    out, err = work / f"bill-{tag}.out", work / f"bill-{tag}.err"
    load0 = load_avg()
    t0 = time.time()
    with open(out, "w") as fo, open(err, "w") as fe:
        proc = subprocess.Popen([*SYNC, "bill", "--month", month, "--json"], env=env, stdout=fo, stderr=fe, cwd=work)
        rss = TreeRss(proc.pid)
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            stop_process(proc)
            code = -1
        peak = rss.stop()
    wall = time.time() - t0
    summary: dict[str, Any] = {}
    try:
        summary = money.loads(out.read_bytes())
    except ValueError:
        pass
    return {"exit_code": code, "wall_s": wall, "started": t0, "peak_rss_mb": peak, "load_before": load0,
            "load_after": load_avg(), "stderr_tail": err.read_text()[-1500:] if code not in (0, 3) else "",
            "summary": summary}


def _fixture_counts(fixture: dict) -> tuple[int, int]:
    q = fixture.get("quickbooks", {})
    return len(q.get("customers", [])), len(q.get("invoices", []))


# ---------------------------------------------------------------------------------------- python-quickbooks baseline
_CUSTOMER_FIELDS = ("DisplayName", "CompanyName", "GivenName", "FamilyName", "PrimaryEmailAddr", "BillAddr",
                    "CurrencyRef", "Notes", "PrimaryPhone", "SalesTermRef")
_INVOICE_READ_ONLY = {"Id", "SyncToken", "MetaData", "TotalAmt", "Balance", "HomeBalance", "domain", "sparse",
                      "LinkedTxn", "EmailStatus", "PrintStatus", "HomeTotalAmt", "InvoiceLink", "TxnTaxDetail"}


def python_quickbooks_baseline(sb: SandboxProcess, posted: dict, initial_customers: int) -> dict[str, Any]:
    """Post `posted`'s customers and invoices again, on the reset sandbox, with python-quickbooks:
    one create call per object, one after another, retrying a 429 as its users must."""
    from types import SimpleNamespace

    from quickbooks import QuickBooks
    from quickbooks.exceptions import QuickbooksException

    customers = posted["quickbooks"]["customers"][initial_customers:]
    invoices = [i for i in posted["quickbooks"]["invoices"]]
    ours_total = sum((Decimal(str(i["TotalAmt"])) for i in invoices), Decimal(0))
    sb.reset()
    sb.clear_stats()
    env = sb.env
    tok = httpx.post(env["QBO_TOKEN_URL"], auth=(env["QBO_CLIENT_ID"], env["QBO_CLIENT_SECRET"]),
                     data={"grant_type": "refresh_token", "refresh_token": env["QBO_REFRESH_TOKEN"]},
                     headers={"Accept": "application/json"}, timeout=60).json()
    # QuickBooks(auth_client=...) reads only these four attributes of intuitlib's AuthClient, whose
    # constructor fetches Intuit's discovery document from developer.intuit.com (not the sandbox).
    auth = SimpleNamespace(client_id=env["QBO_CLIENT_ID"], environment="production",
                           access_token=tok["access_token"], refresh_token=tok["refresh_token"])
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        qb = QuickBooks(auth_client=auth, refresh_token=tok["refresh_token"], company_id=env["QBO_REALM_ID"],
                        minorversion=75)
    # python-quickbooks builds every URL from `api_url_v3` (a class attribute): the sandbox stands in
    # for https://quickbooks.api.intuit.com/v3.
    qb.api_url_v3 = env["QBO_BASE_URL"].rstrip("/") + "/v3"
    # requests-oauthlib refuses plain http unless told: the sandbox is on loopback http.
    os.environ["OAUTHLIB_INSECURE_TRANSPORT"] = "1"
    retries = 0

    def create(entity: str, body: dict) -> dict:
        nonlocal retries
        wait = 1.0
        for _ in range(12):
            try:
                return qb.create_object(entity, money.dumps(body))[entity]
            except QuickbooksException as exc:
                if "ThrottleExceeded" not in str(exc.message) + str(getattr(exc, "detail", "")):
                    raise
                retries += 1
                time.sleep(wait)
                wait = min(wait * 2, 60)
        raise RuntimeError(f"{entity}: still throttled after 12 attempts")

    t = time.perf_counter()
    new_ids: dict[str, str] = {}
    for c in customers:
        new_ids[str(c["Id"])] = str(create("Customer", {k: c[k] for k in _CUSTOMER_FIELDS if k in c})["Id"])
    created_total = Decimal(0)
    for inv in invoices:
        body = {k: v for k, v in inv.items() if k not in _INVOICE_READ_ONLY}
        body["Line"] = [{k: v for k, v in ln.items() if k not in ("Id", "LineNum")} for ln in inv["Line"]
                        if ln.get("DetailType") != "SubTotalLineDetail"]
        ref = dict(inv["CustomerRef"])
        ref["value"] = new_ids.get(str(ref["value"]), str(ref["value"]))
        body["CustomerRef"] = ref
        created_total += Decimal(str(create("Invoice", body)["TotalAmt"]))
    wall = time.perf_counter() - t
    if created_total != ours_total:
        raise AssertionError(f"python-quickbooks totals {created_total} differ from ours {ours_total}")
    return {"wall_s": wall, "customers": len(customers), "invoices": len(invoices), "total": str(ours_total),
            "retries_429": retries, "calls": sb.stats()}


# ---------------------------------------------------------------------------------------- one size
def api_calls(stats: dict) -> dict[str, dict]:
    return {api: {"calls": a["calls"], "throttled": a["throttled"], "by_endpoint": a["by_endpoint"],
                  "span": a.get("span", {})} for api, a in stats.get("apis", {}).items()}


def qbo_posting_window_s(api: dict) -> float:
    """From the first to the last QuickBooks create / batch call the sandbox served (its own clock)."""
    spans = [v for ep, v in api.get("quickbooks", {}).get("span", {}).items()
             if ep.split()[0] == "POST" and ep.split()[1] in ("batch", "invoice", "customer")]
    return max(b for _, b in spans) - min(a for a, _ in spans) if spans else 0.0


def floor_s(invoices: int, customers: int) -> float:
    """What QuickBooks' batch throttle alone imposes: every item in batches of 30, 40 batches a minute."""
    return (-(-invoices // QBO_BATCH_ITEMS) - (-customers // QBO_BATCH_ITEMS)) * 60 / QBO_BATCH_PER_MIN


def bench_size(clients: int, entries: int, args, caps, work: Path) -> list[dict[str, Any]]:
    from sync_pipelines.sandbox import generate_fixture

    t = time.perf_counter()
    fixture, rules_yaml = generate_fixture(clients=clients, entries=entries, seed=args.seed, month=args.month)
    fpath, rpath = work / f"fixture-{clients}.json", work / f"rules-{clients}.yaml"
    fpath.write_bytes(money.dumps(fixture).encode())
    rpath.write_text(rules_yaml)
    gen_s = time.perf_counter() - t
    initial_customers, initial_invoices = _fixture_counts(fixture)
    del fixture
    results = []
    for n, kind in enumerate(args.instance):
        sb = SandboxProcess(fpath, work, args.latency, caps)
        inst = make_instance(kind, work, args.pg_url)
        try:
            env = {**os.environ, **sb.env, **inst.env, "SYNC_RULES_FILE": str(rpath)}
            sb.clear_stats()
            bill = run_bill(args.month, env, work, args.timeout)
            stats = sb.stats()
            state = sb.state()
            q = state["quickbooks"]
            created_customers = len(q["customers"]) - initial_customers
            created_invoices = len(q["invoices"]) - initial_invoices
            bd = instance_breakdown(inst.home)
            res: dict[str, Any] = {
                "clients": clients, "entries": entries, "instance": kind, "generate_s": gen_s,
                "latency": sb.latency_how, "limits": sb.limits, **bill, "breakdown": bd,
                "api": api_calls(stats), "qbo_in_flight_peak": max(stats.get("qbo_in_flight_peak", {}).values(), default=0),
                "customers_created": created_customers, "invoices_created": created_invoices,
                "floor_s": floor_s(created_invoices, created_customers),
            }
            if n == 0 and not args.skip_baseline and created_invoices:
                res["baseline"] = python_quickbooks_baseline(sb, state, initial_customers)
            results.append(derive(res))
            print(one_line(results[-1]), flush=True)
        finally:
            sb.stop()
            drop_instance(inst, args.pg_url)
    return results


def derive(r: dict[str, Any]) -> dict[str, Any]:
    bd = r["breakdown"]
    wall = r["wall_s"]
    in_step_dagster = bd["in_step_events"] * bd["event_write_ms"] / 1000
    dagster = bd["in_runs_outside_steps_s"] + in_step_dagster
    outside_runs = max(wall - bd["in_runs_s"], 0.0)
    # process start-up and loading the definitions: a fixed cost per month-end, not per client
    startup = (bd["first_event_ts"] - r["started"]) if bd.get("first_event_ts") else 0.0
    posting = bd["stage_s"]["posting"]
    items = r["invoices_created"] + r["customers_created"]
    window = qbo_posting_window_s(r["api"])
    own = max(wall - dagster - posting - startup, 0.0)
    r["derived"] = {
        "dagster_in_runs_outside_steps_s": bd["in_runs_outside_steps_s"],
        "dagster_in_step_events_s": in_step_dagster,
        "dagster_s": dagster,
        "outside_runs_s": outside_runs,
        "startup_s": startup,
        "everything_but_posting_s": wall - posting,
        "own_s": own,
        "own_ms_per_client": own / r["clients"] * 1000,
        "posting_items_per_s": items / posting if posting else 0.0,
        "posting_fraction_of_ceiling": (items / posting / CEILING_ITEMS_PER_S) if posting else 0.0,
        "qbo_posting_window_s": window,
        "api_items_per_s": items / window if window else 0.0,
        "api_fraction_of_ceiling": (items / window / CEILING_ITEMS_PER_S) if window else 0.0,
        "qbo_calls_per_min_posting": (r["api"].get("quickbooks", {}).get("calls", 0) / posting * 60) if posting else 0.0,
    }
    if "baseline" in r:
        r["derived"]["baseline_ratio_total"] = r["baseline"]["wall_s"] / wall
        r["derived"]["baseline_ratio_posting"] = r["baseline"]["wall_s"] / posting if posting else 0.0
    return r


def one_line(r: dict) -> str:
    d = r["derived"]
    return (f"[{r['clients']} clients, {r['instance']}] exit {r['exit_code']}, wall {r['wall_s']:.1f} s, "
            f"posting {r['breakdown']['stage_s']['posting']:.1f} s, Dagster {d['dagster_s']:.1f} s, "
            f"{r['invoices_created']} invoices + {r['customers_created']} customers, peak RSS {r['peak_rss_mb']:.0f} MB, "
            f"load {r['load_before']} -> {r['load_after']}"
            + (f", python-quickbooks {r['baseline']['wall_s']:.1f} s" if "baseline" in r else ""))


# ---------------------------------------------------------------------------------------- report
def _calls(r: dict, api: str) -> str:
    a = r["api"].get(api)
    if not a:
        return "0"
    top = sorted(a["by_endpoint"].items(), key=lambda kv: -sum(kv[1].values()))[:3]
    detail = ", ".join(f"{ep} {sum(v.values())}" for ep, v in top)
    return f"{a['calls']:,}" + (f" ({a['throttled']} × 429)" if a["throttled"] else "") + f": {detail}"


def command() -> str:
    return ".venv/bin/python " + " ".join(shlex.quote(a) for a in [os.path.relpath(__file__, REPO)] + sys.argv[1:])


def markdown(results: list[dict], args, started: str, caps: dict[str, bool], cmd: str | None = None) -> str:
    cmd = cmd or command()
    lines = ["```sh", cmd, "```", "",
             f"Run {started}; machine: {machine()}; load average at start {results[0]['load_before'] if results else '?'}.",
             f"Sandbox in its own process, limits {results[0]['limits'] if results else '?'}; QuickBooks latency: "
             f"{results[0]['latency'] if results else '?'}; sandbox options found: "
             f"{', '.join(k for k, v in caps.items() if v) or 'none (today main)'}.", "",
             "| clients / entries | instance | exit | wall | extraction | pricing | posting | write-back | reports | "
             "Dagster (outside steps + in-step events) | outside runs (of it start-up) | runs / events | load avg (before → after) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        s, d, bd = r["breakdown"]["stage_s"], r["derived"], r["breakdown"]
        lines.append(
            f"| {r['clients']:,} / {r['entries']:,} | {r['instance']} | {r['exit_code']} | **{r['wall_s']:.1f} s** | "
            f"{s['extraction']:.1f} s | {s['pricing']:.1f} s | {s['posting']:.1f} s | {s['write-back']:.1f} s | "
            f"{s['reports']:.1f} s | {d['dagster_s']:.1f} s ({d['dagster_in_runs_outside_steps_s']:.1f} + "
            f"{bd['in_step_events']:,} × {bd['event_write_ms']:.1f} ms) | {d['outside_runs_s']:.1f} s "
            + (f"({d['startup_s']:.1f} s) | " if bd.get("first_event_ts") else "(n/a) | ") +
            f"{bd['runs']:,} / {bd['events']:,} | {r['load_before']} → {r['load_after']} |")
    lines += ["", "| clients | instance | Harvest calls | HubSpot calls | QuickBooks calls | QBO in flight (peak) | "
              "posted (invoices + customers) | posting throughput, posting steps / QBO create-call window (of 20 items/s) | peak RSS (bill tree) | "
              "throttle floor | python-quickbooks, 1 call per object | ratio (total / posting) |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        d = r["derived"]
        b = r.get("baseline")
        lines.append(
            f"| {r['clients']:,} | {r['instance']} | {_calls(r, 'harvest')} | {_calls(r, 'hubspot')} | "
            f"{_calls(r, 'quickbooks')} | {r['qbo_in_flight_peak']} | {r['invoices_created']:,} + {r['customers_created']:,} | "
            f"{d['posting_items_per_s']:.2f} items/s ({d['posting_fraction_of_ceiling']:.0%}) / "
            f"{d['api_items_per_s']:.2f} items/s in {d['qbo_posting_window_s']:.1f} s ({d['api_fraction_of_ceiling']:.0%}) | "
            f"{r['peak_rss_mb']:,.0f} MB | "
            f"{r['floor_s']:.0f} s | "
            + (f"{b['wall_s']:.1f} s ({b['invoices']:,} + {b['customers']:,} creates) | "
               f"{d['baseline_ratio_total']:.2f}× / {d['baseline_ratio_posting']:.2f}× |" if b else "— | — |"))
    lines += ["", *goals(results)]
    return "\n".join(lines)


def _verdict(value: float, goal: float, higher_is_better: bool, unit: str) -> str:
    ok = value >= goal if higher_is_better else value <= goal
    if ok:
        return "**met**"
    gap = (goal - value) if higher_is_better else (value - goal)
    return f"**missed** by {gap:,.1f}{unit}" + (f" ({value / goal:.1f}× the goal)" if not higher_is_better and goal else "")


def goals(results: list[dict]) -> list[str]:
    """Issue 9 item 6, each goal next to its figure at the largest size measured on each instance."""
    if not results:
        return []
    out = ["Goals (issue 9 item 6), at the largest size measured on each instance:", "",
           "| goal | instance, clients | figure | verdict |", "|---|---|---|---|"]
    largest = max(r["clients"] for r in results)
    for r in [x for x in results if x["clients"] == largest]:
        d, where = r["derived"], f"{r['instance']}, {r['clients']:,}"
        fl = r["floor_s"]
        out.append(f"| month-end ≤ 1.25 × throttle floor ({fl:.0f} s: {r['invoices_created']:,} invoices + "
                   f"{r['customers_created']:,} customers / 30 per batch at 40/min) | {where} | {r['wall_s']:.1f} s "
                   f"({r['wall_s'] / fl:.2f}× the floor) | {_verdict(r['wall_s'], 1.25 * fl, False, ' s')} |" if fl else
                   f"| month-end ≤ 1.25 × throttle floor | {where} | nothing posted | — |")
        out.append(f"| ≤ 60 s of everything but posting | {where} | {d['everything_but_posting_s']:.1f} s "
                   f"(of it Dagster {d['dagster_s']:.1f} s) | {_verdict(d['everything_but_posting_s'], 60, False, ' s')} |")
        out.append(f"| ≤ 300 ms own time per client (wall − Dagster − posting − start-up) | {where} | {d['own_ms_per_client']:.0f} ms | "
                   f"{_verdict(d['own_ms_per_client'], 300, False, ' ms')} |")
        out.append(f"| posting ≥ 80 % of the throttle ceiling (20 items/s) | {where} | "
                   f"{d['posting_fraction_of_ceiling']:.0%} over the posting steps ({d['posting_items_per_s']:.2f} items/s); "
                   f"{d['api_fraction_of_ceiling']:.0%} over the sandbox's create-call window | "
                   f"{_verdict(d['posting_fraction_of_ceiling'] * 100, 80, True, ' points')} |")
        rss_goal = 2048 if r["entries"] <= 200_000 else 4096
        out.append(f"| peak RSS ≤ {rss_goal // 1024} GB at {r['entries']:,} entries | {where} | {r['peak_rss_mb']:,.0f} MB | "
                   f"{_verdict(r['peak_rss_mb'], rss_goal, False, ' MB')} |")
        if "baseline" in r:
            out.append(f"| ≥ 5× faster than one call per invoice (python-quickbooks) | {where} | "
                       f"{d['baseline_ratio_total']:.2f}× (whole month-end) / {d['baseline_ratio_posting']:.2f}× (posting) | "
                       f"{_verdict(d['baseline_ratio_total'], 5, True, '×')} |")
    return out


HEADING = "## Month-end at scale — `benchmarks/month_end.py`"
INTRO = (
    "One command: a generated first month (customers created), the sandbox in its own process with the\n"
    "real limits and QuickBooks latency, `sync-pipelines bill --month` in a subprocess on a fresh SQLite or\n"
    "PostgreSQL instance and a fresh ledger; stages from the instance's event log (a step's\n"
    "STEP_START..STEP_SUCCESS window), Dagster's bookkeeping apart (time in runs outside steps + events\n"
    "written inside steps × the instance's cost per event write, the median spacing of events Dagster\n"
    "writes back to back inside the same runs), API calls from\n"
    "`GET /_sandbox/stats`, peak RSS of the `bill` process tree; then the same customers and invoices\n"
    "posted with python-quickbooks 0.9.12 (one create call each) against the same sandbox, reset.\n"
    "The throttle floor is (⌈invoices/30⌉ + ⌈customers/30⌉) batch calls at 40 a minute.")


def record(text: str) -> None:
    path = REPO / "docs" / "benchmarks.md"
    body = path.read_text()
    if HEADING not in body:
        body = body.rstrip("\n") + "\n\n" + HEADING + "\n\n" + INTRO + "\n"
    path.write_text(body.rstrip("\n") + "\n\n" + text + "\n")


def save_json(path: Path, caps: dict, started: str, results: list[dict]) -> None:
    path.write_text(json.dumps({"capabilities": caps, "started": started, "command": command(), "results": results},
                               indent=2, default=str))


def _latency(value: str) -> tuple[int, int] | None:
    if value in ("0", "none", "off"):
        return None
    lo, _, hi = value.partition("-")
    return int(lo), int(hi or lo)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", default="10,100,1000", help="client counts, comma-separated")
    ap.add_argument("--entries", type=int, default=200_000, help="time entries at the largest client count (scaled)")
    ap.add_argument("--instance", default="sqlite,postgres", help="sqlite, postgres or both")
    ap.add_argument("--latency", type=_latency, default=(150, 400), help="QuickBooks latency range in ms, or 0")
    ap.add_argument("--month", default="2026-10")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--pg-url", default=os.environ.get("SYNC_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"))
    ap.add_argument("--timeout", type=float, default=4 * 3600, help="seconds before one bill run is stopped")
    ap.add_argument("--skip-baseline", action="store_true", help="no python-quickbooks comparison")
    ap.add_argument("--no-record", action="store_true", help="do not append to docs/benchmarks.md")
    ap.add_argument("--json-out", type=Path, default=None)
    ap.add_argument("--keep", action="store_true", help="keep the work directory (instances, fixtures, logs)")
    ap.add_argument("--from-json", type=Path, default=None,
                    help="print (and record) the tables of an earlier --json-out instead of measuring")
    args = ap.parse_args(argv)
    if args.from_json:
        saved = json.loads(args.from_json.read_text())
        saved["results"] = [derive(r) for r in saved["results"]]
        text = markdown(saved["results"], args, saved.get("started", "(see the JSON)"), saved["capabilities"],
                        saved.get("command"))
        print(text)
        if not args.no_record:
            record(text)
        return 0
    sizes = sorted({int(c) for c in args.clients.split(",") if c.strip()})
    args.instance = [i.strip() for i in args.instance.split(",") if i.strip()]
    bad = [i for i in args.instance if i not in ("sqlite", "postgres")]
    if bad or not sizes or min(sizes) < 2:
        ap.error(f"--instance takes sqlite,postgres (got {bad}); --clients needs counts >= 2")
    random.seed(args.seed)
    caps = sandbox_capabilities()
    started = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    work = Path(tempfile.mkdtemp(prefix="month_end_bench_"))
    results: list[dict] = []
    try:
        for c in sizes:
            entries = max(round(args.entries * c / max(sizes)), 20 * c)
            results.extend(bench_size(c, entries, args, caps, work))
            if args.json_out:  # after each size: a long run stopped later keeps what it measured
                save_json(args.json_out, caps, started, results)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"work directory kept: {work}", file=sys.stderr)
    text = markdown(results, args, started, caps)
    print("\n" + text)
    if args.json_out:
        save_json(args.json_out, caps, started, results)
    if not args.no_record:
        record(text)
    failed = [r for r in results if r["exit_code"] not in (0, 3)]
    for r in failed:
        print(f"bill failed at {r['clients']} clients on {r['instance']} (exit {r['exit_code']}):\n{r['stderr_tail']}",
              file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
