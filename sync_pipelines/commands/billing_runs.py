"""`sync-pipelines bill`: a month's billing through the same Dagster assets the UI runs.

Runs execute in process against the instance at ``DAGSTER_HOME``, so every run appears in the
Dagster UI with its lineage, metadata and checks, and can be re-executed from there.
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, TextIO

import dagster as dg
import pandas as pd

from sync_pipelines import config, money, stopping
from sync_pipelines.defs.io_manager import read_stored
from sync_pipelines.ledger import redact
from sync_pipelines.run_errors import step_errors
from sync_pipelines.run_liveness import mark_dead_cli_runs_failed, process_tags

# Step logs go to the run's event log (the UI shows them all); the terminal gets warnings and up.
_QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_HELD = 3
# Stopped by SIGTERM / SIGINT at a safe point: stopping.exit_status(), 128 + the signal's number
# (143, 130), as shells report a command ended by a signal.

_DEMO_INSTANCE_YAML = """\
# Local instance on Dagster's embedded SQLite (written by sync-pipelines; see dagster.yaml at the
# repository root for the production PostgreSQL configuration).
# Run monitoring (with `dagster dev` / the daemon): a run whose worker died is marked failed, so
# its invoice claims are taken over by the next run at once. Runs of `sync-pipelines bill` whose
# process was killed are marked failed by the next `bill`.
run_monitoring:
  enabled: true
  start_timeout_seconds: 180
  cancel_timeout_seconds: 180
  max_resume_run_attempts: 0
  poll_interval_seconds: 30
run_retries:
  enabled: true
  max_retries: 2
  retry_on_asset_or_op_failure: false
concurrency:
  pools:
    default_limit: 4
# The daemon looks at the run queue every second, not every 5 s (Dagster's default): a deal run
# requested by the sensor starts up to 4 s sooner (stage change -> invoice, docs/benchmarks.md).
run_coordinator:
  module: dagster._core.run_coordinator
  class: QueuedRunCoordinator
  config:
    dequeue_interval_seconds: 1
telemetry:
  enabled: false
"""


@dataclass
class ClientMonth:
    client_key: str
    period: str
    run_id: str | None = None
    success: bool = False
    error: str | None = None
    drafts: dict[str, Any] | None = None
    outcomes: pd.DataFrame | None = None
    report_path: Path | None = None
    preview_path: Path | None = None


@dataclass
class BillingRun:
    period: str
    extract_run_id: str | None = None
    extract_error: str | None = None
    #: The month's one posting run (every selected client) and its follow-up run.
    posting_run_id: str | None = None
    follow_up_run_id: str | None = None
    follow_up_error: str | None = None
    clients: list[ClientMonth] = field(default_factory=list)
    # Set when a stop signal ended the run early: the signal's name, and the clients not started.
    stopped_by: str | None = None
    not_started: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        if self.stopped_by is not None:
            return stopping.exit_status()
        if self.extract_error or self.follow_up_error or any(not c.success for c in self.clients):
            return EXIT_FAILED
        for c in self.clients:
            outcomes = c.outcomes
            if outcomes is not None and len(outcomes) and (~outcomes["outcome"].isin(["posted", "already_posted", "recovered"])).any():
                return EXIT_HELD
            if c.drafts and any(i["status"] == "held" for i in c.drafts["invoices"]):
                return EXIT_HELD
        return EXIT_OK


def ensure_instance_home() -> Path:
    """DAGSTER_HOME, created with a SQLite instance config when it does not exist yet."""
    home = config.dagster_home()
    os.environ["DAGSTER_HOME"] = str(home)
    home.mkdir(parents=True, exist_ok=True)
    yaml_path = home / "dagster.yaml"
    if not yaml_path.exists():
        yaml_path.write_text(_DEMO_INSTANCE_YAML)
    return home


def _store_dir(definitions: dg.Definitions) -> Path:
    io_manager = (definitions.resources or {}).get("io_manager")
    base = getattr(io_manager, "base_dir", None)
    return Path(base) if base else config.dagster_home() / "storage"


def _first_error(result: dg.ExecuteInProcessResult) -> str:
    """The first failed step's own error, redacted (the summary is printed and sent as JSON)."""
    errors = step_errors(result.all_events, limit=2000)
    if errors:
        return redact.short_error(errors[0], limit=2000) or errors[0]
    failure = result.get_run_failure_event()
    return (redact.short_error(failure.message, limit=2000) or "run failed") if failure is not None else "run failed"


