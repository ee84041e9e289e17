"""`sync-pipelines demo` (`make demo`): last month's billing, end to end, on the embedded defaults.

1. generates a realistic fixture and a matching rules file under ``--dir`` (once; deterministic);
2. serves them from the sandbox (state saved in ``--dir``, so a second run sees the invoices the
   first one created, as a real QuickBooks would);
3. bills the previous complete month through the Dagster assets on Dagster's SQLite instance
   and a SQLite ledger, both under ``--dir``;
4. prints every invoice and where the preview, the report and the UI are.

Run it twice: the second run posts nothing new (every invoice is already in the ledger).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

DEMO_SEED = 7
DEMO_CLIENTS = 8
DEMO_ENTRIES = 600
DEMO_TIMEZONE = "America/New_York"


def previous_month(now: datetime | None = None, tz: str = DEMO_TIMEZONE) -> str:
    now = now or datetime.now(ZoneInfo(tz))
    year, month = (now.year, now.month - 1) if now.month > 1 else (now.year - 1, 12)
    return f"{year:04d}-{month:02d}"


def demo_data(directory: Path, month: str) -> tuple[dict, Path]:
    """The demo firm for `month` under `directory`: generated once (deterministic), then reused.
    Returns the fixture and the path of its rules file."""
    from sync_pipelines import money
    from sync_pipelines.sandbox import generate_fixture

    fixture_path = directory / f"fixture-{month}.json"
    rules_path = directory / f"billing_rules-{month}.yaml"
    if not fixture_path.exists() or not rules_path.exists():
        fixture, rules_yaml = generate_fixture(clients=DEMO_CLIENTS, entries=DEMO_ENTRIES, seed=DEMO_SEED, month=month)
        fixture_path.write_text(money.dumps(fixture, indent=1))
        rules_path.write_text(rules_yaml)
        print(f"Generated {fixture_path.name} and {rules_path.name} in {directory}")
    return money.loads(fixture_path.read_text()), rules_path


def sandbox_state_file(directory: Path, month: str) -> Path:
    """Where the sandbox keeps its state between runs, so QuickBooks 'remembers' what was posted."""
    return directory / f"sandbox-state-{month}.json"


def run_demo(directory: Path, *, month: str | None = None, ui: bool = False, port: int = 8765,
             ui_port: int = 3000) -> int:
    from sync_pipelines.commands.billing_runs import bill_month, ensure_instance_home, print_run
    from sync_pipelines.sandbox import SandboxServer

    directory = directory.resolve()
    directory.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("DAGSTER_HOME", str(directory / "dagster_home"))
    home = ensure_instance_home()
    month = month or previous_month()

    fixture, rules_path = demo_data(directory, month)

    started = time.monotonic()
    with SandboxServer(fixture, port=port, state_file=sandbox_state_file(directory, month)) as sandbox:
        os.environ.update(sandbox.env())
        os.environ["SYNC_RULES_FILE"] = str(rules_path)
        print(f"Sandbox (Harvest, HubSpot, QuickBooks) at {sandbox.base_url}; billing {month}...\n")
        run = bill_month(month)
        print_run(run)
        output = Path(os.environ.get("SYNC_OUTPUT_DIR") or home / "output") / month
        print(f"Finished in {time.monotonic() - started:.1f} s (exit status {run.exit_code}).")
        print(f"Invoice previews and reconciliation reports: {output}/<client>/")
        print(f"Ledger: {home / 'sync_ledger.db'}   Dagster instance: {home}")
        print(f"What the ledger holds: DAGSTER_HOME={home} .venv/bin/sync-pipelines ledger status")
        if not ui:
            print(f"See the runs, lineage and the billing board in the Dagster UI: make ui  (http://127.0.0.1:{ui_port})")
            return run.exit_code
        print(f"Starting the Dagster UI at http://127.0.0.1:{ui_port} (Ctrl-C to stop)...")
        repo_root = Path(__file__).resolve().parents[2]
        proc = subprocess.Popen(
            [sys.executable, "-m", "dagster", "dev", "-w", str(repo_root / "workspace.yaml"), "-h", "127.0.0.1", "-p", str(ui_port)],
            cwd=repo_root,
        )
        try:
            return proc.wait()
        except KeyboardInterrupt:
            proc.terminate()
            proc.wait(timeout=30)
            return 0
