"""Resources: one typed ConfigurableResource per external system, plus the ledger and the rules.

Secrets arrive as ``dg.EnvVar`` so the code location loads with none set and the UI shows only
their names; a run that needs a missing one fails at resource init, naming the variable. Base
URLs are plain settings with the production defaults (DESIGN §8), so pointing a resource at the
sandbox is just a different base URL.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from collections.abc import Iterator

import dagster as dg
from pydantic import Field

from sync_pipelines import config
from sync_pipelines.billing.rules import RulesFile, load_rules
from sync_pipelines.connectors.harvest import HarvestClient
from sync_pipelines.connectors.hubspot import HubSpotClient
from sync_pipelines.connectors.http import ApiAuthError
from sync_pipelines.connectors.quickbooks import QboOAuth, QboReconnectRequired, QuickBooksClient
from sync_pipelines.ledger.call_budget import shared_call_budget
from sync_pipelines.ledger import Ledger

_ledgers: dict[str, Ledger] = {}
_ledgers_lock = threading.Lock()


class CredentialsRefused(dg.Failure):
    """A step's (or sensor's) API refused its credentials; `cause` is the connector's error
    (`QboReconnectRequired` for QuickBooks' `invalid_grant`, `ApiAuthError` otherwise), so a
    sensor can alert with the realm instead of failing its tick."""

    def __init__(self, cause: Exception, **kwargs):
        super().__init__(**kwargs)
        self.cause = cause


def quickbooks_refused(exc: QboReconnectRequired) -> CredentialsRefused:
    """The step failure (no retries) for a QuickBooks company that refused the refresh token."""
    return CredentialsRefused(
        exc,
        description=f"{exc} Nothing was posted twice: the ledger kept every invoice's state.",
        metadata={"realm_id": dg.MetadataValue.text(str(exc.realm_id))},
        allow_retries=False,
    )


@contextmanager
def _credentials_refused_fail_at_once(client):
    """Yield `client`, closed after; a refused credential fails the step without step retries.

    Retrying cannot help until a person re-authorises the app (QuickBooks `invalid_grant`) or
    replaces the token (a 401/403 from Harvest or HubSpot), so the step must not be re-run
    three times first. The messages name the realm or API, never a secret.
    """
    try:
        yield client
    except QboReconnectRequired as exc:
        raise quickbooks_refused(exc) from None
    except ApiAuthError as exc:
        raise CredentialsRefused(exc, description=f"{exc} Check the access token; retrying cannot help.",
                                 allow_retries=False) from None
    finally:
        client.close()


class LedgerResource(dg.ConfigurableResource):
    """The sync ledger: invoices posted, entries billed, OAuth tokens, the API audit trail.

    ``url`` empty means ``SYNC_DATABASE_URL``, else a SQLite file under ``DAGSTER_HOME``.
    """

    url: str = ""

    def open(self) -> Ledger:
        url = self.url or config.ledger_url()
        # One migrated Ledger per URL per process: migrations run once, engines are pooled.
        with _ledgers_lock:
            if url not in _ledgers:
                ledger = Ledger(url)
                ledger.migrate()
                _ledgers[url] = ledger
            return _ledgers[url]


class RulesResource(dg.ConfigurableResource):
    """The billing rules file (``SYNC_RULES_FILE``); validated whole on every load."""

    path: str = ""

    def resolved_path(self) -> str:
        return self.path or str(config.rules_file())

    def load(self) -> RulesFile:
        return load_rules(self.resolved_path())


class HarvestResource(dg.ConfigurableResource):
    """Harvest API v2 (time entries). Paginates by ``links.next``; 100 requests per 15 s."""

    base_url: str
    account_id: str
    access_token: str
    timeout_seconds: float = 30.0
    ledger: LedgerResource

    def client(self):
        """A client for one step (``with harvest.client() as client:``); every call is audited.
        A refused token fails the step at once (no step retries)."""
        return _credentials_refused_fail_at_once(HarvestClient(
            self.base_url, self.account_id, self.access_token,
            timeout=self.timeout_seconds, audit=self.ledger.open(),
        ))


class HubSpotResource(dg.ConfigurableResource):
    """HubSpot CRM v3 (deals, companies). Paginates by ``paging.next.after``; 100 per 10 s, search 5/s."""

    base_url: str
    access_token: str
    timeout_seconds: float = 30.0
    ledger: LedgerResource

    def client(self):
        """A client for one step (``with hubspot.client() as client:``); every call is audited.
        A refused token fails the step at once (no step retries)."""
        return _credentials_refused_fail_at_once(
            HubSpotClient(self.base_url, self.access_token, timeout=self.timeout_seconds, audit=self.ledger.open()))


class QuickBooksResource(dg.ConfigurableResource):
    """QuickBooks Online Accounting API v3, one client per company (realm).

    ``realm_id`` (``QBO_REALM_ID``) is the default company: the one of a rules file without
    `companies:`. Every company has its own OAuth connection in the ledger (keyed by realm) and
    its own rate limiter (the connector keys it by realm). OAuth refresh tokens rotate:
    ``refresh_token`` (``QBO_REFRESH_TOKEN``) only seeds the default company's token; another
    company is connected with ``sync-pipelines qbo connect --company KEY``. Every rotated token is
    saved in the ledger before it is used, and refreshes are single-flight across processes.
    """

    base_url: str
    token_url: str
    realm_id: str
    client_id: str
    client_secret: str
    refresh_token: str
    timeout_seconds: float = 60.0
    ledger: LedgerResource
    # Posting: invoices per batch call (QuickBooks takes at most 30) and batch calls in the air
    # per company (QuickBooks allows 10 requests in flight; lookups need some of them).
    batch_size: int = Field(default=30, ge=1, le=30)
    batches_in_flight: int = Field(default=3, ge=1, le=10)

    @contextmanager
    def client(self, realm_id: str | None = None) -> Iterator[QuickBooksClient]:
        """A client of one company (`realm_id`; None: QBO_REALM_ID) for one step, its OAuth tokens
        kept in the ledger; every call is audited. `invalid_grant` (the refresh token refused)
        fails the step at once, without step retries."""
        with self.company_client(realm_id) as client, _credentials_refused_fail_at_once(client):
            yield client

    @contextmanager
    def company_client(self, realm_id: str | None = None) -> Iterator[QuickBooksClient]:
        """Like `client`, but a refused token raises the connector's `QboReconnectRequired`
        (so a step serving several companies can go on with the others)."""
        realm = str(realm_id or self.realm_id)
        ledger = self.ledger.open()
        # QBO_REFRESH_TOKEN is the default company's: never offer it to another realm
        seed = self.refresh_token if realm == str(self.realm_id) else None
        oauth = QboOAuth(
            self.token_url, self.client_id, self.client_secret, ledger.tokens, realm,
            seed_refresh_token=seed, timeout=self.timeout_seconds, audit=ledger,
        )
        # The company's throttle is shared with every other process posting to it (ledger-backed).
        budget = shared_call_budget(ledger, realm)
        client = QuickBooksClient(self.base_url, realm, oauth, timeout=self.timeout_seconds, audit=ledger,
                                  limiter=budget.calls, batch_limiter=budget.batches)
        try:
            yield client
        finally:
            client.close()
            oauth.close()


def build_resources() -> dict[str, dg.ConfigurableResource]:
    ledger = LedgerResource()
    return {
        "ledger": ledger,
        "rules": RulesResource(),
        "harvest": HarvestResource(
            base_url=config.setting("HARVEST_BASE_URL"),
            account_id=dg.EnvVar("HARVEST_ACCOUNT_ID"),
            access_token=dg.EnvVar("HARVEST_ACCESS_TOKEN"),
            ledger=ledger,
        ),
        "hubspot": HubSpotResource(
            base_url=config.setting("HUBSPOT_BASE_URL"),
            access_token=dg.EnvVar("HUBSPOT_ACCESS_TOKEN"),
            ledger=ledger,
        ),
        "quickbooks": QuickBooksResource(
            base_url=config.setting("QBO_BASE_URL"),
            token_url=config.setting("QBO_TOKEN_URL"),
            realm_id=dg.EnvVar("QBO_REALM_ID"),
            client_id=dg.EnvVar("QBO_CLIENT_ID"),
            client_secret=dg.EnvVar("QBO_CLIENT_SECRET"),
            refresh_token=dg.EnvVar("QBO_REFRESH_TOKEN"),
            ledger=ledger,
            batch_size=config.int_setting("QBO_BATCH_SIZE", 1, 30),
            batches_in_flight=config.int_setting("QBO_BATCHES_IN_FLIGHT", 1, 10),
        ),
    }


@dg.definitions
def resources() -> dg.Definitions:
    from sync_pipelines.defs.io_manager import BillingStoreIOManager

    return dg.Definitions(
        resources={
            **build_resources(),
            # Parquet/JSON beside the instance; DAGSTER_HOME is read when the location loads.
            "io_manager": BillingStoreIOManager(base_dir=str(config.dagster_home() / "storage")),
        }
    )
