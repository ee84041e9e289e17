"""Group commit into the ledger inbox: many requests, one transaction, each awaiting its own result.

A request hands its events to :meth:`InboxWriter.store` and awaits the outcome; one writer thread
takes everything queued since its last commit and stores it with a single
``ledger.inbox_put_many`` (one transaction, one fsync). So a request is answered only after its
events are durable, and under load the cost of a commit is shared by every request in the batch
instead of paid by each.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sync_pipelines.webhooks.events import InboxItem

log = logging.getLogger("sync_pipelines.webhooks")

_STOP = object()


@dataclass
class _Job:
    items: Sequence[InboxItem]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future


@dataclass
class WriterStats:
    batches: int = 0
    requests: int = 0
    events: int = 0
    largest_batch: int = 0
    failures: int = 0
    last_error: str | None = None
    commit_seconds: list[float] = field(default_factory=list)


class InboxWriter:
    """The single writer thread in front of ``ledger.inbox_put_many``.

    ``max_batch`` bounds the events of one transaction; ``ledger`` is anything with
    ``inbox_put_many(list[(source, event_id, payload)]) -> list[bool]``.
    """

    def __init__(self, ledger: Any, *, max_batch: int = 2000) -> None:
        self.ledger = ledger
        self.max_batch = max_batch
        self.stats = WriterStats()
        self._q: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="webhook-inbox-writer", daemon=True)
        self._started = False

    def start(self) -> "InboxWriter":
        if not self._started:
            self._started = True
            self._thread.start()
        return self

    def alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self, timeout: float = 10.0) -> None:
        if self._started:
            self._q.put(_STOP)
            self._thread.join(timeout)

    async def store(self, items: Sequence[InboxItem]) -> list[bool]:
        """Store ``items`` durably; returns which were new (False = already in the inbox)."""
        if not items:
            return []
        loop = asyncio.get_running_loop()
        job = _Job(items, loop, loop.create_future())
        self._q.put(job)
        return await job.future

    # -- the writer thread -------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            first = self._q.get()
            if first is _STOP:
                return
            jobs = [first]
            n = len(first.items)
            stop = False
            while n < self.max_batch:
                try:
                    nxt = self._q.get_nowait()
                except queue.Empty:
                    break
                if nxt is _STOP:
                    stop = True
                    break
                jobs.append(nxt)
                n += len(nxt.items)
            self._commit(jobs)
            if stop:
                return

    def _commit(self, jobs: list[_Job]) -> None:
        flat = [(i.source, i.event_id, i.payload) for job in jobs for i in job.items]
        started = time.perf_counter()
        try:
            new = self.ledger.inbox_put_many(flat)
        except Exception as exc:  # noqa: BLE001 - every waiting request must get an answer
            self.stats.failures += 1
            self.stats.last_error = type(exc).__name__
            log.error("webhook inbox: storing %d event(s) failed: %s", len(flat), type(exc).__name__)
            for job in jobs:
                job.loop.call_soon_threadsafe(_fail, job.future, exc)
            return
        elapsed = time.perf_counter() - started
        st = self.stats
        st.batches += 1
        st.requests += len(jobs)
        st.events += len(flat)
        st.largest_batch = max(st.largest_batch, len(jobs))
        if len(st.commit_seconds) < 100_000:
            st.commit_seconds.append(elapsed)
        pos = 0
        for job in jobs:
            part = new[pos : pos + len(job.items)]
            pos += len(job.items)
            job.loop.call_soon_threadsafe(_succeed, job.future, part)


def _succeed(fut: asyncio.Future, value: list[bool]) -> None:
    if not fut.done():
        fut.set_result(value)


def _fail(fut: asyncio.Future, exc: BaseException) -> None:
    if not fut.done():
        fut.set_exception(exc)
