"""The billing board: months, and months × clients.

Extracts, pricing and the follow-up (CRM write-back, reconciliation report) are partitioned by
month and run for every client at once; posting (`qbo_invoices`) is month × client, so that the
partition grid in the UI is the firm's billing board and one client's month can be posted alone.
A month-end posts all of the month's clients in ONE run (`BackfillPolicy.single_run()`): Dagster
records every partition materialised (≈ 25 ms each on the SQLite instance), so this is the only
per-client asset (docs/architecture.md "Month-end runs").
Partition keys are ``2026-10`` (the billing period as the rules and the ledger write it) and,
for month × client, ``acme|2026-10`` (Dagster sorts dimension names: client, month).
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import dagster as dg
import yaml

from sync_pipelines import config

FIRST_MONTH = "2024-01"
DEFAULT_TIMEZONE = "UTC"


def firm_timezone() -> str:
    """The firm's timezone from the rules file, read cheaply at load time.

    The month-end schedule must tick in the firm's timezone (reference/dagster-notes.md P11), but
    the code location must also load when the rules file is missing or invalid (it is validated,
    loudly, by the `billing_rules` asset), so any problem here falls back to UTC.
    """
    path: Path = config.rules_file()
    try:
        data = yaml.safe_load(path.read_text())
        tz = data["firm"]["timezone"]
        if isinstance(tz, str) and re.fullmatch(r"[A-Za-z_+\-/0-9]+", tz):
            return tz
    except Exception:  # noqa: BLE001 - see docstring
        pass
    return DEFAULT_TIMEZONE


monthly = dg.MonthlyPartitionsDefinition(
    start_date=FIRST_MONTH, fmt="%Y-%m", timezone=firm_timezone(), end_offset=0
)

# Client keys come from the rules file; the `billing_rules` asset registers them each month.
clients = dg.DynamicPartitionsDefinition(name="clients")

client_months = dg.MultiPartitionsDefinition({"month": monthly, "client": clients})


def client_month_key(client_key: str, month: str) -> dg.MultiPartitionKey:
    return dg.MultiPartitionKey({"client": client_key, "month": month})


def client_and_month(key: str | dg.MultiPartitionKey) -> tuple[str, str]:
    """(client, month) of a month × client key, given as a MultiPartitionKey or as ``acme|2026-10``."""
    if isinstance(key, dg.MultiPartitionKey):
        dims = key.keys_by_dimension
        return dims["client"], dims["month"]
    client, month = str(key).rsplit("|", 1)
    return client, month


# A client-month reads its month's monthly assets (the drafts of every client), and a monthly
# follow-up reads every client-month of its month. The class is "beta" in Dagster 1.13 (it warns
# on every load of the code location); the exact shapes we use are tested
# (sync_pipelines_tests/test_month_runs.py, test_io_manager_partitions.py), so the warning is muted here only.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", dg.BetaWarning)
    MONTH_OF_CLIENT_MONTH = dg.MultiToSingleDimensionPartitionMapping(partition_dimension_name="month")


def month_posting_tags(month: str, client_keys: list[str]) -> dict[str, str]:
    """Run tags selecting ``client_keys`` (in the `clients` partitions' order) × ``month`` as one
    single-run range: the first and the last client bound the range, every client between them is
    in it, so ``client_keys`` must be the whole registered list (or one client)."""
    return {
        "dagster/asset_partition_range_start": str(client_month_key(client_keys[0], month)),
        "dagster/asset_partition_range_end": str(client_month_key(client_keys[-1], month)),
    }



# Every extract asset: one month at a time, retried on transient API failures (the connectors
# already retry each call; this re-runs the whole step after a longer outage).
EXTRACT_ASSET = dict(
    partitions_def=monthly,
    group_name="extract",
    retry_policy=dg.RetryPolicy(max_retries=3, delay=5, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS),
    code_version="1",
)

# One partition per HubSpot deal (key = deal id) that entered the ready-for-billing stage; the
# deal sensor adds the key in the same tick as it requests the deal's run.
deals = dg.DynamicPartitionsDefinition(name="deals")
