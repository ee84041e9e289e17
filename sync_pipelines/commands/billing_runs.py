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

from sync_pipelines import config, money
from sync_pipelines.defs.io_manager import read_stored
from sync_pipelines.run_errors import step_errors

# Step logs go to the run's event log (the UI shows them all); the terminal gets warnings and up.
_QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_HELD = 3

_DEMO_INSTANCE_YAML = """\
# Local instance on Dagster's embedded SQLite (written by sync-pipelines; see dagster.yaml at the
# repository root for the production PostgreSQL configuration).
run_retries:
  enabled: true
  max_retries: 2
  retry_on_asset_or_op_failure: false
concurrency:
  pools:
    default_limit: 4
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
    clients: list[ClientMonth] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        if self.extract_error or any(not c.success for c in self.clients):
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
    errors = step_errors(result.all_events, limit=2000)
    if errors:
        return errors[0]
    failure = result.get_run_failure_event()
    return failure.message if failure is not None else "run failed"


def bill_month(
    period: str,
    *,
    client: str | None = None,
    dry_run: bool = False,
    out_dir: Path | None = None,
    instance: dg.DagsterInstance | None = None,
    definitions: dg.Definitions | None = None,
) -> BillingRun:
    """Extract the month, then price (and unless ``dry_run``, post) each client's month."""
    from sync_pipelines.defs.partitions import client_month_key

    if definitions is None:
        from sync_pipelines.definitions import defs as load_defs

        definitions = load_defs()
    if instance is None:
        ensure_instance_home()
        instance = dg.DagsterInstance.get()

    run = BillingRun(period=period)
    store = _store_dir(definitions)
    extract = definitions.resolve_job_def("month_extract").execute_in_process(
        partition_key=period, instance=instance, raise_on_error=False, tags={"sync/trigger": "cli"},
        run_config=_QUIET,
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

    job = definitions.resolve_job_def("client_month_preview" if dry_run else "client_month_billing")
    for key in client_keys:
        cm = ClientMonth(client_key=key, period=period)
        partition = client_month_key(key, period)
        result = job.execute_in_process(
            partition_key=partition, instance=instance, raise_on_error=False, tags={"sync/trigger": "cli"},
            run_config=_QUIET,
        )
        cm.run_id, cm.success = result.run_id, result.success
        if not result.success:
            cm.error = _first_error(result)
        try:
            cm.drafts = read_stored(store, "invoice_drafts", partition)
        except Exception:  # noqa: BLE001 - the run failed before drafting; the error says why
            cm.drafts = None
        if not dry_run and result.success:
            cm.outcomes = read_stored(store, "qbo_invoices", partition)
            cm.report_path = config.output_dir() / period / key / "reconciliation_report.csv"
        cm.preview_path = config.output_dir() / period / key / "invoice_preview.csv"
        run.clients.append(cm)

    if dry_run and out_dir is not None:
        write_dry_run(run, out_dir, definitions=definitions, instance=instance)
    return run


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
            reasons = list(inv.get("hold_reasons") or []) + ([o["reasons"]] if o.get("reasons") else [])
            for reason in reasons:
                w(f"     ! {reason}\n")
    w("\n")


def _short(text: str, width: int = 70) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: width - 1] + "…"


def run_summary_json(run: BillingRun) -> str:
    """Machine-readable summary (``--json``), amounts exact."""
    return money.dumps({
        "period": run.period,
        "exit_code": run.exit_code,
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
