"""Rate limits (real numbers by default) and fault injection for the sandbox."""

from __future__ import annotations

import collections
import dataclasses
import math
import random
import threading
import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

APIS = ("quickbooks", "harvest", "hubspot")


@dataclass
class RateLimits:
    """Per-API limits; ``None`` disables one. Defaults are the real published numbers."""

    qbo_per_minute: int | None = 500  # per realm
    qbo_in_flight: int | None = 10  # concurrent requests per realm
    # Off by default: Intuit documents 10 *concurrent* requests (enforced above); a 10/s rate is
    # only the contracts' cautious reading. Turn it on to test a client against both.
    qbo_per_second: int | None = None
    qbo_batch_per_minute: int | None = 40  # batch requests per realm (+app)
    harvest_per_15s: int | None = 100
    hubspot_per_10s: int | None = 100
    hubspot_search_per_s: int | None = 5

    @classmethod
    def off(cls) -> "RateLimits":
        return cls(**{f.name: None for f in dataclasses.fields(cls)})

    @classmethod
    def coerce(cls, value: "RateLimits | dict | str | None") -> "RateLimits":
        if value is None or value == "off":
            return cls.off()
        if value == "real":
            return cls()
        if isinstance(value, RateLimits):
            return dataclasses.replace(value)
        if isinstance(value, dict):
            names = {f.name for f in dataclasses.fields(cls)}
            bad = [k for k in value if k not in names]
            if bad:
                raise ValueError(f"unknown rate limit(s) {bad}; known: {sorted(names)}")
            return dataclasses.replace(cls(), **value)
        raise TypeError(f"rate_limits: expected RateLimits, dict, 'real', 'off' or None, got {value!r}")

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class SlidingWindow:
    def __init__(self) -> None:
        self.hits: dict[str, collections.deque] = collections.defaultdict(collections.deque)
        self.lock = threading.Lock()

    def take(self, key: str, limit: int | None, window_s: float) -> tuple[bool, int, float]:
        """Record a hit if allowed. Returns (allowed, remaining, seconds until a slot frees)."""
        if limit is None:
            return True, -1, 0.0
        now = time.monotonic()
        with self.lock:
            dq = self.hits[key]
            while dq and dq[0] <= now - window_s:
                dq.popleft()
            if len(dq) >= limit:
                return False, 0, max(0.0, dq[0] + window_s - now)
            dq.append(now)
            return True, limit - len(dq), 0.0

    def clear(self) -> None:
        with self.lock:
            self.hits.clear()


def parse_latency(value: "str | tuple[int, int] | None") -> "tuple[int, int] | None":
    """``"150-400ms"`` (or ``"200ms"``, ``"0.15-0.4s"``, ``(150, 400)``) as (low, high) milliseconds;
    None, ``""``, ``"0"`` or ``"off"`` as None (no added latency)."""
    if value is None:
        return None
    if isinstance(value, tuple):
        low, high = int(value[0]), int(value[1])
    else:
        text = value.strip().lower().replace(" ", "")
        if text in ("", "0", "off", "none"):
            return None
        scale = 1
        if text.endswith("ms"):
            text = text[:-2]
        elif text.endswith("s"):
            text, scale = text[:-1], 1000
        parts = text.split("-")
        if len(parts) not in (1, 2):
            raise ValueError(f"latency {value!r}: expected LOW-HIGH with ms or s, e.g. 150-400ms")
        try:
            # Decimal, not float: "0.15s" is exactly 150 ms.
            from decimal import Decimal
            nums = [int(Decimal(x) * scale) for x in parts]
        except Exception:
            raise ValueError(f"latency {value!r}: expected LOW-HIGH with ms or s, e.g. 150-400ms") from None
        low, high = nums[0], nums[-1]
    if low < 0 or high < low:
        raise ValueError(f"latency {value!r}: need 0 <= LOW <= HIGH")
    return (low, high) if high > 0 else None


def retry_after_s(wait: float) -> str:
    return str(max(1, math.ceil(wait)))


