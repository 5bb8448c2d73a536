"""Alembic environment: async engine, the configured schema, one migrator at a time."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import text
from sqlalchemy.engine import Connection

from ingest.config import load_settings
from ingest.db.engine import create_engine
from ingest.db.migrate import include_object
from ingest.db.tables import metadata

config = context.config

# An arbitrary constant: concurrent `db upgrade` calls (say, every replica at start) queue up.
_MIGRATION_LOCK = 0x68725F6D69677261


def _run(connection: Connection) -> None:
    schema = connection.execute(text("SELECT current_setting('search_path')")).scalar_one()
    schema = schema.split(",")[0].strip().strip('"')
    connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATION_LOCK})
    connection.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
    context.configure(
        connection=connection,
        target_metadata=metadata,
        version_table_schema=schema,
        compare_type=True,
        compare_server_default=True,
        include_object=include_object,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_standalone() -> None:
    engine = create_engine(load_settings(), pool_size=1)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_run)
    finally:
        await engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported; run against a database")

connection = config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    asyncio.run(_run_standalone())
