"""The sync ledger (DESIGN §6): invoices posted exactly once, entries billed, OAuth tokens, audit.

Usage::

    from sync_pipelines.ledger import Ledger, default_ledger_url
    ledger = Ledger(os.environ.get("SYNC_DATABASE_URL") or default_ledger_url(dagster_home))
    ledger.migrate()

See README.md in this package for the schema, the posting state machine and the locking model.
"""

from sync_pipelines.ledger.ledger import (
    Ledger,
    LedgerConflict,
    LedgerError,
    default_ledger_url,
    ledger_url_from_env,
    payload_hash,
)
from sync_pipelines.ledger.tokens import LedgerTokenStore, RefreshLockTimeout, TokenSet
from sync_pipelines.ledger.types import (
    ACTIONS,
    AuditRecord,
    BeginResult,
    InboxEvent,
    InvoiceRecord,
    LedgerHistory,
    PostedResult,
    Writeback,
)

__all__ = [
    "ACTIONS",
    "AuditRecord",
    "BeginResult",
    "InboxEvent",
    "InvoiceRecord",
    "Ledger",
    "LedgerConflict",
    "LedgerError",
    "LedgerHistory",
    "LedgerTokenStore",
    "PostedResult",
    "RefreshLockTimeout",
    "TokenSet",
    "Writeback",
    "default_ledger_url",
    "ledger_url_from_env",
    "payload_hash",
]
