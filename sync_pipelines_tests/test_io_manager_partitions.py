"""The billing store with one step materialising many client-months (the month-end's posting run):
each partition is stored as its own file, a monthly reader gets the partitions that exist."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from sync_pipelines.defs.io_manager import BY_PARTITION_INPUT, BillingStoreIOManager, ByPartition, read_stored
from sync_pipelines.defs.partitions import MONTH_OF_CLIENT_MONTH, client_month_key, client_months, monthly


@dg.asset(partitions_def=client_months, backfill_policy=dg.BackfillPolicy.single_run())
def posted(context) -> ByPartition:
    return ByPartition({str(k): pd.DataFrame({"client": [str(k).split("|")[0]]}) for k in context.partition_keys})


@dg.asset(partitions_def=client_months, backfill_policy=dg.BackfillPolicy.single_run())
def short(context) -> ByPartition:
    return ByPartition({str(context.partition_keys[0]): pd.DataFrame({"x": [1]})})


@dg.asset(partitions_def=monthly,
          ins={"posted": dg.AssetIn(partition_mapping=MONTH_OF_CLIENT_MONTH, metadata=BY_PARTITION_INPUT)})
def summary(posted: dict) -> dict:
    return {key: frame["client"].tolist() for key, frame in sorted(posted.items())}


def test_each_partition_is_its_own_file_and_a_monthly_reader_gets_those_stored(tmp_path: Path) -> None:
    store = BillingStoreIOManager(base_dir=str(tmp_path))
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("clients", ["acme", "globex", "initech"])
        result = dg.materialize([posted], instance=instance, resources={"io_manager": store}, tags={
            "dagster/asset_partition_range_start": "acme|2026-10", "dagster/asset_partition_range_end": "globex|2026-10"})
        assert result.success
        assert sorted(m.partition for m in result.asset_materializations_for_node("posted")) == [
            "acme|2026-10", "globex|2026-10"]
        stored = read_stored(tmp_path, "posted", client_month_key("globex", "2026-10"))
        assert stored["client"].tolist() == ["globex"]
        with pytest.raises(FileNotFoundError, match="initech"):
            read_stored(tmp_path, "posted", client_month_key("initech", "2026-10"))
        # initech was never posted: the monthly reader gets the two that exist
        result = dg.materialize([posted.to_source_asset(), summary], partition_key="2026-10", instance=instance,
                                resources={"io_manager": store})
        assert read_stored(tmp_path, "summary", "2026-10") == {"acme|2026-10": ["acme"], "globex|2026-10": ["globex"]}


def test_a_step_that_returns_fewer_partitions_than_it_materialises_fails_loudly(tmp_path: Path) -> None:
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("clients", ["acme", "globex"])
        result = dg.materialize([short], instance=instance, raise_on_error=False,
                                resources={"io_manager": BillingStoreIOManager(base_dir=str(tmp_path))}, tags={
            "dagster/asset_partition_range_start": "acme|2026-10", "dagster/asset_partition_range_end": "globex|2026-10"})
        assert not result.success
        failure = next(e for e in result.all_events if e.is_step_failure)
        assert "values for 1 partition(s) but materialises 2" in str(failure.step_failure_data.error)
