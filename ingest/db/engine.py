"""Engines: every connection sets search_path to the configured schema."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from ingest.config import Settings, asyncpg_url
from ingest.db import embedded


def resolve_url(settings: Settings) -> str:
    """The asyncpg URL to use: DATABASE_URL, or the embedded server (started if needed)."""
    if settings.database_url is None:
        return embedded.start(settings.data_dir)
    return asyncpg_url(settings.database_url.reveal()).render_as_string(hide_password=False)


def connect_args(schema: str) -> dict[str, object]:
    return {
        "server_settings": {"search_path": schema, "application_name": "hr-ingest"},
        # asyncpg's statement cache is per connection and fine; pgbouncer users set 0.
        "statement_cache_size": 256,
    }


def create_engine(settings: Settings, url: str | None = None, pool_size: int = 5) -> AsyncEngine:
    return create_async_engine(
        url or resolve_url(settings),
        connect_args=connect_args(settings.db_schema),
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
    )


async def driver_connection(conn: AsyncConnection) -> Any:
    """The asyncpg connection under a SQLAlchemy one, for COPY and array parameters.

    It shares the SQLAlchemy connection's transaction: statements on it commit or roll back
    with `engine.begin()`'s block.
    """
    raw = await conn.get_raw_connection()
    db: Any = raw.driver_connection
    if conn.in_transaction() and not db.is_in_transaction():
        # SQLAlchemy begins lazily, on its first statement; without this, statements sent
        # straight to asyncpg would each commit on their own.
        await conn.execute(text("SELECT 1"))
    return db
