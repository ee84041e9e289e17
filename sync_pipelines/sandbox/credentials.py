"""Fixed sandbox credentials.

They are not secrets: they only open the local simulator. `SandboxServer.env()` and
`sync-pipelines sandbox serve` hand them out together with the base URLs. The QuickBooks refresh
token below is only the *initial* one: the sandbox rotates it on every refresh (as Intuit may),
so `SandboxServer.env()["QBO_REFRESH_TOKEN"]` returns whichever refresh token is currently valid.
"""

from __future__ import annotations

HARVEST_ACCOUNT_ID = "1234567"
HARVEST_ACCESS_TOKEN = "sandbox-harvest-token"

HUBSPOT_ACCESS_TOKEN = "sandbox-hubspot-token"
HUBSPOT_CLIENT_SECRET = "sandbox-hubspot-client-secret"

QBO_REALM_ID = "9341452581046783"  # default realm when a fixture does not name one
QBO_CLIENT_ID = "sandbox-qbo-client-id"
QBO_CLIENT_SECRET = "sandbox-qbo-client-secret"
QBO_REFRESH_TOKEN = "sandbox-qbo-refresh-token-0"
QBO_WEBHOOK_VERIFIER_TOKEN = "sandbox-qbo-webhook-verifier-token"

ACCESS_TOKEN_TTL_S = 3600
REFRESH_TOKEN_TTL_S = 8_640_000
