"""The database boundary: which faults are "unavailable", over a real PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from ingest.db.driver import (
    DatabaseUnavailable,
    connection,
    driver_connection,
    rowcount,
    transaction,
    values_refused,
)
from tests.helpers import free_port


@pytest.mark.parametrize("enter", [transaction, connection])
async def test_a_server_that_cannot_be_reached_is_unavailable(enter: object) -> None:
    engine = create_async_engine(f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/x")
    try:
        with pytest.raises(DatabaseUnavailable) as caught:
            async with enter(engine) as conn:  # type: ignore[operator]
                await conn.execute(text("SELECT 1"))
    finally:
        await engine.dispose()
    assert caught.value.__cause__ is not None  # the driver's error stays attached


async def test_a_connection_killed_mid_transaction_is_unavailable(engine: AsyncEngine) -> None:
    with pytest.raises(DatabaseUnavailable):
        async with transaction(engine) as conn:
            db = await driver_connection(conn)
            await db.execute("SELECT pg_terminate_backend(pg_backend_pid())")


async def test_a_statement_error_is_not_unavailable(engine: AsyncEngine) -> None:
    with pytest.raises(DBAPIError) as caught:
        async with transaction(engine) as conn:
            await conn.execute(text("SELECT * FROM no_such_table"))
    assert not isinstance(caught.value, DatabaseUnavailable)
    assert not values_refused(caught.value)


@pytest.mark.parametrize(
    ("sql", "refused"),
    [
        ("SELECT 'not a number'::int", True),  # 22P02, through SQLAlchemy's wrapper
        ("SELECT 1/0", True),  # 22012
        ("SELECT repeat('[', 100000)::jsonb", True),  # 54001: nested deeper than the stack
        ("SELECT * FROM no_such_table", False),  # 42P01: not the values' fault
    ],
)
async def test_values_refused_are_told_by_sqlstate(
    engine: AsyncEngine, sql: str, refused: bool
) -> None:
    with pytest.raises(DBAPIError) as caught:
        async with transaction(engine) as conn:
            await conn.execute(text(sql))
    assert values_refused(caught.value) is refused


async def test_driver_statements_share_the_transaction(engine: AsyncEngine) -> None:
    with pytest.raises(RuntimeError):
        async with transaction(engine) as conn:
            db = await driver_connection(conn)
            await db.execute("CREATE TABLE shared_tx (n int)")
            assert rowcount(await db.execute("INSERT INTO shared_tx VALUES (1), (2)")) == 2
            raise RuntimeError("roll back")
    async with connection(engine) as conn:
        db = await driver_connection(conn)
        assert await db.fetchval("SELECT to_regclass('shared_tx')") is None
