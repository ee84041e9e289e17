"""Where rejected API records go: kept with their raw payload and reason, never dropped."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pandas as pd

from sync_pipelines import config


def keep_rejected(context: dg.AssetExecutionContext, system: str, period: str, rejected: pd.DataFrame) -> dict:
    """Write rejected records to ``<output>/<period>/quarantine_<system>.csv``; return metadata."""
    if rejected.empty:
        return {"rejected_records": dg.MetadataValue.int(0)}
    path = Path(config.output_dir(), period, f"quarantine_{system}.csv")
    path.parent.mkdir(parents=True, exist_ok=True)
    rejected.to_csv(path, index=False)
    context.log.warning(f"{len(rejected)} {system} record(s) quarantined with their reasons: {path}")
    return {
        "rejected_records": dg.MetadataValue.int(len(rejected)),
        "quarantine_file": dg.MetadataValue.path(str(path)),
        "rejected_preview": dg.MetadataValue.md(
            rejected.drop(columns=["raw_json"], errors="ignore").head(20).to_markdown(index=False)
        ),
    }
