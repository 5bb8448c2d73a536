"""bi_run_data: the run-table variables the use cases declare, as typed columns that follow
the catalog."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from ingest import discovery
from ingest.api.client import open_client
from ingest.config import Settings
from ingest.db import run_data
from ingest.simulator import Simulator
from tests.helpers import api_settings

USE_CASE = uuid.UUID("6a0c1f5e-0000-4000-8000-000000000001")


async def _columns(engine: AsyncEngine) -> dict[str, str]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT column_name, data_type FROM information_schema.columns"
                " WHERE table_schema = current_schema() AND table_name = 'bi_run_data'"
                " ORDER BY ordinal_position"
            )
        )
        return dict(rows.all())


async def _declare(engine: AsyncEngine, *names: str) -> None:
    columns = orjson.dumps([{"group_id": None, "variable_id": None, "name": n} for n in names])
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO use_cases (id, name, run_columns, refreshed_at)"
                " VALUES (:id, 'Loads', CAST(:c AS jsonb), now())"
                " ON CONFLICT (id) DO UPDATE SET run_columns = excluded.run_columns"
            ),
            {"id": USE_CASE, "c": columns.decode()},
        )


async def _run(engine: AsyncEngine, data: dict[str, Any], minutes_ago: int) -> uuid.UUID:
    run_id = uuid.uuid4()
    async with engine.begin() as conn:
        await conn.execute(
            text(
                'INSERT INTO runs (id, use_case_id, status, "timestamp", data)'
                " VALUES (:id, :uc, 'completed', :t, CAST(:d AS jsonb))"
            ),
            {
                "id": run_id,
                "uc": USE_CASE,
                "t": datetime.now(UTC) - timedelta(minutes=minutes_ago),
                "d": orjson.dumps(data).decode(),
            },
        )
    return run_id


async def _refresh(engine: AsyncEngine) -> bool:
    async with engine.begin() as conn:
        made = await run_data.refresh(conn)
    # Pooled connections hold prepared statements over the view as it was.
    await engine.dispose()
    return made


async def _value(engine: AsyncEngine, column: str, run_id: uuid.UUID) -> Any:
    async with engine.connect() as conn:
        sql = f'SELECT "{column}" FROM bi_run_data WHERE run_id = :id'
        return (await conn.execute(text(sql), {"id": run_id})).scalar_one()


FIXED = {
    "run_id": "uuid",
    "use_case_id": "uuid",
    "use_case_name": "text",
    "status": "text",
    "timestamp": "timestamp with time zone",
}


async def test_columns_are_typed_from_the_values_and_follow_new_names(
    engine: AsyncEngine,
) -> None:
    assert await _columns(engine) == FIXED  # made by db upgrade, before any use case
    await _declare(engine, "load_id", "rate_usd", "booked")
    first = await _run(engine, {"load_id": "L1", "rate_usd": 1200.5, "booked": True}, 5)
    await _run(engine, {"load_id": "L2", "rate_usd": 900, "booked": False}, 4)
    assert await _refresh(engine)
    assert await _columns(engine) == {
        **FIXED,
        "booked": "boolean",
        "load_id": "text",
        "rate_usd": "numeric",
    }
    assert await _value(engine, "rate_usd", first) == 1200.5
    assert await _value(engine, "booked", first) is True
    assert not await _refresh(engine)  # nothing changed: the view is left alone

    # A value that does not fit its column reads as NULL, never as an error ...
    odd = await _run(engine, {"load_id": "L3", "rate_usd": "TBD"}, 3)
    assert await _value(engine, "rate_usd", odd) is None
    # ... and a name the use case declares later becomes a column at the next refresh.
    await _declare(engine, "load_id", "rate_usd", "booked", "miles")
    await _run(engine, {"miles": 412}, 1)
    assert await _refresh(engine)
    columns = await _columns(engine)
    assert columns["miles"] == "numeric" and columns["rate_usd"] == "text"  # now mixed
    assert await _value(engine, "rate_usd", odd) == "TBD"


async def test_discover_with_the_catalog_makes_the_simulators_columns(
    settings: Settings, engine: AsyncEngine, sim: Simulator
) -> None:
    until = datetime.now(UTC)
    async with open_client(api_settings(settings, sim), engine) as client:
        await discovery.discover(
            engine, client, since=until - timedelta(days=8), until=until, catalog=True
        )
    columns = await _columns(engine)
    assert columns["load_id"] == "text" and columns["rate_usd"] == "numeric"
    async with engine.connect() as conn:
        wrong = await conn.execute(
            text(
                "SELECT count(*) FROM bi_run_data b JOIN runs r ON r.id = b.run_id"
                " WHERE b.load_id IS DISTINCT FROM r.data->>'load_id'"
                " OR b.rate_usd IS DISTINCT FROM (r.data->>'rate_usd')::numeric"
            )
        )
        assert wrong.scalar_one() == 0
