"""Engines: every connection sets search_path to the configured schema."""

from __future__ import annotations

from collections.abc import Callable

import asyncpg
from sqlalchemy import event
from sqlalchemy.engine import AdaptedConnection, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry

from ingest.config import Settings, asyncpg_url
from ingest.db import embedded, tls


def resolve_url(settings: Settings) -> str:
    """The asyncpg URL to use: DATABASE_URL, or the embedded server (started if needed)."""
    if settings.database_url is None:
        return embedded.start(settings.data_dir, settings.embedded_port)
    return asyncpg_url(settings.database_url.reveal()).render_as_string(hide_password=False)


def connect_args() -> dict[str, object]:
    return {
        "server_settings": {"application_name": "hr-ingest"},
        # Named prepared statements live on the server connection: through PgBouncer, session
        # pooling keeps them there (transaction pooling does not; README, "PgBouncer").
        "statement_cache_size": 256,
    }


def _search_path_setter(schema: str) -> Callable[[AdaptedConnection, ConnectionPoolEntry], None]:
    """A `connect` listener setting the session's search_path with a statement. Not as a
    startup parameter: PgBouncer refuses that one, or told to ignore it, drops it (every table
    would then be looked for in `public`)."""

    async def set_search_path(conn: asyncpg.Connection) -> None:
        await conn.execute("SELECT pg_catalog.set_config('search_path', $1, false)", schema)

    def on_connect(dbapi_connection: AdaptedConnection, _record: ConnectionPoolEntry) -> None:
        dbapi_connection.run_async(set_search_path)

    return on_connect


def create_engine(
    settings: Settings,
    url: str | None = None,
    pool_size: int = 5,
    *,
    pool_timeout: float = 30.0,
    connect_timeout: float = 60.0,
) -> AsyncEngine:
    """The timeouts bound how long a caller waits for a pooled connection and for a new one
    (the webhook answers 503 within seconds rather than hang its caller)."""
    # Every connection of the process comes from here: the one place TLS keys are translated.
    plain_url, tls_args = tls.split(make_url(url or resolve_url(settings)))
    engine = create_async_engine(
        plain_url,
        connect_args={**connect_args(), **tls_args, "timeout": connect_timeout},
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        pool_timeout=pool_timeout,
    )
    # First, before the dialect reads the default schema of its first connection.
    event.listen(
        engine.sync_engine, "connect", _search_path_setter(settings.db_schema), insert=True
    )
    return engine
