"""Is the Dagster run that claimed an invoice still able to post it?

A run launched by the daemon is watched by Dagster's run monitoring, which marks a run whose
worker died as failed. A run executed in process by ``sync-pipelines bill`` has no monitor: if
the process is killed, the run stays STARTED in the instance for ever. So ``bill`` tags its runs
with the host and process id; a STARTED run whose process on this host is gone is dead, and
:func:`mark_dead_cli_runs_failed` records that in the instance.
"""

from __future__ import annotations

import os
import socket
from typing import Any

import dagster as dg

HOST_TAG = "sync/host"
PID_TAG = "sync/pid"

# Statuses in which a run may still be executing steps (and so posting).
_LIVE = {
    dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING,
}


def process_tags() -> dict[str, str]:
    """Tags naming this process, put on every run ``bill`` executes in process."""
    return {HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid())}


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process of that id exists
    return True


def _process_gone(run: Any) -> bool:
    """True only when the run's own process on this host is known to have exited."""
    tags = run.tags or {}
    if tags.get(HOST_TAG) != socket.gethostname():
        return False  # another machine: only its status (run monitoring) can say
    pid = tags.get(PID_TAG, "")
    if not pid.isdigit():
        return False
    return int(pid) != os.getpid() and not _process_alive(int(pid))


def run_is_alive(instance: dg.DagsterInstance, run_id: str) -> bool:
    """False when ``run_id`` has ended (failed, canceled, succeeded) or its process is gone.

    A run the instance does not know counts as alive: its claim is then waited out, which is
    slow but cannot post twice.
    """
    run = instance.get_run_by_id(run_id)
    if run is None:
        return True
    if run.status not in _LIVE:
        return False
    return not _process_gone(run)


def mark_dead_cli_runs_failed(instance: dg.DagsterInstance) -> list[str]:
    """Mark STARTED runs whose ``bill`` process died (SIGKILL, power loss) as failed; their ids."""
    marked = []
    records = instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED], tags={HOST_TAG: socket.gethostname()}))
    for run in records:
        if _process_gone(run):
            instance.report_run_failed(
                run, f"the sync-pipelines process (pid {run.tags.get(PID_TAG)}) that ran it is gone; marked failed")
            marked.append(run.run_id)
    return marked
