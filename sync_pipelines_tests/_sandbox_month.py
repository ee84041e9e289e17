"""A month priced against the sandbox without Dagster, and what QuickBooks and HubSpot hold,
read back over HTTP (for the crash, write-back, drift and ledger-command tests)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg

import pandas as pd
import sqlalchemy as sa

from sync_pipelines.billing.engine import price_month
from sync_pipelines.billing.rules import parse_rules
from sync_pipelines.connectors.factory import harvest_from_env, hubspot_from_env
from sync_pipelines.connectors.http import InMemoryTokenStore
from sync_pipelines.connectors.quickbooks import QboOAuth, QuickBooksClient
from sync_pipelines.extract import sources
from sync_pipelines.ledger import Ledger
from sync_pipelines.ledger.schema import crm_writebacks, metadata
from sync_pipelines.posting.drafts import drafts_document
from sync_pipelines.posting.history import billing_history
from sync_pipelines.posting.writeback import PlannedWriteback, entry_projects, plan_writebacks

WRITEBACK_PROPS = ["qbo_invoice_id", "qbo_invoice_number", "billed_through", "billing_status"]


@dataclass
class Month:
    period: str
    drafts: dict[str, Any]
    deals: pd.DataFrame
    entries: pd.DataFrame
    entry_projects: dict[int, int]
    company_ids: dict[str, str | None]
    client_keys: list[str]


def price(env: dict[str, str], rules_yaml: str, period: str, ledger: Ledger,
          entries: pd.DataFrame | None = None) -> Month:
    """Extract through the connectors and price like the billing assets do (all rules clients)."""
    rules = parse_rules(rules_yaml, "rules.yaml")
    with harvest_from_env(env) as harvest, hubspot_from_env(env) as hubspot:
        if entries is None:
            entries, _ = sources.harvest_time_entries(harvest, period)
        deals, _ = sources.hubspot_deals(hubspot)
    qbo = qbo_client(env)
    try:
        catalog, _ = sources.qbo_catalog(qbo)
    finally:
        qbo.close()
    realm = env["QBO_REALM_ID"]
    clients = sorted(rules.clients)
    history = billing_history(ledger.history(realm, clients, period))
    result = price_month(rules, period, entries, deals, catalog, history, realm, clients)
    return Month(
        period=period, drafts=drafts_document(result, entries), deals=deals, entries=entries,
        entry_projects=entry_projects(entries),
        company_ids={k: c.hubspot_company_id for k, c in rules.clients.items()}, client_keys=clients,
    )


def qbo_client(env: dict[str, str]) -> QuickBooksClient:
    """A client with its own in-memory token store (use a sandbox that does not rotate tokens,
    or the refresh here would retire the ledger's refresh token)."""
    oauth = QboOAuth(env["QBO_TOKEN_URL"], env["QBO_CLIENT_ID"], env["QBO_CLIENT_SECRET"], InMemoryTokenStore(),
                     env["QBO_REALM_ID"], seed_refresh_token=env["QBO_REFRESH_TOKEN"])
    return QuickBooksClient(env["QBO_BASE_URL"], env["QBO_REALM_ID"], oauth)


def qbo_invoices(env: dict[str, str]) -> list[dict[str, Any]]:
    qbo = qbo_client(env)
    try:
        return qbo.query_all("Invoice")
    finally:
        qbo.close()


def deal_properties(env: dict[str, str], deal_ids: list[str]) -> dict[str, dict[str, Any]]:
    with hubspot_from_env(env) as hubspot:
        return {d: dict(hubspot.get_deal(d, WRITEBACK_PROPS).properties) for d in deal_ids}


def writeback_rows(ledger: Ledger) -> list[dict[str, Any]]:
    with ledger.engine.connect() as conn:
        return [dict(r) for r in conn.execute(sa.select(crm_writebacks)).mappings()]


def planned_writebacks(ledger: Ledger, month: Month) -> list[PlannedWriteback]:
    out: list[PlannedWriteback] = []
    for inv in month.drafts["invoices"]:
        record = ledger.get_invoice(inv["invoice_key"])
        if record is not None:
            out.extend(plan_writebacks(record, month.entry_projects, month.deals, month.company_ids.get(record.client_key)))
    return out


def truncate(url: str) -> None:
    """Empty every ledger table (PostgreSQL: faster than a new database per trial)."""
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            names = ", ".join(t.name for t in metadata.sorted_tables)
            conn.execute(sa.text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
    finally:
        engine.dispose()


@dataclass
class BilledMonth:
    """A generated firm served by the sandbox, its month billed through the Dagster assets."""

    sb: Any  # SandboxServer
    fixture: dict[str, Any]
    rules_yaml: str
    home: Path
    instance: dg.DagsterInstance
    definitions: dg.Definitions
    env: dict[str, str]
    first_run: Any  # billing_runs.BillingRun

    def ledger(self) -> Ledger:
        return Ledger(f"sqlite:///{self.home / 'sync_ledger.db'}")


@contextmanager
def billed_month(tmp: Path, period: str, *, clients: int = 3, entries: int = 60, seed: int = 21) -> Iterator[BilledMonth]:
    """Serve a generated fixture (no rate limits; refresh tokens that do not rotate, so a test can
    read QuickBooks with its own client), point the environment at it, and bill `period` with
    ``bill_month`` (as ``sync-pipelines bill`` does). The environment is restored afterwards."""
    from sync_pipelines.commands.billing_runs import bill_month
    from sync_pipelines.sandbox import SandboxServer, generate_fixture

    fixture, rules_yaml = generate_fixture(clients=clients, entries=entries, seed=seed, month=period)
    rules_path = tmp / "billing_rules.yaml"
    rules_path.write_text(rules_yaml)
    home = tmp / "home"
    home.mkdir()
    saved = dict(os.environ)
    with SandboxServer(fixture, rate_limits=None, rotate_refresh_tokens="never") as sb:
        os.environ.update(sb.env())
        os.environ.update({"SYNC_RULES_FILE": str(rules_path), "DAGSTER_HOME": str(home)})
        for name in ("SYNC_DATABASE_URL", "SYNC_OUTPUT_DIR", "SLACK_WEBHOOK_URL", "DAGSTER_WEBSERVER_URL"):
            os.environ.pop(name, None)
        try:
            from sync_pipelines.definitions import defs

            definitions = defs()
            with dg.instance_for_test(temp_dir=str(home)) as instance:
                first = bill_month(period, instance=instance, definitions=definitions)
                yield BilledMonth(sb, fixture, rules_yaml, home, instance, definitions, sb.env(), first)
        finally:
            os.environ.clear()
            os.environ.update(saved)


def point_env_at(monkeypatch: Any, sandbox: Any, home: Any, rules_path: Any) -> None:
    """Point the product's environment at `sandbox`, a fresh DAGSTER_HOME and a rules file (the
    default SQLite ledger and output directory under that home)."""
    for name, value in sandbox.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("SYNC_RULES_FILE", str(rules_path))
    monkeypatch.delenv("SYNC_DATABASE_URL", raising=False)
    monkeypatch.delenv("SYNC_OUTPUT_DIR", raising=False)


@contextmanager
def served_month(tmp_path: Path, monkeypatch: Any, *, clients: int, entries: int, seed: int,
                 month: str) -> Iterator[tuple[Any, Path, Path]]:
    """A generated month served by the sandbox, the product's environment pointed at it (a fresh
    DAGSTER_HOME, the generated rules file): ``(sandbox, home, rules path)``."""
    from sync_pipelines.sandbox import SandboxServer, generate_fixture

    fixture, rules_yaml = generate_fixture(clients=clients, entries=entries, seed=seed, month=month)
    home = tmp_path / "home"
    home.mkdir()
    rules = tmp_path / "rules.yaml"
    rules.write_text(rules_yaml)
    with SandboxServer(fixture) as sandbox:
        point_env_at(monkeypatch, sandbox, home, rules)
        yield sandbox, home, rules
