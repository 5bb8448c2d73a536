"""Real PostgreSQL for every test.

The session gets its own database on the server at INGEST_TEST_DATABASE_URL (or on an
embedded server in a temporary directory when unset), dropped at the end. Each test that
asks for `settings`/`engine` gets its own freshly migrated schema in it, dropped afterwards,
so tests run in any order and never see each other's rows.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import pytest_asyncio
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from ingest.config import Secret, Settings
from ingest.db import embedded, migrate
from ingest.db.engine import create_engine
from ingest.simulator import Simulator
from tests.helpers import API_KEY, cli_env, dsn


@pytest.fixture(scope="session")
def server_url() -> Iterator[str]:
    url = os.environ.get("INGEST_TEST_DATABASE_URL")
    if url:
        yield url
        return
    data_dir = Path(tempfile.mkdtemp(prefix="hr-ingest-test-pg-"))
    try:
        yield embedded.start(data_dir)
    finally:
        embedded.remove(data_dir)


@pytest_asyncio.fixture(scope="session")
async def database_url(server_url: str) -> AsyncIterator[str]:
    name = f"hr_ingest_test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(dsn(server_url))
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    url = make_url(server_url).set(drivername="postgresql+asyncpg", database=name)
    yield url.render_as_string(hide_password=False)
    admin = await asyncpg.connect(dsn(server_url))
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture
def schema() -> str:
    return f"t_{uuid.uuid4().hex[:12]}"


@pytest_asyncio.fixture
async def settings(database_url: str, schema: str, tmp_path: Path) -> AsyncIterator[Settings]:
    """Settings pointing at a fresh, migrated schema of the session's database."""
    s = Settings(database_url=Secret(database_url), db_schema=schema, data_dir=tmp_path / "data")
    engine = create_engine(s, pool_size=1)
    try:
        await migrate.upgrade(engine)
    finally:
        await engine.dispose()
    yield s
    conn = await asyncpg.connect(dsn(database_url))
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


@pytest_asyncio.fixture
async def engine(settings: Settings) -> AsyncIterator[AsyncEngine]:
    e = create_engine(settings)
    yield e
    await e.dispose()


@pytest.fixture
def subprocess_env(settings: Settings) -> dict[str, str]:
    """Environment for running `hr-ingest` as a real process against the test schema."""
    return cli_env(settings)


@pytest_asyncio.fixture
async def sim(request: pytest.FixtureRequest) -> AsyncIterator[Simulator]:
    """The simulated API on a free port, expecting `API_KEY`. Its arguments come from a
    `@pytest.mark.sim(runs=..., seed=..., ...)` on the test, or on its module (`pytestmark`)."""
    marker = request.node.get_closest_marker("sim")
    arguments: dict[str, Any] = {"runs": 100, "seed": 1, "api_key": API_KEY}
    if marker is not None:
        arguments.update(marker.kwargs)
    async with Simulator(**arguments) as s:
        yield s
