"""The billing board: months, and months × clients.

Extracts are partitioned by month; billing and posting by month × client, so that the partition
grid in the UI is the firm's billing board and one client's month can be re-run alone.
Partition keys are ``2026-10`` (the billing period as the rules and the ledger write it) and,
for month × client, ``acme|2026-10`` (Dagster sorts dimension names: client, month).
"""

from __future__ import annotations

import re
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
