"""Keeping secrets out of the ledger's text columns (audit rows, error texts).

Two layers:

* **known secrets**: every token the ledger's token store reads, saves or seeds is registered here
  (process-wide, in memory only) and replaced wherever it appears;
* **patterns**: ``Bearer``/``Basic`` credentials, JWTs, ``name=value`` / ``"name": "value"`` pairs
  whose name says secret (token, secret, password, api key, authorization, signature...), HubSpot
  private app tokens, Harvest personal tokens, and any long opaque run mixing letters and digits
  (>= 40 characters: OAuth codes and refresh tokens; no id, UUID or path segment of ours is that
  long). Error codes such as QuickBooks' ``"code": "6000"`` are kept.
"""

from __future__ import annotations

import re
import threading
from urllib.parse import urlsplit

REDACTED = "[REDACTED]"

_known: set[str] = set()
_known_lock = threading.Lock()
_MAX_KNOWN = 10_000

_SECRET_NAMES = (
    r"access_token|refresh_token|id_token|token|client_secret|secret|password|passwd|pwd|"
    r"api_key|apikey|hapikey|authorization|x-api-key|signature|verifier"
)
_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=\-]{8,}"), r"\1 " + REDACTED),
    (re.compile(r"\beyJ[A-Za-z0-9_\-]{5,}\.[A-Za-z0-9_\-]{5,}\.[A-Za-z0-9_\-]*"), REDACTED),
    (
        re.compile(r"(?i)((?<![A-Za-z0-9_\-])[\"']?(?:" + _SECRET_NAMES + r")[\"']?\s*[:=]\s*[\"']?)([^\"'&\s,;}]+)"),
        r"\1" + REDACTED,
    ),
    (re.compile(r"\bpat-[a-z]{2}\d-[0-9a-fA-F\-]{20,}"), REDACTED),
    (re.compile(r"\b\d{3,}\.pt\.[A-Za-z0-9_\-]{20,}"), REDACTED),
    # long opaque runs mixing letters and digits (a dotted Python name has no digits)
    (re.compile(r"(?=[A-Za-z0-9_\-.~+=]*\d)(?=[A-Za-z0-9_\-.~+=]*[A-Za-z])[A-Za-z0-9_\-.~+=]{40,}"), REDACTED),
]


def register_secret(value: str | None) -> None:
    """Remember a secret value so that :func:`redact` replaces it wherever it appears."""
    if not value or len(value) < 8:
        return
    with _known_lock:
        if len(_known) >= _MAX_KNOWN:
            _known.clear()
        _known.add(value)


def redact(text: str | None) -> str | None:
    """`text` with every known secret and every secret-looking substring replaced."""
    if text is None:
        return None
    with _known_lock:
        known = sorted(_known, key=len, reverse=True)
    for secret in known:
        if secret in text:
            text = text.replace(secret, REDACTED)
    for pattern, repl in _PATTERNS:
        text = pattern.sub(repl, text)
    return text


def short_error(text: str | None, limit: int = 500) -> str | None:
    """A redacted, single-line error text of at most `limit` characters."""
    if text is None:
        return None
    text = " ".join(str(text)[: limit * 8].split())
    text = redact(text) or ""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def clean_path(path: str, limit: int = 512) -> str:
    """The path of a URL or path: no scheme, host, user info, query string or fragment; redacted."""
    raw = path or ""
    parts = urlsplit(raw)
    only = parts.path if (parts.scheme or parts.netloc) else raw.split("?", 1)[0].split("#", 1)[0]
    only = only.split(";", 1)[0] or "/"
    only = redact(only) or "/"
    return only[:limit]
