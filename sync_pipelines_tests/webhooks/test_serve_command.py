"""`sync-pipelines serve --sandbox` as a real subprocess: everything comes up, a deal stage move
reaches the ledger inbox through the receiver, and SIGTERM stops every process it started."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from sync_pipelines.ledger import Ledger

REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _processes_with_home(home: str) -> set[int]:
    """Every live process whose environment has DAGSTER_HOME=home (children and grandchildren)."""
    pids = set()
    needle = f"DAGSTER_HOME={home}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                pids.add(int(entry.name))
        except OSError:
            continue
    return pids


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_serve_sandbox_runs_everything_and_stops_on_sigterm(tmp_path):
    ui, hooks, sandbox = _free_port(), _free_port(), _free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("SYNC_DATABASE_URL", "DAGSTER_HOME", "WEBHOOK_PUBLIC_URL")}
    home = str((tmp_path / "trial" / "dagster_home").resolve())
    proc = subprocess.Popen(
        [sys.executable, "-m", "sync_pipelines.cli", "serve", "--sandbox", "--dir", str(tmp_path / "trial"),
         "--port", str(ui), "--webhooks-port", str(hooks), "--sandbox-port", str(sandbox)],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True)  # type: ignore[union-attr]
    reader.start()
    started: set[int] = set()
    try:
        deadline = time.monotonic() + 300
        while not any("sync_pipelines is running" in l for l in lines):
            assert proc.poll() is None, "serve exited early:\n" + "".join(lines[-50:])
            assert time.monotonic() < deadline, "serve not ready in 300 s:\n" + "".join(lines[-50:])
            time.sleep(0.5)
        time.sleep(1.0)  # the lines after the banner
        out = "".join(lines)
        assert f"http://127.0.0.1:{ui}" in out and f"http://127.0.0.1:{hooks}/healthz" in out
        assert f"http://127.0.0.1:{sandbox}" in out
        curl = re.search(r"curl -X POST (\S+/_sandbox/actions/move_deal_stage) -d '(.+)'", out)
        assert curl, out

        with httpx.Client(timeout=10) as http:
            assert http.get(f"http://127.0.0.1:{ui}/server_info").status_code == 200
            health = http.get(f"http://127.0.0.1:{hooks}/healthz").json()
            assert health["ok"] is True
            assert {k: v["secret_configured"] for k, v in health["endpoints"].items()} == {"hubspot": True, "quickbooks": True}
            config = http.get(f"http://127.0.0.1:{sandbox}/_sandbox/webhooks").json()["config"]
            assert config["hubspot_url"] == f"http://127.0.0.1:{hooks}/webhooks/hubspot"
            # what the banner tells the user to run
            moved = http.post(curl.group(1), content=curl.group(2))
            assert moved.status_code == 200, moved.text
            deal_id = moved.json()["id"]

        ledger = Ledger(f"sqlite:///{home}/sync_ledger.db")
        try:
            deadline = time.monotonic() + 30
            rows = []
            while time.monotonic() < deadline:
                rows = [e.payload() for e in ledger.inbox_pending(source="hubspot")]
                if rows:
                    break
                time.sleep(0.2)
        finally:
            ledger.dispose()
        assert [(str(r["objectId"]), r["propertyValue"]) for r in rows] == [(deal_id, "ready_for_billing")]

        started = _processes_with_home(home) - {proc.pid}
        assert len(started) >= 3  # receiver, webserver, daemon (+ their code servers)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=90) == 0, "".join(lines[-30:])
        reader.join(timeout=5)
        assert "Stopped." in "".join(lines)
        deadline = time.monotonic() + 10
        while any(_alive(p) for p in started) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not [p for p in started if _alive(p)]
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
        for pid in started | _processes_with_home(home):  # only processes this test started
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
