"""benchmarks/month_end.py end to end at a tiny size (3 clients, 200 entries, no added latency), so
the harness cannot rot: sandbox in its own process, `bill` in a subprocess on a fresh SQLite
instance, the instance's event log read back, the python-quickbooks baseline against the same
sandbox. The figures at real sizes are in docs/benchmarks.md."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _bench():
    spec = importlib.util.spec_from_file_location("month_end_benchmark", ROOT / "benchmarks" / "month_end.py")
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_throttle_floor_stages_and_interval_union() -> None:
    bench = _bench()
    # 1,000 invoices: 34 batch calls at 40 a minute = 51 s; 1,000 customers as much again
    assert bench.floor_s(1000, 0) == 51.0 and bench.floor_s(1000, 1000) == 102.0 and bench.floor_s(31, 1) == 4.5
    assert [bench.stage_of(k) for k in ("harvest_time_entries", "qbo_catalog", "price_month_drafts", "qbo_invoices",
                                        "crm_write_back", "reconciliation_report")] == [
        "extraction", "extraction", "pricing", "posting", "write-back", "reports"]
    assert bench._union([(0, 2), (1, 3), (5, 6)]) == 4


def test_month_end_benchmark_runs_end_to_end_at_a_tiny_size(tmp_path: Path) -> None:
    out = tmp_path / "result.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "month_end.py"), "--clients", "3", "--entries", "200",
         "--instance", "sqlite", "--latency", "0", "--no-record", "--json-out", str(out)],
        capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (r,) = json.loads(out.read_text())["results"]
    assert r["exit_code"] in (0, 3) and r["clients"] == 3 and r["instance"] == "sqlite"
    # every system was really called, over HTTP, and counted by the sandbox
    assert {api: r["api"][api]["calls"] > 0 for api in ("harvest", "hubspot", "quickbooks")} == {
        "harvest": True, "hubspot": True, "quickbooks": True}
    assert r["invoices_created"] >= 1 and r["customers_created"] >= 1
    # the instance's event log was read: runs, events, every stage timed inside the wall time
    bd = r["breakdown"]
    assert bd["runs"] >= 2 and bd["events"] > bd["in_step_events"] > 0 and bd["event_write_ms"] > 0
    assert all(bd["stage_s"][s] > 0 for s in ("extraction", "pricing", "posting"))
    assert sum(bd["stage_s"].values()) <= bd["in_runs_s"] + 1e-6 <= r["wall_s"]
    assert 50 < r["peak_rss_mb"] < 4096
    assert r["floor_s"] == _bench().floor_s(r["invoices_created"], r["customers_created"])
    # python-quickbooks re-posted the same objects, one call each, with the same totals
    b = r["baseline"]
    assert (b["invoices"], b["customers"]) == (r["invoices_created"], r["customers_created"])
    creates = b["calls"]["apis"]["quickbooks"]["by_endpoint"]
    assert creates["POST invoice"]["2xx"] == b["invoices"] and creates["POST customer"]["2xx"] == b["customers"]
    assert b["wall_s"] > 0 and r["derived"]["baseline_ratio_total"] > 0
    assert "Goals (issue 9 item 6)" in proc.stdout and "| sqlite |" in proc.stdout
