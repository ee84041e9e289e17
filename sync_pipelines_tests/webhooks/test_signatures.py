"""Signature checks, pure. Expected values were computed independently with OpenSSL:

    printf '%s' "$MSG" | openssl dgst -sha256 -hmac "$KEY" -binary | base64
"""

from __future__ import annotations

import pytest

from sync_pipelines.sandbox import webhooks as sandbox_signer
from sync_pipelines.webhooks.replay import ReplayGuard
from sync_pipelines.webhooks.signatures import (
    hubspot_uri,
    hubspot_v3_signature,
    intuit_signature,
    verify_hubspot_v3,
    verify_intuit,
)

SECRET = "yyyyyyyy-yyyy-yyyy-yyyy-yyyyyyyyyyyy"  # the placeholder secret of HubSpot's own examples
URI = "https://hooks.example.com/webhooks/hubspot?portal=62515"
BODY = b'[{"eventId":1,"subscriptionType":"deal.propertyChange"}]'
TS = "1700000000000"
OPENSSL_V3 = "8vAxY3K407+MiHRQDCWNLtFV7pBaoiB3GsBirPZzEw0="

LEGACY_BODY = (b'{"eventNotifications":[{"realmId":"310687","dataChangeEvent":{"entities":[{"name":"Invoice",'
               b'"id":"1234","operation":"Void","lastUpdated":"2025-09-08T20:52:31.657Z"}]}}]}')
VERIFIER = "verifier-token-123"
OPENSSL_INTUIT = "y9RTxjJZ9pFXtk2vNWnOiRymtmvxfczVZlWWpcowjlY="


def test_hubspot_v3_matches_an_independent_openssl_vector():
    assert hubspot_v3_signature(SECRET, "POST", URI, BODY, TS) == OPENSSL_V3
    # and the sandbox's own signer (what our tests send) agrees
    assert sandbox_signer.hubspot_v3_signature(SECRET, "POST", URI, BODY, TS) == OPENSSL_V3


def test_hubspot_uri_decodes_exactly_the_documented_escapes():
    # HubSpot: decode %3A %2F %3F %40 %21 %24 %27 %28 %29 %2A %2C %3B (either case); keep the rest.
    assert hubspot_uri("https://h/x?email=a%40b.c&x=%281%29%2a%3b%2C") == "https://h/x?email=a@b.c&x=(1)*;,"
    assert hubspot_uri("https://h/x?q=a%20b%26c%3D") == "https://h/x?q=a%20b%26c%3D"
    assert hubspot_uri("https://h/%3a%2f%3F%21%24%27") == "https://h/:/?!$'"
    # the signature is over the decoded form (OpenSSL over ".../hubspot?email=a@b.c&x=(1)" + "[]" + TS)
    encoded = "https://hooks.example.com/webhooks/hubspot?email=a%40b.c&x=%281%29"
    assert hubspot_v3_signature(SECRET, "POST", encoded, b"[]", TS) == "7UwtSfewCamt7ng4v7rpTZWHos66JtnuhSUCts4oI38="


def _verify(**kw):
    args = dict(method="POST", uri=URI, body=BODY, signature=OPENSSL_V3, timestamp=TS, now_ms=int(TS) + 1000)
    args.update(kw)
    return verify_hubspot_v3(SECRET, **args)


def test_hubspot_valid_request_passes():
    assert _verify().ok


@pytest.mark.parametrize(
    "change, reason",
    [
        ({"body": BODY + b" "}, "forged"),
        ({"uri": URI.replace("https", "http")}, "forged"),
        ({"method": "PUT"}, "forged"),
        ({"signature": OPENSSL_V3[:-2] + "A="}, "forged"),
        ({"signature": None}, "forged"),
        ({"timestamp": None}, "forged"),
        ({"timestamp": "17e11"}, "forged"),
        ({"now_ms": int(TS) + 300_001}, "stale"),
        ({"now_ms": int(TS) - 300_001}, "future"),
    ],
)
def test_hubspot_rejections(change, reason):
    verdict = _verify(**change)
    assert verdict.reason == reason
    assert SECRET not in verdict.detail and OPENSSL_V3 not in verdict.detail


def test_hubspot_window_edges_are_inclusive_at_300_s():
    assert _verify(now_ms=int(TS) + 300_000).ok
    assert _verify(now_ms=int(TS) - 300_000).ok


def test_hubspot_wrong_secret_is_forged():
    assert verify_hubspot_v3("other", method="POST", uri=URI, body=BODY, signature=OPENSSL_V3, timestamp=TS,
                             now_ms=int(TS)).reason == "forged"


def test_intuit_matches_an_independent_openssl_vector():
    assert intuit_signature(VERIFIER, LEGACY_BODY) == OPENSSL_INTUIT
    assert sandbox_signer.intuit_signature(VERIFIER, LEGACY_BODY) == OPENSSL_INTUIT
    assert verify_intuit(VERIFIER, body=LEGACY_BODY, signature=OPENSSL_INTUIT).ok


@pytest.mark.parametrize(
    "body, signature",
    [
        (LEGACY_BODY + b"\n", OPENSSL_INTUIT),        # a byte changed: raw bytes are what is signed
        (LEGACY_BODY, None),
        (LEGACY_BODY, "not base64 !!"),
        (LEGACY_BODY, intuit_signature("other-token", LEGACY_BODY)),
    ],
)
def test_intuit_rejections(body, signature):
    verdict = verify_intuit(VERIFIER, body=body, signature=signature)
    assert verdict.reason == "forged"
    assert VERIFIER not in verdict.detail and OPENSSL_INTUIT not in verdict.detail


def test_replay_guard_refuses_a_signature_until_its_window_has_passed():
    guard = ReplayGuard(window_s=300)
    t = 1_700_000_000_000
    assert guard.first_use("sig-a", t, t)
    assert not guard.first_use("sig-a", t, t + 1000)
    assert guard.first_use("sig-b", t, t + 1000)
    # after timestamp + window the entry is forgotten (the timestamp check rejects it by then)
    assert guard.first_use("sig-c", t + 400_000, t + 400_000)
    assert len(guard) == 1
