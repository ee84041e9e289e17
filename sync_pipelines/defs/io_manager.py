"""Asset storage: DataFrames as Parquet, everything else as exact JSON.

Dagster's default IO manager pickles, which breaks across pandas upgrades and cannot be opened by
a finance lead (reference/dagster-notes.md P12). Parquet keeps Decimal columns exact (decimal128)
and is readable by any tool; non-frame values (the rules snapshot) are JSON written with
`money.dumps` so amounts keep their digits.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd

from sync_pipelines import money


class ByPartition(dict):
    """One output's value per partition key, for a step that materialises several partitions in
    one run (the month-end posts every client-month of the month at once). Each value is stored
    as that partition's own file, exactly as a one-partition run would store it."""


#: `AssetIn(metadata=...)` of an input that spans several partitions (a monthly follow-up reading
#: every client-month): it is loaded as a ByPartition of the partitions stored so far.
BY_PARTITION_INPUT = {"by_partition": True}


def _key_parts(key: str | dg.MultiPartitionKey | None) -> list[str]:
    # month x client partitions are stored as month=2026-10/client=acme (readable, no "|").
    if key is None:
        return []
    if isinstance(key, dg.MultiPartitionKey):
        return [f"{dim}={value}" for dim, value in sorted(key.keys_by_dimension.items())]
    return [str(key)]


def _partition_parts(context: dg.OutputContext | dg.InputContext) -> list[str]:
    return _key_parts(context.asset_partition_key if context.has_asset_partitions else None)


def _as_key(partitions_def: dg.PartitionsDefinition | None, key: str) -> str | dg.MultiPartitionKey:
    if isinstance(partitions_def, dg.MultiPartitionsDefinition) and not isinstance(key, dg.MultiPartitionKey):
        return partitions_def.get_partition_key_from_str(str(key))
    return key


class BillingStoreIOManager(dg.ConfigurableIOManager):
    """Stores each asset partition under ``base_dir/<asset>/<partition>.{parquet,json}``."""

    base_dir: str

    def _stem(self, context: dg.OutputContext | dg.InputContext) -> Path:
        return Path(self.base_dir, *context.asset_key.path, *_partition_parts(context))

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        if obj is None:
            return
        if isinstance(obj, ByPartition):
            expected = set(map(str, context.asset_partition_keys))
            if set(map(str, obj)) != expected:
                raise ValueError(f"{context.asset_key.to_user_string()}: the step returned values for "
                                 f"{len(obj)} partition(s) but materialises {len(expected)}")
            for key, value in obj.items():
                key = _as_key(context.asset_partitions_def, key)
                self._write(Path(self.base_dir, *context.asset_key.path, *_key_parts(key)), value)
            context.add_output_metadata({"path": dg.MetadataValue.path(str(Path(self.base_dir, *context.asset_key.path)))})
            return
        target = self._write(self._stem(context), obj)
        context.add_output_metadata({"path": dg.MetadataValue.path(str(target))})

    def _write(self, stem: Path, obj: Any) -> Path:
        stem.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(obj, pd.DataFrame):
            target, data = stem.with_suffix(".parquet"), None
            tmp = target.with_suffix(".parquet.tmp")
            obj.to_parquet(tmp, index=False)
            stale = stem.with_suffix(".json")
        else:
            target = stem.with_suffix(".json")
            data = money.dumps(obj, sort_keys=True, indent=1)
            tmp = target.with_suffix(".json.tmp")
            tmp.write_text(data)
            stale = stem.with_suffix(".parquet")
        # Atomic replace: a crash mid-write never leaves a half file for the next step to read.
        os.replace(tmp, target)
        if stale.exists():
            stale.unlink()
        return target

    def load_input(self, context: dg.InputContext) -> Any:
        asset = context.asset_key.to_user_string()
        if (context.definition_metadata or {}).get("by_partition"):
            # Partitions never materialised (a client registered after the month was posted, or
            # one whose posting never ran) are simply absent: the reader reports what exists.
            values = ByPartition()
            partitions_def = context.asset_partitions_def if context.has_asset_partitions else None
            for key in context.asset_partition_keys if context.has_asset_partitions else []:
                parts = _key_parts(_as_key(partitions_def, key))
                try:
                    values[str(key)] = _read(Path(self.base_dir, *context.asset_key.path, *parts), asset, parts)
                except FileNotFoundError:
                    continue
            return values
        return _read(self._stem(context), asset, _partition_parts(context))


def _read(stem: Path, asset: str, parts: list[str]) -> Any:
    parquet, js = stem.with_suffix(".parquet"), stem.with_suffix(".json")
    if parquet.exists():
        return pd.read_parquet(parquet)
    if js.exists():
        return money.loads(js.read_text())
    raise FileNotFoundError(
        f"no stored value for {asset} partition {'/'.join(parts) or '(unpartitioned)'}: materialise it first"
    )


def read_stored(base_dir: str | Path, asset: str, partition_key: str | dg.MultiPartitionKey | None = None) -> Any:
    """Read what the IO manager stored for one asset partition, without building a Dagster context.

    The CLI reads a run's results this way: `Definitions.load_asset_value` would build every
    resource again for each value (about a second each).
    """
    parts = _key_parts(partition_key)
    return _read(Path(base_dir, asset, *parts), asset, parts)
