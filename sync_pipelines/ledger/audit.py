"""The ledger's audit log of API calls (the connectors' ``AuditSink``), secrets redacted."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa

from sync_pipelines.ledger import redact
from sync_pipelines.ledger.base import LedgerMixinBase, log
from sync_pipelines.ledger.schema import audit_log
from sync_pipelines.ledger.types import AuditRecord

AUDIT_SYSTEMS = ("harvest", "hubspot", "quickbooks", "oauth", "slack")


class AuditMixin(LedgerMixinBase):
    """``audit`` (never raises), ``audit_records`` and ``prune_audit``."""

    # -- audit (AuditSink) ---------------------------------------------------------------------

    def audit(
        self,
        system: str,
        method: str,
        path: str,
        status: int | None,
        duration_ms: int,
        request_id: str | None = None,
        trace_id: str | None = None,
        error: str | None = None,
    ) -> None:
        """Record one API call. The path loses its scheme, host, query string and fragment; every
        text field is redacted (known tokens, bearer credentials, secret-named parameters, long
        opaque strings). Never raises: a failure to audit is logged, the API call goes on."""
        try:
            values = dict(
                at=self.now(),
                system=(system or "?").lower()[:16],
                method=(method or "?").upper()[:10],
                path=redact.clean_path(path),
                status=None if status is None else int(status),
                duration_ms=None if duration_ms is None else int(duration_ms),
                request_id=(redact.redact(str(request_id)) or "")[:64] if request_id else None,
                trace_id=(redact.redact(str(trace_id)) or "")[:128] if trace_id else None,
                error=redact.short_error(error, 300) if error else None,
            )
            with self.engine.begin() as conn:
                conn.execute(audit_log.insert().values(**values))
        except Exception:  # noqa: BLE001 - auditing must never break the API call
            log.warning("could not write an audit row for %s %s", system, method, exc_info=True)

    def audit_records(self, limit: int = 100, system: str | None = None) -> list[AuditRecord]:
        """The latest audit rows, newest first."""
        q = sa.select(audit_log).order_by(audit_log.c.id.desc()).limit(limit)
        if system is not None:
            q = q.where(audit_log.c.system == system)
        with self._read() as conn:
            return [AuditRecord(**dict(r)) for r in conn.execute(q).mappings()]

    def prune_audit(self, older_than: datetime) -> int:
        """Delete audit rows older than `older_than`; returns how many."""
        with self.engine.begin() as conn:
            return int(conn.execute(audit_log.delete().where(audit_log.c.at < older_than)).rowcount)
