"""What BI tools meet: every table, view and column says what it means, `bi_runs` carries
`data`, and the documented read-only role reads everything and changes nothing."""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from ingest.config import Settings
from ingest.db import migrate
from tests.helpers import dsn

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
                ' \'{"load_id": "L-1", "rate_usd": 1200.5}\')'
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


def _documented_role_sql() -> str:
    page = (Path(__file__).resolve().parents[1] / "docs" / "dashboards.md").read_text()
    block = re.search(r"```sql\n(CREATE ROLE bi .*?)```", page, flags=re.S)
    assert block is not None, "docs/dashboards.md lost its read-only role"
    return re.sub(r"--[^\n]*", "", block.group(1))


async def test_the_documented_read_only_role_reads_the_views_and_changes_nothing(
    engine: AsyncEngine, settings: Settings, database_url: str
) -> None:
    """The SQL block of docs/dashboards.md, run for a role and schema of this test's own."""
    role, schema = f"bi_{uuid.uuid4().hex[:8]}", settings.db_schema
    database = make_url(database_url).database
    statements = [
        re.sub(r"\bbi\b", f'"{role}"', s)
        .replace("happyrobot", f'"{schema}"')
        .replace("analytics", f'"{database}"')
        for s in _documented_role_sql().split(";")
        if s.strip()
    ]
    admin = await asyncpg.connect(dsn(database_url))
    try:
        for statement in statements:
            await admin.execute(statement)
        # A view a later migration adds is readable too (default privileges).
        await admin.execute(f'CREATE VIEW "{schema}".bi_later AS SELECT 1 AS one')
        url = make_url(database_url).set(username=role).render_as_string(hide_password=False)
        conn = await asyncpg.connect(dsn(url), server_settings={"search_path": schema})
        try:
            for view in ("bi_runs", "bi_daily_runs", "bi_issues", "bi_calls", "bi_tool_calls"):
                await conn.fetch(f"SELECT * FROM {view} LIMIT 1")
            assert await conn.fetchval("SELECT one FROM bi_later") == 1
            for change in (
                "INSERT INTO runs (id) VALUES (gen_random_uuid())",
                "UPDATE runs SET status = 'x'",
                "DELETE FROM ingest_queue",
                "CREATE TABLE mine (a int)",
                "CREATE VIEW mine AS SELECT 1",
            ):
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await conn.execute(change)
        finally:
            await conn.close()
    finally:
        await admin.execute(f'DROP OWNED BY "{role}"')
        await admin.execute(f'DROP ROLE IF EXISTS "{role}"')
        await admin.close()