def bill_month(
    period: str,
    *,
    client: str | None = None,
    dry_run: bool = False,
    out_dir: Path | None = None,
    instance: dg.DagsterInstance | None = None,
    definitions: dg.Definitions | None = None,
) -> BillingRun:
    """Extract and price the month, then (unless ``dry_run``) post every client's month in one
    run and follow up (CRM write-back, reconciliation report) in another: the month-end's three
    runs (`defs/jobs.py`), in process.

    With ``client``, the month is still extracted and priced again (so a rules fix is used), but
    only that client's month is posted. One client's problem (inconsistent drafts, a QuickBooks
    company that stayed unavailable) is recorded on that client; the others are posted. A stop
    request (:mod:`sync_pipelines.stopping`) is honoured between runs and, inside posting,
    between invoices (those not attempted come back as ``stopped``).
    """
    from sync_pipelines.defs.jobs import ONLY_CLIENT_TAG
    from sync_pipelines.defs.partitions import client_month_key, month_posting_tags

    if definitions is None:
        from sync_pipelines.definitions import defs as load_defs

        definitions = load_defs()
    if instance is None:
        ensure_instance_home()
        instance = dg.DagsterInstance.get()

    run = BillingRun(period=period)
    store = _store_dir(definitions)
    tags = {"sync/trigger": "cli", **process_tags()}
    for run_id in mark_dead_cli_runs_failed(instance):
        print(f"note: run {run_id} was left STARTED by a killed process; marked failed", file=sys.stderr)
    extract = definitions.resolve_job_def("month_extract").execute_in_process(
        partition_key=period, instance=instance, raise_on_error=False, run_config=_QUIET,
        tags={**tags, **({ONLY_CLIENT_TAG: client} if client else {})},
    )
    run.extract_run_id = extract.run_id
    if not extract.success:
        run.extract_error = _first_error(extract)
        return run

    rules_snapshot = read_stored(store, "billing_rules", period)
    client_keys = list(rules_snapshot["clients"])
    if client is not None:
        if client not in client_keys:
            raise SystemExit(f"error: client {client!r} is not in the billing rules ({', '.join(client_keys)})")
        client_keys = [client]
    document = read_stored(store, "invoice_drafts", period)
    invoices_by_client: dict[str, list[dict[str, Any]]] = {}
    for inv in document["invoices"]:
        invoices_by_client.setdefault(inv["client_key"], []).append(inv)
    output = config.output_dir() / period
    for key in client_keys:
        run.clients.append(ClientMonth(client_key=key, period=period, run_id=extract.run_id, success=True,
                                       drafts={**document, "invoices": invoices_by_client.get(key, [])},
                                       preview_path=output / key / "invoice_preview.csv"))
    if dry_run:
        if out_dir is not None:
            write_dry_run(run, out_dir, definitions=definitions, instance=instance)
        return run
    if stopping.requested() or not client_keys:
        run.stopped_by = stopping.signal_name() if stopping.requested() else None
        run.not_started = client_keys if run.stopped_by else []
        return run

    if client is not None:
        selection: dict[str, Any] = {"partition_key": client_month_key(client, period)}
    else:
        # One run over the range of every registered client (the `clients` partitions' order);
        # registered clients no longer in the rules are recorded as "no invoice".
        selection = {"tags": {**tags, **month_posting_tags(period, list(instance.get_dynamic_partitions("clients")))}}
    posting = definitions.resolve_job_def("month_posting").execute_in_process(
        instance=instance, raise_on_error=False, run_config=_QUIET, **({"tags": tags} | selection),
    )
    run.posting_run_id = posting.run_id
    _record_posting(run, posting)
    if stopping.requested():
        run.stopped_by = stopping.signal_name()
        return run
    if posting.success or posting.asset_materializations_for_node("qbo_invoices"):
        follow_up = definitions.resolve_job_def("month_follow_up").execute_in_process(
            partition_key=period, instance=instance, raise_on_error=False, tags=tags, run_config=_QUIET,
        )
        run.follow_up_run_id = follow_up.run_id
        if not follow_up.success:
            run.follow_up_error = _first_error(follow_up)
        for cm in run.clients:
            if cm.outcomes is not None:
                cm.report_path = output / cm.client_key / "reconciliation_report.csv"
    return run


