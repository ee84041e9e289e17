"""The ledger's webhook inbox: each event stored once per (source, event id) until processed."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import sqlalchemy as sa

from sync_pipelines import money
from sync_pipelines.ledger.base import LedgerMixinBase, _chunks
from sync_pipelines.ledger.schema import webhook_inbox
from sync_pipelines.ledger.types import InboxEvent


class InboxMixin(LedgerMixinBase):
    """Put, list and mark processed webhook events."""

    # -- webhook inbox -------------------------------------------------------------------------

    def inbox_put(self, source: str, event_id: str, payload: Any) -> bool:
        """Store a webhook event once per (source, event id); True if it was new."""
        stmt = (
            self._insert(webhook_inbox)
            .values(source=source, event_id=str(event_id), received_at=self.now(), payload=money.dumps(payload))
            .on_conflict_do_nothing(index_elements=[webhook_inbox.c.source, webhook_inbox.c.event_id])
        )
        with self.engine.begin() as conn:
            return bool(conn.execute(stmt).rowcount)

    def inbox_put_many(self, events: Sequence[tuple[str, str, Any]]) -> list[bool]:
        """Store many webhook events in ONE transaction, each once per (source, event id).

        ``events`` are ``(source, event_id, payload)``; the result says, in the same order, which
        were new (False: already in the inbox, or repeated earlier in ``events``). One commit for
        the lot is what lets the webhook receiver group many requests into one durable write.
        """
        if not events:
            return []
        now = self.now()
        rows: dict[tuple[str, str], dict[str, Any]] = {}
        for source, event_id, payload in events:
            key = (source, str(event_id))
            if key not in rows:
                rows[key] = {"source": source, "event_id": key[1], "received_at": now, "payload": money.dumps(payload)}
        inserted: set[tuple[str, str]] = set()
        with self.engine.begin() as conn:
            for chunk in _chunks(list(rows.values()), 200):
                stmt = (
                    self._insert(webhook_inbox)
                    .values(list(chunk))
                    .on_conflict_do_nothing(index_elements=[webhook_inbox.c.source, webhook_inbox.c.event_id])
                    .returning(webhook_inbox.c.source, webhook_inbox.c.event_id)
                )
                inserted.update((r[0], r[1]) for r in conn.execute(stmt))
        result: list[bool] = []
        for source, event_id, _payload in events:
            key = (source, str(event_id))
            result.append(key in inserted)
            inserted.discard(key)  # a repeat later in the same call is not new
        return result

    def inbox_pending(self, limit: int = 100, source: str | None = None) -> list[InboxEvent]:
        q = sa.select(webhook_inbox).where(webhook_inbox.c.processed_at.is_(None)).order_by(webhook_inbox.c.id)
        if source is not None:
            q = q.where(webhook_inbox.c.source == source)
        with self._read() as conn:
            return [
                InboxEvent(
                    id=int(r["id"]), source=r["source"], event_id=r["event_id"], received_at=r["received_at"],
                    payload_json=r["payload"], processed_at=r["processed_at"],
                )
                for r in conn.execute(q.limit(limit)).mappings()
            ]

    def inbox_mark_processed(self, ids: Iterable[int]) -> int:
        ids = [int(i) for i in ids]
        n = 0
        with self.engine.begin() as conn:
            for chunk in _chunks(ids):
                n += int(
                    conn.execute(
                        webhook_inbox.update()
                        .where(webhook_inbox.c.id.in_(chunk), webhook_inbox.c.processed_at.is_(None))
                        .values(processed_at=self.now())
                    ).rowcount
                )
        return n
