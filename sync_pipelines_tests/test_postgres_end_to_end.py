"""The production storage: the Dagster instance (dagster-postgres) and the ledger both on PostgreSQL.

Uses the server named by SYNC_TEST_DATABASE_URL (a fresh database per test). With the variable
set and the server unreachable this fails; it is skipped only where the variable is unset.
"""

from __future__ import annotations


import dagster as dg
import pytest
import sqlalchemy as sa

from sync_pipelines.commands.billing_runs import EXIT_OK, bill_month
from sync_pipelines.ledger import Ledger
from sync_pipelines.sandbox import SandboxServer, generate_fixture
from sync_pipelines_tests.independent_totals import expected_invoices

PERIOD = "2026-10"


@pytest.mark.postgres
def test_billing_with_instance_and_ledger_on_postgres(postgres_url: str, tmp_path, monkeypatch) -> None:
    fixture, rules_yaml = generate_fixture(clients=4, entries=200, seed=23, month=PERIOD)
    rules = tmp_path / "billing_rules.yaml"
    rules.write_text(rules_yaml)
    home = tmp_path / "dagster_home"
    home.mkdir()
    with SandboxServer(fixture) as sandbox:
        for name, value in sandbox.env().items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("SYNC_RULES_FILE", str(rules))
        monkeypatch.setenv("DAGSTER_HOME", str(home))
        monkeypatch.setenv("SYNC_DATABASE_URL", postgres_url)
        from sync_pipelines.definitions import defs

        definitions = defs()
        overrides = {"storage": {"postgres": {"postgres_url": postgres_url}}}
        with dg.instance_for_test(overrides=overrides, temp_dir=str(home)) as instance:
            assert type(instance.run_storage).__name__ == "PostgresRunStorage"
            run = bill_month(PERIOD, instance=instance, definitions=definitions)
            assert run.exit_code == EXIT_OK, [c.error for c in run.clients]
            assert {r.job_name for r in instance.get_runs()} >= {"month_extract", "month_posting", "month_follow_up"}

    # The ledger rows live in PostgreSQL, beside Dagster's own tables.
    engine = sa.create_engine(postgres_url)
    with engine.connect() as conn:
        tables = set(sa.inspect(conn).get_table_names())
    engine.dispose()
    assert {"runs", "event_logs"} <= tables
    ledger = Ledger(postgres_url)
    posted = {r.client_key: r for r in ledger.status(period=PERIOD) if r.status == "posted"}
    expected = expected_invoices(fixture, rules_yaml, PERIOD)
    assert len(posted) == len(expected)
    totals = sorted(r.qbo_total_amt for r in posted.values())
    assert totals == sorted(v["total"] for v in expected.values())
    assert all(not r.total_mismatch for r in posted.values())
    ledger.dispose()
