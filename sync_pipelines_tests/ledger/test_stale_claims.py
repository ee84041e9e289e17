"""Issue 13: a claim left by a dead run is taken over at once (through the DocNumber lookup of
``resume_pending``), never by a live run's key; the killed run is marked failed in the instance."""

from __future__ import annotations

import os
import subprocess
import sys

import dagster as dg

from sync_pipelines.ledger import Ledger
from sync_pipelines.run_liveness import HOST_TAG, PID_TAG, mark_dead_cli_runs_failed, process_tags, run_is_alive

from .conftest import begin, draft


def test_a_dead_runs_claim_is_taken_over_at_once_through_resume_pending(ledger: Ledger) -> None:
    d = draft()
    assert begin(ledger, d, claimant="run-a").action == "post"
    # run-a was SIGKILLed between the ledger row and QuickBooks' answer; run-b starts at once
    assert begin(ledger, d, claimant="run-b", claimant_alive=lambda run_id: True).action == "busy"
    r = begin(ledger, d, claimant="run-b", claimant_alive=lambda run_id: run_id != "run-a")
    assert r.action == "resume_pending"  # the caller looks the DocNumber up in QuickBooks first
    r2 = begin(ledger, d, claimant="run-b", claimant_alive=lambda run_id: run_id != "run-a", resume_attempt=r.attempt)
    assert r2.action == "post" and r2.attempt == 2
    # the claim is run-b's now: a third run sees it busy while run-b lives
    assert begin(ledger, d, claimant="run-c", claimant_alive=lambda run_id: run_id == "run-b").action == "busy"


def test_a_claim_of_the_same_run_is_its_own_earlier_attempt(ledger: Ledger) -> None:
    d = draft()
    assert begin(ledger, d, claimant="run-a").action == "post"
    assert begin(ledger, d, claimant="run-a").action == "resume_pending"


def test_an_anonymous_or_unknown_claim_is_waited_out(ledger: Ledger, clock) -> None:
    d = draft()
    assert begin(ledger, d).action == "post"  # written without an owner (before revision 0005)
    assert begin(ledger, d, claimant="run-b", claimant_alive=lambda run_id: False).action == "busy"

    def cannot_tell(run_id: str) -> bool:
        raise RuntimeError("instance unreachable")

    e = draft(client="other")
    assert begin(ledger, e, claimant="run-a").action == "post"
    assert begin(ledger, e, claimant="run-b", claimant_alive=cannot_tell).action == "busy"
    clock.advance(301)
    assert begin(ledger, e, claimant="run-b", claimant_alive=cannot_tell).action == "resume_pending"


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _started_run(instance: dg.DagsterInstance, tags: dict[str, str]) -> dg.DagsterRun:
    @dg.op
    def noop() -> None:
        return None

    @dg.job
    def probe_job():
        noop()

    run = instance.create_run_for_job(probe_job, tags=tags)
    instance.handle_run_event(run.run_id, dg.DagsterEvent(
        event_type_value=dg.DagsterEventType.RUN_START.value, job_name=run.job_name))
    return instance.get_run_by_id(run.run_id)


def test_a_started_run_whose_process_is_gone_is_dead_and_marked_failed(tmp_path) -> None:
    # Before: a killed `bill` left its runs STARTED for ever, and their claims blocked the month.
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        dead = _started_run(instance, {**process_tags(), PID_TAG: str(_dead_pid())})
        alive = _started_run(instance, process_tags())  # this process
        elsewhere = _started_run(instance, {HOST_TAG: "another-host", PID_TAG: str(_dead_pid())})
        assert dead.status == dg.DagsterRunStatus.STARTED
        assert not run_is_alive(instance, dead.run_id)
        assert run_is_alive(instance, alive.run_id)
        assert run_is_alive(instance, elsewhere.run_id)  # only run monitoring can tell there
        assert run_is_alive(instance, "no-such-run")  # unknown: waited out, never taken over

        assert mark_dead_cli_runs_failed(instance) == [dead.run_id]
        assert instance.get_run_by_id(dead.run_id).status == dg.DagsterRunStatus.FAILURE
        assert instance.get_run_by_id(alive.run_id).status == dg.DagsterRunStatus.STARTED
        assert not run_is_alive(instance, dead.run_id)  # failed: dead by status now


def test_run_monitoring_is_on_in_the_demo_instance_and_dagster_yaml() -> None:
    import yaml

    from sync_pipelines.commands.billing_runs import _DEMO_INSTANCE_YAML

    demo = yaml.safe_load(_DEMO_INSTANCE_YAML)
    assert demo["run_monitoring"]["enabled"] is True
    root = os.path.join(os.path.dirname(__file__), "..", "..", "dagster.yaml")
    with open(root) as fh:
        prod = yaml.safe_load(fh)
    assert prod["run_monitoring"]["enabled"] is True


def test_the_daemon_dequeues_runs_every_second(tmp_path) -> None:
    """A sensor-requested deal run waits at most ~1 s in the queue (stage change -> invoice)."""
    import yaml

    import dagster as dg
    from sync_pipelines.commands.billing_runs import _DEMO_INSTANCE_YAML

    (tmp_path / "dagster.yaml").write_text(_DEMO_INSTANCE_YAML)
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        assert instance.run_coordinator.dequeue_interval_seconds == 1
    with open(os.path.join(os.path.dirname(__file__), "..", "..", "dagster.yaml")) as fh:
        prod = yaml.safe_load(fh)
    assert prod["run_coordinator"]["class"] == "QueuedRunCoordinator"
    assert prod["run_coordinator"]["config"]["dequeue_interval_seconds"] == 1
