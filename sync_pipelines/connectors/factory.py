"""Build the three clients from the DESIGN §8 environment variables (or any mapping).

Base URLs carry no version path. Only names are read here; values are never logged.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from .harvest import HarvestClient
from .http import AuditSink, TokenStore
from .hubspot import HubSpotClient
from .quickbooks import QboOAuth, QuickBooksClient

DEFAULTS = {
    "HARVEST_BASE_URL": "https://api.harvestapp.com",
    "HUBSPOT_BASE_URL": "https://api.hubapi.com",
    "QBO_BASE_URL": "https://quickbooks.api.intuit.com",
    "QBO_TOKEN_URL": "https://oauth.platform.intuit.com/oauth2/v1/tokens/bearer",
}


class MissingSetting(KeyError):
    def __str__(self) -> str:
        return f"environment variable {self.args[0]} is required"


def _get(env: Mapping[str, str], name: str) -> str:
    value = env.get(name) or DEFAULTS.get(name)
    if not value:
        raise MissingSetting(name)
    return value


def harvest_from_env(env: Mapping[str, str] | None = None, *, audit: AuditSink | None = None,
                     **kwargs: Any) -> HarvestClient:
    env = os.environ if env is None else env
    return HarvestClient(_get(env, "HARVEST_BASE_URL"), _get(env, "HARVEST_ACCOUNT_ID"),
                         _get(env, "HARVEST_ACCESS_TOKEN"), audit=audit, **kwargs)


def hubspot_from_env(env: Mapping[str, str] | None = None, *, audit: AuditSink | None = None,
                     **kwargs: Any) -> HubSpotClient:
    env = os.environ if env is None else env
    return HubSpotClient(_get(env, "HUBSPOT_BASE_URL"), _get(env, "HUBSPOT_ACCESS_TOKEN"), audit=audit, **kwargs)


def quickbooks_from_env(token_store: TokenStore, env: Mapping[str, str] | None = None, *,
                        audit: AuditSink | None = None, oauth_kwargs: Mapping[str, Any] | None = None,
                        **kwargs: Any) -> QuickBooksClient:
    """QuickBooksClient + QboOAuth. ``QBO_REFRESH_TOKEN`` only seeds an empty ``token_store``.
    With the ledger as `audit` (and no limiter, sleep or clock of the caller's) the client's calls
    go through the company's call budget in that ledger, shared with every other process."""
    env = os.environ if env is None else env
    realm = _get(env, "QBO_REALM_ID")
    oauth = QboOAuth(_get(env, "QBO_TOKEN_URL"), _get(env, "QBO_CLIENT_ID"), _get(env, "QBO_CLIENT_SECRET"),
                     token_store, realm, env.get("QBO_REFRESH_TOKEN") or None, audit=audit,
                     **dict(oauth_kwargs or {}))
    from sync_pipelines.ledger import Ledger

    if isinstance(audit, Ledger) and not {"limiter", "batch_limiter", "sleep", "clock"} & set(kwargs):
        # A CLI command posting beside the month-end shares the company's budget with it.
        from sync_pipelines.ledger.call_budget import shared_call_budget

        budget = shared_call_budget(audit, realm)
        kwargs = {**kwargs, "limiter": budget.calls, "batch_limiter": budget.batches}
    return QuickBooksClient(_get(env, "QBO_BASE_URL"), realm, oauth, audit=audit, **kwargs)
