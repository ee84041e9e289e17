"""Issue 9 item 1: a month-end is one run per stage for the whole month, not one run per client.

Against the sandbox over loopback HTTP, on a SQLite Dagster instance: `bill --month` makes three
runs (extract and price; post every client-month; follow up), each client-month has its own
materialisation and status; one client alone is one partition; a rules edit is used by the next
`bill --client`; the UI's backfill (an asset backfill executed by the daemon's backfill loop)
posts one month × all clients in ONE run; one client's QuickBooks failure never holds the others.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import dagster as dg
import pytest

from sync_pipelines.commands.billing_runs import EXIT_FAILED, EXIT_OK, bill_month
from sync_pipelines_tests._sandbox_month import qbo_invoices, served_month

PERIOD = "2026-10"
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def month(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    with served_month(tmp_path, monkeypatch, clients=6, entries=240, seed=29, month=PERIOD) as served:
        yield served


def _defs() -> dg.Definitions:
    from sync_pipelines.definitions import defs

    return defs()


def _materialisations(instance: dg.DagsterInstance, asset: str, run_id: str) -> list[dg.AssetMaterialization]:
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION, limit=100_000)
    return [r.event_log_entry.asset_materialization for r in records.records
            if r.event_log_entry.asset_materialization.asset_key == dg.AssetKey(asset)]


def test_a_month_end_is_three_runs_whatever_the_number_of_clients(month) -> None:
    sandbox, home, _ = month
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        run = bill_month(PERIOD, instance=instance, definitions=_defs())
        assert run.exit_code in (EXIT_OK, 3), [c.error for c in run.clients]
        runs = instance.get_runs()
        assert sorted(r.job_name for r in runs) == ["month_extract", "month_follow_up", "month_posting"]
        clients = [c.client_key for c in run.clients]
        assert len(clients) == 5  # the generator's last Harvest client has no rules
        posting = instance.get_run_by_id(run.posting_run_id)
        assert posting.tags["dagster/asset_partition_range_start"] == f"{clients[0]}|{PERIOD}"
        mats = _materialisations(instance, "qbo_invoices", run.posting_run_id)
        # one materialisation per client-month, each with its own status and outcomes
        assert sorted(m.partition for m in mats) == sorted(f"{c}|{PERIOD}" for c in clients)
        by_client = {m.partition.split("|")[0]: m.metadata for m in mats}
        for cm in run.clients:
            meta = by_client[cm.client_key]
            invoices = cm.drafts["invoices"]
            expected = "no invoice" if not invoices else (
                "needs attention" if any(i["status"] == "held" for i in invoices) else "posted")
            assert meta["status"].value == expected, cm.client_key
            assert meta["invoices"].value == len(invoices)
            assert {o["invoice_key"] for o in meta["outcomes"].value} == {i["invoice_key"] for i in invoices}
            assert cm.run_id == run.posting_run_id and cm.report_path.exists()
        # monthly assets: one materialisation each for the whole month
        for asset, run_id in (("invoice_drafts", run.extract_run_id), ("billable_entries", run.extract_run_id),
                              ("crm_write_back", run.follow_up_run_id), ("reconciliation_report", run.follow_up_run_id)):
            assert [m.partition for m in _materialisations(instance, asset, run_id)] == [PERIOD], asset
        posted = [o for c in run.clients for o in c.outcomes.to_dict("records") if o["outcome"] == "posted"]
        assert posted and len(qbo_invoices(sandbox.env())) == len(posted)


def test_one_clients_month_alone_posts_only_that_client_and_uses_the_edited_rules(month) -> None:
    sandbox, home, rules = month
    defs = _defs()
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        preview = bill_month(PERIOD, instance=instance, definitions=defs, dry_run=True)
        target = next(c for c in preview.clients
                      if c.drafts["invoices"] and all(i["status"] == "ready" for i in c.drafts["invoices"]))
        before = {i["invoice_key"]: i["total"] for i in target.drafts["invoices"]}
        assert not qbo_invoices(sandbox.env())

        # a rules fix (every rate of the file doubled) before posting this one client
        text = rules.read_text()
        import re

        rules.write_text(re.sub(r"rate: (\d+(?:\.\d+)?)", lambda m: f"rate: {float(m.group(1)) * 2:.2f}", text))
        run = bill_month(PERIOD, instance=instance, definitions=defs, client=target.client_key)
        assert run.exit_code == EXIT_OK, [c.error for c in run.clients]
        assert [c.client_key for c in run.clients] == [target.client_key]
        mats = _materialisations(instance, "qbo_invoices", run.posting_run_id)
        assert [m.partition for m in mats] == [f"{target.client_key}|{PERIOD}"]
        assert mats[0].metadata["rules_changed_since_pricing"].value is False
        after = {i["invoice_key"]: i["total"] for i in run.clients[0].drafts["invoices"]}
        assert after.keys() == before.keys() and all(after[k] != before[k] for k in after)
        in_qbo = qbo_invoices(sandbox.env())
        posted = [o for o in run.clients[0].outcomes.to_dict("records")]
        assert {o["outcome"] for o in posted} == {"posted"} and len(in_qbo) == len(posted)
        assert sorted(str(q["TotalAmt"]) for q in in_qbo) == sorted(str(o["qbo_total"]) for o in posted)
        assert {str(o["expected_total"]) for o in posted} == {str(v) for v in after.values()}

        # the UI's one-partition launch (no new pricing) says the drafts predate a rules edit
        rules.write_text(text)
        ui = defs.resolve_job_def("month_posting").execute_in_process(
            partition_key=f"{target.client_key}|{PERIOD}", instance=instance)
        [mat] = _materialisations(instance, "qbo_invoices", ui.run_id)
        assert mat.metadata["rules_changed_since_pricing"].value is True
        assert {o["outcome"] for o in mat.metadata["outcomes"].value} == {"already_posted"}


def test_one_clients_failed_posting_never_holds_the_others(month, monkeypatch) -> None:
    # One company's QuickBooks outage (the posting step's last attempt): every client-month is
    # recorded with its status, the others' invoices are posted and followed up, the run fails.
    sandbox, home, _ = month
    import sync_pipelines.defs.quickbooks.assets as qbo_assets
    import sync_pipelines.defs.quickbooks.posting_outcomes as posting_outcomes
    from sync_pipelines.posting.invoices import FAILED

    monkeypatch.setattr(qbo_assets, "POSTING_RETRIES", 0)
    monkeypatch.setattr(posting_outcomes, "POSTING_RETRIES", 0)
    sent: list = []
    monkeypatch.setattr(posting_outcomes, "send", lambda alert: sent.append(alert))
    real = qbo_assets.post_document
    down: list[str] = []

    def post_document(context, document, quickbooks, ledger):
        outcomes = real(context, {**document, "invoices": [i for i in document["invoices"]
                                                            if i["client_key"] != down[0]]}, quickbooks, ledger)
        from sync_pipelines.posting.drafts import posting_drafts
        from sync_pipelines.posting.invoices import _outcome

        failing = [d for d in posting_drafts(document) if d.client_key == down[0]]
        return outcomes + [_outcome(d, FAILED, reasons=["QuickBooks unavailable (503)"]) for d in failing]

    monkeypatch.setattr(qbo_assets, "post_document", post_document)
    defs = _defs()
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        preview = bill_month(PERIOD, instance=instance, definitions=defs, dry_run=True)
        with_invoices = [c.client_key for c in preview.clients if c.drafts["invoices"]]
        down.append(with_invoices[0])
        run = bill_month(PERIOD, instance=instance, definitions=defs)
        assert run.exit_code == EXIT_FAILED
        assert instance.get_run_by_id(run.posting_run_id).status == dg.DagsterRunStatus.FAILURE
        statuses = {m.partition.split("|")[0]: m.metadata["status"].value
                    for m in _materialisations(instance, "qbo_invoices", run.posting_run_id)}
        assert statuses[down[0]] == "failed"
        assert len(statuses) == len(run.clients) and all(s != "failed" for c, s in statuses.items() if c != down[0])
        failed = next(c for c in run.clients if c.client_key == down[0])
        assert not failed.success and "QuickBooks unavailable" in failed.error
        assert all(c.success for c in run.clients if c.client_key != down[0])
        # the follow-up ran for the posted ones: its report lists the failure too
        assert instance.get_run_by_id(run.follow_up_run_id).status == dg.DagsterRunStatus.SUCCESS
        assert "failed" in failed.report_path.read_text()
        assert any("could not be posted" in str(a).lower() or "fail" in str(a).lower() for a in sent)
        in_qbo = qbo_invoices(sandbox.env())
        assert in_qbo and not any(down[0] in str(q.get("PrivateNote", "")) for q in in_qbo)


def test_the_ui_backfill_of_one_month_for_all_clients_is_one_run(month) -> None:
    # The UI's "Materialize" dialog over qbo_invoices, month 2026-10 × every client, submits an
    # asset backfill; the daemon's backfill loop launches it. With single_run it must be ONE run
    # materialising every client-month once (dagster-io/dagster#18852 and #23996 are about
    # single-run backfills over multi-partitions that do not select every inner partition: this
    # is exactly our shape, one month of many).
    from dagster._core.execution.backfill import BulkActionStatus, PartitionBackfill
    from dagster._core.test_utils import create_test_daemon_workspace_context
    from dagster._core.workspace.load_target import ModuleTarget
    from dagster._daemon.backfill import execute_backfill_iteration

    sandbox, home, _ = month
    with dg.instance_for_test(temp_dir=str(home), synchronous_run_coordinator=True,
                              synchronous_run_launcher=True) as instance:
        preview = bill_month(PERIOD, instance=instance, definitions=_defs(), dry_run=True)
        clients = instance.get_dynamic_partitions("clients")
        assert sorted(clients) == sorted(c.client_key for c in preview.clients)
        target = ModuleTarget(module_name="sync_pipelines.definitions", attribute="defs",
                              working_directory=str(REPO), location_name="sync_pipelines")
        with create_test_daemon_workspace_context(target, instance) as workspace:
            asset_graph = workspace.create_request_context().asset_graph
            backfill = PartitionBackfill.from_asset_partitions(
                backfill_id="monthend", asset_graph=asset_graph,
                partition_names=[f"{c}|{PERIOD}" for c in clients], asset_selection=[dg.AssetKey("qbo_invoices")],
                backfill_timestamp=time.time(), tags={}, dynamic_partitions_store=instance, all_partitions=False,
                title=None, description=None, run_config=None,
            )
            instance.add_backfill(backfill)
            for _ in range(20):
                list(execute_backfill_iteration(workspace, logging.getLogger("backfill")))
                if instance.get_backfill("monthend").status != BulkActionStatus.REQUESTED:
                    break
            assert instance.get_backfill("monthend").status == BulkActionStatus.COMPLETED_SUCCESS
        runs = [r for r in instance.get_runs() if r.tags.get("dagster/backfill") == "monthend"]
        assert len(runs) == 1 and runs[0].status == dg.DagsterRunStatus.SUCCESS
        mats = _materialisations(instance, "qbo_invoices", runs[0].run_id)
        assert sorted(m.partition for m in mats) == sorted(f"{c}|{PERIOD}" for c in clients)
        posted = sum(m.metadata["outcomes"].value.__len__() for m in mats
                     if m.metadata["status"].value in ("posted", "needs attention"))
        assert posted and len(qbo_invoices(sandbox.env())) >= 1


def test_a_failed_posting_attempt_is_retried_by_the_step_and_reposts_only_what_is_missing(month, monkeypatch) -> None:
    # What Dagster does with the posting step's retry policy, measured: the first attempt fails
    # for one client (QuickBooks down for its company), the step is retried in the same run
    # (after the policy's delay, ~15 s), the retry posts that client and finds the others posted.
    sandbox, home, _ = month
    import sync_pipelines.defs.quickbooks.assets as qbo_assets
    from sync_pipelines.posting.drafts import posting_drafts
    from sync_pipelines.posting.invoices import FAILED, _outcome

    real = qbo_assets.post_document
    attempts: list[int] = []
    down: list[str] = []

    def post_document(context, document, quickbooks, ledger):
        attempts.append(context.retry_number)
        if context.retry_number > 0:
            return real(context, document, quickbooks, ledger)
        outcomes = real(context, {**document, "invoices": [i for i in document["invoices"]
                                                            if i["client_key"] != down[0]]}, quickbooks, ledger)
        return outcomes + [_outcome(d, FAILED, reasons=["QuickBooks unavailable (503)"])
                           for d in posting_drafts(document) if d.client_key == down[0]]

    monkeypatch.setattr(qbo_assets, "post_document", post_document)
    defs = _defs()
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        preview = bill_month(PERIOD, instance=instance, definitions=defs, dry_run=True)
        down.append(next(c.client_key for c in preview.clients if c.drafts["invoices"]))
        run = bill_month(PERIOD, instance=instance, definitions=defs)
        assert attempts == [0, 1]
        assert instance.get_run_by_id(run.posting_run_id).status == dg.DagsterRunStatus.SUCCESS
        retried = instance.get_records_for_run(run.posting_run_id, of_type=dg.DagsterEventType.STEP_UP_FOR_RETRY).records
        assert len(retried) == 1
        by_client = {c.client_key: set(c.outcomes["outcome"]) for c in run.clients if len(c.outcomes)}
        assert by_client.pop(down[0]) == {"posted"}
        # posted by the first attempt, found in the ledger by the retry: never posted twice
        assert by_client and all(o == {"already_posted"} for o in by_client.values())
        docs = [q["DocNumber"] for q in qbo_invoices(sandbox.env())]
        assert len(docs) == len(set(docs)) == sum(i["status"] == "ready" for c in run.clients for i in c.drafts["invoices"])
