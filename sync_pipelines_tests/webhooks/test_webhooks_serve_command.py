"""`sync-pipelines webhooks serve` as a process: clear errors for bad configuration (no traceback),
and a real request stored through the CLI-started receiver."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from sync_pipelines.ledger import Ledger
from sync_pipelines_tests.webhooks.conftest import HUBSPOT_SECRET, INTUIT_TOKEN, Client, hubspot_event

REPO = Path(__file__).resolve().parents[2]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("SYNC_DATABASE_URL", "DAGSTER_HOME", "WEBHOOK_PUBLIC_URL", "HUBSPOT_CLIENT_SECRET",
                        "QBO_WEBHOOK_VERIFIER_TOKEN")}
    env.update(extra)
    return env


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sync_pipelines.cli", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("extra, message", [
    ({}, "set SYNC_DATABASE_URL, or DAGSTER_HOME"),
    ({"SYNC_DATABASE_URL": "sqlite:///{tmp}/l.db", "WEBHOOK_PUBLIC_URL": "hooks.firm.example"},
     "WEBHOOK_PUBLIC_URL='hooks.firm.example': expected scheme://host"),
    ({"SYNC_DATABASE_URL": "nosuchdb://x/y"}, "cannot open the ledger"),
])
def test_bad_configuration_is_one_clear_line(tmp_path, extra, message):
    env = _env(**{k: v.format(tmp=tmp_path) for k, v in extra.items()})
    r = _run(["webhooks", "serve", "--port", "0"], env)
    assert r.returncode == 2
    assert message in r.stderr
    assert "Traceback" not in r.stderr + r.stdout


def test_busy_port_is_a_clear_error(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        r = _run(["webhooks", "serve", "--port", str(port)], _env(SYNC_DATABASE_URL=f"sqlite:///{tmp_path}/l.db"))
    assert r.returncode == 2 and f"cannot listen on 127.0.0.1:{port}" in r.stderr
    assert "Traceback" not in r.stderr


def test_cli_receiver_stores_a_signed_event_and_stops_on_sigterm(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"sqlite:///{tmp_path}/ledger.db"
    proc = subprocess.Popen(
        [sys.executable, "-m", "sync_pipelines.cli", "webhooks", "serve", "--port", str(port)], cwd=REPO,
        env=_env(SYNC_DATABASE_URL=url, HUBSPOT_CLIENT_SECRET=HUBSPOT_SECRET, QBO_WEBHOOK_VERIFIER_TOKEN=INTUIT_TOKEN),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
        r = Client(base).post_hubspot([hubspot_event(4242)])
        assert r.status_code == 200 and r.json()["accepted"] == 1
        proc.send_signal(signal.SIGTERM)
        # uvicorn shuts down gracefully, then re-raises the signal so the exit status reports it
        assert proc.wait(timeout=30) in (0, -signal.SIGTERM)
        out = proc.stdout.read() if proc.stdout else ""
        assert "HubSpot secret: set" in out
        assert HUBSPOT_SECRET not in out and INTUIT_TOKEN not in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    led = Ledger(url)
    try:
        assert [e.event_id for e in led.inbox_pending()] == ["4242"]
    finally:
        led.dispose()