@dataclass
class FaultConfig:
    """Random faults for one API. Rates are probabilities in [0, 1] checked in this order."""

    rate_429: float = 0.0
    rate_500: float = 0.0
    rate_503: float = 0.0
    rate_timeout: float = 0.0  # hold the request `timeout_ms`, then answer 504 without executing it
    rate_lost_response: float = 0.0  # execute a mutating request, then answer 502 (response lost after commit)
    # HubSpot only: a list/search page comes back shorter than `limit` (possibly empty) but still
    # carries `paging.next` (api-contracts §2.5); clients must follow the cursor, not stop.
    rate_short_page: float = 0.0
    latency_ms: int = 0
    timeout_ms: int = 30_000
    seed: int | None = None
    # QuickBooks only: the faults hit this company's requests only (None: every request)
    realm_id: str | None = None
    rng: random.Random = field(default_factory=random.Random, repr=False, compare=False)

    FIELDS = ("rate_429", "rate_500", "rate_503", "rate_timeout", "rate_lost_response", "rate_short_page", "latency_ms",
              "timeout_ms", "seed", "realm_id")

    @classmethod
    def from_dict(cls, d: dict) -> "FaultConfig":
        bad = [k for k in d if k not in cls.FIELDS and k != "api"]
        if bad:
            raise ValueError(f"unknown fault field(s) {bad}; known: {list(cls.FIELDS)}")
        kwargs = {}
        for k in cls.FIELDS:
            if k in d and d[k] is not None:
                v = d[k]
                if k == "realm_id":
                    v = str(v)
                elif k.startswith("rate_"):
                    v = float(str(v))  # a probability, not money
                    if not 0.0 <= v <= 1.0:
                        raise ValueError(f"{k} must be between 0 and 1")
                else:
                    v = int(v)
                kwargs[k] = v
        fc = cls(**kwargs)
        fc.rng = random.Random(fc.seed)
        return fc

    def as_dict(self) -> dict[str, Any]:
        # probabilities travel as exact decimal literals (the JSON writer refuses binary floats)
        return {k: (Decimal(repr(v)) if isinstance(v, float) else v) for k, v in ((k, getattr(self, k)) for k in self.FIELDS)}

    def applies_to(self, path: str) -> bool:
        """Whether a request to `path` draws faults (a realm-bound config spares other realms)."""
        return self.realm_id is None or path.startswith(f"/v3/company/{self.realm_id}/")

    def draw(self) -> str | None:
        """Pick the fault for one request (None = serve normally)."""
        if not (self.rate_429 or self.rate_500 or self.rate_503 or self.rate_timeout or self.rate_lost_response
                or self.rate_short_page):
            return None
        x = self.rng.random()
        for name in ("rate_429", "rate_500", "rate_503", "rate_timeout", "rate_lost_response", "rate_short_page"):
            p = getattr(self, name)
            if x < p:
                return name[5:]
            x -= p
        return None


def endpoint_name(api: str, method: str, path: str) -> str:
    """The endpoint a call counts under: `POST invoice`, `POST batch`, `GET time_entries`,
    `POST crm/v3/objects/deals/search` (ids and the realm left out)."""
    parts = [p for p in path.split("/") if p]
    if api == "quickbooks":
        if parts[:1] == ["oauth2"]:
            return f"{method} token"
        tail = parts[3:4] if parts[:2] == ["v3", "company"] else parts[:1]
        return f"{method} {(tail or ['?'])[0].lower()}"
    if api == "harvest":
        return f"{method} {parts[1] if len(parts) > 1 else '?'}"
    kept = [p for p in parts[:6] if not p.isdigit()]
    return f"{method} {'/'.join(kept)}"


class CallStats:
    """API calls served, per API, endpoint and status class; and the QuickBooks in-flight peak."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.clear()

    def clear(self) -> None:
        with self.lock:
            self.calls: collections.Counter[tuple[str, str, str]] = collections.Counter()
            self.in_flight_peak: dict[str, int] = {}
            # (api, endpoint) -> [first, last] call time (Unix seconds): how long posting kept QuickBooks busy
            self.span: dict[tuple[str, str], list[float]] = {}
            self.started = time.time()

    def count(self, api: str, method: str, path: str, status: int) -> None:
        kind = "throttled" if status == 429 else f"{status // 100}xx"
        endpoint = endpoint_name(api, method, path)
        now = time.time()
        with self.lock:
            self.calls[(api, endpoint, kind)] += 1
            span = self.span.setdefault((api, endpoint), [now, now])
            span[1] = now

    def in_flight(self, realm: str, n: int) -> None:
        with self.lock:
            if n > self.in_flight_peak.get(realm, 0):
                self.in_flight_peak[realm] = n

    def as_dict(self) -> dict:
        with self.lock:
            per_api: dict[str, dict] = {}
            for (api, endpoint, kind), n in sorted(self.calls.items()):
                a = per_api.setdefault(api, {"calls": 0, "throttled": 0, "by_endpoint": {}})
                a["calls"] += n
                a["throttled"] += n if kind == "throttled" else 0
                a["by_endpoint"].setdefault(endpoint, {})[kind] = n
            for (api, endpoint), (first, last) in self.span.items():
                per_api[api].setdefault("span", {})[endpoint] = [first, last]
            return {"since": self.started, "apis": per_api, "qbo_in_flight_peak": dict(self.in_flight_peak)}
