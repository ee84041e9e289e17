"""`sync-pipelines serve [--sandbox]`: the whole product on one machine, for a trial (DESIGN §7).

Starts, as child processes sharing one ``DAGSTER_HOME``, ``workspace.yaml`` and environment:

- ``dagster-webserver`` (the UI),
- ``dagster-daemon`` (schedules, sensors, queued runs: the sensors drain the webhook inbox),
- the webhook receiver (``sync-pipelines webhooks serve``).

With ``--sandbox`` it first generates the demo firm (the same data as ``make demo``), serves it
from the sandbox in this process, points the sandbox's webhooks at the receiver and exports the
sandbox's environment to the children, so moving a deal in the sandbox reaches the receiver, the
inbox and the daemon's sensors exactly as a HubSpot webhook would. Its rules are the demo's with
the ready-for-billing stage set (:func:`trial_rules`), so the deal it names (:func:`deal_to_move`)
becomes an invoice when moved; `make demo`'s month-end keeps the demo's own rules.

Ctrl-C or SIGTERM stops every child (its whole process group: the webserver and the daemon run
code servers of their own) and then the sandbox.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from sync_pipelines.serving import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
READY_TIMEOUT_S = 240.0
STOP_TIMEOUT_S = 30.0


@dataclass
class Child:
    name: str
    argv: list[str]
    ready_url: str
    proc: subprocess.Popen | None = None

    def start(self, env: dict[str, str]) -> None:
        # A session of its own: a terminal's Ctrl-C reaches only us, and we stop the child's whole
        # process group (the webserver and daemon start code-server grandchildren).
        self.proc = subprocess.Popen(self.argv, cwd=REPO_ROOT, env=env, start_new_session=True)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal_group(self, sig: int) -> None:
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def children(host: str, ui_port: int, webhooks_port: int) -> list[Child]:
    py = sys.executable
    workspace = str(REPO_ROOT / "workspace.yaml")
    return [
        Child("webhook receiver", [py, "-m", "sync_pipelines.cli", "webhooks", "serve", "--host", host,
                                   "--port", str(webhooks_port)], _url(host, webhooks_port) + "/healthz"),
        Child("dagster-webserver", [py, "-m", "dagster_webserver", "-w", workspace, "-h", host, "-p", str(ui_port)],
              _url(host, ui_port) + "/server_info"),
        Child("dagster-daemon", [py, "-m", "dagster._daemon", "run", "-w", workspace], ""),
    ]


def _wait_ready(kids: list[Child], stop: threading.Event) -> str | None:
    """None when every child answers its ready URL (the daemon: is still running); else why not."""
    pending = [k for k in kids if k.ready_url]
    deadline = time.monotonic() + READY_TIMEOUT_S
    with httpx.Client(timeout=2.0) as http:
        while pending:
            for k in kids:
                if not k.running():
                    return f"{k.name} exited with status {k.proc.returncode if k.proc else '?'} while starting"
            for k in list(pending):
                try:
                    if http.get(k.ready_url).status_code == 200:
                        pending.remove(k)
                except httpx.HTTPError:
                    pass
            if stop.wait(0.5):
                return "interrupted"
            if time.monotonic() > deadline:
                return f"not ready after {READY_TIMEOUT_S:.0f} s: {', '.join(k.name for k in pending)}"
    return None


def stop_children(kids: list[Child]) -> None:
    for k in kids:
        if k.running():
            k.signal_group(signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for k in kids:
        if k.proc is None:
            continue
        try:
            k.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            print(f"{k.name} did not stop in {STOP_TIMEOUT_S:.0f} s; killing it", file=sys.stderr)
            k.signal_group(signal.SIGKILL)
            k.proc.wait(timeout=10)
        # whatever the child left in its group (a code server) goes with it
        k.signal_group(signal.SIGKILL)


def _create_instance_storage() -> None:
    """Create the Dagster instance's storage before the children start: the webserver and the
    daemon creating a fresh SQLite instance at the same moment race on its schema (Dagster then
    fails with "Version table 'alembic_version' has more than one head present")."""
    import dagster as dg

    with dg.DagsterInstance.get() as instance:
        instance.get_runs(limit=1)


def _start_sandbox(directory: Path, host: str, port: int) -> tuple[Any, Path]:
    from sync_pipelines.commands.demo import demo_data, previous_month, sandbox_state_file
    from sync_pipelines.sandbox import SandboxServer

    month = previous_month()
    fixture, rules_path = demo_data(directory, month)
    sandbox = SandboxServer(fixture, host=host, port=port, state_file=sandbox_state_file(directory, month)).start()
    return sandbox, trial_rules(rules_path)


def trial_rules(demo_rules: Path) -> Path:
    """The demo's rules with deal triggers on (``hubspot.ready_for_billing_stage``), next to them.

    Only the trial uses them: `make demo`'s month-end keeps its own rules (stage unset, so it
    bills exactly what it always did), while here moving a deal into the stage bills it."""
    import yaml

    from sync_pipelines.sandbox.generator import READY_FOR_BILLING_STAGE

    text = demo_rules.read_text()
    rules = yaml.safe_load(text) or {}
    hubspot = rules.get("hubspot") or {}
    if hubspot.get("ready_for_billing_stage") != READY_FOR_BILLING_STAGE:
        if "hubspot" in rules:
            rules["hubspot"] = {**hubspot, "ready_for_billing_stage": READY_FOR_BILLING_STAGE}
            text = yaml.safe_dump(rules, sort_keys=False)
        else:
            text = text.rstrip("\n") + (f"\n# serve --sandbox: deals entering this stage are billed at once\n"
                                         f"hubspot: {{ready_for_billing_stage: {READY_FOR_BILLING_STAGE}}}\n")
    path = demo_rules.with_name(demo_rules.stem + "-serve" + demo_rules.suffix)
    path.write_text(text)
    return path


def deal_to_move(state: dict) -> str | None:
    """A deal whose move into the ready-for-billing stage bills an invoice: one with line items,
    not in the stage yet (the generator's package left in `contractsent` first). None when the
    data has none (a fixture generated by an older version, or the deal was moved already)."""
    from sync_pipelines.sandbox.generator import READY_FOR_BILLING_STAGE, TRIAL_DEAL_NAME

    hs = state.get("hubspot") or {}
    with_items = {a["from_id"] for a in hs.get("associations") or []
                  if a.get("from_type") == "deals" and a.get("to_type") == "line_items"}
    candidates = [d for d in hs.get("deals") or [] if str(d["id"]) in with_items and not d.get("archived")
                  and (d.get("properties") or {}).get("dealstage") != READY_FOR_BILLING_STAGE]
    candidates.sort(key=lambda d: not str((d.get("properties") or {}).get("dealname") or "").endswith(TRIAL_DEAL_NAME))
    return str(candidates[0]["id"]) if candidates else None


def serve_main(*, sandbox: bool, host: str, ui_port: int, webhooks_port: int, sandbox_port: int,
               directory: Path) -> int:
    from sync_pipelines.commands.billing_runs import ensure_instance_home
    from sync_pipelines.ledger.base import LedgerError, ledger_url_from_env

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())

    ui_port = ui_port or free_port(host)
    webhooks_port = webhooks_port or free_port(host)
    directory = directory.resolve()
    sb = None
    if sandbox:
        directory.mkdir(parents=True, exist_ok=True)
        os.environ.setdefault("DAGSTER_HOME", str(directory / "dagster_home"))
    home = ensure_instance_home()
    try:
        ledger_url_from_env()
    except LedgerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    _create_instance_storage()
    receiver_url = _url(host, webhooks_port)
    if sandbox:
        try:
            sb, rules_path = _start_sandbox(directory, host, sandbox_port)
        except OSError as exc:
            print(f"error: cannot start the sandbox on {host}:{sandbox_port}: {exc.strerror or exc}", file=sys.stderr)
            return 2
        os.environ.update(sb.env())
        os.environ["SYNC_RULES_FILE"] = str(rules_path)
        r = httpx.post(sb.base_url + "/_sandbox/webhooks", timeout=10, json={
            "hubspot_url": receiver_url + "/webhooks/hubspot", "quickbooks_url": receiver_url + "/webhooks/quickbooks"})
        r.raise_for_status()

    # alerts from the daemon's sensors link to runs in this UI (README "Operating")
    os.environ.setdefault("DAGSTER_WEBSERVER_URL", _url(host, ui_port))
    kids = children(host, ui_port, webhooks_port)
    env = dict(os.environ)
    try:
        for k in kids:
            k.start(env)
        problem = _wait_ready(kids, stop)
        if problem is not None:
            print(f"error: {problem}; stopping everything", file=sys.stderr)
            return 0 if problem == "interrupted" else 1
        ui = _url(host, ui_port)
        print("\nsync_pipelines is running (Ctrl-C stops everything):", flush=True)
        print(f"  Dagster UI          {ui}", flush=True)
        print(f"  webhook receiver    {receiver_url}/webhooks/hubspot, {receiver_url}/webhooks/quickbooks "
              f"(health: {receiver_url}/healthz)", flush=True)
        print(f"  dagster-daemon      running (schedules and sensors)   DAGSTER_HOME={home}", flush=True)
        if sb is not None:
            from sync_pipelines.sandbox.generator import READY_FOR_BILLING_STAGE

            deal_id = deal_to_move(sb.state())
            print(f"  sandbox             {sb.base_url} (Harvest, HubSpot, QuickBooks; webhooks -> the receiver)", flush=True)
            print(f"  rules               {rules_path} (deals entering {READY_FOR_BILLING_STAGE} are billed)", flush=True)
            if deal_id is not None:
                print("\nMove a deal to the ready-for-billing stage: HubSpot sends a signed webhook to the receiver, "
                      "the deal sensor starts a deal_billing run and its invoice is in QuickBooks seconds later:",
                      flush=True)
                print(f"  curl -X POST {sb.base_url}/_sandbox/actions/move_deal_stage "
                      f"-d '{{\"deal_id\": \"{deal_id}\", \"dealstage\": \"{READY_FOR_BILLING_STAGE}\"}}'", flush=True)
                print(f"See it: the deal_billing run in the UI, or curl -s {sb.base_url}/_sandbox/state | jq "
                      f"'.quickbooks.invoices[] | select(.PrivateNote | contains(\"deal-{deal_id}\"))'", flush=True)
            else:
                print(f"\nEvery deal with line items is in {READY_FOR_BILLING_STAGE} already (moved in an earlier "
                      f"session, or data from an older version): `make clean-demo` starts over.", flush=True)
            print(f"Void an invoice: curl -X POST {sb.base_url}/_sandbox/actions/void_invoice -d '{{\"invoice_id\": \"<Id>\"}}'",
                  flush=True)
        while not stop.wait(0.5):
            for k in kids:
                if not k.running():
                    print(f"error: {k.name} exited with status {k.proc.returncode if k.proc else '?'}; stopping everything",
                          file=sys.stderr)
                    return 1
        print("Stopping...", flush=True)
        return 0
    finally:
        stop_children(kids)
        if sb is not None:
            sb.stop()
        print("Stopped.", flush=True)
