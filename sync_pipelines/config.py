"""Configuration from the environment (DESIGN §8).

The names are normative: the sandbox prints them as ``export NAME=value`` lines, the README
documents them and `.env.example` lists them. Secrets are read by Dagster resources through
``dg.EnvVar`` so that the code location loads without any secret set and the UI shows only names.
"""

from __future__ import annotations

import os
from pathlib import Path

# Non-secret settings with their defaults; base URLs carry no version path.
DEFAULTS: dict[str, str] = {
    "SYNC_RULES_FILE": "billing_rules.yaml",
    "HARVEST_BASE_URL": "https://api.harvestapp.com",
    "HUBSPOT_BASE_URL": "https://api.hubapi.com",
    "QBO_BASE_URL": "https://quickbooks.api.intuit.com",
    "QBO_TOKEN_URL": "https://oauth.platform.intuit.com/oauth2/v1/tokens/bearer",
    # where `sync-pipelines qbo connect` sends the user to consent (Intuit's authorize endpoint)
    "QBO_AUTHORIZE_URL": "https://appcenter.intuit.com/connect/oauth2",
    # Invoices per QuickBooks batch call (Intuit's maximum is 30) and batch calls in the air at
    # once per company (its limit is 10 requests in flight); lower them for a company that
    # another integration also posts to.
    "QBO_BATCH_SIZE": "30",
    "QBO_BATCHES_IN_FLIGHT": "3",
}

# Secrets: only ever handed to dg.EnvVar, never read into metadata or logs.
SECRET_NAMES = (
    "HARVEST_ACCESS_TOKEN",
    "HUBSPOT_ACCESS_TOKEN",
    "HUBSPOT_CLIENT_SECRET",
    "QBO_CLIENT_SECRET",
    "QBO_REFRESH_TOKEN",
    "QBO_WEBHOOK_VERIFIER_TOKEN",
)


def setting(name: str) -> str:
    """A non-secret setting: the environment, else its documented default."""
    if name in SECRET_NAMES:
        raise KeyError(f"{name} is a secret; read it through dg.EnvVar, not config.setting")
    value = os.environ.get(name)
    if value:
        return value
    if name in DEFAULTS:
        return DEFAULTS[name]
    raise KeyError(f"{name} has no default; set it in the environment (see README, Configuration)")


def int_setting(name: str, low: int, high: int) -> int:
    """A whole-number setting within [low, high]; anything else is an error naming the variable."""
    value = setting(name)
    try:
        number = int(value)
    except ValueError:
        number = None
    if number is None or not low <= number <= high:
        raise ValueError(f"{name}={value!r}: expected a whole number from {low} to {high}")
    return number


def dagster_home() -> Path:
    home = os.environ.get("DAGSTER_HOME")
    return Path(home) if home else Path.cwd() / ".dagster_home"


def ledger_url() -> str:
    """SYNC_DATABASE_URL, else a SQLite file beside the Dagster instance."""
    url = os.environ.get("SYNC_DATABASE_URL")
    if url:
        # SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3, which we do not ship
        # (reference/dagster-notes.md P1).
        if url.startswith("postgresql://") or url.startswith("postgres://"):
            url = "postgresql+psycopg2://" + url.split("://", 1)[1]
        return url
    return f"sqlite:///{dagster_home() / 'sync_ledger.db'}"


def output_dir() -> Path:
    """Where previews and reports are written for people to open: SYNC_OUTPUT_DIR or DAGSTER_HOME/output."""
    value = os.environ.get("SYNC_OUTPUT_DIR")
    return Path(value) if value else dagster_home() / "output"


def rules_file() -> Path:
    return Path(setting("SYNC_RULES_FILE"))