def _record_posting(run: BillingRun, posting: dg.ExecuteInProcessResult) -> None:
    """Each client's own outcomes and status from the posting run's materialisations (not the
    shared store: two `bill` processes of one month overwrite each other's stored output)."""
    from sync_pipelines.defs.partitions import client_and_month
    from sync_pipelines.posting.client_months import BLOCKED, NOT_POSTED
    from sync_pipelines.posting.invoices import OUTCOME_COLUMNS

    by_client = {}
    for mat in posting.asset_materializations_for_node("qbo_invoices"):
        by_client[client_and_month(mat.partition)[0]] = mat.metadata
    run_error = None if posting.success else _first_error(posting)
    for cm in run.clients:
        cm.run_id = posting.run_id
        metadata = by_client.get(cm.client_key)
        if metadata is None:
            cm.success, cm.error = False, run_error or "not posted"
            continue
        rows = metadata["outcomes"].value if "outcomes" in metadata else []
        cm.outcomes = pd.DataFrame(list(rows), columns=OUTCOME_COLUMNS)
        status = metadata["status"].value if "status" in metadata else None
        if status == BLOCKED:
            cm.success = False
            cm.error = "drafts are inconsistent, nothing posted: " + str(metadata["problems"].value if "problems" in metadata else "")
        elif status == NOT_POSTED:
            failed = cm.outcomes[cm.outcomes["outcome"] == "failed"]
            cm.success = False
            cm.error = redact.short_error("; ".join(f"{r['invoice_key']}: {r['reasons']}" for r in failed.to_dict("records")),
                                          limit=2000) or "not posted"


def run_in_foreground(work, *, out: TextIO = sys.stderr):
    """Run ``work()`` on a worker thread while this (main) thread turns SIGTERM and SIGINT into a
    stop request: the billing stops at the next safe point instead of dying mid-invoice.

    Dagster replaces the SIGINT handler while it executes on the main thread; on a worker thread
    it leaves signals alone, so the stop flag is the only way in.
    """
    import threading

    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["result"] = work()
        except BaseException as exc:  # noqa: BLE001 - re-raised on the main thread
            box["error"] = exc

    def notify(name: str) -> None:
        out.write(f"\n{name} received: stopping after the invoice in progress (its ledger update "
                  f"included); send SIGKILL only if it hangs.\n")
        out.flush()

    with stopping.stop_on_signals(notify):
        worker = threading.Thread(target=target, name="sync-pipelines-bill", daemon=True)
        worker.start()
        while worker.is_alive():
            worker.join(timeout=0.2)
    if "error" in box:
        raise box["error"]
    return box.get("result")


def write_dry_run(run: BillingRun, out_dir: Path, *, definitions: dg.Definitions, instance: dg.DagsterInstance) -> None:
    """Write the exact payloads (one JSON per invoice), the lines CSV and a diff against QuickBooks."""
    out_dir.mkdir(parents=True, exist_ok=True)
    store = _store_dir(definitions)
    catalog = read_stored(store, "qbo_catalog", run.period)
    existing = read_stored(store, "qbo_existing_invoices", run.period)
    customers = catalog[catalog["entity"] == "Customer"]
    customer_ids = dict(zip(customers["name"], customers["id"]))
    diff_rows = []
    for cm in run.clients:
        if cm.preview_path and cm.preview_path.exists():
            shutil.copyfile(cm.preview_path, out_dir / f"{cm.client_key}_lines.csv")
        for inv in (cm.drafts or {}).get("invoices", []):
            ref = {"name": inv["customer_name"]}
            if inv["customer_name"] in customer_ids:
                ref = {"value": str(customer_ids[inv["customer_name"]]), "name": inv["customer_name"]}
            payload = {**inv["payload"], "CustomerRef": ref}
            name = f"{inv['doc_number']}{'.HELD' if inv['status'] == 'held' else ''}.json"
            (out_dir / name).write_text(money.dumps(payload, sort_keys=True, indent=2) + "\n")
            same_customer = existing[existing["customer_name"] == inv["customer_name"]]
            # ours by DocNumber, or by the PrivateNote fingerprint when QuickBooks numbers invoices
            ours = same_customer[(same_customer["doc_number"] == inv["doc_number"])
                                 | (same_customer["private_note"] == inv["payload"].get("PrivateNote"))]
            if len(ours):
                change = "unchanged" if Decimal(str(ours.iloc[0]["total"])) == Decimal(str(inv["total"])) else "changed"
            else:
                change = "new"
            diff_rows.append({
                "client_key": cm.client_key, "doc_number": inv["doc_number"], "status": inv["status"],
                "draft_total": str(inv["total"]), "currency": inv["currency"], "in_quickbooks": change,
                "qbo_total": str(ours.iloc[0]["total"]) if len(ours) else "",
                "other_qbo_invoices_this_month": ", ".join(
                    str(d) for d in same_customer["doc_number"] if d != inv["doc_number"]),
            })
    pd.DataFrame(diff_rows).to_csv(out_dir / "diff_against_quickbooks.csv", index=False)


