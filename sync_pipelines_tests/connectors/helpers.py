"""Test helpers: a fake clock/sleep pair, an audit recorder, JSON responses with Decimals."""

from __future__ import annotations

from typing import Any

import httpx

from sync_pipelines import money


class FakeTime:
    """``sleep`` advances ``clock``; every sleep is recorded."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class AuditRecorder:
    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def audit(self, system, method, path, status, duration_ms, request_id=None, trace_id=None, error=None):
        self.rows.append(dict(system=system, method=method, path=path, status=status,
                              duration_ms=duration_ms, request_id=request_id, trace_id=trace_id, error=error))


def jresp(status: int, body: Any, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(status, content=money.dumps(body).encode(),
                          headers={"Content-Type": "application/json", **(headers or {})})


def body_of(request: httpx.Request) -> Any:
    return money.loads(request.content)
