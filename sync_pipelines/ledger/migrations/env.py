"""Alembic environment for the ledger: always run programmatically by ``Ledger.migrate()``.

The caller passes an open SQLAlchemy connection (already inside a locked write transaction) in
``config.attributes["connection"]``; no alembic.ini and no URL are read here.
"""

from __future__ import annotations

from alembic import context

from sync_pipelines.ledger.schema import VERSION_TABLE, metadata

config = context.config
connection = config.attributes.get("connection")
if connection is None:  # pragma: no cover - misuse
    raise RuntimeError("the ledger migrations run only through Ledger.migrate() (no connection given)")

context.configure(
    connection=connection,
    target_metadata=metadata,
    version_table=VERSION_TABLE,
    render_as_batch=connection.dialect.name == "sqlite",  # SQLite: ALTER via table copy
    compare_type=True,
)

with context.begin_transaction():
    context.run_migrations()
