"""Webhook signature checks, pure: no I/O, no clock of their own, no secret in any message.

HubSpot v3 (api-contracts §2.8; HubSpot "Validating requests"): ``X-HubSpot-Signature-v3`` =
base64(HMAC-SHA256(app client secret, method + URI + body + ``X-HubSpot-Request-Timestamp``)),
the timestamp in epoch milliseconds, the URI the full URL HubSpot called with a fixed set of
percent-escapes decoded. Requests older than 300 s are rejected; so are timestamps more than
300 s ahead (a clock that far off, or a forged timestamp).

Intuit (api-contracts §1.11): ``intuit-signature`` = base64(HMAC-SHA256(verifier token, raw body)).
It covers the body only: no timestamp, no URL.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from dataclasses import dataclass

#: HubSpot's window, both ways (their SDK: ``MAX_ALLOWED_TIMESTAMP = 300``).
HUBSPOT_WINDOW_S = 300

# HubSpot's docs: "decode any URL-encoded characters listed in the following table in the
# requestUri" before hashing; every other escape stays as sent.
_HUBSPOT_URI_DECODES = {
    "%3A": ":", "%2F": "/", "%3F": "?", "%40": "@", "%21": "!", "%24": "$",
    "%27": "'", "%28": "(", "%29": ")", "%2A": "*", "%2C": ",", "%3B": ";",
}


@dataclass(frozen=True)
class Verdict:
    """The outcome of a check: ``reason`` is None when the request is authentic, else one of
    ``forged``, ``stale``, ``future``; ``detail`` says why for the log (never a secret or a
    signature value)."""

    reason: str | None
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.reason is None


OK = Verdict(None)


def hubspot_uri(uri: str) -> str:
    """The URI as HubSpot hashes it: the listed percent-escapes decoded (either case), others kept."""
    if "%" not in uri:
        return uri
    out: list[str] = []
    i = 0
    while i < len(uri):
        chunk = uri[i : i + 3].upper()
        if uri[i] == "%" and chunk in _HUBSPOT_URI_DECODES:
            out.append(_HUBSPOT_URI_DECODES[chunk])
            i += 3
        else:
            out.append(uri[i])
            i += 1
    return "".join(out)


def hubspot_v3_signature(secret: str, method: str, uri: str, body: bytes, timestamp: str) -> str:
    """base64(HMAC-SHA256(secret, method + URI + body + timestamp)); the URI as :func:`hubspot_uri`."""
    msg = method.upper().encode() + hubspot_uri(uri).encode("utf-8") + body + timestamp.encode()
    return base64.b64encode(hmac.new(secret.encode("utf-8"), msg, hashlib.sha256).digest()).decode()


def verify_hubspot_v3(
    secret: str,
    *,
    method: str,
    uri: str,
    body: bytes,
    signature: str | None,
    timestamp: str | None,
    now_ms: int,
    window_s: int = HUBSPOT_WINDOW_S,
) -> Verdict:
    """Check a HubSpot v3 request at time ``now_ms`` (epoch ms)."""
    if not signature:
        return Verdict("forged", "no X-HubSpot-Signature-v3 header")
    if not timestamp or not timestamp.strip().isdigit():
        return Verdict("forged", "X-HubSpot-Request-Timestamp missing or not epoch milliseconds")
    age_ms = now_ms - int(timestamp)
    if age_ms > window_s * 1000:
        return Verdict("stale", f"timestamp {age_ms // 1000} s old (limit {window_s} s)")
    if -age_ms > window_s * 1000:
        return Verdict("future", f"timestamp {-age_ms // 1000} s in the future (limit {window_s} s)")
    expected = hubspot_v3_signature(secret, method, uri, body, timestamp.strip())
    if not hmac.compare_digest(expected.encode(), signature.strip().encode()):
        return Verdict("forged", "X-HubSpot-Signature-v3 does not match (wrong secret, URL, body or timestamp)")
    return OK


def intuit_signature(verifier_token: str, body: bytes) -> str:
    """base64(HMAC-SHA256(verifier token, raw body))."""
    return base64.b64encode(hmac.new(verifier_token.encode("utf-8"), body, hashlib.sha256).digest()).decode()


def verify_intuit(verifier_token: str, *, body: bytes, signature: str | None) -> Verdict:
    """Check an Intuit delivery: the signature over the raw bytes, compared in constant time."""
    if not signature:
        return Verdict("forged", "no intuit-signature header")
    try:
        sent = base64.b64decode(signature.strip(), validate=True)
    except (binascii.Error, ValueError):
        return Verdict("forged", "intuit-signature is not base64")
    expected = hmac.new(verifier_token.encode("utf-8"), body, hashlib.sha256).digest()
    if not hmac.compare_digest(expected, sent):
        return Verdict("forged", "intuit-signature does not match the body (wrong verifier token or altered body)")
    return OK
