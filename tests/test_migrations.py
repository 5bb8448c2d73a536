from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from ingest.config import Settings
from ingest.db import migrate
from ingest.db.tables import metadata

ROOT = Path(__file__).resolve().parents[1]


async def _tables(engine: AsyncEngine, schema: str) -> set[str]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT table_name FROM information_schema.tables WHERE table_schema = :s"),
            {"s": schema},
        )
        return {r[0] for r in rows}


async def test_upgrade_creates_every_table_in_the_configured_schema(
    engine: AsyncEngine, settings: Settings
) -> None:
    tables = await _tables(engine, settings.db_schema)
    assert set(metadata.tables) <= tables
    assert await migrate.current_revision(engine) is not None


async def test_autogenerate_finds_no_drift(engine: AsyncEngine) -> None:
    assert await migrate.drift(engine) == []


async def test_downgrade_removes_everything_and_upgrade_again_works(
    engine: AsyncEngine, settings: Settings
) -> None:
    await migrate.downgrade(engine, "base")
    assert await _tables(engine, settings.db_schema) <= {"alembic_version"}
    assert await migrate.current_revision(engine) is None
    await migrate.upgrade(engine)
    assert set(metadata.tables) <= await _tables(engine, settings.db_schema)
    assert await migrate.drift(engine) == []


def test_cli_db_upgrade_and_plain_alembic_agree(
    subprocess_env: dict[str, str], settings: Settings
) -> None:
    env = dict(subprocess_env, INGEST_DB_SCHEMA=settings.db_schema + "_cli")
    cli = subprocess.run(
        [sys.executable, "-m", "ingest", "db", "upgrade"], env=env, capture_output=True, text=True
    )
    assert cli.returncode == 0, cli.stderr
    assert "at revision" in cli.stdout
    env["INGEST_DB_SCHEMA"] = settings.db_schema + "_alembic"
    alembic = subprocess.run(
        [str(Path(sys.executable).parent / "alembic"), "upgrade", "head"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert alembic.returncode == 0, alembic.stderr
    check = subprocess.run(
        [str(Path(sys.executable).parent / "alembic"), "check"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    for suffix in ("_cli", "_alembic"):
        subprocess.run(
            [sys.executable, "-c", _DROP, os.environ.get("X", ""), settings.db_schema + suffix],
            env=env,
            check=True,
        )


_DROP = """
import asyncio, os, sys
from sqlalchemy import text
from ingest.config import load_settings
from ingest.db.engine import create_engine
async def main():
    e = create_engine(load_settings())
    async with e.begin() as c:
        await c.execute(text(f'DROP SCHEMA IF EXISTS "{sys.argv[2]}" CASCADE'))
    await e.dispose()
asyncio.run(main())
"""


async def test_cli_db_downgrade_needs_a_revision_and_base_needs_yes(
    subprocess_env: dict[str, str], engine: AsyncEngine, settings: Settings
) -> None:
    from tests.helpers import run_cli_async

    no_target = await run_cli_async(subprocess_env, "db", "downgrade")
    base = await run_cli_async(subprocess_env, "db", "downgrade", "base")
    assert (no_target[0], no_target[2]) == (
        2,
        "hr-ingest: error: db downgrade needs a target revision (e.g. 0013; `db current` shows)\n",
    )
    assert (base[0], base[2]) == (
        2,
        "hr-ingest: error: db downgrade base drops every table and all their rows: add --yes\n",
    )
    assert set(metadata.tables) <= await _tables(engine, settings.db_schema)  # nothing dropped

    code, out, err = await run_cli_async(subprocess_env, "db", "downgrade", "0013")
    assert code == 0, err
    assert "at revision 0013" in out
    code, out, err = await run_cli_async(subprocess_env, "db", "downgrade", "base", "--yes")
    assert code == 0, err
    assert await _tables(engine, settings.db_schema) <= {"alembic_version"}
