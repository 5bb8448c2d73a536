"""Engines: every connection sets search_path to the configured schema."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import event, text
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
    engine = create_async_engine(
        url or resolve_url(settings),
        connect_args=connect_args(settings.db_schema),
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
    )
    event.listen(engine.sync_engine, "connect", _jsonb_takes_bytes)
    return engine


def _jsonb_encode(value: str | bytes) -> bytes:
    # b"\x01": the version byte of jsonb's binary format.
    return b"\x01" + (value if isinstance(value, bytes) else value.encode())


def _jsonb_decode(value: bytes) -> Any:
    return json.loads(value[1:].decode())


def _jsonb_takes_bytes(dbapi_connection: Any, _record: Any) -> None:
    """jsonb parameters as JSON text in bytes too (orjson's output), not only str.

    SQLAlchemy's own codec (set up just before this runs) takes str: the write path would
    decode every value only for the codec to encode it again. Reads are as SQLAlchemy's.
    """
    dbapi_connection.run_async(
        lambda conn: conn.set_type_codec(
            "jsonb",
            schema="pg_catalog",
            format="binary",
            encoder=_jsonb_encode,
            decoder=_jsonb_decode,
        )
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
