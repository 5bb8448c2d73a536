"""Engines: every connection sets search_path to the configured schema."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from ingest.config import Settings, asyncpg_url
from ingest.db import embedded


def resolve_url(settings: Settings) -> str:
    """The asyncpg URL to use: DATABASE_URL, or the embedded server (started if needed)."""
    if settings.database_url is None:
        return embedded.start(settings.data_dir, settings.embedded_port)
    return asyncpg_url(settings.database_url.reveal()).render_as_string(hide_password=False)


def connect_args(schema: str) -> dict[str, object]:
    return {
        "server_settings": {"search_path": schema, "application_name": "hr-ingest"},
        # asyncpg's statement cache is per connection and fine; pgbouncer users set 0.
        "statement_cache_size": 256,
    }


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
    return create_async_engine(
        url or resolve_url(settings),
        connect_args={**connect_args(settings.db_schema), "timeout": connect_timeout},
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        pool_timeout=pool_timeout,
    )
