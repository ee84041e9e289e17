"""The receiver's configuration, from the environment (README "Webhook receiver")."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

#: Where the receiver's endpoints are, as seen by HubSpot (behind a proxy the request's own URL
#: differs from the one HubSpot signed): scheme, host and optional path prefix, e.g.
#: ``https://hooks.firm.example``. Unset: the URL of the request as it arrives.
PUBLIC_URL_ENV = "WEBHOOK_PUBLIC_URL"
HUBSPOT_SECRET_ENV = "HUBSPOT_CLIENT_SECRET"
INTUIT_VERIFIER_ENV = "QBO_WEBHOOK_VERIFIER_TOKEN"

#: The largest body accepted (HubSpot batches up to 100 events, a few hundred bytes each).
MAX_BODY_BYTES = 1_000_000


class ConfigError(ValueError):
    """A setting the receiver cannot start with; the message names the variable."""


@dataclass(frozen=True)
class ReceiverSettings:
    hubspot_client_secret: str | None = field(default=None, repr=False)
    intuit_verifier_token: str | None = field(default=None, repr=False)
    public_url: str | None = None
    max_body_bytes: int = MAX_BODY_BYTES
    #: How long a request waits for its events to be committed before answering 503 (Intuit
    #: wants 200 within 3 s; a 503 makes the sender retry, and the retry is deduplicated).
    store_timeout_s: float = 2.5

    def __repr__(self) -> str:  # never the secrets, only whether they are set
        return (f"ReceiverSettings(hubspot_client_secret={'set' if self.hubspot_client_secret else 'unset'}, "
                f"intuit_verifier_token={'set' if self.intuit_verifier_token else 'unset'}, "
                f"public_url={self.public_url!r})")

    @classmethod
    def from_env(cls, environ: Any = None) -> "ReceiverSettings":
        env = os.environ if environ is None else environ
        public = (env.get(PUBLIC_URL_ENV) or "").strip() or None
        if public is not None:
            parts = urlsplit(public)
            if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
                raise ConfigError(
                    f"{PUBLIC_URL_ENV}={public!r}: expected scheme://host[:port][/prefix], e.g. https://hooks.firm.example")
            public = public.rstrip("/")
        return cls(
            hubspot_client_secret=(env.get(HUBSPOT_SECRET_ENV) or None),
            intuit_verifier_token=(env.get(INTUIT_VERIFIER_ENV) or None),
            public_url=public,
        )
