"""Shared fixtures.

PostgreSQL: tests marked ``postgres`` use the server named by ``SYNC_TEST_DATABASE_URL``. On a
user's machine without it they are skipped with that reason; when the variable is set (CI sets it)
an unreachable server is an error, never a skip.
"""

from __future__ import annotations

import json
import os
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
import sqlalchemy as sa

PG_ENV = "SYNC_TEST_DATABASE_URL"


def _psycopg2_url(url: str) -> str:
    # A bare postgresql:// maps to psycopg 3 under SQLAlchemy 2.1, which we do not ship
    # (reference/dagster-notes.md P1).
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg2://" + url.split("://", 1)[1]
    return url


@pytest.fixture(scope="session")
def postgres_server_url() -> str:
    raw = os.environ.get(PG_ENV)
    if not raw:
        pytest.skip(f"{PG_ENV} is not set: no PostgreSQL to test against on this machine")
    url = _psycopg2_url(raw)
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("select 1"))
    except Exception as exc:  # noqa: BLE001 - any connection failure must fail the run
        pytest.fail(f"{PG_ENV} is set but PostgreSQL is unreachable: {type(exc).__name__}", pytrace=False)
    finally:
        engine.dispose()
    return url


@contextmanager
def fresh_database(server_url: str, prefix: str = "sync_test") -> Iterator[str]:
    """Create an empty database on the test server, yield its URL, drop it afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield sa.engine.make_url(server_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(
                sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n AND pid <> pg_backend_pid()"),
                {"n": name},
            )
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()


@pytest.fixture
def postgres_url(postgres_server_url: str) -> Iterator[str]:
    """A fresh, empty database on the test server, dropped afterwards."""
    with fresh_database(postgres_server_url) as url:
        yield url


@pytest.fixture
def slack_webhook() -> Iterator[tuple[str, list[dict]]]:
    """A Slack-compatible incoming webhook on a loopback port: (url, received JSON bodies)."""
    received: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server API
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hooks/T000/B000/secretpart", received
    server.shutdown()
