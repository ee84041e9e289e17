"""Idempotency keys for invoices (DESIGN §6).

One invoice = one key, derived from (realm, client, period, group, generation). The same key
gives the same QuickBooks `requestid` and the same DocNumber on every run, so a retry, a crash
or a duplicate trigger can always find what an earlier attempt did.
"""

from __future__ import annotations

import hashlib
import uuid

# Fixed forever: changing it would give every already-posted invoice a new requestid.
_REQUEST_NAMESPACE = uuid.UUID("6f1c3a52-7d1e-4b8e-9a43-0c5b2f6e9d10")


def invoice_key(realm_id: str, client_key: str, period: str, group_key: str, generation: int = 1) -> str:
    return f"{realm_id}:{client_key}:{period}:{group_key}:g{generation}"


def request_id(key: str) -> str:
    """QuickBooks `requestid` for a key: 36 chars (limit 50, and 36 inside a batch)."""
    return str(uuid.uuid5(_REQUEST_NAMESPACE, key))


def doc_number(key: str, period: str) -> str:
    """DocNumber fingerprint, at most 21 chars (QBO's limit), e.g. ``SP2610-1A2B3C4D``.

    DocNumber is filterable in QBO queries (PrivateNote is not), so it is what we look up before
    re-posting a key whose earlier attempt may or may not have reached QuickBooks.
    """
    digest = hashlib.sha256(key.encode()).hexdigest()[:8].upper()
    return f"SP{period.replace('-', '')[2:]}-{digest}"
