"""How long one `quickbooks_changes` sensor tick takes to detect changes (no Dagster, no HTTP).

A ledger (SQLite file) holds N posted invoices; a CDC feed in QuickBooks' own rules (ordered by
LastUpdatedTime, 1,000 objects per response) holds M changed invoices of which K are ours
(voided, paid or partially paid), the rest invoices keyed in by hand; the inbox holds E webhook
events. Times `drain_inbox` + `poll_cdc` (what the sensor does before returning its run requests)
and checks that every one of ours is found. A sensor tick must stay well under Dagster's 60 s
gRPC limit (dagster-notes P6).

    .venv/bin/python benchmarks/qbo_change_detection.py --invoices 5000 --changes 10000 --ours 500 --events 1000
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import datetime, timedelta, timezone
from decimal import Decimal

from sync_pipelines.billing.keys import doc_number, invoice_key, request_id
from sync_pipelines.ledger import Ledger
from sync_pipelines.qbo_changes import windows
from sync_pipelines.qbo_changes.detect import Detection, drain_inbox, poll_cdc

REALM = "9130357"


class Feed:
    def __init__(self, rows: list[dict]) -> None:
        self.rows = rows  # sorted by LastUpdatedTime
        self.stamps = [windows.parse_time(r["MetaData"]["LastUpdatedTime"]) for r in rows]
        self.calls = 0

    def cdc(self, entities, since):
        self.calls += 1
        out = {}
        for e in entities:
            if e != "Invoice":
                out[e] = []
                continue
            first = next((i for i, s in enumerate(self.stamps) if s >= since), len(self.rows))
            out[e] = self.rows[first:first + windows.CDC_MAX_OBJECTS]
        return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--invoices", type=int, default=5000)
    ap.add_argument("--changes", type=int, default=10000)
    ap.add_argument("--ours", type=int, default=500)
    ap.add_argument("--events", type=int, default=1000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        ledger = Ledger(f"sqlite:///{tmp}/ledger.db")
        ledger.migrate()
        t0 = time.perf_counter()
        for i in range(args.invoices):
            key = invoice_key(REALM, f"client{i % 500}", f"2026-{1 + i % 10:02d}", f"g{i}", 1)
            d = dict(realm_id=REALM, client_key=f"client{i % 500}", period=f"2026-{1 + i % 10:02d}", group_key=f"g{i}",
                     generation=1, payload={"Line": []}, expected_total=Decimal("100.00"), currency="USD",
                     request_id=request_id(key), doc_number=doc_number(key, "2026-10"), entries=[(i, 100)])
            ledger.begin_posting(key, **d)
            ledger.record_posted(key, qbo_id=str(100_000 + i), sync_token="0", qbo_doc_number=d["doc_number"],
                                 qbo_total_amt=Decimal("100.00"), intuit_tid="t")
        setup = time.perf_counter() - t0
        now = datetime.now(timezone.utc).replace(microsecond=0)
        start = now - timedelta(days=3)
        rows = []
        for i in range(args.changes):
            ours = i < args.ours
            qbo_id = str(100_000 + i) if ours else str(900_000 + i)
            balance = ("0.00", "40.00", "100.00")[i % 3] if ours else "100.00"
            rows.append({"Id": qbo_id, "SyncToken": "2", "TotalAmt": Decimal("100.00"), "Balance": Decimal(balance),
                         "MetaData": {"LastUpdatedTime": (start + timedelta(seconds=20 * i)).isoformat()}})
        rows.sort(key=lambda r: r["MetaData"]["LastUpdatedTime"])
        for j in range(args.events):
            ledger.inbox_put("quickbooks", f"ev{j}", {
                "realm_id": REALM, "entity": "Invoice", "entity_id": str(100_000 + (j % args.invoices)),
                "operation": "Update", "occurred_at": now.isoformat(), "format": "legacy", "raw": {}})
        feed = Feed(rows)
        detection = Detection()
        t0 = time.perf_counter()
        drain_inbox(ledger, detection, realms=[REALM], limit=args.events)
        t_inbox = time.perf_counter() - t0
        t0 = time.perf_counter()
        poll = poll_cdc(ledger, feed, REALM, {"Invoice": start.isoformat(), "Payment": now.isoformat()}, detection,
                        now=lambda: now, max_reads=max(10, args.changes // 1000 + 2))
        t_cdc = time.perf_counter() - t0
        found = detection.change_sets[REALM].invoice_ids
        expected_ours = {str(100_000 + i) for i in range(args.ours) if i % 3 != 2}  # unpaid ones are no change
        print(f"ledger: {args.invoices} posted invoices (setup {setup:.1f} s)")
        print(f"inbox: {args.events} events drained in {t_inbox:.2f} s")
        print(f"CDC: {args.changes} changes ({args.ours} ours) in {feed.calls} responses, {t_cdc:.2f} s; "
              f"complete={poll.complete}")
        print(f"tick total: {t_inbox + t_cdc:.2f} s; ours found {len(expected_ours & found)} of {len(expected_ours)}")
        assert expected_ours <= found
        ledger.dispose()


if __name__ == "__main__":
    main()
