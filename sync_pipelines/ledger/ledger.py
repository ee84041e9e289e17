"""The sync ledger: what was (about to be) posted to QuickBooks, exactly once (DESIGN §6).

See ``README.md`` in this package for the schema, the state machine and the concurrency model.

The ``Ledger`` class is assembled from one mixin per concern: the posting state machine
(posting_state.py), invoice reads and history (invoice_reads.py), payments QuickBooks recorded
(payments.py), CRM write-backs (writebacks.py),
the audit log (audit.py) and the webhook inbox (inbox.py), over ``LedgerBase`` (base.py: engine,
transactions, migrations). OAuth tokens are in tokens.py (``Ledger.tokens``).
"""

from __future__ import annotations

from sync_pipelines.ledger.audit import AUDIT_SYSTEMS, AuditMixin
from sync_pipelines.ledger.base import (
    MIGRATIONS_DIR,
    LedgerBase,
    LedgerConflict,
    LedgerError,
    default_ledger_url,
    ledger_url_from_env,
    payload_hash,
)
from sync_pipelines.ledger.inbox import InboxMixin
from sync_pipelines.ledger.invoice_reads import InvoiceReadsMixin
from sync_pipelines.ledger.payments import PaymentsMixin
from sync_pipelines.ledger.posting_state import PostingStateMixin
from sync_pipelines.ledger.writebacks import WritebacksMixin

__all__ = [
    "AUDIT_SYSTEMS",
    "MIGRATIONS_DIR",
    "Ledger",
    "LedgerConflict",
    "LedgerError",
    "default_ledger_url",
    "ledger_url_from_env",
    "payload_hash",
]


class Ledger(PostingStateMixin, InvoiceReadsMixin, PaymentsMixin, WritebacksMixin, AuditMixin, InboxMixin, LedgerBase):
    """The sync database. Thread-safe; one instance per process is enough.

    ``Ledger(url)`` takes a SQLAlchemy URL (``sqlite:///path/to/file.db`` or
    ``postgresql+psycopg2://...``; a bare ``postgresql://`` is pinned to psycopg2). Call
    :meth:`migrate` once at start-up before anything else.

    ``claim_seconds``: how long a ``"post"`` from :meth:`begin_posting` reserves the key (another
    caller gets ``"busy"`` meanwhile; after it, a crashed attempt is ``"resume_pending"``).
    ``lock_timeout``: seconds to wait for the ledger's write lock. ``clock``: returns an aware UTC
    datetime (tests).
    """