def print_run(run: BillingRun, *, out: TextIO = sys.stdout, dry_run: bool = False) -> None:
    w = out.write
    if run.extract_error:
        w(f"Extract for {run.period} failed (run {run.extract_run_id}):\n  {run.extract_error}\n")
        if run.stopped_by:
            w(f"Stopped by {run.stopped_by}: nothing was billed.\n")
        return
    w(f"Billing {run.period}{' (dry run: nothing posted)' if dry_run else ''}\n")
    for cm in run.clients:
        w(f"\n== {cm.client_key} ==\n")
        if not cm.success:
            w(f"  FAILED (run {cm.run_id}): {cm.error}\n")
        outcomes = {}
        if cm.outcomes is not None and len(cm.outcomes):
            outcomes = {r["invoice_key"]: r for r in cm.outcomes.to_dict("records")}
        invoices = (cm.drafts or {}).get("invoices", [])
        if not invoices and cm.success:
            w("  no billable time this month\n")
        for inv in invoices:
            o = outcomes.get(inv["invoice_key"], {})
            status = o.get("outcome") or inv["status"]
            qbo = f"QBO id {o['qbo_id']}" if o.get("qbo_id") else "not in QuickBooks"
            w(f"  {inv['customer_name']}  {inv['doc_number']}  total {inv['total']} {inv['currency']}  "
              f"[{status}; {qbo}]\n")
            for line in inv["payload"].get("Line", []):
                if line.get("DetailType") == "SalesItemLineDetail":
                    d = line["SalesItemLineDetail"]
                    qty = f"{d.get('Qty')} h x {d.get('UnitPrice')}" if "Qty" in d else ""
                    w(f"     {_short(line.get('Description', ''))}  {qty}  = {line['Amount']}\n")
                elif line.get("DetailType") == "DiscountLineDetail":
                    w(f"     discount  -{line['Amount']}\n")
            reasons = list(inv.get("hold_reasons") or [])
            # posting records a held draft with the draft's own reasons: print them once
            if o.get("reasons") and o["reasons"] != "; ".join(reasons):
                reasons.append(o["reasons"])
            for reason in dict.fromkeys(reasons):
                w(f"     ! {reason}\n")
    if run.follow_up_error:
        w(f"\nFollow-up (CRM write-back, reconciliation report) failed (run {run.follow_up_run_id}):\n"
          f"  {run.follow_up_error}\n")
    if run.stopped_by:
        w(_stop_summary(run))
    w("\n")


def _stop_summary(run: BillingRun) -> str:
    done, left = [], []
    for cm in run.clients:
        for row in ([] if cm.outcomes is None else cm.outcomes.to_dict("records")):
            (left if row["outcome"] == "stopped" else done).append(f"{row['invoice_key']} ({row['outcome']})")
    lines = [f"\nStopped by {run.stopped_by} at a safe point (no invoice was left between its QuickBooks call "
             f"and its ledger update)."]
    lines.append(f"  done: {len(done)} invoice(s)" + (": " + ", ".join(done) if done else ""))
    lines.append(f"  left: {len(left)} invoice(s) not attempted" + (": " + ", ".join(left) if left else ""))
    if run.not_started:
        lines.append(f"  clients not started: {', '.join(run.not_started)}")
    lines.append(f"  Re-run `sync-pipelines bill --month {run.period}` to finish; what is done is skipped.")
    return "\n".join(lines) + "\n"


def _short(text: str, width: int = 70) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: width - 1] + "…"


def run_summary_json(run: BillingRun) -> str:
    """Machine-readable summary (``--json``), amounts exact."""
    return money.dumps({
        "period": run.period,
        "exit_code": run.exit_code,
        "runs": {"extract": run.extract_run_id, "posting": run.posting_run_id, "follow_up": run.follow_up_run_id},
        "follow_up_error": run.follow_up_error,
        "stopped_by": run.stopped_by,
        "clients_not_started": run.not_started,
        "clients": [
            {"client_key": c.client_key, "run_id": c.run_id, "success": c.success, "error": c.error,
             "invoices": [
                 {k: i[k] for k in ("invoice_key", "doc_number", "status", "total", "currency", "hold_reasons")}
                 for i in (c.drafts or {}).get("invoices", [])
             ],
             "outcomes": [] if c.outcomes is None else c.outcomes.to_dict("records")}
            for c in run.clients
        ],
    }, indent=2)
