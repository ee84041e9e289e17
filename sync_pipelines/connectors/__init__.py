"""Production API clients: Harvest v2, HubSpot CRM, QuickBooks Online (httpx; no Dagster imports).

See docs/architecture.md ("Connectors") and each module's docstring.
"""

from .harvest import HarvestClient
from .http import (
    ApiAuthError,
    ApiError,
    ApiNotFound,
    ApiRateLimited,
    ApiTransport,
    ApiUnavailable,
    ApiValidationError,
    AuditSink,
    FetchResult,
    InMemoryTokenStore,
    RateLimiter,
    Rejected,
    RetryPolicy,
    TokenSet,
    TokenStore,
)
from .hubspot import HubSpotClient
from .quickbooks import QboOAuth, QboReconnectRequired, QuickBooksClient, quote

__all__ = [
    "ApiAuthError", "ApiError", "ApiNotFound", "ApiRateLimited", "ApiTransport", "ApiUnavailable",
    "ApiValidationError", "AuditSink", "FetchResult", "HarvestClient", "HubSpotClient",
    "InMemoryTokenStore", "QboOAuth", "QboReconnectRequired", "QuickBooksClient", "RateLimiter",
    "Rejected", "RetryPolicy", "TokenSet", "TokenStore", "quote",
]
