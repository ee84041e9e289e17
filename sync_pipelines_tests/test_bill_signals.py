"""Issue 13, real `sync-pipelines bill` processes against the sandbox: a stop signal ends `bill`
at the next safe point (between invoices) with what is done and left, exit 143 / 130, and a
re-run finishes the month with no duplicate; a claim left by a SIGKILLed `bill` is taken over
by the next one at once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sync_pipelines.ledger import Ledger
from sync_pipelines.sandbox import SandboxServer, generate_fixture

PERIOD = "2026-10"


def _month(tmp_path: Path, clients: int, entries: int, seed: int) -> tuple[dict, Path, Path]:
    """A generated month: (fixture, rules file, DAGSTER_HOME) under `tmp_path`."""
    fixture, rules_yaml = generate_fixture(clients=clients, entries=entries, seed=seed, month=PERIOD)
    rules = tmp_path / "billing_rules.yaml"
    rules.write_text(rules_yaml)
    home = tmp_path / "home"
    home.mkdir()
    return fixture, rules, home


def _env(sandbox: SandboxServer, rules: Path, home: Path) -> dict[str, str]:
    """`bill`'s environment: the sandbox, the rules, the default SQLite ledger under `home`.
    The month's 3 invoices go one per call, one call at a time, so a stop lands between them (as
    it lands between batches in a month of more invoices than 3 batches of 30: test_batch_posting.py)."""
    env = {**os.environ, **sandbox.env(), "SYNC_RULES_FILE": str(rules), "DAGSTER_HOME": str(home),
           "QBO_BATCH_SIZE": "1", "QBO_BATCHES_IN_FLIGHT": "1"}
    env.pop("SYNC_DATABASE_URL", None)
    env.pop("SYNC_OUTPUT_DIR", None)
    return env


def _bill(env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "sync_pipelines.cli", "bill", "--month", PERIOD], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize("signum, status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_stop_signal_ends_bill_between_invoices_with_a_summary(tmp_path: Path, signum, status) -> None:
    fixture, rules, home = _month(tmp_path, clients=4, entries=100, seed=31)
    with SandboxServer(fixture) as sandbox:
        env = _env(sandbox, rules, home)
        sandbox.set_faults("quickbooks", latency_ms=250)
        proc = _bill(env)
        deadline = time.monotonic() + 240
        while not sandbox.state()["quickbooks"].get("invoices") and time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.1)
        signalled = time.monotonic()
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=120)
        stopped_in = time.monotonic() - signalled
        name = signal.Signals(signum).name
        assert proc.returncode == status, (out[-3000:], err[-3000:])
        assert stopped_in < 60, stopped_in  # before: it kept posting for 60 s and more
        assert f"{name} received: stopping after the invoice in progress" in err
        assert f"Stopped by {name} at a safe point" in out and "  done: " in out and "  left: " in out
        assert "Traceback" not in out + err

        # Nothing half-done: every QuickBooks invoice is posted in the ledger, nothing is pending.
        ledger = Ledger(f"sqlite:///{home / 'sync_ledger.db'}")
        try:
            rows = ledger.status(period=PERIOD)
            assert not [r for r in rows if r.status == "pending"]
            posted = {r.qbo_doc_number for r in rows if r.status == "posted"}
            in_qbo = [i["DocNumber"] for i in sandbox.state()["quickbooks"]["invoices"]]
            assert posted == set(in_qbo) and len(in_qbo) == len(set(in_qbo))
            assert "clients not started" in out or "not attempted" in out

            # The re-run finishes the month: each invoice once.
            sandbox.set_faults("quickbooks")
            again = _bill(env)
            out2, err2 = again.communicate(timeout=300)
            assert again.returncode in (0, 3), (out2[-3000:], err2[-3000:])
            in_qbo = [i["DocNumber"] for i in sandbox.state()["quickbooks"]["invoices"]]
            assert len(in_qbo) == len(set(in_qbo)) > len(posted)
            rows = ledger.status(period=PERIOD)
            assert {r.qbo_doc_number for r in rows if r.status == "posted"} == set(in_qbo)
        finally:
            ledger.dispose()


def test_a_claim_left_by_a_killed_bill_is_taken_over_at_once(tmp_path: Path) -> None:
    # Before: each re-run inside the 300 s claim failed with "Exceeded max_retries of 5", blocked
    # every later client, and the killed runs stayed STARTED in the instance for ever.
    import dagster as dg

    fixture, rules, home = _month(tmp_path, clients=3, entries=60, seed=41)
    with SandboxServer(fixture) as sandbox:
        env = _env(sandbox, rules, home)
        db = home / "sync_ledger.db"
        proc = _bill(env)
        deadline = time.monotonic() + 240
        pending = []
        while not pending and time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()
            if db.exists():
                # the first invoice is claimed: slow QuickBooks down so the kill lands mid-call
                sandbox.set_faults("quickbooks", latency_ms=3000)
                ledger = Ledger(f"sqlite:///{db}")
                try:
                    pending = [r for r in ledger.status(period=PERIOD) if r.status == "pending"]
                except Exception:  # noqa: BLE001 - the ledger is being created
                    pending = []
                finally:
                    ledger.dispose()
            time.sleep(0.05)
        assert pending, "the first run never claimed an invoice"
        proc.kill()
        proc.wait()
        sandbox.set_faults("quickbooks")

        started = time.monotonic()
        again = _bill(env)
        out, err = again.communicate(timeout=280)
        assert again.returncode == 0, (out[-3000:], err[-3000:])
        assert time.monotonic() - started < 150  # not waiting out the 300 s claim
        assert "was left STARTED by a killed process; marked failed" in err
        in_qbo = [i["DocNumber"] for i in sandbox.state()["quickbooks"]["invoices"]]
        ledger = Ledger(f"sqlite:///{db}")
        try:
            rows = ledger.status(period=PERIOD)
            assert rows and {r.status for r in rows} == {"posted"}
            assert sorted(in_qbo) == sorted(r.qbo_doc_number for r in rows)  # one invoice per key
        finally:
            ledger.dispose()
        with dg.DagsterInstance.from_config(str(home)) as instance:
            assert not instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED]))
