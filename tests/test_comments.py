"""Every table, view and column of the schema says what it means: BI tools import these."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from ingest.db import migrate

_UNDESCRIBED = text(
    """
    SELECT c.relname || coalesce('.' || a.attname, '') AS what
    FROM pg_class c
    JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = current_schema()
    LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
    WHERE c.relkind IN ('r', 'v', 'm', 'p')
      AND (CASE WHEN a.attname IS NULL THEN obj_description(c.oid, 'pg_class')
                ELSE col_description(c.oid, a.attnum) END) IS NULL
    UNION
    SELECT c.relname FROM pg_class c
    JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = current_schema()
    WHERE c.relkind IN ('r', 'v', 'm', 'p') AND obj_description(c.oid, 'pg_class') IS NULL
    ORDER BY 1
    """
)


async def _undescribed(engine: AsyncEngine) -> list[Any]:
    async with engine.connect() as conn:
        return [r[0] for r in await conn.execute(_UNDESCRIBED)]


async def test_every_table_view_and_column_has_a_comment(engine: AsyncEngine) -> None:
    assert await _undescribed(engine) == []


async def test_the_listing_finds_what_has_no_comment(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.execute(text("CREATE TABLE scratch (n int)"))
        await conn.execute(text("COMMENT ON COLUMN bi_runs.status IS NULL"))
    assert await _undescribed(engine) == ["bi_runs.status", "scratch", "scratch.n"]


async def test_downgrading_removes_them_and_upgrading_brings_them_back(
    engine: AsyncEngine,
) -> None:
    await migrate.downgrade(engine, "0006")
    assert "runs.status" in await _undescribed(engine)
    await migrate.upgrade(engine)
    assert await _undescribed(engine) == []


async def test_bi_runs_shows_data_and_a_downgrade_keeps_every_comment(
    engine: AsyncEngine,
) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO runs (id, status, data) VALUES"
                " ('5b0f0d0e-0000-4000-8000-000000000001', 'completed',"
                " '{\"load_id\": \"L-1\", \"rate_usd\": 1200.5}')"
            )
        )
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                text("SELECT data->>'load_id', (data->>'rate_usd')::numeric FROM bi_runs")
            )
        ).one()
    assert tuple(row) == ("L-1", 1200.5)
    await migrate.downgrade(engine, "0007")  # bi_runs as 0004 made it, comments and all
    assert await _undescribed(engine) == []
    await migrate.upgrade(engine)
    assert await _undescribed(engine) == []
