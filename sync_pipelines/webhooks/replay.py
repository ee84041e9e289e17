"""HubSpot replay guard: a v3 signature already accepted inside its window is a replay.

HubSpot re-signs every retry (new ``X-HubSpot-Request-Timestamp``, new ``attemptNumber`` in the
body), so a second request with the *same* signature never comes from HubSpot: it is someone
replaying a captured request. After the window the timestamp check rejects it anyway, so a
signature only needs remembering until its timestamp + window.

The memory is per receiver process (run one receiver per ledger; a second one would need a shared
store). Events are also deduplicated by event id in the ledger, so a replay that got past a
restarted receiver still bills nothing twice.
"""

from __future__ import annotations

from collections import deque


class ReplayGuard:
    def __init__(self, window_s: int) -> None:
        self.window_ms = window_s * 1000
        self._seen: dict[bytes, int] = {}
        self._order: deque[tuple[int, bytes]] = deque()

    def __len__(self) -> int:
        return len(self._seen)

    def first_use(self, signature: str, timestamp_ms: int, now_ms: int) -> bool:
        """Record ``signature``; False if it was already used and has not expired."""
        self._expire(now_ms)
        key = signature.strip().encode()
        if key in self._seen:
            return False
        expires = timestamp_ms + self.window_ms
        self._seen[key] = expires
        self._order.append((expires, key))
        return True

    def _expire(self, now_ms: int) -> None:
        # Expiry times arrive nearly in order (timestamps are "now" give or take the window), so
        # popping from the left while expired is enough; a late-expiring one just stays a bit longer.
        while self._order and self._order[0][0] < now_ms:
            expires, key = self._order.popleft()
            if self._seen.get(key) == expires:
                del self._seen[key]
