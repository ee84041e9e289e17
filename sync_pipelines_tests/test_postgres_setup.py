"""The production instance config and the CI contract for PostgreSQL tests."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from dagster import DagsterInstance
from dagster._core.instance.ref import InstanceRef
import pytest
import sqlalchemy as sa

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.postgres
def test_repository_dagster_yaml_runs_the_instance_on_postgres(postgres_url: str, tmp_path: Path, monkeypatch) -> None:
    url = sa.engine.make_url(postgres_url)
    home = tmp_path / "home"
    home.mkdir()
    shutil.copyfile(REPO / "dagster.yaml", home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_PG_USER", url.username or "postgres")
    monkeypatch.setenv("DAGSTER_PG_PASSWORD", url.password or "")
    monkeypatch.setenv("DAGSTER_PG_HOST", url.host or "127.0.0.1")
    monkeypatch.setenv("DAGSTER_PG_DB", url.database)
    with DagsterInstance.from_ref(InstanceRef.from_dir(str(home))) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
        instance.add_dynamic_partitions("clients", ["acme"])
        assert instance.get_dynamic_partitions("clients") == ["acme"]


def test_postgres_tests_fail_rather_than_skip_when_the_server_is_unreachable(tmp_path: Path) -> None:
    env = {**os.environ, "SYNC_TEST_DATABASE_URL": "postgresql://postgres@127.0.0.1:9/nowhere"}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist",
         "sync_pipelines_tests/test_postgres_setup.py::test_repository_dagster_yaml_runs_the_instance_on_postgres"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=180,
    )
    assert proc.returncode != 0, proc.stdout
    assert "unreachable" in proc.stdout
    assert "skipped" not in proc.stdout.splitlines()[-1]
