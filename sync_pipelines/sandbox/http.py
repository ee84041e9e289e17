"""Tiny request/response types shared by the simulated APIs (framework-free, so they unit-test)."""

from __future__ import annotations

import base64
import datetime as dt
import json
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from sync_pipelines import money

PACIFIC = ZoneInfo("America/Los_Angeles")


@dataclass
class Req:
    method: str
    path: str
    query: list[tuple[str, str]]  # in order, repeated keys kept
    headers: dict[str, str]  # lower-case names
    body: bytes = b""
    base_url: str = "http://127.0.0.1"
    # set by the `rate_short_page` fault: keep this fraction of a HubSpot page (cursor still given)
    short_page: float | None = None

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
    """`money.dumps` without the float check: fixtures are read with Decimal, and a large
    fixture should not be walked twice."""
    return money.dumps(obj, strict=False, check_circular=False, **kwargs)


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
