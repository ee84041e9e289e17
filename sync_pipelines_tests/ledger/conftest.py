"""Ledger fixtures: every test runs on a SQLite file and, when SYNC_TEST_DATABASE_URL is set, on
a fresh PostgreSQL database (``postgres_url`` from the top-level conftest)."""

from __future__ import annotations

import multiprocessing as mp
import shutil
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from sync_pipelines.ledger import Ledger
from sync_pipelines.ledger.schema import metadata
from sync_pipelines_tests.conftest import fresh_database

from . import _workers


@pytest.fixture(scope="module")
def pool() -> Iterator[ProcessPoolExecutor]:
    """A warm pool of spawned worker processes (``_workers``), shared by a module's tests."""
    with ProcessPoolExecutor(max_workers=_workers.N_PROCS, mp_context=mp.get_context("spawn")) as ex:
        for f in [ex.submit(_workers.warm_up) for _ in range(_workers.N_PROCS * 2)]:
            f.result(timeout=120)
        yield ex


BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(params=BACKENDS)
def ledger_url(request: pytest.FixtureRequest, tmp_path: Any) -> str:
    """A fresh, EMPTY (unmigrated) ledger database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/ledger.db"
    return request.getfixturevalue("postgres_url")


@pytest.fixture(scope="session")
def _sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ledger-template") / "ledger.db"
    led = Ledger(f"sqlite:///{path}")
    led.migrate()
    led.dispose()
    return path


@pytest.fixture(scope="session")
def _pg_migrated(postgres_server_url: str) -> Iterator[str]:
    """One migrated PostgreSQL database for the session (tables truncated before each test)."""
    with fresh_database(postgres_server_url, "sync_ledger_test") as url:
        led = Ledger(url)
        led.migrate()
        led.dispose()
        yield url


@pytest.fixture(params=BACKENDS)
def migrated_url(request: pytest.FixtureRequest, tmp_path: Any) -> str:
    """A ledger database at head with no rows (a copy of a template; on PG a truncated shared DB)."""
    if request.param == "sqlite":
        path = tmp_path / "ledger.db"
        shutil.copyfile(request.getfixturevalue("_sqlite_template"), path)
        return f"sqlite:///{path}"
    url = request.getfixturevalue("_pg_migrated")
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            names = ", ".join(t.name for t in metadata.sorted_tables)
            conn.execute(sa.text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
    finally:
        engine.dispose()
    return url


class FakeClock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 1, 9, 0, tzinfo=timezone.utc)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def ledger(migrated_url: str, clock: FakeClock) -> Iterator[Ledger]:
    led = Ledger(migrated_url, clock=clock, claim_seconds=300)
    yield led
    led.dispose()


REALM = "9130357"


def draft(
    client: str = "acme",
    period: str = "2026-10",
    group: str = "all",
    generation: int = 1,
    *,
    amount: str = "1500.00",
    entries: list[tuple[int, int]] | None = None,
    memo: str = "October",
) -> dict[str, Any]:
    """begin_posting keyword arguments for one invoice."""
    from sync_pipelines.billing.keys import doc_number, invoice_key, request_id

    key = invoice_key(REALM, client, period, group, generation)
    payload = {
        "CustomerRef": {"value": "58"},
        "DocNumber": doc_number(key, period),
        "PrivateNote": f"sync_pipelines {key}",
        "CustomerMemo": {"value": memo},
        "Line": [
            {
                "DetailType": "SalesItemLineDetail",
                "Amount": Decimal(amount),
                "SalesItemLineDetail": {"Qty": Decimal("10.00"), "UnitPrice": Decimal(amount) / 10},
            }
        ],
    }
    return dict(
        key=key,
        realm_id=REALM,
        client_key=client,
        period=period,
        group_key=group,
        generation=generation,
        payload=payload,
        expected_total=Decimal(amount),
        currency="USD",
        request_id=request_id(key),
        doc_number=doc_number(key, period),
        entries=entries if entries is not None else [(1001, 400), (1002, 600)],
    )


def begin(ledger: Ledger, d: dict[str, Any], **extra: Any) -> Any:
    d = dict(d)
    key = d.pop("key")
    return ledger.begin_posting(key, **d, **extra)


def post(ledger: Ledger, d: dict[str, Any], qbo_id: str = "130", total: str | None = None) -> Any:
    r = begin(ledger, d)
    assert r.action == "post", r
    return ledger.record_posted(
        d["key"],
        qbo_id=qbo_id,
        sync_token="0",
        qbo_doc_number=d["doc_number"],
        qbo_total_amt=Decimal(total) if total is not None else d["expected_total"],
        intuit_tid="1-abc-tid",
    )
