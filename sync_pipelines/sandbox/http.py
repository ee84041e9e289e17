"""Tiny request/response types shared by the simulated APIs (framework-free, so they unit-test)."""

from __future__ import annotations

import base64
import datetime as dt
import json
import secrets
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

PACIFIC = ZoneInfo("America/Los_Angeles")


@dataclass
class Req:
    method: str
    path: str
    query: list[tuple[str, str]]  # in order, repeated keys kept
    headers: dict[str, str]  # lower-case names
    body: bytes = b""
    base_url: str = "http://127.0.0.1"

    def q(self, name: str, default: str | None = None) -> str | None:
        for k, v in self.query:
            if k == name:
                return v
        return default

    def q_all(self, name: str) -> list[str]:
        return [v for k, v in self.query if k == name]

    def url_with(self, path: str, params: list[tuple[str, str]]) -> str:
        return f"{self.base_url}{path}" + (("?" + urlencode(params)) if params else "")


@dataclass
class Resp:
    status: int
    body: Any = None  # JSON-able (Decimals allowed), or bytes/str for raw bodies
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"
    mutated: bool = False  # persist state after sending
    replayable: bool = True

    def body_bytes(self) -> bytes:
        if self.body is None:
            return b""
        if isinstance(self.body, bytes):
            return self.body
        if isinstance(self.body, str):
            return self.body.encode()
        return dumps(self.body, ensure_ascii=False).encode()


def dumps(obj: Any, **kwargs: Any) -> str:
    """JSON with Decimals written as exact numbers, like `money.dumps` but several times faster.

    The C encoder calls `default` only for Decimals, so nothing walks the structure in Python;
    each Decimal travels as a nonce-wrapped string that is unquoted afterwards. Binary floats
    (never money here: fixtures are read with Decimal) are written by json as usual.
    """
    token = "@dec" + secrets.token_hex(6) + "@"

    def default(o: Any) -> str:
        if isinstance(o, Decimal):
            if not o.is_finite():
                raise ValueError(f"cannot write {o} as a JSON number")
            return token + format(o, "f") + token
        raise TypeError(f"Object of type {type(o).__name__} is not JSON serializable")

    text = json.dumps(obj, default=default, check_circular=False, **kwargs)
    if token not in text:
        return text
    return text.replace('"' + token, "").replace(token + '"', "")


def qbo_time() -> str:
    now = dt.datetime.now(PACIFIC)
    return now.isoformat(timespec="milliseconds")


def iso_z(ts: dt.datetime | None = None) -> str:
    ts = ts or dt.datetime.now(dt.timezone.utc)
    return ts.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}Z"


def iso_s(ts: dt.datetime | None = None) -> str:
    ts = ts or dt.datetime.now(dt.timezone.utc)
    return ts.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def encode_cursor(obj: dict) -> str:
    raw = json.dumps(obj, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(text: str) -> dict | None:
    try:
        pad = "=" * (-len(text) % 4)
        obj = json.loads(base64.urlsafe_b64decode(text + pad))
        return obj if isinstance(obj, dict) else None
    except (ValueError, TypeError):
        return None


def new_uuid() -> str:
    return str(uuid.uuid4())
