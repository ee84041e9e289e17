"""Issue 13, "bill crashes whenever any Dagster run fails" and its neighbours: every failure ends
in the summary and the documented exit status, one client's failure never stops the others,
`invalid_grant` fails at once, and each `bill` reports what its own runs did."""

from __future__ import annotations

import io
from pathlib import Path

import dagster as dg
import httpx
import pandas as pd
import pytest

from sync_pipelines.cli import main
from sync_pipelines.commands import billing_runs
from sync_pipelines.commands.billing_runs import EXIT_FAILED, bill_month, print_run
from sync_pipelines.ledger import Ledger
from sync_pipelines.run_errors import step_errors
from sync_pipelines_tests._sandbox_month import served_month

PERIOD = "2026-10"


def test_step_errors_skips_events_that_are_not_step_failures() -> None:
    # Before: `getattr(event, "step_failure_data")` raised CheckError on the RUN_START event.
    @dg.op
    def post_the_invoices() -> None:
        raise ValueError("QuickBooks said no")

    @dg.job
    def failing():
        post_the_invoices()

    result = failing.execute_in_process(raise_on_error=False)
    assert any(e.event_type == dg.DagsterEventType.RUN_START for e in result.all_events)
    assert step_errors(result.all_events) == ["post_the_invoices: ValueError: QuickBooks said no"]


@pytest.fixture
def month(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    with served_month(tmp_path, monkeypatch, clients=4, entries=120, seed=13, month=PERIOD) as (sandbox, home, _):
        yield sandbox, home


def _bill(home: Path, **kw):
    from sync_pipelines.definitions import defs

    with dg.instance_for_test(temp_dir=str(home)) as instance:
        return bill_month(PERIOD, instance=instance, definitions=defs(), **kw)


def test_one_clients_failed_posting_never_stops_the_other_clients(month, monkeypatch) -> None:
    # The month is priced in one pass; what can fail for one client alone is its posting. Here
    # its drafts fail the consistency checks: it is left out (blocked), every other client posts.
    sandbox, home = month
    import sync_pipelines.posting.client_months as client_months

    real = client_months.draft_problems
    blocked: list[str] = []

    def draft_problems(document):
        client = document["invoices"][0]["client_key"]
        if not blocked or blocked[0] == client:
            blocked[:1] = [client]
            return [f"{document['invoices'][0]['invoice_key']} line 1: Amount 1.00 != Qty x UnitPrice = 2.00"]
        return real(document)

    monkeypatch.setattr(client_months, "draft_problems", draft_problems)
    run = _bill(home)
    first = next(c for c in run.clients if c.client_key == blocked[0])
    others = [c for c in run.clients if c.client_key != blocked[0]]
    assert not first.success and "Amount 1.00 != Qty x UnitPrice" in first.error
    assert first.outcomes is not None and not len(first.outcomes)  # nothing of it was posted
    assert others and all(c.success for c in others)
    assert all(set(c.outcomes["outcome"]) == {"posted"} for c in others if len(c.outcomes))
    assert run.exit_code == EXIT_FAILED
    buffer = io.StringIO()
    print_run(run, out=buffer)
    printed = buffer.getvalue()
    assert f"FAILED (run {first.run_id})" in printed and "Traceback" not in printed
    assert printed.count("[posted; QBO id") == sum(len(c.outcomes) for c in others)


def test_an_unexpected_error_prints_one_line_and_exits_1_never_a_traceback(monkeypatch, capsys) -> None:
    def broken(*args, **kwargs):
        raise OSError("disk full while writing the preview")

    monkeypatch.setattr(billing_runs, "bill_month", broken)
    assert main(["bill", "--month", PERIOD]) == 1
    err = capsys.readouterr().err
    assert err.strip() == "error: OSError: disk full while writing the preview"


def test_invalid_grant_during_extraction_fails_at_once_without_retries(month) -> None:
    # Before: the extract step was retried three times although the README promises it fails at once.
    sandbox, home = month
    httpx.post(f"{sandbox.base_url}/_sandbox/expire_tokens", json={"refresh_token": True}).raise_for_status()
    run = _bill(home)
    assert run.extract_error and "invalid_grant" in run.extract_error and "reconnect" in run.extract_error.lower()
    assert run.exit_code == EXIT_FAILED
    ledger = Ledger(f"sqlite:///{home / 'sync_ledger.db'}")
    try:
        refreshes = [r for r in ledger.audit_records(limit=1000, system="quickbooks-oauth")]
    finally:
        ledger.dispose()
    # each QuickBooks extract asset (qbo_catalog, qbo_company, qbo_existing_invoices) asks at most
    # once; none is retried (3 step retries would be 4 each)
    assert 1 <= len(refreshes) <= 3, [(r.path, r.status) for r in refreshes]


def test_each_bill_reports_what_its_own_run_did(month, monkeypatch) -> None:
    # Before: `bill` read the partition's shared stored output, so of two `bill` processes at once
    # both printed `already_posted` for invoices one of them had posted.
    sandbox, home = month
    real = billing_runs.read_stored

    def read_stored(store, asset, partition):
        value = real(store, asset, partition)
        if asset == "qbo_invoices" and isinstance(value, pd.DataFrame):
            value = value.assign(outcome="already_posted")  # what the other process stored meanwhile
        return value

    monkeypatch.setattr(billing_runs, "read_stored", read_stored)
    run = _bill(home)
    outcomes = [o for c in run.clients if c.outcomes is not None for o in c.outcomes["outcome"]]
    assert outcomes and set(outcomes) == {"posted"}


def test_secrets_never_reach_the_error_line_or_the_summary(month, monkeypatch, capsys) -> None:
    sandbox, home = month
    secret = sandbox.env()["HARVEST_ACCESS_TOKEN"]
    from sync_pipelines.ledger import redact

    redact.register_secret(secret)  # as the connectors do for every token they are given

    def leaky(*args, **kwargs):
        raise RuntimeError(f"could not connect with Authorization: Bearer {secret} (token={secret})")

    with monkeypatch.context() as patched:
        patched.setattr(billing_runs, "bill_month", leaky)
        assert main(["bill", "--month", PERIOD]) == 1
    err = capsys.readouterr().err
    assert secret not in err and "[REDACTED]" in err

    import sync_pipelines.defs.billing.assets as billing_assets

    monkeypatch.setattr(billing_assets, "price_month_by_company", leaky)
    run = _bill(home)
    buffer = io.StringIO()
    print_run(run, out=buffer)
    text = buffer.getvalue() + billing_runs.run_summary_json(run)
    # pricing is one step for the month: its failure is the month's (nothing posted)
    assert run.extract_error and "could not connect" in run.extract_error and run.exit_code == EXIT_FAILED
    assert secret not in text
